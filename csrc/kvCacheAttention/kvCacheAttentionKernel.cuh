/*
 * lipforce: CUDA kernels of the KV-cache attention op (device code; the launcher is kvCacheAttentionKernel.cu).
 *
 *  - cacheWriteKernel: copies the chunk's K/V rows into their cache slots (16-byte vectors).
 *  - ropeTableKernel:  cos/sin of every RoPE angle the op needs (fp64 angles), a few KiB in the workspace.
 *  - flashAttnKernel:  one CTA = 64 queries of one (batch, head); 4 warps x 16 query rows. It streams the
 *    cache in tiles of 64 keys: RoPE is applied to Q once and to each K tile while loading it into shared
 *    memory; S = Q K^T and P V run on tensor cores (WMMA 16x16x16, fp32 accumulate); the softmax is the
 *    online (flash) one with fp32 running max/sum per row, so the score matrix never reaches global
 *    memory. Tiles whose keys are all masked (invalid slots) are skipped; masked keys load as zeros, so
 *    garbage (even NaN) in unused slots cannot leak into the output.
 *
 * Needs sm_80 or newer (bf16 WMMA). Kept apart from the launcher so that the kernels can also be compiled by
 * a host compiler against an emulation of the CUDA execution model (test/kvCacheAttentionKernelEmulation.cpp).
 */
#pragma once

#include "kvCacheAttentionParams.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <math.h>
#include <stdint.h>

