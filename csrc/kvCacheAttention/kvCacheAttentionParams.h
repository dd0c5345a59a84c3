/*
 * lipforce: KV-cache attention (attention sink + ring-buffer window + chunk), shared definitions.
 *
 * Everything here is plain C++ (no CUDA, no TensorRT) so that the CPU reference, the CUDA
 * launcher, the TensorRT adapter and the Python bindings read the same names and checks.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace lipforce
{
namespace kvattn
{

//! Plugin / custom-op identity. Changing the behaviour of the op bumps kPLUGIN_VERSION.
constexpr char const* kPLUGIN_NAME = "KVCacheAttention";
constexpr char const* kPLUGIN_VERSION = "1";
constexpr char const* kPLUGIN_NAMESPACE = "lipforce";

//! Attribute names (TensorRT plugin fields, ONNX node attributes), in spec order.
constexpr char const* kATTR_NUM_HEADS = "num_heads";
constexpr char const* kATTR_HEAD_DIM = "head_dim";
constexpr char const* kATTR_GRID_H = "grid_h";
constexpr char const* kATTR_GRID_W = "grid_w";
constexpr char const* kATTR_NUM_SLOTS = "num_slots";
constexpr char const* kATTR_CHUNK_FRAMES = "chunk_frames";
constexpr char const* kATTR_ROPE_THETA = "rope_theta";
constexpr float kDEFAULT_ROPE_THETA = 10000.0F;

//! Input / output positions (TensorRT binding order, ONNX node order).
enum Input : int32_t
{
    kIN_Q = 0,
    kIN_K = 1,
    kIN_V = 2,
    kIN_K_CACHE = 3,
    kIN_V_CACHE = 4,
    kIN_WRITE_IDX = 5,
    kIN_Q_POS = 6,
    kIN_K_POS = 7,
    kIN_K_VALID = 8,
    kNB_INPUTS = 9
};
enum Output : int32_t
{
    kOUT = 0,
    kOUT_K_CACHE = 1, //!< aliases kIN_K_CACHE (written in place)
    kOUT_V_CACHE = 2, //!< aliases kIN_V_CACHE (written in place)
    kNB_OUTPUTS = 3
};

//! Sizes of one call. All tensors are dense row-major:
//!   q, k, v, out        [B, Lc, H, D]   Lc = C * N
//!   k_cache, v_cache    [B, T, H, D]    T  = M * N
//!   write_idx, q_pos    [C] int32
//!   k_pos, k_valid      [M] int32
struct KVCacheAttentionParams
{
    int32_t batch{1};       //!< B
    int32_t numHeads{0};    //!< H
    int32_t headDim{0};     //!< D
    int32_t gridH{0};       //!< latent grid height
    int32_t gridW{0};       //!< latent grid width
    int32_t numSlots{0};    //!< M, frame slots in the cache
    int32_t chunkFrames{0}; //!< C, frames in the chunk
    float ropeTheta{kDEFAULT_ROPE_THETA};

    int64_t tokensPerFrame() const
    {
        return static_cast<int64_t>(gridH) * gridW;
    } // N
    int64_t chunkTokens() const
    {
        return static_cast<int64_t>(chunkFrames) * tokensPerFrame();
    } // Lc
    int64_t cacheTokens() const
    {
        return static_cast<int64_t>(numSlots) * tokensPerFrame();
    } // T

    //! RoPE split of the head dim (Wan2.1): frame, height, width axes.
    int32_t ropeDimFrame() const
    {
        return headDim - 4 * (headDim / 6);
    }
    int32_t ropeDimHeight() const
    {
        return 2 * (headDim / 6);
    }
    int32_t ropeDimWidth() const
    {
        return 2 * (headDim / 6);
    }

    //! Empty when the sizes are usable; otherwise a message naming the field and its value.
    std::string check() const
    {
        std::ostringstream msg;
        if (batch < 1)
            msg << "batch must be >= 1, got " << batch << ". ";
        if (numHeads < 1)
            msg << kATTR_NUM_HEADS << " must be >= 1, got " << numHeads << ". ";
        if (headDim < 6 || headDim % 2 != 0)
            msg << kATTR_HEAD_DIM << " must be even and >= 6 (3-D RoPE splits it into three even parts), got "
                << headDim << ". ";
        if (gridH < 1)
            msg << kATTR_GRID_H << " must be >= 1, got " << gridH << ". ";
        if (gridW < 1)
            msg << kATTR_GRID_W << " must be >= 1, got " << gridW << ". ";
        if (numSlots < 1)
            msg << kATTR_NUM_SLOTS << " must be >= 1, got " << numSlots << ". ";
        if (chunkFrames < 1 || chunkFrames > numSlots)
            msg << kATTR_CHUNK_FRAMES << " must be in [1, " << kATTR_NUM_SLOTS << "=" << numSlots << "], got "
                << chunkFrames << ". ";
        if (!(ropeTheta > 1.0F))
            msg << kATTR_ROPE_THETA << " must be > 1, got " << ropeTheta << ". ";
        return msg.str();
    }

    //! Throws std::invalid_argument with check()'s message.
    void validate() const
    {
        std::string const err = check();
        if (!err.empty())
        {
            throw std::invalid_argument("KVCacheAttention: " + err);
        }
    }
};

} // namespace kvattn
} // namespace lipforce
