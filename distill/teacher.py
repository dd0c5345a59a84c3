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

from .optim import adamw_cosine, optimizer_step

__all__ = ["Teacher", "teacher_config", "as_student", "Ref", "LatentSet", "TeacherTrainConfig", "train_teacher", "sample", "window_guidance",
           "flow_matching_loss", "loss_weight", "lips_map", "video_mask_to_latent"]


def teacher_config(cfg: ModelConfig) -> ModelConfig:
    """The teacher's form of a student config: a flow head (flow matching trains it at every
    noise level) and the masked source as it is."""
    return cfg.replace(dit={"output": "flow"}, stream={"fill": "none"})


def as_student(model: "Teacher", cfg: ModelConfig) -> "Teacher":
    """``model`` (a teacher's copy, or a student of an earlier form) made a student of ``cfg``: where
    the head's output form changes, the head starts at zero (a ``source`` head then returns the
    filled source until it learns its correction)."""
    if model.cfg.dit.output != cfg.dit.output:
        nn.init.zeros_(model.dit.head.head.weight)
        nn.init.zeros_(model.dit.head.head.bias)
    model.cfg = model.dit.cfg = cfg
    return model


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

    def forward_x0(self, x_t, t, cond, mask, tok, ref=None):
        """The bidirectional x0 prediction, after the reference frames ``ref`` (a ``Ref``) when given."""
        tt = t if torch.is_tensor(t) else torch.full((x_t.shape[0],), float(t))
        if ref is None:
            return self.dit.forward_full(x_t, tt, cond, mask, tok)
        return self.dit.forward_ref(x_t, tt, cond, mask, tok, ref.x0, ref.cond, ref.mask)

    def x0(self, x_t, t, cond, mask, tok, guidance: float = 1.0, ref=None):
        """x0 prediction; ``guidance != 1`` adds CFG against the null audio condition."""
        xc = self.forward_x0(x_t, t, cond, mask, tok, ref)
        if guidance == 1.0:
            return xc
        xu = self.forward_x0(x_t, t, cond, mask, torch.zeros_like(tok), ref)
        return xu + guidance * (xc - xu)


@dataclass
class Ref:
    """Reference frames in latent space, batched: clean latents ``x0``, masked-view latents
    ``cond`` ``[B, z, R, h, w]``, their mask ``[B, Tc, R, h, w]``."""

    x0: torch.Tensor
    cond: torch.Tensor
    mask: torch.Tensor

    def __getitem__(self, sel) -> "Ref":
        return Ref(self.x0[sel], self.cond[sel], self.mask[sel])


def video_mask_to_latent(hard: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Per-frame hard masks ``[Fv, S, S]`` -> the DiT's mask input ``[Tc, Fv/Tc, h, w]`` (as
    ``ChunkRenderer`` builds it: a latent pixel is masked if any of its pixels is)."""
    sc, tc = cfg.vae.spatial_compression, cfg.vae.temporal_compression
    f, s, _ = hard.shape
    lat = (hard > 0).reshape(f, s // sc, sc, s // sc, sc).max(axis=(2, 4)).astype(np.float32)
    return np.ascontiguousarray(lat.reshape(f // tc, tc, s // sc, s // sc).transpose(1, 0, 2, 3))


@dataclass
class LatentSet:
    """A ``CropSet`` in latent space: per clip ``z`` (target latents) and ``cond`` (masked-source
    latents) ``[z, C, h, w]``, ``mask`` ``[Tc, C, h, w]``, ``mel`` ``[C*Tc, Wm, n_mels]``, and the
    clip's reference ``ref_z``/``ref_cond`` ``[z, R, h, w]``, ``ref_mask`` ``[Tc, R, h, w]``."""

    z: list[torch.Tensor]
    cond: list[torch.Tensor]
    mask: list[torch.Tensor]
    mel: list[torch.Tensor]
    ref_z: list[torch.Tensor]
    ref_cond: list[torch.Tensor]
    ref_mask: list[torch.Tensor]
    tc: int
    res: int  # crop size in pixels

    @classmethod
    @torch.no_grad()
    def encode(cls, vae, cs, cfg: ModelConfig) -> "LatentSet":
        from .autoencoder import encode_clip
        from .crops import to_unit

        tc = cfg.vae.temporal_compression
        out = cls([], [], [], [], [], [], [], tc, cfg.stream.resolution)
        for c, mel in zip(cs.clips, cs.mel):
            out.z.append(encode_clip(vae, to_unit(c.target)))
            out.cond.append(encode_clip(vae, c.masked()))
            out.mask.append(torch.from_numpy(video_mask_to_latent(c.hard, cfg)))
            out.mel.append(torch.from_numpy(mel))
            if len(c.ref):
                out.ref_z.append(encode_clip(vae, to_unit(c.ref)))
                out.ref_cond.append(encode_clip(vae, c.ref_masked()))
                out.ref_mask.append(torch.from_numpy(video_mask_to_latent(c.ref_hard, cfg)))
        return out

    @property
    def has_ref(self) -> bool:
        return len(self.ref_z) == len(self.z) and len(self.z) > 0

    def __len__(self) -> int:
        return len(self.z)

    def ref(self, clips) -> Ref | None:
        if not self.has_ref:
            return None
        return Ref(torch.stack([self.ref_z[i] for i in clips]), torch.stack([self.ref_cond[i] for i in clips]),
                   torch.stack([self.ref_mask[i] for i in clips]))

    def pick(self, rng: np.random.Generator, batch: int, frames: int) -> list[tuple[int, int]]:
        """``batch`` random (clip, start) windows of ``frames`` latent frames."""
        ok = [i for i, z in enumerate(self.z) if z.shape[1] >= frames]
        if not ok:
            raise ValueError(f"no clip has {frames} latent frames; use shorter windows")
        clips = [ok[int(rng.integers(len(ok)))] for _ in range(batch)]
        return [(i, int(rng.integers(0, self.z[i].shape[1] - frames + 1))) for i in clips]

    def gather(self, picks: list[tuple[int, int]], frames: int):
        """``(z, cond, mel, mask, ref)`` of the windows ``picks``."""
        z = torch.stack([self.z[i][:, s:s + frames] for i, s in picks])
        cond = torch.stack([self.cond[i][:, s:s + frames] for i, s in picks])
        mel = torch.stack([self.mel[i][s * self.tc:(s + frames) * self.tc] for i, s in picks])
        mask = torch.stack([self.mask[i][:, s:s + frames] for i, s in picks])
        return z, cond, mel, mask, self.ref([i for i, _ in picks])

    def windows(self, rng: np.random.Generator, batch: int, frames: int):
        """A batch of random windows: ``(z, cond, mel, mask, ref)``."""
        return self.gather(self.pick(rng, batch, frames), frames)


