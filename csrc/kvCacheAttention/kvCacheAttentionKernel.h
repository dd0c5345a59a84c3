/*
 * lipforce: CUDA launcher of the KV-cache attention op.
 *
 * The TensorRT plugin's enqueue only picks T; the Python bindings and tests call this launcher directly.
 */
#pragma once

#include "kvCacheAttentionParams.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace lipforce
{
namespace kvattn
{

//! Head dims the CUDA kernels are compiled for.
constexpr int32_t kCUDA_HEAD_DIMS[] = {64, 128};

//! True when kvCacheAttentionImpl supports these sizes (params valid and head dim compiled).
bool kvCacheAttentionCudaSupports(KVCacheAttentionParams const& params);

//! Bytes of device workspace kvCacheAttentionImpl needs (cos/sin RoPE tables). Depends only on the
//! attributes (not on the batch), so a TensorRT plugin can report it at build time.
size_t kvCacheAttentionWorkspaceSize(KVCacheAttentionParams const& params);

//! Enqueues the op on `stream` (T = __half or __nv_bfloat16; fp32 softmax and accumulation):
//!   1. if kCacheOut != kCacheIn (not aliased), copy the input cache to the output cache (same for v);
//!   2. write k, v into the output caches at slots writeIdx (in place);
//!   3. build the RoPE cos/sin tables (fp64 angles) in `workspace`;
//!   4. flash-style attention of q over the valid slots of the output caches, RoPE applied on the fly.
//!
//! All pointers are device pointers to dense row-major tensors (shapes in KVCacheAttentionParams); the
//! float tensors must be 16-byte aligned. writeIdx entries outside [0, M) are skipped (no write); entries
//! must be distinct. Returns cudaErrorInvalidValue for unsupported sizes or a short workspace,
//! cudaErrorMisalignedAddress for misaligned tensors, else the first CUDA error of the launches.
//! Does not synchronize.
template <typename T>
cudaError_t kvCacheAttentionImpl(cudaStream_t stream, KVCacheAttentionParams const& params,
    T const* q,              // [B, Lc, H, D]
    T const* k,              // [B, Lc, H, D]
    T const* v,              // [B, Lc, H, D]
    T const* kCacheIn,       // [B, T, H, D]
    T const* vCacheIn,       // [B, T, H, D]
    T* kCacheOut,            // [B, T, H, D], may equal kCacheIn
    T* vCacheOut,            // [B, T, H, D], may equal vCacheIn
    int32_t const* writeIdx, // [C]
    int32_t const* qPos,     // [C]
    int32_t const* kPos,     // [M]
    int32_t const* kValid,   // [M]
    T* out,                  // [B, Lc, H, D]
    void* workspace, size_t workspaceSize);

extern template cudaError_t kvCacheAttentionImpl<__half>(cudaStream_t, KVCacheAttentionParams const&,
    __half const*, __half const*, __half const*, __half const*, __half const*, __half*, __half*, int32_t const*,
    int32_t const*, int32_t const*, int32_t const*, __half*, void*, size_t);
extern template cudaError_t kvCacheAttentionImpl<__nv_bfloat16>(cudaStream_t, KVCacheAttentionParams const&,
    __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*,
    __nv_bfloat16*, __nv_bfloat16*, int32_t const*, int32_t const*, int32_t const*, int32_t const*,
    __nv_bfloat16*, void*, size_t);

} // namespace kvattn
} // namespace lipforce
