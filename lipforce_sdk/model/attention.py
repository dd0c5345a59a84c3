"""3-D RoPE and the KV-cache attention function, in PyTorch.

``kv_cache_attention`` is the function the C++/CUDA plugin (csrc/kvCacheAttention) implements:
write the chunk's K/V into its cache slots, rotate queries and cached keys at cache-relative
positions, attend over every valid slot (sink + window + the chunk itself, block-causal).
Written with plain tensor ops so the exporter can trace it into standard ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["rope_axis_dims", "Rope3D", "kv_cache_attention", "attention"]


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Wan2.1 split of the head dim over (frame, height, width)."""
    d = head_dim
    return d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)


class Rope3D(torch.nn.Module):
    """Rotary embedding over (frame, height, width) with frame positions given per call."""

    def __init__(self, head_dim: int, grid_h: int, grid_w: int, theta: float = 10000.0):
        super().__init__()
        df, dh, dw = rope_axis_dims(head_dim)
        inv = [theta ** (-(torch.arange(0, d, 2, dtype=torch.float64)) / d) for d in (df, dh, dw)]
        self.nf = df // 2
        self.theta = float(theta)
        self.grid_h, self.grid_w = grid_h, grid_w
        self.register_buffer("inv_f", inv[0].float(), persistent=False)  # [df/2]
        hh = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w)  # [N]
        ww = torch.arange(grid_w, dtype=torch.float64).repeat(grid_h)  # [N]
        ang_hw = torch.cat([hh[:, None] * inv[1][None], ww[:, None] * inv[2][None]], dim=1)  # [N, (dh+dw)/2]
        self.register_buffer("cos_hw", ang_hw.cos().float(), persistent=False)
        self.register_buffer("sin_hw", ang_hw.sin().float(), persistent=False)

    def tables(self, frame_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frame_pos [F] int -> cos, sin [F*N, 1, D/2] (tokens frame-major); per batch element,
        frame_pos [B, F] -> [B, F*N, 1, D/2]."""
        if frame_pos.dim() == 2:
            return self._tables_per_element(frame_pos)
        n = self.grid_h * self.grid_w
        ang_f = frame_pos.to(torch.float32)[:, None] * self.inv_f[None]  # [F, df/2]
        f = frame_pos.shape[0]
        cos = torch.cat([ang_f.cos()[:, None].expand(f, n, self.nf), self.cos_hw[None].expand(f, -1, -1)], dim=-1)
        sin = torch.cat([ang_f.sin()[:, None].expand(f, n, self.nf), self.sin_hw[None].expand(f, -1, -1)], dim=-1)
        return cos.reshape(f * n, 1, -1), sin.reshape(f * n, 1, -1)

    def _tables_per_element(self, frame_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.grid_h * self.grid_w
        b, f = frame_pos.shape
        ang_f = frame_pos.to(torch.float32)[:, :, None] * self.inv_f[None, None]  # [B, F, df/2]
        cos_f = ang_f.cos()[:, :, None].expand(b, f, n, self.nf)  # [B, F, N, df/2]
        sin_f = ang_f.sin()[:, :, None].expand(b, f, n, self.nf)
        cos = torch.cat([cos_f, self.cos_hw[None, None].expand(b, f, -1, -1)], dim=-1)  # [B, F, N, D/2]
        sin = torch.cat([sin_f, self.sin_hw[None, None].expand(b, f, -1, -1)], dim=-1)
        return cos.reshape(b, f * n, 1, -1), sin.reshape(b, f * n, 1, -1)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, L, H, D]; cos/sin [L, 1, D/2] or [B, L, 1, D/2] -> rotated x (pairs (2j, 2j+1)),
        computed in fp32."""
        b, l, h, d = x.shape
        xf = x.float().reshape(b, l, h, d // 2, 2)
        x0, x1 = xf[..., 0], xf[..., 1]
        out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
        return out.reshape(b, l, h, d).to(x.dtype)

    def forward(self, x: torch.Tensor, frame_pos: torch.Tensor) -> torch.Tensor:
        cos, sin = self.tables(frame_pos)
        return self.rotate(x, cos, sin)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """q [B, Lq, H, D], k/v [B, Lk, H, D], mask [Lk] (shared) or [B, Lk] (per element) bool
    (True = attend) -> [B, Lq, H, D]."""
    # [1 or B, 1, Lq, Lk]: ONNX Runtime's opset-23 Attention kernel does not broadcast the query axis
    if mask is None:
        am = None
    elif mask.dim() == 1:
        am = mask[None, None, None, :].expand(1, 1, q.shape[1], mask.shape[0])
    else:
        am = mask[:, None, None, :].expand(mask.shape[0], 1, q.shape[1], mask.shape[1])
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=am)
    return out.transpose(1, 2)


def kv_cache_attention(
    q: torch.Tensor,  # [B, Lc, H, D] pre-RoPE
    k: torch.Tensor,  # [B, Lc, H, D] pre-RoPE
    v: torch.Tensor,  # [B, Lc, H, D]
    k_cache: torch.Tensor,  # [B, T, H, D] un-rotated keys, T = M * N
    v_cache: torch.Tensor,  # [B, T, H, D]
    write_idx: torch.Tensor,  # [C] or [B, C] int32 frame slot of chunk frame c
    q_pos: torch.Tensor,  # [C] or [B, C] int32
    k_pos: torch.Tensor,  # [M] or [B, M] int32
    k_valid: torch.Tensor,  # [M] or [B, M] int32
    rope: Rope3D,
    inplace: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(out [B, Lc, H, D], k_cache, v_cache)``; in place when ``inplace`` (eager runtime),
    functional otherwise (export: the new caches are graph outputs).

    The plan is one stream's (1-D, shared by every batch element: the batch-1 graphs) or one per
    batch element (2-D: streams at different positions batched in one call, each writing its own
    slots, rotated at its own positions, masked by its own validity)."""
    if write_idx.dim() == 2:
        return _kv_cache_attention_per_element(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, rope,
                                               inplace)
    n = rope.grid_h * rope.grid_w
    tok = (write_idx.long()[:, None] * n + torch.arange(n, device=q.device)[None]).reshape(-1)  # [Lc]
    if inplace:
        k_cache.index_copy_(1, tok, k)
        v_cache.index_copy_(1, tok, v)
        kc, vc = k_cache, v_cache
    else:
        kc = k_cache.index_copy(1, tok, k)
        vc = v_cache.index_copy(1, tok, v)
    qr = rope(q, q_pos)
    kr = rope(kc, k_pos)
    mask = (k_valid != 0).repeat_interleave(n)  # [T]
    return attention(qr, kr, vc, mask), kc, vc


def _kv_cache_attention_per_element(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, rope: Rope3D,
                                    inplace: bool):
    """``kv_cache_attention`` with a plan per batch element: write_idx/q_pos [B, C], k_pos/k_valid [B, M]."""
    n = rope.grid_h * rope.grid_w
    b = k.shape[0]
    tok = (write_idx.long()[:, :, None] * n + torch.arange(n, device=q.device)[None, None]).reshape(b, -1)  # [B, Lc]
    idx = (torch.arange(b, device=q.device)[:, None].expand_as(tok), tok)  # (element, token) of each written row
    if inplace:
        k_cache.index_put_(idx, k)
        v_cache.index_put_(idx, v)
        kc, vc = k_cache, v_cache
    else:
        kc = k_cache.index_put(idx, k)
        vc = v_cache.index_put(idx, v)
    qr = rope(q, q_pos)
    kr = rope(kc, k_pos)
    mask = (k_valid != 0).repeat_interleave(n, dim=1)  # [B, T]
    return attention(qr, kr, vc, mask), kc, vc
