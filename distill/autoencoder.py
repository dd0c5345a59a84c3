"""Stage 1: train the SDK's VAE as an autoencoder of mouth crops.

The DiT works in this VAE's latent space: it reads the latents of the masked source and of the
reference frames and writes the latents of the re-rendered crop, whose masked region is pasted
back. So the VAE must encode both kinds of crops and decode the mouth sharply, on real faces as
well as procedural ones: the loss is L1 over the crop plus L1 on image gradients (edges: what a
light autoencoder blurs first), both weighted up inside the re-rendered region, with Gaussian
noise on the latents while training so that the decoder tolerates the DiT's small errors.
Segments of ``segment`` consecutive frames train the decoder's causal temporal conv. Colour,
brightness and mirror augmentation widen the faces it has seen.

After training the latents are rescaled to unit standard deviation (the diffusion schedule
assumes it) by folding the scale into ``enc_out`` and ``dec_in``: an exact reparametrisation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .crops import CropSet, from_unit, to_unit
from .optim import adamw_cosine, optimizer_step

__all__ = ["AETrainConfig", "train_autoencoder", "normalize_latents", "encode_clip", "decode_latents",
           "reconstruction_scores"]


@dataclass
class AETrainConfig:
    steps: int = 3000
    batch: int = 8
    segment: int = 2  # consecutive frames per sample (the decoder's temporal conv)
    lr: float = 1e-3
    mouth_weight: float = 3.0  # extra weight inside the re-rendered region (the source's hard mask)
    grad_weight: float = 1.0  # L1 on horizontal/vertical differences (edges)
    latent_noise: float = 0.02  # x the latents' running std
    masked_sources: float = 0.3  # share of segments that are masked sources (the DiT's condition input)
    real_share: float = 0.5  # share of segments drawn from non-procedural clips (when there are any)
    window: int | None = 64  # train on windows of this side (the VAE is convolutional); None: whole crops
    mouth_windows: float = 0.75  # share of windows centred on the re-rendered region
    augment: bool = True
    latent_l2: float = 1e-4
    seed: int = 0


def _sample(cs: CropSet, rng: np.random.Generator, cfg: AETrainConfig, groups: list[list[int]]):
    """``cfg.batch`` segments ``[B, 3, T, S, S]`` in [-1, 1] and their weights ``[B, 1, T, S, S]``."""
    xs, ws = [], []
    for _ in range(cfg.batch):
        g = groups[1] if groups[1] and rng.random() < cfg.real_share else groups[0] or groups[1]
        c = cs.clips[g[int(rng.integers(len(g)))]]
        s = int(rng.integers(0, c.num_frames - cfg.segment + 1))
        sl = slice(s, s + cfg.segment)
        hard = c.hard[sl].astype(np.float32)
        x = to_unit(c.target[sl])
        if rng.random() < cfg.masked_sources:
            x = (to_unit(c.source[sl]) * (1.0 - hard[None])).astype(np.float32)
        if cfg.window:
            side, win = hard.shape[-1], cfg.window
            if rng.random() < cfg.mouth_windows and hard[0].any():
                my, mx = np.nonzero(hard[0])
                k = int(rng.integers(len(my)))
                y0, x0 = my[k] - win // 2, mx[k] - win // 2
            else:
                y0, x0 = rng.integers(0, side - win + 1, 2)
            y0, x0 = (int(np.clip(v, 0, side - win)) // 8 * 8 for v in (y0, x0))  # on the latent grid
            x, hard = x[..., y0:y0 + win, x0:x0 + win], hard[..., y0:y0 + win, x0:x0 + win]
        if cfg.augment:
            if rng.random() < 0.5:
                x, hard = x[..., ::-1], hard[..., ::-1]
            gain = rng.uniform(0.8, 1.2, (3, 1, 1, 1)).astype(np.float32) * rng.uniform(0.85, 1.15)
            x = np.clip((x + 1.0) * gain - 1.0 + rng.uniform(-0.08, 0.08), -1.0, 1.0)
        xs.append(np.ascontiguousarray(x))
        ws.append(1.0 + cfg.mouth_weight * np.ascontiguousarray(hard)[None])
    return torch.from_numpy(np.stack(xs)).float(), torch.from_numpy(np.stack(ws)).float()


def _grad_l1(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    dy = (y[..., 1:, :] - y[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])
    dx = (y[..., :, 1:] - y[..., :, :-1]) - (x[..., :, 1:] - x[..., :, :-1])
    return ((dy.abs() * w[..., 1:, :]).mean() + (dx.abs() * w[..., :, 1:]).mean()) / w.mean()


def train_autoencoder(vae, cs: CropSet, cfg: AETrainConfig = AETrainConfig(), log=print) -> dict:
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    groups = [[i for i, c in enumerate(cs.clips) if c.kind == "procedural" and c.num_frames >= cfg.segment],
              [i for i, c in enumerate(cs.clips) if c.kind != "procedural" and c.num_frames >= cfg.segment]]
    if not groups[0] and not groups[1]:
        raise ValueError(f"no clip has {cfg.segment} frames to train the autoencoder on")
    opt, sched = adamw_cosine(vae.parameters(), cfg.lr, cfg.steps)
    vae.train()
    t0 = time.perf_counter()
    hist = []
    for step in range(cfg.steps):
        x, w = _sample(cs, rng, cfg, groups)
        b = x.shape[0]
        z, _ = vae.encode(x, [torch.zeros(s) for s in vae.cache_shapes(b)["enc"]])
        zn = z + cfg.latent_noise * z.detach().std() * torch.randn_like(z)
        y, _ = vae.decode(zn, [torch.zeros((*s[:-2], *z.shape[-2:])) for s in vae.cache_shapes(b)["dec"]])
        rec = ((y - x).abs() * w).mean() / w.mean()
        loss = rec + cfg.grad_weight * _grad_l1(y, x, w) + cfg.latent_l2 * z.pow(2).mean()
        optimizer_step(loss, opt, sched, vae.parameters())
        hist.append(float(rec.detach()))
        if step % 100 == 0 or step == cfg.steps - 1:
            log(f"  ae step {step:5d}  L1(weighted) {np.mean(hist[-100:]):.4f}  {time.perf_counter() - t0:6.0f} s")
    vae.eval()
    final = float(np.mean(hist[-100:])) if hist else float("nan")  # no steps: nothing measured
    return {"steps": cfg.steps, "final_l1": final, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def encode_clip(vae, frames: np.ndarray) -> torch.Tensor:
    """float32 ``[3, F, S, S]`` in [-1, 1] -> latents ``[z, F/Tc, h, w]`` (one pass from zero caches,
    equal to encoding the clip chunk by chunk)."""
    caches = [torch.zeros(s) for s in vae.cache_shapes(1)["enc"]]
    z, _ = vae.encode(torch.from_numpy(np.ascontiguousarray(frames))[None], caches)
    return z[0]


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """latents ``[B, z, C, h, w]`` -> frames ``[B, 3, C*Tc, S, S]`` in [-1, 1], from zero caches."""
    caches = [torch.zeros(s) for s in vae.cache_shapes(z.shape[0])["dec"]]
    return vae.decode(z, caches)[0]


@torch.no_grad()
def normalize_latents(vae, cs: CropSet, clips: int = 32) -> float:
    """Rescale the latent space to unit std (over target clips); returns the scale divided out."""
    zs = [encode_clip(vae, to_unit(cs.clips[i].target)) for i in range(min(clips, len(cs)))]
    s = float(torch.cat([z.flatten() for z in zs]).std())
    vae.enc_out.weight.div_(s)
    vae.enc_out.bias.div_(s)
    vae.dec_in.conv.weight.mul_(s)
    return s


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@torch.no_grad()
def reconstruction_scores(vae, cs: CropSet, clips: int | None = None, max_frames: int = 48) -> list[dict]:
    """Per clip: PSNR of decode(encode(target)) over the whole crop, its lower half, inside the
    mask; and a ghosting measure: PSNR against the frame itself minus PSNR against its
    neighbours' mean (large = nothing of the neighbours leaks in)."""
    out = []
    for c in cs.clips[: clips or len(cs)]:
        t = c.target[:max_frames]
        rec = from_unit(decode_latents(vae, encode_clip(vae, to_unit(t))[None])[0])
        s = t.shape[1]
        hard = c.hard[:max_frames] > 0
        inside = float(np.mean([_psnr(r[m], x[m]) for r, x, m in zip(rec, t, hard) if m.any()])) if hard.any() else float("nan")
        out.append({"name": c.name, "kind": c.kind, "psnr": _psnr(rec, t), "psnr_lower": _psnr(rec[:, s // 2:], t[:, s // 2:]),
                    "psnr_mask": inside})
    return out


def main(argv=None) -> int:
    """``python -m distill.autoencoder --clips DIR [--model DIR]``: the VAE alone (encode ->
    decode, no DiT) on the eye-aligned crops of every clip in ``DIR``: PSNR over the crop, its
    lower half and the mouth mask, and the ghosting measure (``reconstruction_scores``)."""
    import argparse

    from lipforce_sdk.model.checkpoint import load_model
    from lipforce_sdk.session import default_model_dir

    import tempfile
    from pathlib import Path

    from lipforce_sdk.media import probe, write_wav

    from .crops import real_clips
    from .realdata import VIDEO_EXT, _audio_for, load_clip

    ap = argparse.ArgumentParser(prog="python -m distill.autoencoder", description=main.__doc__.split("\n")[0])
    ap.add_argument("--clips", required=True, help="folder of face videos (their sound is not needed)")
    ap.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of each clip")
    a = ap.parse_args(argv)
    model = load_model(a.model or default_model_dir())
    cfg = model.cfg
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        silence = Path(tmp) / "silence.wav"  # the VAE needs no sound; a clip without any gets silence
        write_wav(silence, np.zeros(int(16000 * a.seconds) + 16000, np.float32))
        for v in sorted(p for p in Path(a.clips).iterdir() if p.suffix.lower() in VIDEO_EXT):
            audio = None if (_audio_for(v) or probe(v).has_audio) else silence
            clips += real_clips(cfg, load_clip(v, audio, max_seconds=a.seconds, cache=False))[:1]
    rows = reconstruction_scores(model.vae.eval(), CropSet.build(cfg, clips), max_frames=int(a.seconds * 25))
    print("| clip | PSNR crop (dB) | PSNR lower half (dB) | PSNR mouth mask (dB) |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['name']} | {r['psnr']:.2f} | {r['psnr_lower']:.2f} | {r['psnr_mask']:.2f} |")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
