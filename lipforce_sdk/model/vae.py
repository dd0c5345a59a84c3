"""Streaming video VAEs behind one interface, causal in time.

``StreamingVAE``: 8x spatial, ``Tc``x temporal compression (Wan's layout). ``FrameVAE``: one
latent frame per video frame, 4x (or 8x) spatial, for small face crops. ``make_vae(cfg)`` picks
by ``cfg.vae.kind``. Behind the ``VideoVAE`` interface (``encode``/``decode`` with explicit conv caches, and
``cache_shapes``) so a Wan-VAE-compatible implementation can take its place. Temporal convs are
causal: each keeps the last ``k-1`` input frames of the previous call as its cache, so encoding a
clip chunk by chunk equals encoding it at once. The encoder returns the posterior mean (it is used
as a deterministic encoder at inference).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig

__all__ = ["VideoVAE", "StreamingVAE", "FrameVAE", "CausalTimeConv", "make_vae"]


class VideoVAE(nn.Module, ABC):
    """Interface: frames [B, 3, Fv, H, W] in [-1, 1] <-> latents [B, z, Fv/Tc, H/8, W/8]."""

    @abstractmethod
    def encode(self, frames: torch.Tensor, caches: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    @abstractmethod
    def decode(self, latents: torch.Tensor, caches: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    @abstractmethod
    def cache_shapes(self, batch: int = 1) -> dict[str, list[tuple[int, ...]]]:
        """``{"enc": [shape, ...], "dec": [shape, ...]}``; caches start at zero."""


class CausalTimeConv(nn.Module):
    """Conv3d with kernel (kt, 3, 3), causal in time; the cache holds the last kt-1 input frames."""

    def __init__(self, cin: int, cout: int, kt: int):
        super().__init__()
        self.kt = kt
        self.conv = nn.Conv3d(cin, cout, (kt, 3, 3), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xx = torch.cat([cache, x], dim=2)  # [B, C, kt-1+F, H, W]
        return self.conv(xx), xx[:, :, xx.shape[2] - (self.kt - 1):]


def _per_frame(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply a 2-D module to every frame of [B, C, F, H, W]."""
    b, c, f, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * f, c, h, w))
    return y.reshape(b, f, y.shape[1], y.shape[2], y.shape[3]).transpose(1, 2)


