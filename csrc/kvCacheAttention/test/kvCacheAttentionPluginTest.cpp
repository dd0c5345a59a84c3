/*
 * lipforce: host-side checks of the KVCacheAttention TensorRT adapter.
 *
 * Goes through the library's exported getCreators() only, like TensorRT's loadLibrary does. Needs neither a
 * GPU nor libnvinfer: creator fields, plugin creation and its errors, capabilities, formats, output types and
 * shapes, aliasing, dims checks, serialization round trip, and that errors are reported through the logger
 * rather than thrown. Exit code 0 when all checks pass.
 */
#include "kvCacheAttentionParams.h"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;
namespace kv = lipforce::kvattn;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(ILoggerFinder* finder);

namespace
{

int gFailures = 0;

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);                                    \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

class CaptureLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kERROR)
            messages.emplace_back(msg);
    }
    bool any(char const* needle) const
    {
        for (auto const& m : messages)
            if (m.find(needle) != std::string::npos)
                return true;
        return false;
    }
    std::vector<std::string> messages;
};

class Finder : public ILoggerFinder
{
public:
    explicit Finder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() noexcept override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

struct Fields
{
    int32_t numHeads{2}, headDim{64}, gridH{8}, gridW{8}, numSlots{8}, chunkFrames{1};
    float ropeTheta{10000.0F};
    std::vector<PluginField> list;
    PluginFieldCollection fc{};

    PluginFieldCollection const* collection()
    {
        list = {
            {kv::kATTR_NUM_HEADS, &numHeads, PluginFieldType::kINT32, 1},
            {kv::kATTR_HEAD_DIM, &headDim, PluginFieldType::kINT32, 1},
            {kv::kATTR_GRID_H, &gridH, PluginFieldType::kINT32, 1},
            {kv::kATTR_GRID_W, &gridW, PluginFieldType::kINT32, 1},
            {kv::kATTR_NUM_SLOTS, &numSlots, PluginFieldType::kINT32, 1},
            {kv::kATTR_CHUNK_FRAMES, &chunkFrames, PluginFieldType::kINT32, 1},
            {kv::kATTR_ROPE_THETA, &ropeTheta, PluginFieldType::kFLOAT32, 1},
        };
        fc.nbFields = static_cast<int32_t>(list.size());
        fc.fields = list.data();
        return &fc;
    }
};

Dims dims(std::vector<int64_t> const& d)
{
    Dims r{};
    r.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
        r.d[i] = d[i];
    return r;
}

//! Descriptors of the 9 inputs and 3 outputs for the tiny shapes (H=2, D=64, N=64, C=1, M=8).
std::vector<DynamicPluginTensorDesc> descs(DataType floatType, int64_t batch, int64_t heads = 2)
{
    std::vector<Dims> const shapes = {
        dims({batch, 64, heads, 64}), dims({batch, 64, heads, 64}), dims({batch, 64, heads, 64}),
        dims({batch, 512, heads, 64}), dims({batch, 512, heads, 64}), dims({1}), dims({1}), dims({8}), dims({8}),
        dims({batch, 64, heads, 64}), dims({batch, 512, heads, 64}), dims({batch, 512, heads, 64})};
    std::vector<DynamicPluginTensorDesc> r(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i)
    {
        r[i].desc.dims = shapes[i];
        r[i].desc.type = (i >= 5 && i <= 8) ? DataType::kINT32 : floatType;
        r[i].desc.format = TensorFormat::kLINEAR;
        r[i].desc.scale = -1.0F;
        r[i].min = r[i].max = r[i].opt = shapes[i];
    }
    return r;
}

struct PluginDeleter
{
    void operator()(IPluginV3* p) const
    {
        delete p;
    }
};
using PluginPtr = std::unique_ptr<IPluginV3, PluginDeleter>;

} // namespace

