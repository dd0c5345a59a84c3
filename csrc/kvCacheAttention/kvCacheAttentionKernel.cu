/*
 * lipforce: CUDA launcher of the KV-cache attention op (kernels in kvCacheAttentionKernel.cuh).
 */
#include "kvCacheAttentionKernel.h"

#include "kvCacheAttentionKernel.cuh"

namespace lipforce
{
namespace kvattn
{
namespace
{

using namespace detail;

bool aligned16(void const* p)
{
    return (reinterpret_cast<uintptr_t>(p) % 16) == 0;
}

int32_t gridFor(int64_t work, int32_t threads)
{
    int64_t const blocks = (work + threads - 1) / threads;
    return static_cast<int32_t>(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

template <typename T, int D>
cudaError_t launchAttention(cudaStream_t stream, KVCacheAttentionParams const& p, AttnArgs<T> const& args)
{
    auto kernel = flashAttnKernel<T, D>;
    size_t const smemBytes = Smem<D>::kBytes;
    cudaError_t err
        = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smemBytes));
    if (err != cudaSuccess)
    {
        return err;
    }
    dim3 const grid(static_cast<unsigned>((p.chunkTokens() + kBLOCK_M - 1) / kBLOCK_M),
        static_cast<unsigned>(p.numHeads), static_cast<unsigned>(p.batch));
    kernel<<<grid, kTHREADS, smemBytes, stream>>>(args);
    return cudaGetLastError();
}

} // namespace

bool kvCacheAttentionCudaSupports(KVCacheAttentionParams const& params)
{
    if (!params.check().empty())
    {
        return false;
    }
    for (int32_t d : kCUDA_HEAD_DIMS)
    {
        if (d == params.headDim)
        {
            return params.numHeads <= 65535 && params.batch <= 65535
                && (params.chunkTokens() + kBLOCK_M - 1) / kBLOCK_M <= 0x7fffffff;
        }
    }
    return false;
}

size_t kvCacheAttentionWorkspaceSize(KVCacheAttentionParams const& params)
{
    RopeLayout const layout(params);
    size_t const bytes = static_cast<size_t>(layout.total) * sizeof(float2);
    return (bytes + 255) / 256 * 256;
}

template <typename T>
cudaError_t kvCacheAttentionImpl(cudaStream_t stream, KVCacheAttentionParams const& p, T const* q, T const* k,
    T const* v, T const* kCacheIn, T const* vCacheIn, T* kCacheOut, T* vCacheOut, int32_t const* writeIdx,
    int32_t const* qPos, int32_t const* kPos, int32_t const* kValid, T* out, void* workspace, size_t workspaceSize)
{
    if (!kvCacheAttentionCudaSupports(p))
    {
        return cudaErrorInvalidValue;
    }
    if (!q || !k || !v || !kCacheIn || !vCacheIn || !kCacheOut || !vCacheOut || !writeIdx || !qPos || !kPos
        || !kValid || !out || !workspace || workspaceSize < kvCacheAttentionWorkspaceSize(p))
    {
        return cudaErrorInvalidValue;
    }
    if (!aligned16(q) || !aligned16(k) || !aligned16(v) || !aligned16(kCacheIn) || !aligned16(vCacheIn)
        || !aligned16(kCacheOut) || !aligned16(vCacheOut) || !aligned16(out) || !aligned16(workspace))
    {
        return cudaErrorMisalignedAddress;
    }

    int64_t const rowElems = static_cast<int64_t>(p.numHeads) * p.headDim;
    int64_t const cacheElems = static_cast<int64_t>(p.batch) * p.cacheTokens() * rowElems;
    cudaError_t err = cudaSuccess;

    // 1. Not aliased: start the output caches from the input caches.
    if (kCacheOut != kCacheIn)
    {
        err = cudaMemcpyAsync(kCacheOut, kCacheIn, cacheElems * sizeof(T), cudaMemcpyDeviceToDevice, stream);
        if (err != cudaSuccess)
            return err;
    }
    if (vCacheOut != vCacheIn)
    {
        err = cudaMemcpyAsync(vCacheOut, vCacheIn, cacheElems * sizeof(T), cudaMemcpyDeviceToDevice, stream);
        if (err != cudaSuccess)
            return err;
    }

    // 2. Write the chunk into its slots (head rows are D * 2 bytes, D in {64, 128}: whole 16-byte vectors).
    {
        static_assert(sizeof(T) == 2, "16-bit types only");
        int64_t const rowVecs = rowElems * static_cast<int64_t>(sizeof(T)) / 16;
        int64_t const total = static_cast<int64_t>(p.batch) * p.chunkTokens() * rowVecs;
        constexpr int32_t kThreads = 256;
        cacheWriteKernel<uint4><<<gridFor(total, kThreads), kThreads, 0, stream>>>(
            reinterpret_cast<uint4 const*>(k), reinterpret_cast<uint4 const*>(v), reinterpret_cast<uint4*>(kCacheOut),
            reinterpret_cast<uint4*>(vCacheOut), writeIdx, rowVecs, p.tokensPerFrame(), p.chunkFrames,
            p.cacheTokens(), p.numSlots, total);
        err = cudaGetLastError();
        if (err != cudaSuccess)
            return err;
    }

    // 3. RoPE cos/sin tables.
    RopeLayout const layout(p);
    float2* rope = static_cast<float2*>(workspace);
    {
        constexpr int32_t kThreads = 128;
        ropeTableKernel<<<gridFor(layout.total, kThreads), kThreads, 0, stream>>>(rope, kPos, qPos, p.numSlots,
            p.chunkFrames, p.gridH, p.gridW, layout.nf, layout.nh, layout.nw, static_cast<double>(p.ropeTheta));
        err = cudaGetLastError();
        if (err != cudaSuccess)
            return err;
    }

    // 4. Attention over the updated caches.
    AttnArgs<T> const args = makeAttnArgs<T>(p, q, kCacheOut, vCacheOut, kValid, rope, out);

    switch (p.headDim)
    {
    case 64: return launchAttention<T, 64>(stream, p, args);
    case 128: return launchAttention<T, 128>(stream, p, args);
    default: return cudaErrorInvalidValue;
    }
}

template cudaError_t kvCacheAttentionImpl<__half>(cudaStream_t, KVCacheAttentionParams const&, __half const*,
    __half const*, __half const*, __half const*, __half const*, __half*, __half*, int32_t const*, int32_t const*,
    int32_t const*, int32_t const*, __half*, void*, size_t);
template cudaError_t kvCacheAttentionImpl<__nv_bfloat16>(cudaStream_t, KVCacheAttentionParams const&,
    __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*,
    __nv_bfloat16*, __nv_bfloat16*, int32_t const*, int32_t const*, int32_t const*, int32_t const*,
    __nv_bfloat16*, void*, size_t);

} // namespace kvattn
} // namespace lipforce