class StreamingVAE(VideoVAE):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        v = cfg.vae
        c = v.base_channels
        self.tc, self.z = v.temporal_compression, v.z_dim
        self.latent_hw = cfg.latent_hw
        self.c4 = 4 * c
        act = nn.SiLU()
        # encoder: per-frame 2-D downsampling (8x), causal temporal conv, pack Tc frames -> 1 latent frame
        self.enc_in = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), act,
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), act,
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), act,
            nn.Conv2d(4 * c, 4 * c, 3, stride=2, padding=1), act,
        )
        self.enc_time = CausalTimeConv(self.c4, self.c4, 3)
        self.enc_out = nn.Conv3d(self.c4 * self.tc, 2 * self.z, 1)  # mean, logvar
        # decoder: causal temporal conv over latent frames, unpack, causal temporal conv, 2-D upsampling
        self.dec_in = CausalTimeConv(self.z, self.c4, 2)
        self.dec_unpack = nn.Conv3d(self.c4, self.c4 * self.tc, 1)
        self.dec_time = CausalTimeConv(self.c4, self.c4, 3)
        up = []
        for cin, cout in ((4 * c, 4 * c), (4 * c, 2 * c), (2 * c, c)):
            up += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1), act]
        self.dec_out = nn.Sequential(*up, nn.Conv2d(c, 3, 3, padding=1))

    def cache_shapes(self, batch: int = 1) -> dict[str, list[tuple[int, ...]]]:
        h, w = self.latent_hw
        return {
            "enc": [(batch, self.c4, 2, h, w)],
            "dec": [(batch, self.z, 1, h, w), (batch, self.c4, 2, h, w)],
        }

    def encode(self, frames, caches):
        # frames [B, 3, Fv, H, W] -> latents [B, z, Fv/Tc, h, w]
        b, _, fv, _, _ = frames.shape
        feat = _per_frame(frames, self.enc_in)  # [B, c4, Fv, h, w]
        feat, c0 = self.enc_time(feat, caches[0])
        h, w = feat.shape[-2:]
        packed = feat.reshape(b, self.c4, fv // self.tc, self.tc, h, w).transpose(2, 3)  # [B, c4, Tc, C, h, w]
        packed = packed.reshape(b, self.c4 * self.tc, fv // self.tc, h, w)
        mean = self.enc_out(packed)[:, : self.z]
        return mean, [c0]

    def decode(self, latents, caches):
        # latents [B, z, C, h, w] -> frames [B, 3, C*Tc, H, W]
        b, _, cf, h, w = latents.shape
        x, c0 = self.dec_in(latents, caches[0])
        x = F.silu(x)
        x = self.dec_unpack(x).reshape(b, self.c4, self.tc, cf, h, w).transpose(2, 3).reshape(b, self.c4, cf * self.tc, h, w)
        x, c1 = self.dec_time(x, caches[1])
        x = F.silu(x)
        out = _per_frame(x, self.dec_out)
        return out.clamp(-1.0, 1.0), [c0, c1]


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class FrameVAE(VideoVAE):
    """Per-frame autoencoder of face crops with a causal temporal conv in the decoder.

    Encoder (per frame, no state): pixel-unshuffle 2x, conv, ``log2(sc) - 1`` stride-2 convs, a
    residual block, 1x1 to the latent mean. Decoder: a causal (2, 3, 3) conv over latent frames
    (its cache is the previous latent frame: temporal smoothness without packing frames
    together), a residual block, ``log2(sc) - 1`` nearest-upsample convs, then a sub-pixel conv
    (pixel shuffle 2x) to RGB. Every video frame has a latent frame of its own, so nothing of one
    frame is decoded into another (no ghosting), and the algorithmic latency of a chunk is its
    own frames only.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        v = cfg.vae
        c = v.base_channels
        self.tc, self.z = 1, v.z_dim
        self.latent_hw = cfg.latent_hw
        stages = int(round(math.log2(v.spatial_compression))) - 1
        enc = [nn.PixelUnshuffle(2), nn.Conv2d(12, c, 3, padding=1), nn.SiLU()]
        ch = c
        for _ in range(stages):
            enc += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), nn.SiLU()]
            ch *= 2
        self.c_lat = ch
        self.enc = nn.Sequential(*enc, _ResBlock(ch), nn.SiLU())
        self.enc_out = nn.Conv2d(ch, self.z, 1)
        self.dec_in = CausalTimeConv(self.z, ch, 2)
        dec = [_ResBlock(ch)]
        for _ in range(stages):
            dec += [nn.SiLU(), nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(ch, ch // 2, 3, padding=1)]
            ch //= 2
        dec += [nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(), nn.Conv2d(ch, 12, 3, padding=1), nn.PixelShuffle(2)]
        self.dec = nn.Sequential(*dec)

    def cache_shapes(self, batch: int = 1) -> dict[str, list[tuple[int, ...]]]:
        h, w = self.latent_hw
        return {"enc": [], "dec": [(batch, self.z, 1, h, w)]}

    def encode(self, frames, caches):
        # frames [B, 3, F, H, W] -> latents [B, z, F, h, w]
        return _per_frame(frames, lambda x: self.enc_out(self.enc(x))), []

    def decode(self, latents, caches):
        # latents [B, z, F, h, w] -> frames [B, 3, F, H, W]
        x, c0 = self.dec_in(latents, caches[0])
        out = _per_frame(x, self.dec)
        return out.clamp(-1.0, 1.0), [c0]


def make_vae(cfg: ModelConfig) -> VideoVAE:
    """The VAE of ``cfg.vae.kind``."""
    return FrameVAE(cfg) if cfg.vae.kind == "frame" else StreamingVAE(cfg)
