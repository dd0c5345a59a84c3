/*
 * lipforce: CPU reference of the KV-cache attention op.
 *
 * Written for clarity; it is the ground truth the CUDA kernels and the TensorRT plugin are compared with.
 */
#include "kvCacheAttentionRef.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <vector>

namespace lipforce
{
namespace kvattn
{
namespace
{

//! cos/sin of the RoPE angles of one axis for positions 0..count-1 or an explicit position list.
//! Layout: [position][pair] as (cos, sin) pairs; angles in fp64.
struct AxisTable
{
    int32_t pairs{0};
    std::vector<float> cs; // [rows, pairs, 2]

    void build(int32_t axisDim, double theta, std::vector<double> const& positions)
    {
        pairs = axisDim / 2;
        cs.assign(positions.size() * static_cast<size_t>(pairs) * 2, 0.0F);
        for (size_t r = 0; r < positions.size(); ++r)
        {
            for (int32_t i = 0; i < pairs; ++i)
            {
                double const invFreq = std::pow(theta, -2.0 * i / static_cast<double>(axisDim));
                double const angle = positions[r] * invFreq;
                cs[(r * pairs + i) * 2 + 0] = static_cast<float>(std::cos(angle));
                cs[(r * pairs + i) * 2 + 1] = static_cast<float>(std::sin(angle));
            }
        }
    }
    float const* row(int64_t r) const
    {
        return cs.data() + r * pairs * 2;
    }
};

//! Rotates one head vector x[D] into y[D]: frame pairs use `f`, then height pairs `h`, then width pairs `w`.
void rotate(float const* x, float* y, float const* f, int32_t nf, float const* h, int32_t nh, float const* w, int32_t nw)
{
    auto apply = [&](int32_t pairOffset, float const* cs, int32_t n) {
        for (int32_t i = 0; i < n; ++i)
        {
            int32_t const j = pairOffset + i;
            double const x0 = x[2 * j];
            double const x1 = x[2 * j + 1];
            double const c = cs[2 * i];
            double const s = cs[2 * i + 1];
            y[2 * j] = static_cast<float>(x0 * c - x1 * s);
            y[2 * j + 1] = static_cast<float>(x0 * s + x1 * c);
        }
    };
    apply(0, f, nf);
    apply(nf, h, nh);
    apply(nf + nh, w, nw);
}

std::vector<double> iota(int32_t n)
{
    std::vector<double> r(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i)
        r[i] = i;
    return r;
}

} // namespace

std::string checkWriteIdx(int32_t const* writeIdx, int32_t chunkFrames, int32_t numSlots)
{
    std::vector<int32_t> seen;
    for (int32_t c = 0; c < chunkFrames; ++c)
    {
        int32_t const m = writeIdx[c];
        if (m < 0 || m >= numSlots)
        {
            std::ostringstream msg;
            msg << "write_idx[" << c << "] = " << m << " is outside [0, num_slots=" << numSlots << ")";
            return msg.str();
        }
        if (std::find(seen.begin(), seen.end(), m) != seen.end())
        {
            std::ostringstream msg;
            msg << "write_idx[" << c << "] = " << m << " repeats an earlier entry; chunk frames need distinct slots";
            return msg.str();
        }
        seen.push_back(m);
    }
    return {};
}

void kvCacheAttentionRef(KVCacheAttentionParams const& p, float const* q, float const* k, float const* v,
    float* kCache, float* vCache, int32_t const* writeIdx, int32_t const* qPos, int32_t const* kPos,
    int32_t const* kValid, float* out)
{
    p.validate();
    std::string const idxErr = checkWriteIdx(writeIdx, p.chunkFrames, p.numSlots);
    if (!idxErr.empty())
    {
        throw std::invalid_argument("KVCacheAttention: " + idxErr);
    }

    int64_t const B = p.batch;
    int64_t const H = p.numHeads;
    int64_t const D = p.headDim;
    int64_t const N = p.tokensPerFrame();
    int64_t const C = p.chunkFrames;
    int64_t const M = p.numSlots;
    int64_t const Lc = p.chunkTokens();
    int64_t const T = p.cacheTokens();
    int64_t const rowHD = H * D; // elements of one token

    // 1. Write the chunk into its slots.
    for (int64_t b = 0; b < B; ++b)
    {
        for (int64_t c = 0; c < C; ++c)
        {
            int64_t const dst = (b * T + static_cast<int64_t>(writeIdx[c]) * N) * rowHD;
            int64_t const src = (b * Lc + c * N) * rowHD;
            std::memcpy(kCache + dst, k + src, sizeof(float) * N * rowHD);
            std::memcpy(vCache + dst, v + src, sizeof(float) * N * rowHD);
        }
    }

    // 2. RoPE tables (fp64 angles): frame axis at the slot / chunk positions, height and width at 0..grid-1.
    int32_t const df = p.ropeDimFrame();
    int32_t const dh = p.ropeDimHeight();
    int32_t const dw = p.ropeDimWidth();
    double const theta = p.ropeTheta;
    std::vector<double> slotPos(M), chunkPos(C);
    for (int64_t m = 0; m < M; ++m)
        slotPos[m] = kPos[m];
    for (int64_t c = 0; c < C; ++c)
        chunkPos[c] = qPos[c];
    AxisTable fK, fQ, th, tw;
    fK.build(df, theta, slotPos);
    fQ.build(df, theta, chunkPos);
    th.build(dh, theta, iota(p.gridH));
    tw.build(dw, theta, iota(p.gridW));

    // Rotated queries, [B, H, Lc, D].
    std::vector<float> qr(static_cast<size_t>(B * H * Lc * D));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < Lc; ++i)
        {
            int64_t const c = i / N, n = i % N;
            for (int64_t h = 0; h < H; ++h)
                rotate(q + ((b * Lc + i) * H + h) * D, qr.data() + ((b * H + h) * Lc + i) * D, fQ.row(c), fQ.pairs,
                    th.row(n / p.gridW), th.pairs, tw.row(n % p.gridW), tw.pairs);
        }

