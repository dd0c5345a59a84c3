/*
 * lipforce: TensorRT adapter (IPluginV3) of the KV-cache attention op, and the library entry points.
 *
 * Every noexcept entry point catches and reports; no exception crosses into TensorRT. Errors go to the
 * TensorRT logger handed over by setLoggerFinder (stderr when there is none).
 */
#include "kvCacheAttentionPlugin.h"

#include "kvCacheAttentionKernel.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <sstream>
#include <stdexcept>

using namespace nvinfer1;

namespace lipforce
{
namespace kvattn
{
namespace
{

// ---- error reporting ----------------------------------------------------------------------------------------

std::mutex gLoggerMutex;
ILoggerFinder* gLoggerFinder{nullptr};

void report(ILogger::Severity severity, std::string const& msg) noexcept
{
    try
    {
        std::string const text = std::string(kPLUGIN_NAMESPACE) + "::" + kPLUGIN_NAME + ": " + msg;
        ILogger* logger = nullptr;
        {
            std::lock_guard<std::mutex> lock(gLoggerMutex);
            if (gLoggerFinder != nullptr)
            {
                logger = gLoggerFinder->findLogger();
            }
        }
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else
        {
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    }
    catch (...)
    {
    }
}

void reportError(char const* where, std::string const& what) noexcept
{
    try
    {
        report(ILogger::Severity::kERROR, std::string(where) + ": " + what);
    }
    catch (...)
    {
    }
}

//! Runs `body` for a noexcept entry point; an exception is reported and `onError` returned.
template <typename R, typename F>
R guarded(char const* where, R onError, F&& body) noexcept
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        reportError(where, e.what());
    }
    catch (...)
    {
        reportError(where, "unknown exception");
    }
    return onError;
}

// ---- shapes -------------------------------------------------------------------------------------------------

std::string dimsToString(Dims const& d)
{
    std::ostringstream s;
    s << "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
        s << (i ? ", " : "") << d.d[i];
    s << "]";
    return s.str();
}

//! Checks the input dims against the attributes; -1 (unknown at build time) matches anything.
//! Returns an empty string when consistent.
std::string checkInputDims(KVCacheAttentionParams const& p, Dims const* in)
{
    static char const* const kNames[kNB_INPUTS]
        = {"q", "k", "v", "k_cache", "v_cache", "write_idx", "q_pos", "k_pos", "k_valid"};
    int64_t const Lc = p.chunkTokens();
    int64_t const T = p.cacheTokens();
    int64_t const expected[kNB_INPUTS][4] = {
        {-1, Lc, p.numHeads, p.headDim},
        {-1, Lc, p.numHeads, p.headDim},
        {-1, Lc, p.numHeads, p.headDim},
        {-1, T, p.numHeads, p.headDim},
        {-1, T, p.numHeads, p.headDim},
        {p.chunkFrames},
        {p.chunkFrames},
        {p.numSlots},
        {p.numSlots},
    };
    std::ostringstream err;
    int64_t batch = -1;
    for (int32_t i = 0; i < kNB_INPUTS; ++i)
    {
        int32_t const rank = i < kIN_WRITE_IDX ? 4 : 1;
        Dims const& d = in[i];
        if (d.nbDims != rank)
        {
            err << kNames[i] << " must have rank " << rank << ", got " << dimsToString(d) << ". ";
            continue;
        }
        for (int32_t j = 0; j < rank; ++j)
        {
            int64_t const want = expected[i][j];
            int64_t const got = d.d[j];
            if (got < 0)
                continue;
            if (rank == 4 && j == 0)
            {
                if (batch >= 0 && got != batch)
                    err << kNames[i] << " has batch " << got << " but q has " << batch << ". ";
                batch = got;
                continue;
            }
            if (want >= 0 && got != want)
            {
                err << kNames[i] << " dim " << j << " is " << got << " but the attributes give " << want << " ("
                    << kATTR_NUM_HEADS << "=" << p.numHeads << ", " << kATTR_HEAD_DIM << "=" << p.headDim << ", "
                    << kATTR_GRID_H << "*" << kATTR_GRID_W << "=" << p.tokensPerFrame() << ", "
                    << kATTR_CHUNK_FRAMES << "=" << p.chunkFrames << ", " << kATTR_NUM_SLOTS << "=" << p.numSlots
                    << "). ";
            }
        }
    }
    return err.str();
}

bool isFloatType(DataType t)
{
    return t == DataType::kHALF || t == DataType::kBF16;
}

// ---- fields -------------------------------------------------------------------------------------------------

int64_t readIntField(PluginField const& f)
{
    if (f.data == nullptr || f.length < 1)
        throw std::invalid_argument(std::string("field ") + f.name + " has no data");
    switch (f.type)
    {
    case PluginFieldType::kINT8: return *static_cast<int8_t const*>(f.data);
    case PluginFieldType::kINT16: return *static_cast<int16_t const*>(f.data);
    case PluginFieldType::kINT32: return *static_cast<int32_t const*>(f.data);
    case PluginFieldType::kINT64: return *static_cast<int64_t const*>(f.data);
    default: break;
    }
    throw std::invalid_argument(std::string("field ") + f.name + " must be an integer (int32), got PluginFieldType "
        + std::to_string(static_cast<int32_t>(f.type)));
}

double readFloatField(PluginField const& f)
{
    if (f.data == nullptr || f.length < 1)
        throw std::invalid_argument(std::string("field ") + f.name + " has no data");
    switch (f.type)
    {
    case PluginFieldType::kFLOAT32: return *static_cast<float const*>(f.data);
    case PluginFieldType::kFLOAT64: return *static_cast<double const*>(f.data);
    default: break;
    }
    throw std::invalid_argument(std::string("field ") + f.name + " must be float32, got PluginFieldType "
        + std::to_string(static_cast<int32_t>(f.type)));
}

int32_t toInt32(int64_t v, char const* name)
{
    if (v < INT32_MIN || v > INT32_MAX)
        throw std::invalid_argument(std::string("field ") + name + " = " + std::to_string(v) + " does not fit int32");
    return static_cast<int32_t>(v);
}

} // namespace

KVCacheAttentionParams paramsFromFields(PluginFieldCollection const* fc)
{
    if (fc == nullptr)
        throw std::invalid_argument("no plugin field collection given");
    KVCacheAttentionParams p;
    struct IntField
    {
        char const* name;
        int32_t* dst;
        bool seen;
    } ints[] = {
        {kATTR_NUM_HEADS, &p.numHeads, false},
        {kATTR_HEAD_DIM, &p.headDim, false},
        {kATTR_GRID_H, &p.gridH, false},
        {kATTR_GRID_W, &p.gridW, false},
        {kATTR_NUM_SLOTS, &p.numSlots, false},
        {kATTR_CHUNK_FRAMES, &p.chunkFrames, false},
    };
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        if (f.name == nullptr)
            continue;
        if (std::strcmp(f.name, kATTR_ROPE_THETA) == 0)
        {
            p.ropeTheta = static_cast<float>(readFloatField(f));
            continue;
        }
        for (auto& field : ints)
        {
            if (std::strcmp(f.name, field.name) == 0)
            {
                *field.dst = toInt32(readIntField(f), field.name);
                field.seen = true;
            }
        }
    }
    for (auto const& field : ints)
    {
        if (!field.seen)
            throw std::invalid_argument(std::string("required field ") + field.name + " is missing");
    }
    return p;
}