namespace lipforce
{
namespace kvattn
{
namespace detail
{

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "lipforce KV-cache attention kernels need sm_80 or newer (bf16 tensor cores); check LIPFORCE_CUDA_ARCHITECTURES"
#endif

constexpr int kBLOCK_M = 64;  // queries per CTA
constexpr int kBLOCK_N = 64;  // keys per tile
constexpr int kWARPS = 4;     // each warp owns 16 query rows
constexpr int kTHREADS = kWARPS * 32;
constexpr int kWARP_ROWS = kBLOCK_M / kWARPS;
static_assert(kWARP_ROWS == 16, "one WMMA row block per warp");
static_assert(kBLOCK_N == 64, "the softmax maps two key columns to each lane");

// ---------------------------------------------------------------------------------------------------------
// dtype helpers

template <typename T>
__device__ __forceinline__ float toFloat(T x);
template <>
__device__ __forceinline__ float toFloat<__half>(__half x)
{
    return __half2float(x);
}
template <>
__device__ __forceinline__ float toFloat<__nv_bfloat16>(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float x);
template <>
__device__ __forceinline__ __half fromFloat<__half>(float x)
{
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

//! Eight 2-byte elements moved as one 16-byte vector.
template <typename T>
union Vec8
{
    uint4 raw;
    T e[8];
};

// ---------------------------------------------------------------------------------------------------------
// RoPE tables

//! Workspace layout (float2 = (cos, sin)):
//!   [M, nf]  frame axis at k_pos[m]      (cache slots)
//!   [C, nf]  frame axis at q_pos[c]      (chunk frames)
//!   [gh, nh] height axis at 0..grid_h-1
//!   [gw, nw] width axis at 0..grid_w-1
struct RopeLayout
{
    int32_t nf, nh, nw;             // pairs per axis
    int64_t frameK, frameQ, hh, ww; // offsets in float2
    int64_t total;                  // float2 entries

    explicit RopeLayout(KVCacheAttentionParams const& p)
    {
        nf = p.ropeDimFrame() / 2;
        nh = p.ropeDimHeight() / 2;
        nw = p.ropeDimWidth() / 2;
        frameK = 0;
        frameQ = frameK + static_cast<int64_t>(p.numSlots) * nf;
        hh = frameQ + static_cast<int64_t>(p.chunkFrames) * nf;
        ww = hh + static_cast<int64_t>(p.gridH) * nh;
        total = ww + static_cast<int64_t>(p.gridW) * nw;
    }
};

__global__ void ropeTableKernel(float2* __restrict__ table, int32_t const* __restrict__ kPos,
    int32_t const* __restrict__ qPos, int32_t numSlots, int32_t chunkFrames, int32_t gridH, int32_t gridW,
    int32_t nf, int32_t nh, int32_t nw, double theta)
{
    int64_t const framePairs = static_cast<int64_t>(numSlots + chunkFrames) * nf;
    int64_t const heightPairs = static_cast<int64_t>(gridH) * nh;
    int64_t const total = framePairs + heightPairs + static_cast<int64_t>(gridW) * nw;
    for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        double pos;
        int32_t i, axisPairs;
        if (idx < framePairs)
        {
            int64_t const row = idx / nf;
            i = static_cast<int32_t>(idx - row * nf);
            axisPairs = nf;
            pos = row < numSlots ? static_cast<double>(kPos[row]) : static_cast<double>(qPos[row - numSlots]);
        }
        else if (idx < framePairs + heightPairs)
        {
            int64_t const local = idx - framePairs;
            int64_t const row = local / nh;
            i = static_cast<int32_t>(local - row * nh);
            axisPairs = nh;
            pos = static_cast<double>(row);
        }
        else
        {
            int64_t const local = idx - framePairs - heightPairs;
            int64_t const row = local / nw;
            i = static_cast<int32_t>(local - row * nw);
            axisPairs = nw;
            pos = static_cast<double>(row);
        }
        // inv_freq = theta ** (-(2 i) / d_axis), d_axis = 2 * axisPairs
        double const invFreq = pow(theta, -static_cast<double>(2 * i) / static_cast<double>(2 * axisPairs));
        double s, c;
        sincos(pos * invFreq, &s, &c);
        table[idx] = make_float2(static_cast<float>(c), static_cast<float>(s));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Cache write

//! Copies k/v rows (one token = rowVecs vectors) of chunk frame c to cache slot writeIdx[c].
template <typename V>
__global__ void cacheWriteKernel(V const* __restrict__ k, V const* __restrict__ v, V* __restrict__ kCache,
    V* __restrict__ vCache, int32_t const* __restrict__ writeIdx, int64_t rowVecs, int64_t tokensPerFrame,
    int64_t chunkFrames, int64_t cacheTokens, int32_t numSlots, int64_t total)
{
    for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        int64_t const row = idx / rowVecs; // b * Lc + c * N + n
        int64_t const e = idx - row * rowVecs;
        int64_t const bc = row / tokensPerFrame;
        int64_t const n = row - bc * tokensPerFrame;
        int64_t const b = bc / chunkFrames;
        int64_t const c = bc - b * chunkFrames;
        int32_t const slot = writeIdx[c];
        if (slot < 0 || slot >= numSlots)
        {
            continue;
        }
        int64_t const dst = (b * cacheTokens + static_cast<int64_t>(slot) * tokensPerFrame + n) * rowVecs + e;
        kCache[dst] = k[idx];
        vCache[dst] = v[idx];
    }
}

// ---------------------------------------------------------------------------------------------------------
// Attention

template <typename T>
struct AttnArgs
{
    T const* q;        // [B, Lc, H, D]
    T const* kCache;   // [B, T, H, D] (after the write)
    T const* vCache;   // [B, T, H, D]
    int32_t const* kValid; // [M]
    float2 const* rope;    // RopeLayout
    T* out;            // [B, Lc, H, D]
    int64_t chunkTokens;   // Lc
    int64_t cacheTokens;   // T
    int32_t tokensPerFrame; // N
    int32_t gridW;
    int32_t numHeads;
    int32_t nf, nh;        // RoPE pairs of the frame and height axes
    int64_t ropeFrameK, ropeFrameQ, ropeH, ropeW;
    int32_t nw;
    float scaleLog2;       // log2(e) / sqrt(D)
};

//! Kernel arguments of one call (host side); `rope` is the workspace holding the RopeLayout tables.
template <typename T>
AttnArgs<T> makeAttnArgs(KVCacheAttentionParams const& p, T const* q, T const* kCache, T const* vCache,
    int32_t const* kValid, float2 const* rope, T* out)
{
    RopeLayout const layout(p);
    AttnArgs<T> args{};
    args.q = q;
    args.kCache = kCache;
    args.vCache = vCache;
    args.kValid = kValid;
    args.rope = rope;
    args.out = out;
    args.chunkTokens = p.chunkTokens();
    args.cacheTokens = p.cacheTokens();
    args.tokensPerFrame = static_cast<int32_t>(p.tokensPerFrame());
    args.gridW = p.gridW;
    args.numHeads = p.numHeads;
    args.nf = layout.nf;
    args.nh = layout.nh;
    args.nw = layout.nw;
    args.ropeFrameK = layout.frameK;
    args.ropeFrameQ = layout.frameQ;
    args.ropeH = layout.hh;
    args.ropeW = layout.ww;
    args.scaleLog2 = 1.4426950408889634F / sqrtf(static_cast<float>(p.headDim));
    return args;
}

template <int D>
struct Smem
{
    static constexpr int kLdQK = D + 8;       // sQ, sK, sV row stride (elements of T)
    static constexpr int kLdP = kBLOCK_N + 8;  // sP row stride
    static constexpr int kLdS = kBLOCK_N + 4;  // scores (fp32) row stride
    static constexpr int kLdX = 16;            // P V exchange blocks (fp32, 16 x 16); rows r, r+1 hit other banks
    static constexpr size_t kQ = 0;            // byte offsets
    static constexpr size_t kK = kQ + size_t(kBLOCK_M) * kLdQK * 2;
    static constexpr size_t kV = kK + size_t(kBLOCK_N) * kLdQK * 2;
    static constexpr size_t kP = kV + size_t(kBLOCK_N) * kLdQK * 2;
    static constexpr size_t kS = kP + size_t(kBLOCK_M) * kLdP * 2;
    static constexpr size_t kValid = kS + size_t(kBLOCK_M) * kLdS * 4;
    static constexpr size_t kBytes = kValid + size_t(kBLOCK_N) * 4;
    // A warp's score rows also hold its two P V exchange blocks once the scores are consumed.
    static_assert(2 * 16 * kLdX <= kWARP_ROWS * kLdS, "exchange blocks fit in a warp's score rows");
    // WMMA needs 32-byte aligned fragment pointers: every region and every 16-row block starts on 32 bytes.
    static_assert(kK % 32 == 0 && kV % 32 == 0 && kP % 32 == 0 && kS % 32 == 0, "region alignment");
    static_assert((16 * kLdQK * 2) % 32 == 0 && (16 * kLdP * 2) % 32 == 0, "row-block alignment (T)");
    static_assert((16 * kLdS * 4) % 32 == 0 && (16 * kLdX * 4) % 32 == 0, "row-block alignment (fp32)");
    static_assert(kLdQK % 8 == 0 && kLdP % 8 == 0, "WMMA ldm of 16-bit types is a multiple of 8");
    static_assert(kLdS % 4 == 0 && kLdX % 4 == 0, "WMMA ldm of fp32 is a multiple of 4");
};

//! Rotates the 4 pairs (8 elements) starting at pair j0 of one head vector; cos/sin from the tables.
template <typename T>
__device__ __forceinline__ void ropeVec8(Vec8<T>& x, int32_t j0, float2 const* frameRow, float2 const* hRow,
    float2 const* wRow, int32_t nf, int32_t nh)
{
#pragma unroll
    for (int jj = 0; jj < 4; ++jj)
    {
        int32_t const j = j0 + jj;
        float2 const cs = j < nf ? frameRow[j] : (j < nf + nh ? hRow[j - nf] : wRow[j - nf - nh]);
        float const x0 = toFloat(x.e[2 * jj]);
        float const x1 = toFloat(x.e[2 * jj + 1]);
        x.e[2 * jj] = fromFloat<T>(x0 * cs.x - x1 * cs.y);
        x.e[2 * jj + 1] = fromFloat<T>(x0 * cs.y + x1 * cs.x);
    }
}

template <typename T, int D>
__global__ void __launch_bounds__(kTHREADS) flashAttnKernel(AttnArgs<T> const args)
{
    using namespace nvcuda;
    using S = Smem<D>;
    constexpr int kVecsPerRow = D / 8;  // 16-byte vectors per head row
    constexpr int kColBlocks = D / 16;  // WMMA blocks along the head dim
    constexpr int kLaneRows = kWARP_ROWS / 2; // rows of the warp's output a lane holds

    extern __shared__ __align__(128) unsigned char smem[];
    T* sQ = reinterpret_cast<T*>(smem + S::kQ);
    T* sK = reinterpret_cast<T*>(smem + S::kK);
    T* sV = reinterpret_cast<T*>(smem + S::kV);
    T* sP = reinterpret_cast<T*>(smem + S::kP);
    float* sS = reinterpret_cast<float*>(smem + S::kS);
    int* sValid = reinterpret_cast<int*>(smem + S::kValid);

    int const tid = threadIdx.x;
    int const warp = tid / 32;
    int const lane = tid % 32;
    int64_t const q0 = static_cast<int64_t>(blockIdx.x) * kBLOCK_M;
    int const h = blockIdx.y;
    int64_t const b = blockIdx.z;
    int64_t const H = args.numHeads;
    int64_t const N = args.tokensPerFrame;
    int64_t const Lc = args.chunkTokens;
    int64_t const Tc = args.cacheTokens;

    // ---- Q tile: load, rotate at (q_pos[c], h, w), store as T.
    for (int idx = tid; idx < kBLOCK_M * kVecsPerRow; idx += kTHREADS)
    {
        int const row = idx / kVecsPerRow;
        int const col8 = idx % kVecsPerRow;
        int64_t const i = q0 + row;
        Vec8<T> x;
        x.raw = make_uint4(0U, 0U, 0U, 0U);
        if (i < Lc)
        {
            x.raw = *reinterpret_cast<uint4 const*>(args.q + ((b * Lc + i) * H + h) * D + col8 * 8);
            int64_t const c = i / N;
            int32_t const n = static_cast<int32_t>(i - c * N);
            int32_t const hh = n / args.gridW;
            int32_t const ww = n - hh * args.gridW;
            ropeVec8(x, col8 * 4, args.rope + args.ropeFrameQ + c * args.nf, args.rope + args.ropeH + hh * args.nh,
                args.rope + args.ropeW + ww * args.nw, args.nf, args.nh);
        }
        *reinterpret_cast<uint4*>(sQ + row * S::kLdQK + col8 * 8) = x.raw;
    }

    // Per-warp running state for its rows warp*16 + r. Every lane holds each row's max and its own partial
    // row sum (over its key columns), and the output at rows 2*i + laneHalf (i < 8), columns 16*jd + laneCol.
    int const laneHalf = lane >> 4;
    int const laneCol = lane & 15;
    float rowMax[kWARP_ROWS];
    float rowSum[kWARP_ROWS];
    float acc[kColBlocks][kLaneRows];
#pragma unroll
    for (int r = 0; r < kWARP_ROWS; ++r)
    {
        rowMax[r] = -INFINITY;
        rowSum[r] = 0.0F;
    }
#pragma unroll
    for (int jd = 0; jd < kColBlocks; ++jd)
    {
#pragma unroll
        for (int i = 0; i < kLaneRows; ++i)
        {
            acc[jd][i] = 0.0F;
        }
    }

    T const* sQw = sQ + warp * kWARP_ROWS * S::kLdQK;
    T* sPw = sP + warp * kWARP_ROWS * S::kLdP;
    float* sSw = sS + warp * kWARP_ROWS * S::kLdS; // scores, then two 16x16 P V exchange blocks

    for (int64_t kv0 = 0; kv0 < Tc; kv0 += kBLOCK_N)
    {
        __syncthreads(); // the previous tile's sK / sV / sValid are no longer read

        int valid = 0;
        if (tid < kBLOCK_N)
        {
            int64_t const t = kv0 + tid;
            valid = (t < Tc && args.kValid[t / N] != 0) ? 1 : 0;
            sValid[tid] = valid;
        }
        if (!__syncthreads_or(valid)) // also publishes sValid
        {
            continue; // whole tile masked
        }

        // ---- K (rotated at (k_pos[m], h, w)) and V tiles; masked or out-of-range keys load as zeros.
        for (int idx = tid; idx < kBLOCK_N * kVecsPerRow; idx += kTHREADS)
        {
            int const row = idx / kVecsPerRow;
            int const col8 = idx % kVecsPerRow;
            Vec8<T> kx;
            Vec8<T> vx;
            kx.raw = make_uint4(0U, 0U, 0U, 0U);
            vx.raw = kx.raw;
            if (sValid[row])
            {
                int64_t const t = kv0 + row;
                int64_t const off = ((b * Tc + t) * H + h) * D + col8 * 8;
                kx.raw = *reinterpret_cast<uint4 const*>(args.kCache + off);
                vx.raw = *reinterpret_cast<uint4 const*>(args.vCache + off);
                int64_t const m = t / N;
                int32_t const n = static_cast<int32_t>(t - m * N);
                int32_t const hh = n / args.gridW;
                int32_t const ww = n - hh * args.gridW;
                ropeVec8(kx, col8 * 4, args.rope + args.ropeFrameK + m * args.nf,
                    args.rope + args.ropeH + hh * args.nh, args.rope + args.ropeW + ww * args.nw, args.nf, args.nh);
            }
            *reinterpret_cast<uint4*>(sK + row * S::kLdQK + col8 * 8) = kx.raw;
            *reinterpret_cast<uint4*>(sV + row * S::kLdQK + col8 * 8) = vx.raw;
        }
        __syncthreads();

        // ---- S = Q K^T for this warp's 16 rows x 64 keys (fp32).
        {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> sAcc[kBLOCK_N / 16];
#pragma unroll
            for (int j = 0; j < kBLOCK_N / 16; ++j)
            {
                wmma::fill_fragment(sAcc[j], 0.0F);
            }
#pragma unroll
            for (int kk = 0; kk < kColBlocks; ++kk)
            {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qf;
                wmma::load_matrix_sync(qf, sQw + kk * 16, S::kLdQK);
#pragma unroll
                for (int j = 0; j < kBLOCK_N / 16; ++j)
                {
                    // K^T as a column-major B: element (d, key) at sK[key * ld + d].
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kf;
                    wmma::load_matrix_sync(kf, sK + j * 16 * S::kLdQK + kk * 16, S::kLdQK);
                    wmma::mma_sync(sAcc[j], qf, kf, sAcc[j]);
                }
            }
#pragma unroll
            for (int j = 0; j < kBLOCK_N / 16; ++j)
            {
                wmma::store_matrix_sync(sSw + j * 16, sAcc[j], S::kLdS, wmma::mem_row_major);
            }
        }
        __syncwarp();

        // ---- Online softmax, one row at a time; lane owns key columns lane and lane + 32.
        {
            bool const valid0 = sValid[lane] != 0;
            bool const valid1 = sValid[lane + 32] != 0;
#pragma unroll
            for (int r = 0; r < kWARP_ROWS; ++r)
            {
                float const s0 = valid0 ? sSw[r * S::kLdS + lane] * args.scaleLog2 : -INFINITY;
                float const s1 = valid1 ? sSw[r * S::kLdS + lane + 32] * args.scaleLog2 : -INFINITY;
                float tileMax = fmaxf(s0, s1);
#pragma unroll
                for (int off = 16; off > 0; off /= 2)
                {
                    tileMax = fmaxf(tileMax, __shfl_xor_sync(0xffffffffU, tileMax, off));
                }
                float const newMax = fmaxf(rowMax[r], tileMax);
                float p0 = 0.0F;
                float p1 = 0.0F;
                float alpha = 1.0F;
                if (newMax != -INFINITY)
                {
                    p0 = exp2f(s0 - newMax); // exp2f(-inf) = 0 for masked keys
                    p1 = exp2f(s1 - newMax);
                    alpha = exp2f(rowMax[r] - newMax); // 0 when rowMax was -inf
                }
                rowMax[r] = newMax;
                rowSum[r] = rowSum[r] * alpha + p0 + p1;
                if ((r & 1) == laneHalf) // this lane holds row r as its output row r / 2
                {
#pragma unroll
                    for (int jd = 0; jd < kColBlocks; ++jd)
                    {
                        acc[jd][r >> 1] *= alpha;
                    }
                }
                sPw[r * S::kLdP + lane] = fromFloat<T>(p0);
                sPw[r * S::kLdP + lane + 32] = fromFloat<T>(p1);
            }
        }
        __syncwarp();

        // ---- O += P V: 16 rows x D, one 16x16 block at a time, handed to the lanes through shared memory
        // (two alternating exchange blocks, so one __syncwarp per block suffices).
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pf[kBLOCK_N / 16];
#pragma unroll
            for (int kk = 0; kk < kBLOCK_N / 16; ++kk)
            {
                wmma::load_matrix_sync(pf[kk], sPw + kk * 16, S::kLdP);
            }
#pragma unroll
            for (int jd = 0; jd < kColBlocks; ++jd)
            {
                wmma::fragment<wmma::accumulator, 16, 16, 16, float> oAcc;
                wmma::fill_fragment(oAcc, 0.0F);
#pragma unroll
                for (int kk = 0; kk < kBLOCK_N / 16; ++kk)
                {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vf;
                    wmma::load_matrix_sync(vf, sV + kk * 16 * S::kLdQK + jd * 16, S::kLdQK);
                    wmma::mma_sync(oAcc, pf[kk], vf, oAcc);
                }
                // The scores of this warp are consumed (the __syncwarp after the softmax), and the block
                // written two steps ago was read before the previous __syncwarp.
                float* sX = sSw + (jd & 1) * 16 * S::kLdX;
                wmma::store_matrix_sync(sX, oAcc, S::kLdX, wmma::mem_row_major);
                __syncwarp();
#pragma unroll
                for (int i = 0; i < kLaneRows; ++i)
                {
                    acc[jd][i] += sX[(2 * i + laneHalf) * S::kLdX + laneCol];
                }
            }
        }
    }

    // ---- Normalize and write; a row that saw no valid key gets zeros.
    float inv[kWARP_ROWS];
#pragma unroll
    for (int r = 0; r < kWARP_ROWS; ++r)
    {
        float sum = rowSum[r];
#pragma unroll
        for (int off = 16; off > 0; off /= 2)
        {
            sum += __shfl_xor_sync(0xffffffffU, sum, off);
        }
        inv[r] = sum > 0.0F ? 1.0F / sum : 0.0F;
    }
#pragma unroll
    for (int i = 0; i < kLaneRows; ++i)
    {
        float const rowInv = laneHalf ? inv[2 * i + 1] : inv[2 * i];
        int64_t const q = q0 + warp * kWARP_ROWS + 2 * i + laneHalf;
        if (q < Lc)
        {
            T* o = args.out + ((b * Lc + q) * H + h) * D + laneCol;
#pragma unroll
            for (int jd = 0; jd < kColBlocks; ++jd)
            {
                o[16 * jd] = fromFloat<T>(acc[jd][i] * rowInv);
            }
        }
    }
}

} // namespace detail
} // namespace kvattn
} // namespace lipforce