    // Valid cache tokens and their rotated keys, [B, H, nValid, D].
    std::vector<int64_t> validTokens;
    for (int64_t t = 0; t < T; ++t)
        if (kValid[t / N] != 0)
            validTokens.push_back(t);
    int64_t const nValid = static_cast<int64_t>(validTokens.size());
    std::vector<float> kr(static_cast<size_t>(B * H * nValid * D));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < nValid; ++j)
        {
            int64_t const t = validTokens[j];
            int64_t const m = t / N, n = t % N;
            for (int64_t h = 0; h < H; ++h)
                rotate(kCache + ((b * T + t) * H + h) * D, kr.data() + ((b * H + h) * nValid + j) * D, fK.row(m),
                    fK.pairs, th.row(n / p.gridW), th.pairs, tw.row(n % p.gridW), tw.pairs);
        }

    // 3. Attention over the valid tokens.
    float const scale = 1.0F / std::sqrt(static_cast<float>(D));
    std::vector<float> scores(static_cast<size_t>(nValid));
    std::vector<float> acc(static_cast<size_t>(D));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < Lc; ++i)
            {
                float* o = out + ((b * Lc + i) * H + h) * D;
                if (nValid == 0)
                {
                    std::fill(o, o + D, 0.0F);
                    continue;
                }
                float const* qi = qr.data() + ((b * H + h) * Lc + i) * D;
                float maxScore = -std::numeric_limits<float>::infinity();
                for (int64_t j = 0; j < nValid; ++j)
                {
                    float const* kj = kr.data() + ((b * H + h) * nValid + j) * D;
                    float dot = 0.0F;
                    for (int64_t d = 0; d < D; ++d)
                        dot += qi[d] * kj[d];
                    scores[j] = dot * scale;
                    maxScore = std::max(maxScore, scores[j]);
                }
                double sum = 0.0;
                std::fill(acc.begin(), acc.end(), 0.0F);
                for (int64_t j = 0; j < nValid; ++j)
                {
                    float const w = std::exp(scores[j] - maxScore);
                    sum += w;
                    float const* vj = vCache + ((b * T + validTokens[j]) * H + h) * D;
                    for (int64_t d = 0; d < D; ++d)
                        acc[d] += w * vj[d];
                }
                float const inv = static_cast<float>(1.0 / sum);
                for (int64_t d = 0; d < D; ++d)
                    o[d] = acc[d] * inv;
            }
}

} // namespace kvattn
} // namespace lipforce