int main()
{
    CaptureLogger logger;
    Finder finder(&logger);
    setLoggerFinder(&finder);

    // ---- creator
    int32_t nbCreators = 0;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    CHECK(nbCreators == 1 && creators != nullptr);
    if (nbCreators != 1 || creators == nullptr)
        return 1;
    CHECK(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    CHECK(std::strcmp(creator->getPluginName(), kv::kPLUGIN_NAME) == 0);
    CHECK(std::strcmp(creator->getPluginVersion(), kv::kPLUGIN_VERSION) == 0);
    CHECK(std::strcmp(creator->getPluginNamespace(), kv::kPLUGIN_NAMESPACE) == 0);

    PluginFieldCollection const* names = creator->getFieldNames();
    char const* const expectedNames[] = {kv::kATTR_NUM_HEADS, kv::kATTR_HEAD_DIM, kv::kATTR_GRID_H, kv::kATTR_GRID_W,
        kv::kATTR_NUM_SLOTS, kv::kATTR_CHUNK_FRAMES, kv::kATTR_ROPE_THETA};
    CHECK(names != nullptr && names->nbFields == 7);
    for (int32_t i = 0; names != nullptr && i < names->nbFields && i < 7; ++i)
    {
        CHECK(std::strcmp(names->fields[i].name, expectedNames[i]) == 0);
        CHECK(names->fields[i].type == (i == 6 ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32));
    }

    // ---- creation errors are reported, not thrown
    {
        Fields f;
        f.headDim = 96;
        CHECK(creator->createPlugin("bad_head_dim", f.collection(), TensorRTPhase::kBUILD) == nullptr);
        CHECK(logger.any("head_dim = 96"));
        Fields g;
        g.chunkFrames = 9;
        CHECK(creator->createPlugin("bad_chunk", g.collection(), TensorRTPhase::kBUILD) == nullptr);
        CHECK(logger.any("chunk_frames must be in [1, num_slots=8], got 9"));
        Fields h;
        h.collection();
        h.list.erase(h.list.begin() + 1); // drop head_dim
        h.fc.nbFields = static_cast<int32_t>(h.list.size());
        h.fc.fields = h.list.data();
        CHECK(creator->createPlugin("missing", &h.fc, TensorRTPhase::kBUILD) == nullptr);
        CHECK(logger.any("required field head_dim is missing"));
        CHECK(creator->createPlugin("null", nullptr, TensorRTPhase::kBUILD) == nullptr);
    }

    // ---- ONNX-parser style fields: int64 ints, extra string fields, no rope_theta (default)
    {
        int64_t const i64[] = {2, 64, 8, 8, 8, 1};
        char const version[] = "1";
        char const ns[] = "lipforce";
        std::vector<PluginField> list = {
            {kv::kATTR_NUM_HEADS, &i64[0], PluginFieldType::kINT64, 1},
            {kv::kATTR_HEAD_DIM, &i64[1], PluginFieldType::kINT64, 1},
            {kv::kATTR_GRID_H, &i64[2], PluginFieldType::kINT64, 1},
            {kv::kATTR_GRID_W, &i64[3], PluginFieldType::kINT64, 1},
            {kv::kATTR_NUM_SLOTS, &i64[4], PluginFieldType::kINT64, 1},
            {kv::kATTR_CHUNK_FRAMES, &i64[5], PluginFieldType::kINT64, 1},
            {"plugin_version", version, PluginFieldType::kCHAR, 1},
            {"plugin_namespace", ns, PluginFieldType::kCHAR, 8},
        };
        PluginFieldCollection fc{static_cast<int32_t>(list.size()), list.data()};
        PluginPtr p(creator->createPlugin("parser_style", &fc, TensorRTPhase::kBUILD));
        CHECK(p != nullptr);
        if (p)
        {
            auto* rt = static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
            PluginFieldCollection const* ser = rt->getFieldsToSerialize();
            CHECK(ser != nullptr && ser->nbFields == 7);
            if (ser != nullptr && ser->nbFields == 7)
                CHECK(*static_cast<float const*>(ser->fields[6].data) == kv::kDEFAULT_ROPE_THETA);
        }
    }

    // ---- a good plugin
    Fields f;
    f.ropeTheta = 5000.0F;
    PluginPtr plugin(creator->createPlugin("kvattn", f.collection(), TensorRTPhase::kBUILD));
    CHECK(plugin != nullptr);
    if (!plugin)
        return 1;

    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(core != nullptr && build != nullptr && runtime != nullptr);
    CHECK(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0);
    CHECK(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0);
    CHECK(std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0);
    CHECK(std::strcmp(core->getPluginName(), kv::kPLUGIN_NAME) == 0);
    CHECK(std::strcmp(core->getPluginNamespace(), kv::kPLUGIN_NAMESPACE) == 0);
    CHECK(build->getNbOutputs() == 3);

#if NV_TENSORRT_MAJOR > 10 || (NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR >= 3)
    // Aliased I/O: the build capability is V2 and maps the cache outputs onto the cache inputs.
    CHECK(build->getInterfaceInfo().major == 2);
    auto* buildV2 = static_cast<IPluginV3OneBuildV2*>(build);
    CHECK(buildV2->getAliasedInput(0) == -1);
    CHECK(buildV2->getAliasedInput(1) == 3);
    CHECK(buildV2->getAliasedInput(2) == 4);
#else
    CHECK(build->getInterfaceInfo().major == 1);
#endif

    // ---- formats
    for (DataType t : {DataType::kHALF, DataType::kBF16})
    {
        auto d = descs(t, 1);
        for (int32_t pos = 0; pos < 12; ++pos)
            CHECK(build->supportsFormatCombination(pos, d.data(), 9, 3));
    }
    {
        auto d = descs(DataType::kFLOAT, 1);
        CHECK(!build->supportsFormatCombination(0, d.data(), 9, 3)); // fp32 q
        auto h = descs(DataType::kHALF, 1);
        h[2].desc.type = DataType::kBF16;
        CHECK(!build->supportsFormatCombination(2, h.data(), 9, 3)); // v type differs from q
        h[5].desc.type = DataType::kINT64;
        CHECK(!build->supportsFormatCombination(5, h.data(), 9, 3)); // write_idx not int32
        h[9].desc.format = TensorFormat::kHWC8;
        CHECK(!build->supportsFormatCombination(9, h.data(), 9, 3)); // not linear
        CHECK(!build->supportsFormatCombination(12, h.data(), 9, 3));
        CHECK(!build->supportsFormatCombination(0, h.data(), 8, 3));
    }

    // ---- output types and shapes
    {
        DataType in[9];
        for (int i = 0; i < 9; ++i)
            in[i] = (i >= 5) ? DataType::kINT32 : DataType::kBF16;
        DataType out[3]{};
        CHECK(build->getOutputDataTypes(out, 3, in, 9) == 0);
        CHECK(out[0] == DataType::kBF16 && out[1] == DataType::kBF16 && out[2] == DataType::kBF16);
        CHECK(build->getOutputDataTypes(out, 2, in, 9) != 0);

        // The expressions are only copied, never evaluated: opaque, distinct addresses are enough.
        static char tokens[64];
        auto expr = [](int i) { return reinterpret_cast<IDimensionExpr const*>(tokens + i); };
        DimsExprs inputs[9];
        for (int i = 0; i < 9; ++i)
        {
            inputs[i].nbDims = i < 5 ? 4 : 1;
            for (int j = 0; j < inputs[i].nbDims; ++j)
                inputs[i].d[j] = expr(i * 4 + j);
        }
        DimsExprs outputs[3];
        struct NoBuilder : IExprBuilder
        {
        } noBuilder;
        CHECK(build->getOutputShapes(inputs, 9, nullptr, 0, outputs, 3, noBuilder) == 0);
        for (int j = 0; j < 4; ++j)
        {
            CHECK(outputs[0].d[j] == inputs[0].d[j]);
            CHECK(outputs[1].d[j] == inputs[3].d[j]);
            CHECK(outputs[2].d[j] == inputs[4].d[j]);
        }
        CHECK(outputs[0].nbDims == 4 && outputs[1].nbDims == 4 && outputs[2].nbDims == 4);
        inputs[3].nbDims = 3;
        CHECK(build->getOutputShapes(inputs, 9, nullptr, 0, outputs, 3, noBuilder) != 0);
    }

    // ---- configure / shape checks
    {
        auto d = descs(DataType::kHALF, 2);
        CHECK(build->configurePlugin(d.data(), 9, d.data() + 9, 3) == 0);
        auto dyn = descs(DataType::kHALF, -1); // dynamic batch at build time
        CHECK(build->configurePlugin(dyn.data(), 9, dyn.data() + 9, 3) == 0);
        auto wrongHeads = descs(DataType::kHALF, 1, 3);
        CHECK(build->configurePlugin(wrongHeads.data(), 9, wrongHeads.data() + 9, 3) != 0);
        CHECK(logger.any("q dim 2 is 3 but the attributes give 2"));

        PluginTensorDesc in[9];
        PluginTensorDesc out[3];
        for (int i = 0; i < 9; ++i)
            in[i] = d[i].desc;
        for (int i = 0; i < 3; ++i)
            out[i] = d[9 + i].desc;
        CHECK(runtime->onShapeChange(in, 9, out, 3) == 0);
        in[7].dims = dims({7}); // k_pos with the wrong number of slots
        CHECK(runtime->onShapeChange(in, 9, out, 3) != 0);
        CHECK(logger.any("k_pos dim 0 is 7"));
        CHECK(build->getWorkspaceSize(d.data(), 9, d.data() + 9, 3) > 0);
        CHECK(build->getWorkspaceSize(d.data(), 9, d.data() + 9, 3) % 256 == 0);

        // enqueue never throws: unsupported type and missing buffers come back as errors.
        for (int i = 0; i < 9; ++i)
            in[i] = d[i].desc;
        void const* inPtrs[9] = {};
        void* outPtrs[3] = {};
        in[0].type = DataType::kFLOAT;
        CHECK(runtime->enqueue(in, out, inPtrs, outPtrs, nullptr, nullptr) != 0);
        CHECK(logger.any("unsupported data type"));
        in[0].type = DataType::kHALF;
        CHECK(runtime->enqueue(in, out, inPtrs, outPtrs, nullptr, nullptr) != 0);
        CHECK(logger.any("CUDA launch failed"));
    }

    // ---- serialization round trip, clone, attach
    {
        PluginFieldCollection const* ser = runtime->getFieldsToSerialize();
        CHECK(ser != nullptr && ser->nbFields == 7);
        PluginPtr again(creator->createPlugin("kvattn", ser, TensorRTPhase::kRUNTIME));
        CHECK(again != nullptr);
        if (again)
        {
            auto* rt2 = static_cast<IPluginV3OneRuntime*>(again->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
            PluginFieldCollection const* ser2 = rt2->getFieldsToSerialize();
            CHECK(ser2->nbFields == ser->nbFields);
            for (int32_t i = 0; i < ser->nbFields && i < ser2->nbFields; ++i)
            {
                CHECK(std::strcmp(ser->fields[i].name, ser2->fields[i].name) == 0);
                CHECK(ser->fields[i].type == ser2->fields[i].type);
                CHECK(std::memcmp(ser->fields[i].data, ser2->fields[i].data, 4) == 0);
            }
            CHECK(*static_cast<float const*>(ser2->fields[6].data) == 5000.0F);
        }
        PluginPtr cloned(plugin->clone());
        CHECK(cloned != nullptr && cloned.get() != plugin.get());
        PluginPtr attached(runtime->attachToContext(nullptr));
        CHECK(attached != nullptr);
    }

    if (gFailures == 0)
    {
        std::printf("kvCacheAttentionPluginTest: all checks passed (TensorRT %d.%d headers)\n", NV_TENSORRT_MAJOR,
            NV_TENSORRT_MINOR);
        return 0;
    }
    std::fprintf(stderr, "kvCacheAttentionPluginTest: %d check(s) failed\n", gFailures);
    return 1;
}
