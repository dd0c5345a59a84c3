"""Wan2.1-style audio-conditioned DiT, causal (chunk step with a KV cache) and bidirectional.

State-dict keys follow Wan2.1 naming (``patch_embedding``, ``time_embedding.0``,
``blocks.N.self_attn.q``, ``blocks.N.cross_attn.k``, ``blocks.N.norm3``, ``blocks.N.ffn.0``,
``blocks.N.modulation``, ``head.head``, ``head.modulation``) so a student distilled from a Wan
teacher loads without renaming. Differences from Wan2.1 T2V, all additive:

* ``cross_attn`` attends to per-frame **audio** tokens (each latent frame sees the tokens of its own
  video frames) instead of text; ``audio_embedding.{0,2}`` takes the place of ``text_embedding``.
* input channels are Wan I2V's ``in_dim = 16 + 16 + 4``: noisy latents, masked-source latents,
  and the mouth mask packed per video frame (temporal compression 4 -> 4 channels).
* the network predicts the flow velocity ``v = eps - x0``; ``x0 = x_t - t * v`` is returned.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from .attention import Rope3D, attention, kv_cache_attention

__all__ = ["WanRMSNorm", "WanDiT", "sinusoidal_embedding"]


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """t [B] (in [0, 1000]) -> [B, dim] (cos, sin), as Wan's ``sinusoidal_embedding_1d``."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], dim=1)


class WanRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class WanLayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the weights' dtype (input and affine params alike, so a
    strongly typed fp16/bf16 graph has one type per node)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class _QKVO(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = WanRMSNorm(dim, eps)
        self.norm_k = WanRMSNorm(dim, eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.num_heads, self.head_dim)


class WanSelfAttention(_QKVO):
    def forward(self, x: torch.Tensor, attn_fn: Callable) -> torch.Tensor:
        q = self._heads(self.norm_q(self.q(x)))  # [B, L, H, D]
        k = self._heads(self.norm_k(self.k(x)))
        v = self._heads(self.v(x))
        out = attn_fn(q, k, v)  # [B, L, H, D]
        return self.o(out.flatten(2))


class WanAudioCrossAttention(_QKVO):
    """Per-frame cross-attention: the tokens of latent frame f attend to the audio tokens of the
    video frames that latent frame packs."""

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, frames: int) -> torch.Tensor:
        # x [B, F*N, dim]; ctx [B, F, Tc*A, dim]
        b, l, d = x.shape
        xq = x.reshape(b * frames, l // frames, d)
        c = ctx.reshape(b * frames, ctx.shape[2], d)
        q = self._heads(self.norm_q(self.q(xq)))
        k = self._heads(self.norm_k(self.k(c)))
        v = self._heads(self.v(c))
        out = attention(q, k, v)
        return self.o(out.flatten(2)).reshape(b, l, d)


class WanAttentionBlock(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, num_heads: int, eps: float):
        super().__init__()
        self.norm1 = WanLayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(dim, num_heads, eps)
        self.norm3 = WanLayerNorm(dim, eps, elementwise_affine=True)
        self.cross_attn = WanAudioCrossAttention(dim, num_heads, eps)
        self.norm2 = WanLayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x, e, ctx, frames: int, attn_fn: Callable):
        # x [B, L, dim]; e [B, 6, dim]; ctx [B, F, Tc*A, dim]
        mod = (self.modulation.float() + e.float()).chunk(6, dim=1)  # 6 x [B, 1, dim]
        y = self.self_attn((self.norm1(x).float() * (1 + mod[1]) + mod[0]).to(x.dtype), attn_fn)
        x = x + (y.float() * mod[2]).to(x.dtype)
        x = x + self.cross_attn(self.norm3(x), ctx, frames)
        y = self.ffn((self.norm2(x).float() * (1 + mod[4]) + mod[3]).to(x.dtype))
        return x + (y.float() * mod[5]).to(x.dtype)


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch: tuple[int, int, int], eps: float):
        super().__init__()
        self.norm = WanLayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim * math.prod(patch))
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x, e):  # e [B, dim]
        shift, scale = (self.modulation.float() + e.float()[:, None]).chunk(2, dim=1)
        return self.head((self.norm(x).float() * (1 + scale) + shift).to(x.dtype))


