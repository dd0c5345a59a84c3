/*
 * lipforce: TensorRT adapter (IPluginV3) of the KV-cache attention op.
 *
 * Inputs  q, k, v [B, Lc, H, D], k_cache, v_cache [B, T, H, D] (fp16 or bf16, all the same type),
 *         write_idx, q_pos [C], k_pos, k_valid [M] (int32)
 * Outputs out [B, Lc, H, D], k_cache_out, v_cache_out [B, T, H, D]; the cache outputs alias the cache inputs
 *         (IPluginV3OneBuildV2::getAliasedInput, TensorRT >= 10.3 with PreviewFeature::kALIASED_PLUGIN_IO_10_03),
 *         so the chunk is written into the cache in place.
 * Fields  num_heads, head_dim, grid_h, grid_w, num_slots, chunk_frames (int32), rope_theta (float32, 10000).
 *
 * The library exports getCreators() / setLoggerFinder(), the entry points of
 * IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, trt.get_plugin_registry().load_library()).
 */
#pragma once

#include "kvCacheAttentionParams.h"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <string>
#include <vector>

#if NV_TENSORRT_MAJOR < 10
#error "The lipforce KVCacheAttention plugin needs TensorRT 10 or newer (IPluginV3)"
#endif

// IPluginV3OneBuildV2 (aliased plugin I/O) appeared in TensorRT 10.3. Older 10.x headers get the V1 build
// interface: the cache outputs are then separate buffers and enqueue copies the input caches into them first.
#if NV_TENSORRT_MAJOR > 10 || (NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR >= 3)
#define LIPFORCE_TRT_ALIASED_IO 1
#else
#define LIPFORCE_TRT_ALIASED_IO 0
#endif

namespace lipforce
{
namespace kvattn
{

#if LIPFORCE_TRT_ALIASED_IO
using PluginBuildInterface = nvinfer1::IPluginV3OneBuildV2;
#else
using PluginBuildInterface = nvinfer1::IPluginV3OneBuild;
#endif

class KVCacheAttentionPlugin final : public nvinfer1::IPluginV3,
                                     public nvinfer1::IPluginV3OneCore,
                                     public PluginBuildInterface,
                                     public nvinfer1::IPluginV3OneRuntime
{
public:
    //! Throws std::invalid_argument when the attributes are unusable (batch is ignored).
    explicit KVCacheAttentionPlugin(KVCacheAttentionParams const& params);
    KVCacheAttentionPlugin(KVCacheAttentionPlugin const& other);
    KVCacheAttentionPlugin& operator=(KVCacheAttentionPlugin const&) = delete;
    ~KVCacheAttentionPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild(V2)
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
#if LIPFORCE_TRT_ALIASED_IO
    int32_t getAliasedInput(int32_t outputIndex) noexcept override;
#endif

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    void buildSerialFields();

    KVCacheAttentionParams mParams;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialFC{};
};

class KVCacheAttentionPluginCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    KVCacheAttentionPluginCreator();
    ~KVCacheAttentionPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFC{};
};

//! Attributes from a field collection (TensorRT creator input). Ints may come as int8/16/32/64, rope_theta as
//! float32/64; unknown fields (e.g. plugin_version / plugin_namespace from the ONNX parser) are ignored.
//! Throws std::invalid_argument naming a missing or malformed field.
KVCacheAttentionParams paramsFromFields(nvinfer1::PluginFieldCollection const* fc);

} // namespace kvattn
} // namespace lipforce