// ---- plugin -------------------------------------------------------------------------------------------------

KVCacheAttentionPlugin::KVCacheAttentionPlugin(KVCacheAttentionParams const& params)
    : mParams(params)
{
    mParams.batch = 1;
    mParams.validate();
    if (!kvCacheAttentionCudaSupports(mParams))
    {
        throw std::invalid_argument(std::string(kATTR_HEAD_DIM) + " = " + std::to_string(mParams.headDim)
            + " is not supported by the CUDA kernels (64 or 128)");
    }
    buildSerialFields();
}

KVCacheAttentionPlugin::KVCacheAttentionPlugin(KVCacheAttentionPlugin const& other)
    : mParams(other.mParams)
{
    buildSerialFields();
}

void KVCacheAttentionPlugin::buildSerialFields()
{
    mSerialFields.clear();
    mSerialFields.emplace_back(kATTR_NUM_HEADS, &mParams.numHeads, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kATTR_HEAD_DIM, &mParams.headDim, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kATTR_GRID_H, &mParams.gridH, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kATTR_GRID_W, &mParams.gridW, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kATTR_NUM_SLOTS, &mParams.numSlots, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kATTR_CHUNK_FRAMES, &mParams.chunkFrames, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kATTR_ROPE_THETA, &mParams.ropeTheta, PluginFieldType::kFLOAT32, 1);
    mSerialFC.nbFields = static_cast<int32_t>(mSerialFields.size());
    mSerialFC.fields = mSerialFields.data();
}

IPluginCapability* KVCacheAttentionPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<PluginBuildInterface*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    reportError("getCapabilityInterface", "unknown capability type " + std::to_string(static_cast<int32_t>(type)));
    return nullptr;
}