class WanDiT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.dit
        self.cfg = cfg
        self.dim, self.freq_dim, self.patch = d.dim, d.freq_dim, tuple(d.patch_size)
        self.out_dim = cfg.latent_channels
        self.patch_embedding = nn.Conv3d(cfg.in_dim, d.dim, kernel_size=self.patch, stride=self.patch)
        a = cfg.audio
        self.audio_embedding = nn.Sequential(nn.Linear(a.token_dim, d.dim), nn.GELU(approximate="tanh"), nn.Linear(d.dim, d.dim))
        self.time_embedding = nn.Sequential(nn.Linear(d.freq_dim, d.dim), nn.SiLU(), nn.Linear(d.dim, d.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d.dim, 6 * d.dim))
        self.blocks = nn.ModuleList(WanAttentionBlock(d.dim, d.ffn_dim, d.num_heads, d.eps) for _ in range(d.num_layers))
        self.head = Head(d.dim, self.out_dim, self.patch, d.eps)
        gh, gw = cfg.grid_hw
        self.rope = Rope3D(d.head_dim, gh, gw, d.rope_theta)
        # the cache-attention implementation (same signature as kv_cache_attention); the exporter swaps
        # in the custom-op form for the plugin flavour
        self.cache_attention: Callable = kv_cache_attention

    # ---- shared pieces ----
    def _embed(self, x_t, t, cond, mask, audio_tokens):
        b = x_t.shape[0]
        x = self.patch_embedding(torch.cat([x_t, cond, mask], dim=1))  # [B, dim, F, gh, gw]
        frames = x.shape[2]
        x = x.flatten(2).transpose(1, 2)  # [B, F*N, dim]
        e = self.time_embedding(sinusoidal_embedding(self.freq_dim, t * 1000.0).to(x.dtype))  # [B, dim]
        e0 = self.time_projection(e).unflatten(1, (6, self.dim))  # [B, 6, dim]
        ctx = self.audio_embedding(audio_tokens)  # [B, Fv, A, dim]
        ctx = ctx.reshape(b, frames, -1, self.dim)  # [B, F, Tc*A, dim]
        return x, e, e0, ctx, frames

    def _unpatchify(self, x, frames):
        b = x.shape[0]
        gh, gw = self.cfg.grid_hw
        _, ph, pw = self.patch
        x = x.reshape(b, frames, gh, gw, ph, pw, self.out_dim)
        return x.permute(0, 6, 1, 2, 4, 3, 5).reshape(b, self.out_dim, frames, gh * ph, gw * pw)

    def _run(self, x_t, t, cond, mask, audio_tokens, attn_for_layer):
        x, e, e0, ctx, frames = self._embed(x_t, t, cond, mask, audio_tokens)
        for i, blk in enumerate(self.blocks):
            x = blk(x, e0, ctx, frames, attn_for_layer(i))
        out = self._unpatchify(self.head(x, e), frames)
        if self.cfg.dit.output == "source":  # a correction of the (filled) masked source
            return cond + out
        tt = t.to(out.dtype).reshape(-1, 1, 1, 1, 1)  # out: the predicted flow eps - x0
        return x_t - tt * out

    # ---- causal chunk step (the exported graph) ----
    def step(self, x_t, t, cond, mask, audio_tokens, write_idx, q_pos, k_pos, k_valid, caches, inplace=True):
        """One denoising pass of a chunk.

        x_t/cond [B, z, C, h, w], mask [B, Tc, C, h, w], t [B], audio_tokens [B, C*Tc, A, Da],
        plan tensors int32 (see cache_plan.py): one stream's (write_idx/q_pos [C], k_pos/k_valid
        [M], shared by the batch) or one per element (write_idx/q_pos [B, C], k_pos/k_valid [B, M]:
        streams at different positions in one call), caches: list of (k_cache, v_cache)
        [B, T, H, D] per layer. Returns ``(x0, new_caches)``; with ``inplace`` the caches are written in place
        and returned as the same tensors.
        """
        new = [None] * len(self.blocks)

        def attn_for_layer(i):
            def fn(q, k, v):
                out, kc, vc = self.cache_attention(q, k, v, caches[i][0], caches[i][1], write_idx, q_pos, k_pos,
                                                 k_valid, self.rope, inplace=inplace)
                new[i] = (kc, vc)
                return out
            return fn

        x0 = self._run(x_t, t, cond, mask, audio_tokens, attn_for_layer)
        return x0, new

    # ---- bidirectional full sequence (the teacher form / baseline) ----
    def forward_full(self, x_t, t, cond, mask, audio_tokens):
        """All frames at once, full attention, frame positions 0..F-1 (no cache)."""
        frames = x_t.shape[2]
        pos = torch.arange(frames, device=x_t.device, dtype=torch.int32)

        def attn_for_layer(i):
            def fn(q, k, v):
                return attention(self.rope(q, pos), self.rope(k, pos), v)
            return fn

        return self._run(x_t, t, cond, mask, audio_tokens, attn_for_layer)

    # ---- bidirectional window after a clean reference (the teacher form with references) ----
    def forward_ref(self, x_t, t, cond, mask, audio_tokens, ref_x0, ref_cond, ref_mask):
        """A window of ``L`` latent frames, full attention among them and to ``R`` clean reference
        frames, which are run first at ``t = 0`` with no audio (zero tokens), as the runtime writes
        the cache's sink. Reference positions ``0..R-1``, the window's ``R..R+L-1``.

        x_t/cond ``[B, z, L, h, w]``, mask ``[B, Tc, L, h, w]``, audio_tokens ``[B, L*Tc, A, Da]``,
        ref_x0/ref_cond ``[B, z, R, h, w]``, ref_mask ``[B, Tc, R, h, w]``."""
        b, r, n = x_t.shape[0], ref_x0.shape[2], x_t.shape[2]
        dev = x_t.device
        shape = (b, (r + n) * self.cfg.tokens_per_frame, self.cfg.dit.num_heads, self.cfg.dit.head_dim)
        caches = [(x_t.new_zeros(shape), x_t.new_zeros(shape)) for _ in self.blocks]
        i32 = dict(dtype=torch.int32, device=dev)
        k_pos = torch.arange(r + n, **i32)
        tok0 = audio_tokens.new_zeros((b, r * audio_tokens.shape[1] // n, *audio_tokens.shape[2:]))
        valid = torch.cat([torch.ones(r, **i32), torch.zeros(n, **i32)])
        _, caches = self.step(ref_x0, torch.zeros_like(t), ref_cond, ref_mask, tok0, torch.arange(r, **i32),
                              torch.arange(r, **i32), k_pos, valid, caches, inplace=False)
        x0, _ = self.step(x_t, t, cond, mask, audio_tokens, torch.arange(r, r + n, **i32), torch.arange(r, r + n, **i32),
                          k_pos, torch.ones(r + n, **i32), caches, inplace=False)
        return x0

    def cache_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        c = self.cfg
        return (batch, c.num_slots * c.tokens_per_frame, c.dit.num_heads, c.dit.head_dim)
