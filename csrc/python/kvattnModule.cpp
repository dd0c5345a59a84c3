/*
 * lipforce: Python bindings of the KV-cache attention op (module lipforce_sdk._kvattn).
 *
 *  kv_cache_attention(...)       the C++ CPU reference on NumPy float32 arrays (caches updated in place)
 *  cuda_compiled                 whether the CUDA kernels were built into this module
 *  kv_cache_attention_cuda(...)  (CUDA builds) the launcher on raw device pointers, for torch / cupy tensors
 *  cuda_workspace_size(...)      (CUDA builds) workspace bytes the launcher needs
 */
#include "kvCacheAttentionParams.h"
#include "kvCacheAttentionRef.h"
#if LIPFORCE_WITH_CUDA
#include "kvCacheAttentionKernel.h"
#endif

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sstream>
#include <string>
#include <vector>

namespace py = pybind11;
using lipforce::kvattn::KVCacheAttentionParams;

namespace
{

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using IntArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

std::string shapeOf(py::array const& a)
{
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        s << (i ? ", " : "") << a.shape(i);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

//! A cache must be updated in place, so it is taken as it is: float32, C-contiguous, writeable.
py::array inPlaceCache(py::object obj, char const* name)
{
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray (it is updated in place)");
    py::array a = obj.cast<py::array>();
    if (!py::isinstance<py::array_t<float, 0>>(a))
        throw py::type_error(std::string(name) + " must be float32 (it is updated in place), got dtype "
            + std::string(py::str(a.dtype())) + "; convert it with .astype(np.float32) first");
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous (it is updated in place); use "
            "np.ascontiguousarray first");
    if (!a.writeable())
        throw py::value_error(std::string(name) + " must be writeable (it is updated in place)");
    return a;
}

// Fills the parameters and checks them; errors are reported as ValueError prefixed with `who`.
KVCacheAttentionParams checkedParams(char const* who, int32_t batch, int32_t numHeads, int32_t headDim, int32_t gridH,
    int32_t gridW, int32_t numSlots, int32_t chunkFrames, float ropeTheta)
{
    KVCacheAttentionParams p;
    p.batch = batch;
    p.numHeads = numHeads;
    p.headDim = headDim;
    p.gridH = gridH;
    p.gridW = gridW;
    p.numSlots = numSlots;
    p.chunkFrames = chunkFrames;
    p.ropeTheta = ropeTheta;
    std::string const err = p.check();
    if (!err.empty())
        throw py::value_error(std::string(who) + ": " + err);
    return p;
}

KVCacheAttentionParams paramsFromShapes(py::array const& q, py::array const& kCache, int32_t chunkFrames,
    int32_t numSlots, int32_t gridH, int32_t gridW, float ropeTheta)
{
    if (q.ndim() != 4)
        throw py::value_error("q must be [B, Lc, H, D], got shape " + shapeOf(q));
    if (kCache.ndim() != 4)
        throw py::value_error("k_cache must be [B, T, H, D], got shape " + shapeOf(kCache));
    KVCacheAttentionParams const p = checkedParams("kv_cache_attention", static_cast<int32_t>(q.shape(0)),
        static_cast<int32_t>(q.shape(2)), static_cast<int32_t>(q.shape(3)), gridH, gridW, numSlots, chunkFrames,
        ropeTheta);
    if (q.shape(1) != p.chunkTokens())
    {
        std::ostringstream m;
        m << "q has " << q.shape(1) << " tokens but chunk_frames (len(write_idx)=" << chunkFrames
          << ") * grid_h * grid_w (" << gridH << "*" << gridW << ") = " << p.chunkTokens();
        throw py::value_error(m.str());
    }
    std::vector<py::ssize_t> const cacheShape{p.batch, static_cast<py::ssize_t>(p.cacheTokens()), p.numHeads, p.headDim};
    for (int i = 0; i < 4; ++i)
    {
        if (kCache.shape(i) != cacheShape[i])
        {
            std::ostringstream m;
            m << "k_cache must be [B, num_slots*grid_h*grid_w, H, D] = [" << cacheShape[0] << ", " << cacheShape[1]
              << ", " << cacheShape[2] << ", " << cacheShape[3] << "] (num_slots = len(k_pos) = " << numSlots
              << "), got shape " << shapeOf(kCache);
            throw py::value_error(m.str());
        }
    }
    return p;
}

void requireShape(py::array const& a, py::array const& like, char const* name, char const* likeName)
{
    bool same = a.ndim() == like.ndim();
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i)
        same = a.shape(i) == like.shape(i);
    if (!same)
        throw py::value_error(std::string(name) + " must have the shape of " + likeName + " " + shapeOf(like)
            + ", got " + shapeOf(a));
}