def lips_map(cfg: ModelConfig) -> torch.Tensor:
    """Per latent pixel ``[h, w]`` in [0, 1]: where the lips and the gap between them are in an
    eye-aligned crop (``lipforce_sdk.geometry.lips_region``: a soft box around the mouth's place,
    ``CropSpec``: the crop is aligned so that every mouth sits there), averaged over each latent pixel."""
    from lipforce_sdk.geometry import lips_region

    return torch.from_numpy(lips_region(cfg.stream.resolution, cfg.latent_hw))


def loss_weight(mask: torch.Tensor, mouth_weight: float, lips: torch.Tensor | None = None,
                lips_weight: float = 0.0) -> torch.Tensor:
    """Per latent pixel ``[B, 1, L, h, w]``: 1, plus ``mouth_weight`` where the mouth is
    re-rendered, plus ``lips_weight`` over the lips (``lips_map``): the thin lip gap is a small
    part of the re-rendered region, and what a light model learns last."""
    w = 1.0 + mouth_weight * mask.amax(1, keepdim=True)
    if lips is not None and lips_weight:
        w = w + lips_weight * lips[None, None, None] * mask.amax(1, keepdim=True)
    return w


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
    model.train()
    lips = lips_map(model.cfg)
    t0, hist = time.perf_counter(), []
    for step in range(cfg.steps):
        z, cond, mel, mask, ref = ls.windows(rng, cfg.batch, cfg.frames)
        weight = loss_weight(mask, cfg.mouth_weight, lips, cfg.lips_weight)
        keep = torch.rand(cfg.batch, generator=g) >= cfg.audio_dropout
        tok = model.tokens(mel, keep)
        t = sample_t(g, cfg.batch, cfg.t_min)
        eps = torch.randn(z.shape, generator=g)
        loss = flow_matching_loss(lambda x, tt: model.forward_x0(x, tt, cond, mask, tok, ref), z, t, eps, weight)
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
           record: Callable | None = None, ref: Ref | None = None) -> torch.Tensor:
    """Euler integration from ``t = 1`` (``noise``) to 0 on an even grid of ``steps`` steps.

    ``record(t, x_t, x0_pred)`` (optional) sees every visited state and its x0 prediction."""
    grid = time_grid(steps)
    x = noise
    for t, t_next in zip(grid[:-1], grid[1:]):
        x0 = model.x0(x, t, cond, mask, tok, guidance(t), ref=ref)
        if record is not None:
            record(t, x, x0)
        eps = (x - (1.0 - t) * x0) / t
        x = (1.0 - t_next) * x0 + t_next * eps
    return x
