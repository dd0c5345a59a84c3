/*
 * lipforce: host emulation of the subset of nvcuda::wmma (<mma.h>) the KV-cache attention kernel uses.
 *
 * Used only by kvCacheAttentionKernelEmulation.cpp, which compiles the CUDA kernels with a host compiler.
 * Every lane keeps the whole 16x16 tile in its fragment (the real layout is opaque anyway); loads read the
 * tile, stores write a lane's share of it (the element's lane in the sm_80 mma.sync accumulator layout), so
 * cross-lane traffic still needs the kernel's own __syncwarp. The documented preconditions are checked: 256-bit aligned pointers and ldm a
 * multiple of 16 bytes.
 */
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace lipforce_emulation
{
int laneId(); // defined by the emulation driver
}

namespace nvcuda
{
namespace wmma
{

struct matrix_a
{
};
struct matrix_b
{
};
struct accumulator
{
};
struct row_major
{
};
struct col_major
{
};
enum layout_t
{
    mem_row_major,
    mem_col_major
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment
{
    static_assert(M == 16 && N == 16 && K == 16, "the emulation covers m16n16k16 only");
    float x[16 * 16];
};

namespace emu_detail
{
inline float toFloat(__half v)
{
    return __half2float(v);
}
inline float toFloat(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
inline float toFloat(float v)
{
    return v;
}

template <typename T>
void checkOperand(T const* p, unsigned ldm, char const* what)
{
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * sizeof(T)) % 16 != 0)
    {
        std::fprintf(stderr, "wmma emulation: %s pointer %p / ldm %u violate the 256-bit alignment / 16-byte ldm rule\n",
            what, static_cast<void const*>(p), ldm);
        std::abort();
    }
}

inline bool isRowMajor(row_major const*)
{
    return true;
}
inline bool isRowMajor(col_major const*)
{
    return false;
}
} // namespace emu_detail

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v)
{
    for (float& e : f.x)
        e = v;
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, T const* p, unsigned ldm)
{
    emu_detail::checkOperand(p, ldm, "load_matrix_sync");
    bool const rowMajor = emu_detail::isRowMajor(static_cast<Layout const*>(nullptr));
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j)
            f.x[i * 16 + j] = emu_detail::toFloat(rowMajor ? p[i * ldm + j] : p[i + j * ldm]);
}

template <int M, int N, int K>
void store_matrix_sync(float* p, fragment<accumulator, M, N, K, float> const& f, unsigned ldm, layout_t layout)
{
    emu_detail::checkOperand(p, ldm, "store_matrix_sync");
    // Element (i, j) is written by the lane holding it in the accumulator layout of mma.sync m16n8k16
    // (lane = 4 * (i % 8) + (j % 8) / 2), so reading it back from another lane needs a __syncwarp.
    int const lane = lipforce_emulation::laneId();
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j)
            if (4 * (i % 8) + (j % 8) / 2 == lane)
                p[layout == mem_row_major ? i * ldm + j : i + j * ldm] = f.x[i * 16 + j];
}

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, fragment<matrix_a, M, N, K, TA, LA> const& a,
    fragment<matrix_b, M, N, K, TB, LB> const& b, fragment<accumulator, M, N, K, float> const& c)
{
    float r[256];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j)
        {
            float acc = c.x[i * 16 + j];
            for (int k = 0; k < 16; ++k)
                acc += a.x[i * 16 + k] * b.x[k * 16 + j];
            r[i * 16 + j] = acc;
        }
    for (int e = 0; e < 256; ++e)
        d.x[e] = r[e];
}

} // namespace wmma
} // namespace nvcuda