py::array_t<float> kvCacheAttentionCpu(FloatArray q, FloatArray k, FloatArray v, py::object kCacheObj,
    py::object vCacheObj, IntArray writeIdx, IntArray qPos, IntArray kPos, IntArray kValid, int32_t gridH,
    int32_t gridW, float ropeTheta)
{
    py::array kCache = inPlaceCache(kCacheObj, "k_cache");
    py::array vCache = inPlaceCache(vCacheObj, "v_cache");
    if (writeIdx.ndim() != 1 || qPos.ndim() != 1 || kPos.ndim() != 1 || kValid.ndim() != 1)
        throw py::value_error("write_idx, q_pos, k_pos and k_valid must be 1-D");
    int32_t const chunkFrames = static_cast<int32_t>(writeIdx.shape(0));
    int32_t const numSlots = static_cast<int32_t>(kPos.shape(0));
    if (qPos.shape(0) != chunkFrames)
        throw py::value_error("q_pos must have len(write_idx)=" + std::to_string(chunkFrames) + " entries, got "
            + std::to_string(qPos.shape(0)));
    if (kValid.shape(0) != numSlots)
        throw py::value_error("k_valid must have len(k_pos)=" + std::to_string(numSlots) + " entries, got "
            + std::to_string(kValid.shape(0)));
    KVCacheAttentionParams const p = paramsFromShapes(q, kCache, chunkFrames, numSlots, gridH, gridW, ropeTheta);
    requireShape(k, q, "k", "q");
    requireShape(v, q, "v", "q");
    requireShape(vCache, kCache, "v_cache", "k_cache");
    std::string const idxErr = lipforce::kvattn::checkWriteIdx(writeIdx.data(), chunkFrames, numSlots);
    if (!idxErr.empty())
        throw py::value_error("kv_cache_attention: " + idxErr);

    py::array_t<float> out(std::vector<py::ssize_t>{q.shape(0), q.shape(1), q.shape(2), q.shape(3)});
    float* outPtr = out.mutable_data();
    float* kc = static_cast<float*>(kCache.mutable_data());
    float* vc = static_cast<float*>(vCache.mutable_data());
    {
        py::gil_scoped_release release;
        lipforce::kvattn::kvCacheAttentionRef(p, q.data(), k.data(), v.data(), kc, vc, writeIdx.data(), qPos.data(),
            kPos.data(), kValid.data(), outPtr);
    }
    return out;
}

#if LIPFORCE_WITH_CUDA
KVCacheAttentionParams cudaParams(int32_t batch, int32_t numHeads, int32_t headDim, int32_t gridH, int32_t gridW,
    int32_t numSlots, int32_t chunkFrames, float ropeTheta)
{
    KVCacheAttentionParams const p = checkedParams("kv_cache_attention_cuda", batch, numHeads, headDim, gridH, gridW,
        numSlots, chunkFrames, ropeTheta);
    if (!lipforce::kvattn::kvCacheAttentionCudaSupports(p))
        throw py::value_error("kv_cache_attention_cuda: head_dim " + std::to_string(headDim)
            + " is not compiled; the CUDA kernels support head_dim 64 and 128");
    return p;
}

template <typename T>
cudaError_t launch(KVCacheAttentionParams const& p, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t kCache,
    uintptr_t vCache, uintptr_t writeIdx, uintptr_t qPos, uintptr_t kPos, uintptr_t kValid, uintptr_t out,
    uintptr_t workspace, size_t workspaceSize, uintptr_t stream)
{
    return lipforce::kvattn::kvCacheAttentionImpl<T>(reinterpret_cast<cudaStream_t>(stream), p,
        reinterpret_cast<T const*>(q), reinterpret_cast<T const*>(k), reinterpret_cast<T const*>(v),
        reinterpret_cast<T const*>(kCache), reinterpret_cast<T const*>(vCache), reinterpret_cast<T*>(kCache),
        reinterpret_cast<T*>(vCache), reinterpret_cast<int32_t const*>(writeIdx),
        reinterpret_cast<int32_t const*>(qPos), reinterpret_cast<int32_t const*>(kPos),
        reinterpret_cast<int32_t const*>(kValid), reinterpret_cast<T*>(out), reinterpret_cast<void*>(workspace),
        workspaceSize);
}

