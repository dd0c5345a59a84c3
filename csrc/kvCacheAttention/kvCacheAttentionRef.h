/*
 * lipforce: CPU reference of the KV-cache attention op (fp32, no CUDA or TensorRT dependency).
 */
#pragma once

#include "kvCacheAttentionParams.h"

#include <cstdint>

namespace lipforce
{
namespace kvattn
{

//! The op, on the CPU, in fp32 (RoPE angles in fp64). Layouts as in KVCacheAttentionParams.
//!
//!  1. kCache[:, writeIdx[c]*N + n] = k[:, c*N + n] (same for v), in place.
//!  2. RoPE (3-D, Wan2.1 split) on q at qPos[c] and on the cache keys at kPos[m] (keys are stored un-rotated).
//!  3. out = softmax(q_rot . k_rot^T / sqrt(D)) . vCache over the tokens of slots with kValid[m] != 0;
//!     a query row that sees no valid slot gets zeros.
//!
//! Throws std::invalid_argument when the sizes are unusable or writeIdx has an entry outside [0, M) or a
//! repeated entry (the caches are left untouched in that case).
void kvCacheAttentionRef(KVCacheAttentionParams const& params,
    float const* q,         // [B, Lc, H, D]
    float const* k,         // [B, Lc, H, D]
    float const* v,         // [B, Lc, H, D]
    float* kCache,          // [B, T, H, D], updated in place
    float* vCache,          // [B, T, H, D], updated in place
    int32_t const* writeIdx, // [C]
    int32_t const* qPos,     // [C]
    int32_t const* kPos,     // [M]
    int32_t const* kValid,   // [M]
    float* out);             // [B, Lc, H, D]

//! Checks writeIdx (range and distinctness); empty string when fine, else a message with the value.
std::string checkWriteIdx(int32_t const* writeIdx, int32_t chunkFrames, int32_t numSlots);

} // namespace kvattn
} // namespace lipforce
