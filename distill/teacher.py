"""Stage 3: the teacher, the bidirectional form of the SDK's DiT family, trained by flow matching.

Same modules as the student (``AudioEncoder`` + ``WanDiT``); the teacher runs ``forward_full``
(every latent frame of a window attends to every other, frame positions 0..L-1). Rectified flow
``x_t = (1 - t) x0 + t eps``; the network predicts the velocity ``eps - x0`` and returns
``x0 = x_t - t v``, so the loss ``|v_pred - v|^2 = |x0_pred - x0|^2 / t^2``. Audio dropout: with
probability ``audio_dropout`` a sample's audio tokens are replaced by zeros (the null
condition), which gives classifier-free guidance ``x0_u + w (x0_c - x0_u)``.

``sample`` integrates the flow with Euler steps on an even grid; ``guidance`` says, per timestep,
whether CFG is on (everywhere, nowhere, or only inside the sync window).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from lipforce_sdk.config import ModelConfig
from lipforce_sdk.model.audio_encoder import AudioEncoder
from lipforce_sdk.model.dit import WanDiT

from .dataset import PairSet, latent_mask
from .optim import adamw_cosine, optimizer_step

__all__ = ["Teacher", "LatentSet", "TeacherTrainConfig", "train_teacher", "sample", "window_guidance",
           "flow_matching_loss"]


class Teacher(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = AudioEncoder(cfg)
        self.dit = WanDiT(cfg)

    def tokens(self, mel: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """mel ``[B, Fv, Wm, n_mels]`` -> audio tokens; ``keep`` ``[B]`` bool, False -> null audio."""
        tok = self.audio_encoder(mel)
        if keep is not None:
            tok = tok * keep.to(tok.dtype)[:, None, None, None]
        return tok

    def x0(self, x_t, t, cond, mask, tok, guidance: float = 1.0):
        """x0 prediction; ``guidance != 1`` adds CFG against the null audio condition."""
        tt = t if torch.is_tensor(t) else torch.full((x_t.shape[0],), float(t))
        xc = self.dit.forward_full(x_t, tt, cond, mask, tok)
        if guidance == 1.0:
            return xc
        xu = self.dit.forward_full(x_t, tt, cond, mask, torch.zeros_like(tok))
        return xu + guidance * (xc - xu)


@dataclass
class LatentSet:
    """A ``PairSet`` in latent space: per clip ``z`` (target latents) and ``cond`` (masked-source
    latents) ``[z, C, h, w]``, ``mel`` ``[C*Tc, Wm, n_mels]``."""

    z: list[torch.Tensor]
    cond: list[torch.Tensor]
    mel: list[torch.Tensor]
    mask: torch.Tensor  # [Tc, h, w]
    tc: int
    res: int  # crop size in pixels

    @classmethod
    @torch.no_grad()
    def encode(cls, vae, ps: PairSet, cfg: ModelConfig) -> "LatentSet":
        from .autoencoder import encode_clip
        from .dataset import to_unit

        z = [encode_clip(vae, to_unit(t)) for t in ps.target]
        c = [encode_clip(vae, m) for m in ps.masked]
        return cls(z, c, [torch.from_numpy(m) for m in ps.mel], torch.from_numpy(latent_mask(cfg)),
                   cfg.vae.temporal_compression, cfg.stream.resolution)

    def windows(self, rng: np.random.Generator, batch: int, frames: int):
        """A batch of random windows of ``frames`` latent frames (clips at least that long)."""
        ok = [i for i, z in enumerate(self.z) if z.shape[1] >= frames]
        zs, cs, ms = [], [], []
        for _ in range(batch):
            i = ok[int(rng.integers(len(ok)))]
            s = int(rng.integers(0, self.z[i].shape[1] - frames + 1))
            zs.append(self.z[i][:, s:s + frames])
            cs.append(self.cond[i][:, s:s + frames])
            ms.append(self.mel[i][s * self.tc:(s + frames) * self.tc])
        return torch.stack(zs), torch.stack(cs), torch.stack(ms), self.mask_for(batch, frames)

    def mask_for(self, batch: int, frames: int) -> torch.Tensor:
        return self.mask[None, :, None].expand(batch, -1, frames, -1, -1).contiguous()

    def loss_weight(self, mouth_weight: float, lips_weight: float = 0.0) -> torch.Tensor:
        """Per latent pixel ``[1, 1, 1, h, w]``: heavier where the mouth is re-rendered, and
        heavier still over the lips (``autoencoder.lips_weight`` averaged per latent pixel)."""
        from .autoencoder import lips_weight as lips_px

        h, w = self.mask.shape[-2:]
        s = self.res // h
        lips = torch.from_numpy(lips_px(self.res).reshape(h, s, w, s).mean(axis=(1, 3)))
        return (1.0 + mouth_weight * self.mask.amax(0) + lips_weight * lips)[None, None, None]


@dataclass
class TeacherTrainConfig:
    steps: int = 3000
    batch: int = 8
    frames: int = 8  # latent frames per window
    lr: float = 4e-4
    audio_dropout: float = 0.15
    mouth_weight: float = 4.0
    lips_weight: float = 0.0
    t_min: float = 0.02
    seed: int = 0


def sample_t(rng: torch.Generator, n: int, t_min: float) -> torch.Tensor:
    """Logit-normal (SD3) timesteps, half of them uniform, clipped to ``[t_min, 1]``."""
    u = torch.sigmoid(torch.randn(n, generator=rng))
    uni = torch.rand(n, generator=rng)
    pick = torch.rand(n, generator=rng) < 0.5
    return torch.where(pick, u, uni).clamp(t_min, 1.0)


def flow_matching_loss(x0_fn: Callable, z, t, eps, weight) -> torch.Tensor:
    """``x0_fn(x_t, t) -> x0``; weighted velocity MSE."""
    tt = t.reshape(-1, 1, 1, 1, 1)
    x_t = (1.0 - tt) * z + tt * eps
    err = (x0_fn(x_t, t) - z) / tt
    return (err.pow(2) * weight).mean() / weight.mean()


def train_teacher(model: Teacher, ls: LatentSet, cfg: TeacherTrainConfig = TeacherTrainConfig(), log=print) -> dict:
    rng = np.random.default_rng(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    opt, sched = adamw_cosine(model.parameters(), cfg.lr, cfg.steps)
    weight = ls.loss_weight(cfg.mouth_weight, cfg.lips_weight)
    model.train()
    t0, hist = time.perf_counter(), []
    for step in range(cfg.steps):
        z, cond, mel, mask = ls.windows(rng, cfg.batch, cfg.frames)
        keep = torch.rand(cfg.batch, generator=g) >= cfg.audio_dropout
        tok = model.tokens(mel, keep)
        t = sample_t(g, cfg.batch, cfg.t_min)
        eps = torch.randn(z.shape, generator=g)
        loss = flow_matching_loss(lambda x, tt: model.dit.forward_full(x, tt, cond, mask, tok), z, t, eps, weight)
        optimizer_step(loss, opt, sched, model.parameters())
        hist.append(float(loss.detach()))
        if step % 200 == 0 or step == cfg.steps - 1:
            log(f"  teacher step {step:5d}  loss {np.mean(hist[-200:]):.4f}  {time.perf_counter() - t0:6.0f} s")
    model.eval()
    return {"steps": cfg.steps, "final_loss": float(np.mean(hist[-200:])), "seconds": time.perf_counter() - t0}


def window_guidance(scale: float, window: tuple[float, float] | None) -> Callable[[float], float]:
    """CFG scale per timestep: ``scale`` inside ``window = (lo, hi)`` (``None``: everywhere), else 1."""
    def g(t: float) -> float:
        if window is None:
            return scale
        return scale if window[0] - 1e-6 <= t <= window[1] + 1e-6 else 1.0
    return g


def time_grid(steps: int) -> list[float]:
    return [1.0 - i / steps for i in range(steps + 1)]


@torch.no_grad()
def sample(model: Teacher, cond, mask, tok, noise, steps: int, guidance: Callable[[float], float],
           record: Callable | None = None) -> torch.Tensor:
    """Euler integration from ``t = 1`` (``noise``) to 0 on an even grid of ``steps`` steps.

    ``record(t, x_t, x0_pred)`` (optional) sees every visited state and its x0 prediction."""
    grid = time_grid(steps)
    x = noise
    for t, t_next in zip(grid[:-1], grid[1:]):
        x0 = model.x0(x, t, cond, mask, tok, guidance(t))
        if record is not None:
            record(t, x, x0)
        eps = (x - (1.0 - t) * x0) / t
        x = (1.0 - t_next) * x0 + t_next * eps
    return x