void kvCacheAttentionCuda(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t kCache, uintptr_t vCache,
    uintptr_t writeIdx, uintptr_t qPos, uintptr_t kPos, uintptr_t kValid, uintptr_t out, uintptr_t workspace,
    size_t workspaceSize, int32_t batch, int32_t numHeads, int32_t headDim, int32_t gridH, int32_t gridW,
    int32_t numSlots, int32_t chunkFrames, float ropeTheta, std::string const& dtype, uintptr_t stream)
{
    KVCacheAttentionParams const p
        = cudaParams(batch, numHeads, headDim, gridH, gridW, numSlots, chunkFrames, ropeTheta);
    if (dtype != "float16" && dtype != "bfloat16")
        throw py::value_error("kv_cache_attention_cuda: dtype must be 'float16' or 'bfloat16', got '" + dtype + "'");
    cudaError_t err;
    {
        py::gil_scoped_release release;
        if (dtype == "float16")
            err = launch<__half>(p, q, k, v, kCache, vCache, writeIdx, qPos, kPos, kValid, out, workspace,
                workspaceSize, stream);
        else
            err = launch<__nv_bfloat16>(p, q, k, v, kCache, vCache, writeIdx, qPos, kPos, kValid, out, workspace,
                workspaceSize, stream);
    }
    if (err != cudaSuccess)
        throw std::runtime_error(std::string("kv_cache_attention_cuda failed: ") + cudaGetErrorName(err) + ": "
            + cudaGetErrorString(err));
}
#endif

} // namespace

PYBIND11_MODULE(_kvattn, m)
{
    m.doc() = "lipforce KV-cache attention: C++ CPU reference (and the CUDA launcher where compiled).";

    m.def("kv_cache_attention", &kvCacheAttentionCpu, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("k_cache"),
        py::arg("v_cache"), py::arg("write_idx"), py::arg("q_pos"), py::arg("k_pos"), py::arg("k_valid"),
        py::arg("grid_h"), py::arg("grid_w"), py::arg("rope_theta") = lipforce::kvattn::kDEFAULT_ROPE_THETA,
        "CPU reference (fp32). q, k, v: [B, Lc, H, D]; k_cache, v_cache: [B, T, H, D] float32, C-contiguous, "
        "updated in place; write_idx, q_pos: [C]; k_pos, k_valid: [M] (int32). Returns out [B, Lc, H, D].");

    namespace kv = lipforce::kvattn;
    m.attr("PLUGIN_NAME") = kv::kPLUGIN_NAME;
    m.attr("PLUGIN_VERSION") = kv::kPLUGIN_VERSION;
    m.attr("PLUGIN_NAMESPACE") = kv::kPLUGIN_NAMESPACE;
    m.attr("ATTRIBUTE_NAMES") = py::make_tuple(kv::kATTR_NUM_HEADS, kv::kATTR_HEAD_DIM, kv::kATTR_GRID_H,
        kv::kATTR_GRID_W, kv::kATTR_NUM_SLOTS, kv::kATTR_CHUNK_FRAMES, kv::kATTR_ROPE_THETA);

#if LIPFORCE_WITH_CUDA
    m.attr("cuda_compiled") = true;
    m.attr("CUDA_HEAD_DIMS") = py::make_tuple(kv::kCUDA_HEAD_DIMS[0], kv::kCUDA_HEAD_DIMS[1]);
    m.def(
        "cuda_workspace_size",
        [](int32_t numHeads, int32_t headDim, int32_t gridH, int32_t gridW, int32_t numSlots, int32_t chunkFrames) {
            return kv::kvCacheAttentionWorkspaceSize(
                cudaParams(1, numHeads, headDim, gridH, gridW, numSlots, chunkFrames, kv::kDEFAULT_ROPE_THETA));
        },
        py::arg("num_heads"), py::arg("head_dim"), py::arg("grid_h"), py::arg("grid_w"), py::arg("num_slots"),
        py::arg("chunk_frames"), "Bytes of device workspace kv_cache_attention_cuda needs.");
    m.def("kv_cache_attention_cuda", &kvCacheAttentionCuda, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("k_cache"), py::arg("v_cache"), py::arg("write_idx"), py::arg("q_pos"), py::arg("k_pos"),
        py::arg("k_valid"), py::arg("out"), py::arg("workspace"), py::arg("workspace_size"), py::arg("batch"),
        py::arg("num_heads"), py::arg("head_dim"), py::arg("grid_h"), py::arg("grid_w"), py::arg("num_slots"),
        py::arg("chunk_frames"), py::arg("rope_theta"), py::arg("dtype"), py::arg("stream"),
        "CUDA launcher on device pointers (ints, e.g. tensor.data_ptr()). Caches are written in place; dtype is "
        "'float16' or 'bfloat16'; stream is a cudaStream_t as int (0 = legacy default stream). Asynchronous.");
#else
    m.attr("cuda_compiled") = false;
#endif
}