IPluginV3* KVCacheAttentionPlugin::clone() noexcept
{
    return guarded<IPluginV3*>("clone", nullptr, [&]() -> IPluginV3* { return new KVCacheAttentionPlugin(*this); });
}

char const* KVCacheAttentionPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* KVCacheAttentionPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* KVCacheAttentionPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

int32_t KVCacheAttentionPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t KVCacheAttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guarded<int32_t>("getOutputDataTypes", -1, [&]() -> int32_t {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
            throw std::invalid_argument("expected 9 inputs and 3 outputs, got " + std::to_string(nbInputs) + " and "
                + std::to_string(nbOutputs));
        outputTypes[kOUT] = inputTypes[kIN_Q];
        outputTypes[kOUT_K_CACHE] = inputTypes[kIN_K_CACHE];
        outputTypes[kOUT_V_CACHE] = inputTypes[kIN_V_CACHE];
        return 0;
    });
}

int32_t KVCacheAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    return guarded<int32_t>("getOutputShapes", -1, [&]() -> int32_t {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
            throw std::invalid_argument("expected 9 inputs and 3 outputs, got " + std::to_string(nbInputs) + " and "
                + std::to_string(nbOutputs));
        for (int32_t i : {kIN_Q, kIN_K_CACHE, kIN_V_CACHE})
        {
            if (inputs[i].nbDims != 4)
                throw std::invalid_argument(
                    "input " + std::to_string(i) + " must have rank 4, got rank " + std::to_string(inputs[i].nbDims));
        }
        outputs[kOUT] = inputs[kIN_Q];
        outputs[kOUT_K_CACHE] = inputs[kIN_K_CACHE];
        outputs[kOUT_V_CACHE] = inputs[kIN_V_CACHE];
        return 0;
    });
}

bool KVCacheAttentionPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return guarded<bool>("supportsFormatCombination", false, [&]() -> bool {
        if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
            || pos >= nbInputs + nbOutputs)
            return false;
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR)
            return false;
        if (pos >= kIN_WRITE_IDX && pos <= kIN_K_VALID)
            return desc.type == DataType::kINT32;
        if (pos == kIN_Q)
            return isFloatType(desc.type);
        // k, v, caches and all outputs: the type of q.
        return desc.type == inOut[kIN_Q].desc.type;
    });
}

int32_t KVCacheAttentionPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guarded<int32_t>("configurePlugin", -1, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
            throw std::invalid_argument("expected 9 inputs and 3 outputs, got " + std::to_string(nbInputs) + " and "
                + std::to_string(nbOutputs));
        Dims dims[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
            dims[i] = in[i].desc.dims;
        std::string const err = checkInputDims(mParams, dims);
        if (!err.empty())
            throw std::invalid_argument(err);
        return 0;
    });
}

size_t KVCacheAttentionPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return guarded<size_t>("getWorkspaceSize", 0, [&]() -> size_t { return kvCacheAttentionWorkspaceSize(mParams); });
}

#if LIPFORCE_TRT_ALIASED_IO
int32_t KVCacheAttentionPlugin::getAliasedInput(int32_t outputIndex) noexcept
{
    switch (outputIndex)
    {
    case kOUT_K_CACHE: return kIN_K_CACHE;
    case kOUT_V_CACHE: return kIN_V_CACHE;
    default: return -1;
    }
}
#endif

int32_t KVCacheAttentionPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guarded<int32_t>("onShapeChange", -1, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
            throw std::invalid_argument("expected 9 inputs and 3 outputs, got " + std::to_string(nbInputs) + " and "
                + std::to_string(nbOutputs));
        Dims dims[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
            dims[i] = in[i].dims;
        std::string const err = checkInputDims(mParams, dims);
        if (!err.empty())
            throw std::invalid_argument(err);
        if (dims[kIN_Q].d[0] < 1)
            throw std::invalid_argument("batch must be >= 1, got " + dimsToString(dims[kIN_Q]));
        mParams.batch = static_cast<int32_t>(dims[kIN_Q].d[0]);
        return 0;
    });
}

