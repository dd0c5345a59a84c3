"""Stage 1: train the SDK's streaming VAE as an autoencoder of talking-face crops.

The DiT works in this VAE's latent space: it reads the latents of the masked source and writes
the latents of the re-rendered crop, whose mouth region is pasted back. So the VAE must encode
both kinds of frames and decode the mouth sharply: the loss is L1 over the crop plus a heavier
L1 inside the re-rendered region (``mouth_mask``) and heavier still on the lips (the thin
dark gap is what a light autoencoder loses first), with Gaussian noise on the latents while
training so that the decoder tolerates the DiT's small errors. Clips are cut into segments of
whole chunks encoded from zero caches (the VAE is causal: what a segment's first chunk sees of
the past is what a stream's first chunk sees).

After training the latents are rescaled to unit standard deviation (the diffusion schedule
assumes it) by folding the scale into ``enc_out`` and ``dec_in``: an exact reparametrisation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from lipforce_sdk.face import mouth_mask
from lipforce_sdk.model.vae import StreamingVAE

from .dataset import PairSet, from_unit, to_unit
from .optim import adamw_cosine, optimizer_step

__all__ = ["AETrainConfig", "train_autoencoder", "normalize_latents", "encode_clip"]


@dataclass
class AETrainConfig:
    steps: int = 2500
    batch: int = 6
    segment_chunks: int = 2  # latent frames per training segment
    lr: float = 1e-3
    mouth_weight: float = 4.0  # extra weight over the re-rendered region (mouth_mask)
    lips_weight: float = 12.0  # and over the lips themselves (the scorer's MOUTH_BOX)
    latent_noise: float = 0.02  # x the latents' running std
    masked_sources: bool = True  # half the segments are masked sources (the DiT's condition input)
    region_crops: float = 0.75  # share of crops that cover the re-rendered region
    region_rows: tuple[int, int] = (6, 9)  # their top row / left column, in 8-pixel steps [lo, hi)
    region_cols: tuple[int, int] = (1, 4)
    latent_l2: float = 1e-4
    seed: int = 0


CROP_HW = (64, 96)  # training crops: the convolutional VAE trains on windows of the frame


def _segments(ps: PairSet, rng: np.random.Generator, cfg: AETrainConfig, fv: int, tc: int) -> tuple[np.ndarray, list]:
    """``cfg.batch`` random segments of ``fv`` frames (chunk aligned), half targets, half masked
    sources (only targets without ``cfg.masked_sources``), cut to ``CROP_HW`` windows on the
    8-pixel latent grid: a share ``cfg.region_crops`` of them cover the re-rendered region (whose
    decoded pixels are pasted back), the rest lie anywhere. Returns the crops and their (row,
    col) offsets."""
    n = cfg.batch
    s_full = ps.target[0].shape[1]
    ch, cw = CROP_HW
    out = np.empty((n, 3, fv, ch, cw), np.float32)
    offs = []
    for b in range(n):
        i = int(rng.integers(len(ps)))
        f = ps.target[i].shape[0]
        s = int(rng.integers(0, (f - fv) // tc + 1)) * tc
        if rng.random() < cfg.region_crops:
            y0, x0 = 8 * int(rng.integers(*cfg.region_rows)), 8 * int(rng.integers(*cfg.region_cols))
        else:
            y0, x0 = 8 * int(rng.integers(0, (s_full - ch) // 8 + 1)), 8 * int(rng.integers(0, (s_full - cw) // 8 + 1))
        y0, x0 = min(y0, s_full - ch), min(x0, s_full - cw)
        seg = ps.masked[i][:, s:s + fv] if (cfg.masked_sources and b % 2) else to_unit(ps.target[i][s:s + fv])
        out[b] = seg[:, :, y0:y0 + ch, x0:x0 + cw]
        offs.append((y0, x0))
    return out, offs


def lips_weight(size: int) -> np.ndarray:
    """A soft box over ``faces.MOUTH_BOX`` (where the lips move), ``[S, S]`` in [0, 1]."""
    import cv2

    from .faces import MOUTH_BOX

    y0, y1, x0, x1 = MOUTH_BOX
    m = np.zeros((size, size), np.float32)
    m[int(y0 * size):int(y1 * size), int(x0 * size):int(x1 * size)] = 1.0
    return cv2.GaussianBlur(m, (0, 0), size / 64)


def _crop_cache(shape: tuple[int, ...], h: int, w: int) -> tuple[int, ...]:
    return (*shape[:-2], h, w)


def train_autoencoder(vae: StreamingVAE, ps: PairSet, cfg: AETrainConfig = AETrainConfig(), log=print) -> dict:
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    tc = vae.tc
    fv = cfg.segment_chunks * tc
    res = ps.target[0].shape[1]
    w_full = 1.0 + cfg.mouth_weight * mouth_mask(res) + cfg.lips_weight * lips_weight(res)
    ch, cw = CROP_HW
    opt, sched = adamw_cosine(vae.parameters(), cfg.lr, cfg.steps)
    sc = res // vae.latent_hw[0]
    vae.train()
    t0 = time.perf_counter()
    hist = []
    for step in range(cfg.steps):
        xs, offs = _segments(ps, rng, cfg, fv, tc)
        x = torch.from_numpy(xs)
        w = torch.from_numpy(np.stack([w_full[y0:y0 + ch, x0:x0 + cw] for y0, x0 in offs]))[:, None, None]
        z, _ = vae.encode(x, [torch.zeros(_crop_cache(s, ch // sc, cw // sc)) for s in vae.cache_shapes(cfg.batch)["enc"]])
        zn = z + cfg.latent_noise * z.detach().std() * torch.randn_like(z)
        y, _ = vae.decode(zn, [torch.zeros(_crop_cache(s, ch // sc, cw // sc)) for s in vae.cache_shapes(cfg.batch)["dec"]])
        rec = ((y - x).abs() * w).mean() / w.mean()
        loss = rec + cfg.latent_l2 * z.pow(2).mean()
        optimizer_step(loss, opt, sched, vae.parameters())
        hist.append(float(rec.detach()))
        if step % 100 == 0 or step == cfg.steps - 1:
            log(f"  ae step {step:5d}  L1(weighted) {np.mean(hist[-100:]):.4f}  {time.perf_counter() - t0:6.0f} s")
    vae.eval()
    final = float(np.mean(hist[-100:])) if hist else float("nan")  # no steps: nothing measured
    return {"steps": cfg.steps, "final_l1": final, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def encode_clip(vae: StreamingVAE, frames: np.ndarray) -> torch.Tensor:
    """float32 ``[3, F, S, S]`` in [-1, 1] -> latents ``[z, F/Tc, h, w]`` (one pass from zero caches,
    equal to encoding the clip chunk by chunk)."""
    caches = [torch.zeros(s) for s in vae.cache_shapes(1)["enc"]]
    z, _ = vae.encode(torch.from_numpy(frames)[None], caches)
    return z[0]


@torch.no_grad()
def decode_latents(vae: StreamingVAE, z: torch.Tensor) -> torch.Tensor:
    """latents ``[B, z, C, h, w]`` -> frames ``[B, 3, C*Tc, S, S]`` in [-1, 1], from zero caches."""
    caches = [torch.zeros(s) for s in vae.cache_shapes(z.shape[0])["dec"]]
    return vae.decode(z, caches)[0]


@torch.no_grad()
def normalize_latents(vae: StreamingVAE, ps: PairSet, clips: int = 32) -> float:
    """Rescale the latent space to unit std (over target clips); returns the scale divided out."""
    zs = [encode_clip(vae, to_unit(ps.target[i])) for i in range(min(clips, len(ps)))]
    s = float(torch.cat([z.flatten() for z in zs]).std())
    vae.enc_out.weight.div_(s)
    vae.enc_out.bias.div_(s)
    vae.dec_in.conv.weight.mul_(s)
    return s


def reconstruction_psnr(vae: StreamingVAE, ps: PairSet, clips: int = 8) -> dict:
    """PSNR of decode(encode(target)) inside and outside the re-rendered region (uint8 scale)."""
    from .metrics import fidelity

    vals = []
    for i in range(min(clips, len(ps))):
        z = encode_clip(vae, to_unit(ps.target[i]))
        vals.append(fidelity(from_unit(decode_latents(vae, z[None])[0]), ps.target[i]))
    return {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}

