"""Stage 6: the VAE decoder adapted to what the student writes.

The VAE is trained on the latents of real crops; the student's two-step latents in the mouth
region are not those (a small DiT regresses towards an average, and the decoder has never seen
an average latent: decoded, it is colour noise rather than a blurred mouth). So the decoder, and
only the decoder (the encoder, hence every latent the DiT reads, stays as it is), is fine-tuned
to map the student's latents of training windows to those windows' real frames: L1 plus L1 on
image gradients, the re-rendered region weighted up, a small PatchGAN hinge term for texture;
a share of the batches decode real latents (lightly noised) so that it still decodes those.

The student's latents come from its runtime rollout (``student.rollout``: reference in the
sink, two steps per chunk, own outputs in the cache), so the decoder learns on exactly what it
decodes at run time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lipforce_sdk.config import ModelConfig

from .autoencoder import _grad_l1
from .crops import CropSet, to_unit
from .optim import adamw_cosine, optimizer_step
from .student import renoiser, rollout
from .teacher import LatentSet, Teacher

__all__ = ["DecoderConfig", "student_latents", "adapt_decoder", "patch_discriminator"]


@dataclass
class DecoderConfig:
    steps: int = 1500
    windows: int = 384  # student rollouts (training windows) to adapt on
    batch: int = 8
    segment: int = 2  # latent frames per sample (the decoder's temporal conv sees one step)
    window: int = 64  # pixels: the decoder is convolutional, train on windows round the mouth
    lr: float = 2e-4
    mouth_weight: float = 3.0
    real_share: float = 0.25  # batches' share of real latents (noised) instead of the student's
    adv_weight: float = 0.05  # PatchGAN hinge term; 0: none
    seed: int = 0


def patch_discriminator(ch: int = 32) -> nn.Module:
    """A small PatchGAN (spectral-normalised convs) on 64-pixel windows: real or decoded, per patch."""
    layers = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.LeakyReLU(0.2),
              nn.Conv2d(2 * ch, 2 * ch, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(2 * ch, 1, 3, 1, 1)]
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.utils.parametrizations.spectral_norm(m)
    return nn.Sequential(*layers)


@torch.no_grad()
def student_latents(student: Teacher, cfg: ModelConfig, ls: LatentSet, n: int, frames: int, t_land: float,
                    seed: int = 0, batch: int = 8) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """``n`` training windows ``(clip, start)`` and the student's rollout latents for them
    ``[n, z, frames, h, w]`` (fresh noise, the runtime's schedule)."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    picks = ls.pick(rng, n, frames)
    outs = []
    for s in range(0, n, batch):
        _, cond, mel, mask, ref = ls.gather(picks[s:s + batch], frames)
        noise, eps2 = torch.randn(cond.shape, generator=g), torch.randn(cond.shape, generator=g)
        outs.append(rollout(student.dit, cfg, cond, mask, student.tokens(mel), noise,
                            renoiser(eps2, t_land, cfg.stream.chunk_frames), t_land, ref=ref))
    return picks, torch.cat(outs)


def adapt_decoder(vae, student: Teacher, cfg: ModelConfig, ls: LatentSet, cs: CropSet, t_land: float,
                  dc: DecoderConfig = DecoderConfig(), frames: int = 8, log=print) -> dict:
    """Fine-tune ``vae``'s decoder in place on the student's latents of ``dc.windows`` training
    windows (``cs`` holds their frames, ``ls`` their latents)."""
    t0 = time.perf_counter()
    tc, sc = cfg.vae.temporal_compression, cfg.vae.spatial_compression
    picks, lat = student_latents(student, cfg, ls, dc.windows, frames, t_land, seed=dc.seed)
    log(f"  decoder: {len(picks)} student windows in {time.perf_counter() - t0:.0f} s")
    rng = np.random.default_rng(dc.seed)
    g = torch.Generator().manual_seed(dc.seed)
    dec = [p for n, p in vae.named_parameters() if n.startswith("dec")]
    for n, p in vae.named_parameters():
        p.requires_grad_(n.startswith("dec"))
    torch.manual_seed(dc.seed)
    disc = patch_discriminator()
    dopt = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.9))
    opt, sched = adamw_cosine(dec, dc.lr, dc.steps)
    size = cfg.stream.resolution
    win = min(dc.window, size) // sc * sc
    shapes = vae.cache_shapes(dc.batch)["dec"]

    def sample():
        zs, xs, ws = [], [], []
        for _ in range(dc.batch):
            k = int(rng.integers(len(picks)))
            i, start = picks[k]
            s = int(rng.integers(0, frames - dc.segment + 1))
            c = cs.clips[i]
            fsl = slice((start + s) * tc, (start + s + dc.segment) * tc)
            hard = c.hard[fsl].astype(np.float32)
            if hard[0].any():
                my, mx = np.nonzero(hard[0])
                j = int(rng.integers(len(my)))
                y0, x0 = my[j] - win // 2, mx[j] - win // 2
            else:
                y0, x0 = rng.integers(0, size - win + 1, 2)
            y0, x0 = (int(np.clip(v, 0, size - win)) // sc * sc for v in (y0, x0))
            ly, lx = slice(y0 // sc, (y0 + win) // sc), slice(x0 // sc, (x0 + win) // sc)
            if rng.random() < dc.real_share:
                z = ls.z[i][:, start + s:start + s + dc.segment, ly, lx]
                z = z + 0.02 * torch.randn(z.shape, generator=g)
            else:
                z = lat[k][:, s:s + dc.segment, ly, lx]
            zs.append(z)
            xs.append(torch.from_numpy(to_unit(c.target[fsl, y0:y0 + win, x0:x0 + win])))
            ws.append(torch.from_numpy(1.0 + dc.mouth_weight * hard[None, :, y0:y0 + win, x0:x0 + win]))
        return torch.stack(zs), torch.stack(xs).float(), torch.stack(ws)

    def flat(a):  # [B, 3, F, H, W] -> [B*F, 3, H, W]
        return a.transpose(1, 2).reshape(-1, a.shape[1], *a.shape[-2:])

    vae.train()
    hist = []
    for it in range(dc.steps):
        z, x, w = sample()
        y, _ = vae.decode(z, [torch.zeros((*s_[:-2], *z.shape[-2:])) for s_ in shapes])
        rec = ((y - x).abs() * w).mean() / w.mean()
        loss = rec + _grad_l1(y, x, w)
        adv = dc.adv_weight if it >= min(100, dc.steps // 10) else 0.0  # after a warm-up
        if adv > 0:
            loss = loss - adv * disc(flat(y)).mean()
        optimizer_step(loss, opt, sched, dec)
        if dc.adv_weight > 0:
            ld = F.relu(1 - disc(flat(x))).mean() + F.relu(1 + disc(flat(y.detach()))).mean()
            dopt.zero_grad(set_to_none=True)
            ld.backward()
            dopt.step()
        hist.append(float(rec.detach()))
        if it % 100 == 0 or it == dc.steps - 1:
            log(f"  decoder step {it:5d}  L1(weighted) {np.mean(hist[-100:]):.4f}  {time.perf_counter() - t0:6.0f} s")
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return {"steps": dc.steps, "windows": len(picks), "final_l1": float(np.mean(hist[-100:])) if hist else float("nan"),
            "seconds": time.perf_counter() - t0}