int32_t KVCacheAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    return guarded<int32_t>("enqueue", -1, [&]() -> int32_t {
        if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
            throw std::invalid_argument("null tensor descriptors or pointers");
        KVCacheAttentionParams p = mParams;
        p.batch = static_cast<int32_t>(inputDesc[kIN_Q].dims.d[0]);
        size_t const workspaceSize = kvCacheAttentionWorkspaceSize(p);
        auto const* writeIdx = static_cast<int32_t const*>(inputs[kIN_WRITE_IDX]);
        auto const* qPos = static_cast<int32_t const*>(inputs[kIN_Q_POS]);
        auto const* kPos = static_cast<int32_t const*>(inputs[kIN_K_POS]);
        auto const* kValid = static_cast<int32_t const*>(inputs[kIN_K_VALID]);
        cudaError_t err = cudaErrorInvalidValue;
        switch (inputDesc[kIN_Q].type)
        {
        case DataType::kHALF:
        {
            using T = __half;
            err = kvCacheAttentionImpl<T>(stream, p, static_cast<T const*>(inputs[kIN_Q]),
                static_cast<T const*>(inputs[kIN_K]), static_cast<T const*>(inputs[kIN_V]),
                static_cast<T const*>(inputs[kIN_K_CACHE]), static_cast<T const*>(inputs[kIN_V_CACHE]),
                static_cast<T*>(outputs[kOUT_K_CACHE]), static_cast<T*>(outputs[kOUT_V_CACHE]), writeIdx, qPos, kPos,
                kValid, static_cast<T*>(outputs[kOUT]), workspace, workspaceSize);
            break;
        }
        case DataType::kBF16:
        {
            using T = __nv_bfloat16;
            err = kvCacheAttentionImpl<T>(stream, p, static_cast<T const*>(inputs[kIN_Q]),
                static_cast<T const*>(inputs[kIN_K]), static_cast<T const*>(inputs[kIN_V]),
                static_cast<T const*>(inputs[kIN_K_CACHE]), static_cast<T const*>(inputs[kIN_V_CACHE]),
                static_cast<T*>(outputs[kOUT_K_CACHE]), static_cast<T*>(outputs[kOUT_V_CACHE]), writeIdx, qPos, kPos,
                kValid, static_cast<T*>(outputs[kOUT]), workspace, workspaceSize);
            break;
        }
        default:
            throw std::invalid_argument("unsupported data type " + std::to_string(static_cast<int32_t>(inputDesc[kIN_Q].type))
                + " (fp16 or bf16 only)");
        }
        if (err != cudaSuccess)
            throw std::runtime_error(std::string("CUDA launch failed: ") + cudaGetErrorName(err) + ": "
                + cudaGetErrorString(err));
        return 0;
    });
}

IPluginV3* KVCacheAttentionPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* KVCacheAttentionPlugin::getFieldsToSerialize() noexcept
{
    return &mSerialFC;
}

// ---- creator ------------------------------------------------------------------------------------------------

KVCacheAttentionPluginCreator::KVCacheAttentionPluginCreator()
{
    mFields.emplace_back(kATTR_NUM_HEADS, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kATTR_HEAD_DIM, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kATTR_GRID_H, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kATTR_GRID_W, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kATTR_NUM_SLOTS, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kATTR_CHUNK_FRAMES, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kATTR_ROPE_THETA, nullptr, PluginFieldType::kFLOAT32, 1);
    mFC.nbFields = static_cast<int32_t>(mFields.size());
    mFC.fields = mFields.data();
}

char const* KVCacheAttentionPluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* KVCacheAttentionPluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* KVCacheAttentionPluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* KVCacheAttentionPluginCreator::getFieldNames() noexcept
{
    return &mFC;
}

IPluginV3* KVCacheAttentionPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    return guarded<IPluginV3*>("createPlugin", nullptr, [&]() -> IPluginV3* {
        try
        {
            return new KVCacheAttentionPlugin(paramsFromFields(fc));
        }
        catch (std::invalid_argument const& e)
        {
            throw std::invalid_argument(std::string("layer ") + (name ? name : "(unnamed)") + ": " + e.what());
        }
    });
}

} // namespace kvattn
} // namespace lipforce

// ---- library entry points (IPluginRegistry::loadLibrary) ----------------------------------------------------

#define LIPFORCE_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

LIPFORCE_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    std::lock_guard<std::mutex> lock(lipforce::kvattn::gLoggerMutex);
    if (finder != nullptr)
    {
        lipforce::kvattn::gLoggerFinder = finder;
    }
}

LIPFORCE_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    try
    {
        static lipforce::kvattn::KVCacheAttentionPluginCreator sKVCacheAttentionCreator;
        static nvinfer1::IPluginCreatorInterface* const sCreators[] = {&sKVCacheAttentionCreator};
        nbCreators = 1;
        return sCreators;
    }
    catch (std::exception const& e)
    {
        lipforce::kvattn::reportError("getCreators", e.what());
    }
    catch (...)
    {
        lipforce::kvattn::reportError("getCreators", "unknown exception");
    }
    nbCreators = 0;
    return nullptr;
}
