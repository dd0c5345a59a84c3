/*
 * lipforce: runs the KV-cache attention CUDA kernels on the CPU, under an emulation of the CUDA execution
 * model, and compares them with the C++ CPU reference.
 *
 * kvCacheAttentionKernel.cuh is compiled by the host compiler: every CTA runs as 128 std::threads, with
 * __syncthreads / __syncthreads_or / __syncwarp as barriers, __shfl_xor_sync through a per-warp exchange
 * buffer, one block of dynamic shared memory (followed by a canary), and nvcuda::wmma from emulation/mma.h.
 * This exercises the kernels' indexing, tiling, masking, RoPE and online softmax where no GPU is available;
 * built with -fsanitize=address,undefined it catches out-of-bounds and misaligned accesses, with
 * -fsanitize=thread missing barriers (shared-memory races between emulated threads). It cannot catch what
 * only real hardware shows (register or shared-memory limits, launch configuration, performance); the
 * launcher's host code (kvCacheAttentionKernel.cu) is not run here.
 *
 * Exit code 0 when every case matches.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <vector_functions.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

// ---- the emulated execution model ---------------------------------------------------------------------------
namespace lipforce_emulation
{

constexpr int kBlockThreads = 128;

struct Block
{
    std::barrier<> all{kBlockThreads};
    std::barrier<> warps[kBlockThreads / 32]{std::barrier<>(32), std::barrier<>(32), std::barrier<>(32),
        std::barrier<>(32)};
    float exchange[kBlockThreads / 32][32]{};
    std::atomic<int> orFlags[2]{0, 0};
};

thread_local Block* tBlock = nullptr;
thread_local uint3 tThreadIdx{0, 0, 0};
thread_local uint3 tBlockIdx{0, 0, 0};
thread_local dim3 tBlockDim{1, 1, 1};
thread_local dim3 tGridDim{1, 1, 1};
thread_local unsigned tOrCalls = 0;

int laneId()
{
    return static_cast<int>(tThreadIdx.x % 32);
}

void syncthreads()
{
    tBlock->all.arrive_and_wait();
}

int syncthreadsOr(int predicate)
{
    std::atomic<int>& flag = tBlock->orFlags[tOrCalls++ & 1U];
    if (predicate)
        flag.fetch_or(1);
    syncthreads();
    int const result = flag.load();
    syncthreads();
    if (tThreadIdx.x == 0)
        flag.store(0); // the other slot serves the next call; this one is reused only after its barriers
    return result;
}

void syncwarp()
{
    tBlock->warps[tThreadIdx.x / 32].arrive_and_wait();
}

float shflXor(float v, int laneMask)
{
    int const w = static_cast<int>(tThreadIdx.x / 32);
    int const lane = laneId();
    tBlock->exchange[w][lane] = v;
    syncwarp();
    float const r = tBlock->exchange[w][lane ^ laneMask];
    syncwarp();
    return r;
}

} // namespace lipforce_emulation

#define threadIdx (::lipforce_emulation::tThreadIdx)
#define blockIdx (::lipforce_emulation::tBlockIdx)
#define blockDim (::lipforce_emulation::tBlockDim)
#define gridDim (::lipforce_emulation::tGridDim)
#define __syncthreads() ::lipforce_emulation::syncthreads()
#define __syncthreads_or(p) ::lipforce_emulation::syncthreadsOr(p)
#define __syncwarp(...) ::lipforce_emulation::syncwarp()
#define __shfl_xor_sync(mask, v, laneMask) ::lipforce_emulation::shflXor((v), (laneMask))
#define __launch_bounds__(...)

#include "kvCacheAttentionKernel.cuh"
#include "kvCacheAttentionRef.h"

namespace lipforce
{
namespace kvattn
{
namespace detail
{
constexpr size_t kSmemCapacity = Smem<128>::kBytes > Smem<64>::kBytes ? Smem<128>::kBytes : Smem<64>::kBytes;
constexpr size_t kCanaryBytes = 4096;
// The kernels' `extern __shared__ unsigned char smem[]`: one CTA runs at a time.
alignas(128) unsigned char smem[kSmemCapacity + kCanaryBytes];
} // namespace detail
} // namespace kvattn
} // namespace lipforce

namespace
{

using lipforce::kvattn::KVCacheAttentionParams;
namespace detail = lipforce::kvattn::detail;
namespace emu = lipforce_emulation;

float toF(__half v)
{
    return __half2float(v);
}
float toF(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
template <typename T>
T fromF(float v);
template <>
__half fromF<__half>(float v)
{
    return __float2half_rn(v);
}
template <>
__nv_bfloat16 fromF<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

//! Runs fn() as a 1-thread grid (for the grid-stride kernels without barriers).
template <typename F>
void runSerial(F&& fn)
{
    emu::tThreadIdx = {0, 0, 0};
    emu::tBlockIdx = {0, 0, 0};
    emu::tBlockDim = dim3(1, 1, 1);
    emu::tGridDim = dim3(1, 1, 1);
    fn();
}

//! Runs one CTA of `threads` std::threads.
template <typename F>
void runBlock(dim3 grid, uint3 block, F const& fn)
{
    emu::Block state;
    std::vector<std::thread> threads;
    threads.reserve(emu::kBlockThreads);
    for (unsigned t = 0; t < emu::kBlockThreads; ++t)
    {
        threads.emplace_back([&, t]() {
            emu::tBlock = &state;
            emu::tThreadIdx = {t, 0, 0};
            emu::tBlockIdx = block;
            emu::tBlockDim = dim3(emu::kBlockThreads, 1, 1);
            emu::tGridDim = grid;
            emu::tOrCalls = 0;
            fn();
        });
    }
    for (auto& th : threads)
        th.join();
}

struct Case
{
    char const* name;
    int batch, heads, headDim, gridH, gridW, chunkFrames, numSlots;
    char const* positions; // relative | large | random
    int maskedSlots;       // slots the chunk does not write that get k_valid = 0 (NaN in the kernel's cache);
                           // -1: every slot, the chunk's too (rows see nothing: zeros)
};

template <typename T>
struct Tol;
template <>
struct Tol<__half>
{
    static constexpr double atol = 3e-3, rtol = 1e-2;
    static constexpr char const* name = "fp16";
};
template <>
struct Tol<__nv_bfloat16>
{
    static constexpr double atol = 2e-2, rtol = 3e-2;
    static constexpr char const* name = "bf16";
};

template <typename T, int D>
bool runCase(Case const& c, uint32_t seed)
{
    KVCacheAttentionParams p;
    p.batch = c.batch;
    p.numHeads = c.heads;
    p.headDim = D;
    p.gridH = c.gridH;
    p.gridW = c.gridW;
    p.numSlots = c.numSlots;
    p.chunkFrames = c.chunkFrames;
    if (!p.check().empty())
    {
        std::fprintf(stderr, "bad case %s: %s\n", c.name, p.check().c_str());
        return false;
    }
    int64_t const N = p.tokensPerFrame(), Lc = p.chunkTokens(), Tt = p.cacheTokens();
    int64_t const row = static_cast<int64_t>(c.heads) * D;
    int64_t const chunkElems = c.batch * Lc * row, cacheElems = c.batch * Tt * row;

    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0F, 1.0F);
    auto randomT = [&](int64_t n) {
        std::vector<T> v(static_cast<size_t>(n));
        for (auto& e : v)
            e = fromF<T>(normal(rng));
        return v;
    };
    std::vector<T> q = randomT(chunkElems), k = randomT(chunkElems), v = randomT(chunkElems);
    std::vector<T> kCache = randomT(cacheElems), vCache = randomT(cacheElems);

    std::vector<int32_t> slots(c.numSlots);
    for (int m = 0; m < c.numSlots; ++m)
        slots[m] = m;
    std::shuffle(slots.begin(), slots.end(), rng);
    std::vector<int32_t> writeIdx(slots.begin(), slots.begin() + c.chunkFrames);
    std::vector<int32_t> kValid(c.numSlots, 1), kPos(c.numSlots), qPos(c.chunkFrames);
    std::vector<int> masked;
    if (c.maskedSlots < 0)
        masked.assign(slots.begin(), slots.end());
    else
        masked.assign(slots.begin() + c.chunkFrames, slots.begin() + c.chunkFrames + c.maskedSlots);
    for (int m : masked)
        kValid[m] = 0;
    for (int m = 0; m < c.numSlots; ++m)
    {
        kPos[m] = std::strcmp(c.positions, "large") == 0 ? 123457 + 7 * slots[m]
            : std::strcmp(c.positions, "random") == 0   ? static_cast<int32_t>(rng() % 60)
                                                        : slots[m];
    }
    for (int i = 0; i < c.chunkFrames; ++i)
        qPos[i] = std::strcmp(c.positions, "random") == 0 ? static_cast<int32_t>(rng() % 60) : kPos[writeIdx[i]];

    // The reference sees the same (rounded) values, with zeros where the kernel's cache holds NaN garbage.
    auto toFloat = [](std::vector<T> const& x) {
        std::vector<float> r(x.size());
        for (size_t i = 0; i < x.size(); ++i)
            r[i] = toF(x[i]);
        return r;
    };
    std::vector<float> qf = toFloat(q), kf = toFloat(k), vf = toFloat(v), kcf = toFloat(kCache), vcf = toFloat(vCache);
    for (int m : masked)
    {
        for (int64_t b = 0; b < c.batch; ++b)
        {
            int64_t const off = (b * Tt + m * N) * row;
            for (int64_t e = 0; e < N * row; ++e)
            {
                kCache[off + e] = fromF<T>(NAN);
                vCache[off + e] = fromF<T>(NAN);
                kcf[off + e] = 0.0F;
                vcf[off + e] = 0.0F;
            }
        }
    }
    std::vector<float> refOut(static_cast<size_t>(chunkElems));
    lipforce::kvattn::kvCacheAttentionRef(p, qf.data(), kf.data(), vf.data(), kcf.data(), vcf.data(), writeIdx.data(),
        qPos.data(), kPos.data(), kValid.data(), refOut.data());

    // ---- the launcher's steps, kernels emulated (the caches are aliased: written in place)
    std::vector<T> out(static_cast<size_t>(chunkElems), fromF<T>(-7.0F));
    detail::RopeLayout const layout(p);
    std::vector<float2> rope(static_cast<size_t>(layout.total));
    int64_t const rowVecs = row * static_cast<int64_t>(sizeof(T)) / 16;
    runSerial([&] {
        detail::cacheWriteKernel<uint4>(reinterpret_cast<uint4 const*>(k.data()), reinterpret_cast<uint4 const*>(v.data()),
            reinterpret_cast<uint4*>(kCache.data()), reinterpret_cast<uint4*>(vCache.data()), writeIdx.data(), rowVecs,
            N, c.chunkFrames, Tt, c.numSlots, c.batch * Lc * rowVecs);
    });
    runSerial([&] {
        detail::ropeTableKernel(rope.data(), kPos.data(), qPos.data(), p.numSlots, p.chunkFrames, p.gridH, p.gridW,
            layout.nf, layout.nh, layout.nw, static_cast<double>(p.ropeTheta));
    });
    detail::AttnArgs<T> const args
        = detail::makeAttnArgs<T>(p, q.data(), kCache.data(), vCache.data(), kValid.data(), rope.data(), out.data());
    std::memset(detail::smem + detail::Smem<D>::kBytes, 0xA5, detail::kCanaryBytes);
    dim3 const grid(static_cast<unsigned>((Lc + detail::kBLOCK_M - 1) / detail::kBLOCK_M),
        static_cast<unsigned>(c.heads), static_cast<unsigned>(c.batch));
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x)
                runBlock(grid, uint3{x, y, z}, [&] { detail::flashAttnKernel<T, D>(args); });

    // ---- checks
    bool ok = true;
    std::string const tag = std::string(c.name) + " " + Tol<T>::name + " D=" + std::to_string(D);
    for (size_t i = 0; i < detail::kCanaryBytes; ++i)
    {
        if (detail::smem[detail::Smem<D>::kBytes + i] != 0xA5)
        {
            std::fprintf(stderr, "FAILED %s: shared memory written past Smem<D>::kBytes (+%zu)\n", tag.c_str(), i);
            ok = false;
            break;
        }
    }
    double worst = 0.0;
    int64_t bad = 0;
    for (int64_t i = 0; i < chunkElems; ++i)
    {
        double const got = toF(out[i]);
        double const want = refOut[i];
        double const err = std::fabs(got - want);
        if (!(err <= Tol<T>::atol + Tol<T>::rtol * std::fabs(want)))
        {
            if (bad < 5)
                std::fprintf(stderr, "FAILED %s: out[%lld] = %g, reference %g\n", tag.c_str(),
                    static_cast<long long>(i), got, want);
            ++bad;
        }
        worst = std::isfinite(err) ? std::max(worst, err) : INFINITY;
    }
    ok = ok && bad == 0;
    // Cache: written slots hold the chunk exactly, other valid slots are untouched (exact).
    for (int64_t b = 0; b < c.batch; ++b)
        for (int m = 0; m < c.numSlots; ++m)
        {
            if (!kValid[m])
                continue;
            int64_t const off = (b * Tt + m * N) * row;
            for (int64_t e = 0; e < N * row; ++e)
            {
                if (toF(kCache[off + e]) != kcf[off + e] || toF(vCache[off + e]) != vcf[off + e])
                {
                    std::fprintf(stderr, "FAILED %s: cache slot %d element %lld differs from the reference write\n",
                        tag.c_str(), m, static_cast<long long>(e));
                    ok = false;
                    break;
                }
            }
        }
    std::printf("%-6s %-30s D=%-3d B=%d H=%d N=%lld C=%d M=%d masked=%zu: max |err| %.2e  %s\n", Tol<T>::name, c.name, D,
        c.batch, c.heads, static_cast<long long>(N), c.chunkFrames, c.numSlots, masked.size(), worst,
        ok ? "ok" : "FAILED");
    return ok;
}

} // namespace

int main()
{
    std::vector<Case> const cases = {
        {"tiny", 1, 2, 64, 8, 8, 1, 8, "relative", 0},
        {"tiny-masked-nan", 1, 2, 64, 8, 8, 1, 8, "relative", 3},
        {"partial-tiles", 2, 3, 128, 5, 7, 2, 5, "random", 1},
        {"tile-spans-slots", 1, 2, 128, 4, 8, 1, 6, "relative", 2},
        {"large-positions", 1, 1, 64, 4, 4, 2, 4, "large", 1},
        {"all-masked", 1, 2, 128, 4, 4, 1, 3, "relative", -1},
    };
    bool ok = true;
    uint32_t seed = 1;
    for (Case const& c : cases)
    {
        for (int rep = 0; rep < 2; ++rep, ++seed)
        {
            bool const is64 = c.headDim == 64;
            ok = (is64 ? runCase<__half, 64>(c, seed) : runCase<__half, 128>(c, seed)) && ok;
            ok = (is64 ? runCase<__nv_bfloat16, 64>(c, seed) : runCase<__nv_bfloat16, 128>(c, seed)) && ok;
        }
    }
    std::printf(ok ? "kvCacheAttentionKernelEmulation: all cases match the CPU reference\n"
                   : "kvCacheAttentionKernelEmulation: FAILED\n");
    return ok ? 0 : 1;
}
