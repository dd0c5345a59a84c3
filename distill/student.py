"""Stage 5: the causal two-step student (the SDK's model), distilled from the teacher.

The student is the SDK's ``WanDiT`` run exactly as the runtime runs it: chunk by chunk through
``WanDiT.step`` with the sink + ring KV cache of ``RingCachePlanner``, step 1 at ``t = 1``,
re-noise to ``t_land``, step 2, then the ``t = 0`` pass on the clean chunk writes the cache.

1. **ODE-pair init** (as CausVid/Self Forcing): the teacher integrates noise -> x0 (windowed CFG);
   the student learns, causally with the teacher's clean frames as context, to map the noise to
   that x0 at step 1 and the trajectory's state at ``t_land`` to it at step 2.
2. **Self-Forcing DMD**: the student rolls out a window autoregressively on its own outputs and
   its own KV cache (a random exit step carries the gradient, the cache passes do not). Its
   frames are pushed along ``x0_fake - x0_real`` (distribution matching): the real score is the
   frozen teacher, with CFG **only inside the sync window** (Sync-Window DMD); the fake score is a
   copy of the teacher trained online on the student's samples by flow matching.
3. **Sync reward**: the student's mouth region is decoded (VAE decoder on the mouth's latents),
   composited as the runtime pastes it, and scored by the frozen SyncNet; the loss is InfoNCE of
   each frame's video window against its own audio among the clip's audio shifted by +-15 frames.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lipforce_sdk.cache_plan import RingCachePlanner
from lipforce_sdk.config import GUIDANCE_REGIONS, ModelConfig
from lipforce_sdk.geometry import CropSpec, soft_mask
from lipforce_sdk.geometry import guidance_region as region_map
from lipforce_sdk.model.dit import WanDiT
from lipforce_sdk.sampler import audio_guided, fill_hole, hole_of

from .optim import adamw_cosine, optimizer_step
from .syncnet import MAX_OFFSET, VIDEO_HW, WINDOW
from .teacher import (LatentSet, Ref, Teacher, flow_matching_loss, lips_map, loss_weight, sample, sample_t,
                      time_grid, window_guidance)

__all__ = ["rollout", "weighted_mse", "ode_pairs", "data_pairs", "pairs_ref", "train_ode_init", "DMDConfig",
           "train_dmd", "SyncReward", "MouthDecoder", "MouthPixelLoss", "reward_inputs"]


def weighted_mse(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error weighted per latent pixel (``loss_weight``), normalised by the mean weight."""
    return ((x - target).pow(2) * weight).mean() / weight.mean()


def _plan_tensors(planner: RingCachePlanner):
    """The plan as ``WanDiT.step``'s positional tensors (write_idx, q_pos, k_pos, k_valid)."""
    return [torch.from_numpy(a) for a in planner.plan().as_feeds().values()]


def rollout(dit: WanDiT, cfg: ModelConfig, cond, mask, tok, noise, second: Callable, t_land: float,
            grad_step: int | None = None, context: torch.Tensor | None = None, ref: Ref | None = None,
            guidance: float = 1.0, guidance_region: str = "lips") -> torch.Tensor:
    """Autoregressive two-step generation of ``L`` latent frames, one chunk at a time.

    cond/noise ``[B, z, L, h, w]``, mask ``[B, Tc, L, h, w]``, tok ``[B, L*Tc, A, Da]``.
    ``ref``: the reference frames, written first into the cache's sink by ``t = 0`` passes with no
    audio, as ``ChunkRenderer.write_reference`` does (models with ``stream.sink == "reference"``).
    ``second(k, x0_step1) -> x_{t_land}`` gives step 2's input for chunk ``k`` (re-noising, or the
    teacher's trajectory state in the ODE init). ``grad_step`` (0 or 1) is the step that carries
    the gradient and whose x0 is the chunk's output; ``None``: no gradient, step 2's output.
    ``context`` (teacher forcing): the clean frames written into the cache instead of the outputs.
    ``guidance``: step 2's audio guidance, the runtime's own ``lipforce_sdk.sampler.audio_guided``
    (``ScheduleConfig.guidance``: ``x0_null + g (x0_audio - x0_null)``), the null pass without gradient;
    ``guidance_region``: where it acts (``ScheduleConfig.guidance_region``: ``"lips"``, ``lips_map``; ``"mouth"``,
    ``geometry.mouth_region``; ``"crop"``).
    """
    b, _, n, _, _ = cond.shape
    c = cfg.stream.chunk_frames
    tc = cfg.vae.temporal_compression
    if cfg.stream.fill == "reference":
        if ref is None:
            raise ValueError("this model fills the mask with its reference (stream.fill='reference'): pass ref=")
        cond = fill_hole(cond, hole_of(mask), ref.x0[:, :, :1])
        ref = Ref(ref.x0, fill_hole(ref.cond, hole_of(ref.mask), ref.x0[:, :, :1]), ref.mask)
    planner = RingCachePlanner.for_stream(cfg.stream)
    shape = dit.cache_shape(b)
    caches = [(torch.zeros(shape), torch.zeros(shape)) for _ in dit.blocks]
    if cfg.stream.sink == "reference":
        if ref is None:
            raise ValueError("this model's sink holds reference frames (stream.sink='reference'): pass ref=")
        tok0 = tok.new_zeros((b, c * tc, *tok.shape[2:]))
        with torch.no_grad():
            for k in range(0, ref.x0.shape[2], c):
                sl = slice(k, k + c)
                _, caches = dit.step(ref.x0[:, :, sl], torch.zeros(b), ref.cond[:, :, sl], ref.mask[:, :, sl], tok0,
                                     *_plan_tensors(planner), caches, inplace=False)
                planner.commit()
        caches = [(kc.detach(), vc.detach()) for kc, vc in caches]
    last = 1 if grad_step is None else grad_step
    if guidance_region not in GUIDANCE_REGIONS:
        raise ValueError(f"guidance_region={guidance_region!r}: one of {GUIDANCE_REGIONS}")
    region = None
    if guidance != 1.0:
        box = region_map(guidance_region, cfg.stream.resolution, cfg.latent_hw)  # None over the whole crop
        region = None if box is None else torch.from_numpy(box)[None, None, None]
    outs = []
    for k in range(0, n, c):
        sl = slice(k, k + c)
        idx = _plan_tensors(planner)

        def step(x, t, with_grad, null=False):
            with torch.set_grad_enabled(with_grad and torch.is_grad_enabled()):
                tt = torch.full((b,), float(t))
                tk = tok[:, k * tc:(k + c) * tc]
                return dit.step(x, tt, cond[:, :, sl], mask[:, :, sl], tk.new_zeros(tk.shape) if null else tk, *idx,
                                caches, inplace=False)

        x0, _ = step(noise[:, :, sl], 1.0, grad_step == 0)
        if last == 1:
            guided = audio_guided(lambda x, t: step(x, t, grad_step == 1)[0],
                                  lambda x, t: step(x, t, False, null=True)[0], guidance, t_land, region)
            x0 = guided(second(k, x0.detach()), t_land)
        outs.append(x0)
        clean = (x0 if context is None else context[:, :, sl]).detach()
        with torch.no_grad():
            _, new = step(clean, 0.0, False)
        caches = [(kc.detach(), vc.detach()) for kc, vc in new]
        planner.commit()
    return torch.cat(outs, dim=2)


def renoiser(eps2: torch.Tensor, t_land: float, chunk: int) -> Callable:
    return lambda k, x0: (1.0 - t_land) * x0 + t_land * eps2[:, :, k:k + chunk]


# ------------------------------------------------------------------------------------------
# 1. ODE-pair init
# ------------------------------------------------------------------------------------------


@torch.no_grad()
def ode_pairs(teacher: Teacher, ls: LatentSet, n: int, frames: int, steps: int, guidance, t_land: float,
              seed: int = 0, batch: int = 8) -> dict[str, torch.Tensor]:
    """``n`` teacher trajectories: noise, the state at ``t_land`` (a grid point), the final x0,
    and the windows' conditions and references."""
    grid = time_grid(steps)
    if not any(abs(t - t_land) < 1e-6 for t in grid):
        raise ValueError(f"t_land={t_land} is not on the {steps}-step grid {grid}")
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    keys = ("noise", "x_land", "x0", "cond", "mel", "mask", "ref_x0", "ref_cond", "ref_mask")
    out = {k: [] for k in keys}
    for s in range(0, n, batch):
        bsz = min(batch, n - s)
        _, cond, mel, mask, ref = ls.windows(rng, bsz, frames)
        tok = teacher.tokens(mel)
        noise = torch.randn((bsz, ls.z[0].shape[0], frames, *ls.z[0].shape[2:]), generator=g)
        seen = {}
        x0 = sample(teacher, cond, mask, tok, noise, steps, guidance,
                    record=lambda t, x, _x0: seen.__setitem__(round(t, 6), x), ref=ref)
        vals = {"noise": noise, "x_land": seen[round(t_land, 6)], "x0": x0, "cond": cond, "mel": mel, "mask": mask}
        if ref is not None:
            vals.update(ref_x0=ref.x0, ref_cond=ref.cond, ref_mask=ref.mask)
        for k, v in vals.items():
            out[k].append(v)
    return {k: torch.cat(v) for k, v in out.items() if v}


@torch.no_grad()
def data_pairs(ls: LatentSet, n: int, frames: int, t_land: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` windows of the data itself as pairs for ``train_ode_init``: noise, the target re-noised
    to ``t_land`` with fresh noise (what step 2 sees at run time), and the real latents as x0.

    Self-supervised, the way lip-sync models are trained: the mouth hidden in ``cond``, the clip's
    own speech as the condition, its frames as the target. A teacher that has not learnt to follow
    the audio (flow matching weights the low-noise end, where the audio is not needed) passes that
    on through its ODE pairs; the data does not."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    z, cond, mel, mask, ref = ls.windows(rng, n, frames)
    noise, eps2 = torch.randn(z.shape, generator=g), torch.randn(z.shape, generator=g)
    out = {"noise": noise, "x_land": (1.0 - t_land) * z + t_land * eps2, "x0": z, "cond": cond, "mel": mel,
           "mask": mask}
    if ref is not None:
        out.update(ref_x0=ref.x0, ref_cond=ref.cond, ref_mask=ref.mask)
    return out


def pairs_ref(p: dict) -> Ref | None:
    return Ref(p["ref_x0"], p["ref_cond"], p["ref_mask"]) if "ref_x0" in p else None


def train_ode_init(student: Teacher, cfg: ModelConfig, pairs: dict, steps: int, t_land: float,
                   mouth_weight: float = 4.0, lips_weight: float = 16.0, batch: int = 8, lr: float = 2e-4, seed: int = 0,
                   log=print) -> dict:
    """Regress the causal two-step student onto the teacher's ODE pairs (teacher forcing), the
    loss weighted up by ``mouth_weight`` where the mouth is re-rendered and ``lips_weight`` over
    the lips."""
    g = torch.Generator().manual_seed(seed)
    student.requires_grad_(True)
    opt, sched = adamw_cosine(student.parameters(), lr, steps)
    n = pairs["noise"].shape[0]
    lips = lips_map(cfg)
    t0, hist = time.perf_counter(), []
    student.train()
    for it in range(steps):
        sel = torch.randint(0, n, (batch,), generator=g)
        p = {k: v[sel] for k, v in pairs.items()}
        tok = student.tokens(p["mel"])
        w = loss_weight(p["mask"], mouth_weight, lips, lips_weight)
        loss = 0.0
        for gs in (0, 1):
            out = rollout(student.dit, cfg, p["cond"], p["mask"], tok, p["noise"],
                          lambda k, _x, xl=p["x_land"]: xl[:, :, k:k + cfg.stream.chunk_frames], t_land,
                          grad_step=gs, context=p["x0"], ref=pairs_ref(p))
            loss = loss + weighted_mse(out, p["x0"], w)
        optimizer_step(loss, opt, sched, student.parameters())
        hist.append(float(loss.detach()))
        if it % 100 == 0 or it == steps - 1:
            log(f"  ode-init step {it:5d}  loss {np.mean(hist[-100:]):.4f}  {time.perf_counter() - t0:6.0f} s")
    student.eval()
    return {"steps": steps, "final_loss": float(np.mean(hist[-100:])), "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------
# 3. Sync reward
# ------------------------------------------------------------------------------------------


class MouthDecoder:
    """The frozen VAE decoder run on the latents around the crop's mouth box only (the decoder is
    convolutional: ``margin`` latent pixels round the box give it its context)."""

    def __init__(self, vae, cfg: ModelConfig, margin: int = 1):
        self.vae = vae
        for p in vae.parameters():
            p.requires_grad_(False)
        s = cfg.stream.resolution
        sc = cfg.vae.spatial_compression
        y0, y1, x0, x1 = CropSpec().mouth_box()
        self.box = (int(round(y0 * s)), int(round(y1 * s)), int(round(x0 * s)), int(round(x1 * s)))
        r0, r1, c0, c1 = self.box
        self.lat = (max(0, r0 // sc - margin), min(s // sc, -(-r1 // sc) + margin),
                    max(0, c0 // sc - margin), min(s // sc, -(-c1 // sc) + margin))
        self.sc = sc

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """z ``[B, z, L, h, w]`` -> the mouth box decoded, ``[B, 3, F, H, W]`` in [-1, 1]."""
        a0, a1, b0, b1 = self.lat
        zc = z[:, :, :, a0:a1, b0:b1]
        caches = [torch.zeros(*s[:-2], a1 - a0, b1 - b0) for s in self.vae.cache_shapes(z.shape[0])["dec"]]
        y = self.vae.decode(zc, caches)[0]  # [B, 3, F, (a1-a0)*sc, (b1-b0)*sc]
        r0, r1, c0, c1 = self.box
        return y[..., r0 - a0 * self.sc:r1 - a0 * self.sc, c0 - b0 * self.sc:c1 - b0 * self.sc]


class MouthPixelLoss:
    """The student's mouth judged in pixels, not latents: L1 and image-gradient L1 between the
    decoded mouth box of the student's latents and of the target's (frozen decoder), the lips
    (``geometry.lips_region``) weighted up by ``lips_weight``.

    A latent regression lands on the average latent of the mouths the audio leaves open, and the
    decoder never saw an average latent: decoded, the open mouth's inside comes out as a grey-green
    band rather than a softer mouth. Judged after the decoder, the student is asked for latents
    that decode to the pixels' median (L1) with their edges (the gradient term)."""

    def __init__(self, vae, cfg: ModelConfig, lips_weight: float = 4.0):
        from lipforce_sdk.geometry import lips_region

        self.dec = MouthDecoder(vae, cfg)
        s = cfg.stream.resolution
        r0, r1, c0, c1 = self.dec.box
        lips = torch.from_numpy(lips_region(s, (s, s))[r0:r1, c0:c1])
        self.weight = (1.0 + lips_weight * lips)[None, None, None]  # [1, 1, 1, H, W]

    def loss(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from .autoencoder import _grad_l1

        y = self.dec(z)
        with torch.no_grad():
            x = self.dec(target)
        w = self.weight
        return ((y - x).abs() * w).mean() / w.mean() + _grad_l1(y, x, w.expand_as(y))


class SyncReward:
    """Differentiable sync loss of generated mouth latents (frozen VAE decoder and SyncNet).

    Decodes only the latents around the scorer's mouth box (``MouthDecoder``), composites them
    over the source crop under the soft paste mask as the runtime pastes them, and takes the
    SyncNet's grey mouth crop of that."""

    def __init__(self, vae, scorer_net, cfg: ModelConfig, margin: int = 1):
        self.dec, self.net = MouthDecoder(vae, cfg, margin), scorer_net.eval()
        for p in scorer_net.parameters():
            p.requires_grad_(False)
        self.box = self.dec.box
        self.grey = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1, 1)

    def mouth_grey(self, z: torch.Tensor, source_unit: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """z ``[B, z, L, h, w]``, source crops ``[B, 3, L*Tc, S, S]`` in [-1, 1], paste weights
        ``[B, L*Tc, S, S]`` -> ``[B, F, 32, 48]``."""
        gen = self.dec(z)
        r0, r1, c0, c1 = self.box
        src = source_unit[..., r0:r1, c0:c1]
        comp = src + (gen - src) * soft[:, None, :, r0:r1, c0:c1]
        grey = ((comp + 1.0) * 0.5 * self.grey).sum(1)  # [B, F, H, W] in [0, 1]
        b, f, h, w = grey.shape
        return F.interpolate(grey.reshape(b * f, 1, h, w), size=VIDEO_HW, mode="area").reshape(b, f, *VIDEO_HW)

    def loss(self, z: torch.Tensor, source_unit: torch.Tensor, soft: torch.Tensor, mel: torch.Tensor,
             tau: float = 0.07) -> torch.Tensor:
        """InfoNCE over audio offsets ``-15..15`` (each frame's own audio is the positive)."""
        crops = self.mouth_grey(z, source_unit, soft)
        b, f = crops.shape[:2]
        idx = torch.clamp(torch.arange(f)[:, None] + torch.arange(WINDOW)[None] - WINDOW // 2, 0, f - 1)
        v = self.net.embed_video(crops[:, idx].reshape(b * f, WINDOW, *VIDEO_HW)).reshape(b, f, -1)
        a = self.net.embed_audio(mel.reshape(b * f, *mel.shape[2:])).reshape(b, f, -1)
        sims = torch.einsum("bid,bjd->bij", v, a) / tau  # [B, F, F]
        off = torch.arange(f)[None] - torch.arange(f)[:, None]
        sims = sims.masked_fill(off.abs()[None] > MAX_OFFSET, float("-inf"))
        return F.cross_entropy(sims.reshape(b * f, f), torch.arange(f).repeat(b))


def reward_inputs(cs, picks: list[tuple[int, int]], frames: int, tc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source crops ``[B, 3, F, S, S]`` in [-1, 1] and soft paste masks ``[B, F, S, S]`` of the
    windows ``picks`` (clip, start latent frame) of the crop set ``cs``."""
    from .crops import to_unit

    src, soft = [], []
    for i, s in picks:
        c = cs.clips[i]
        sl = slice(s * tc, (s + frames) * tc)
        src.append(torch.from_numpy(to_unit(c.source[sl])))
        soft.append(torch.from_numpy(np.stack([soft_mask(h) for h in c.hard[sl]])))
    return torch.stack(src), torch.stack(soft)


# ------------------------------------------------------------------------------------------
# 2. Self-Forcing DMD
# ------------------------------------------------------------------------------------------


@dataclass
class DMDConfig:
    steps: int = 400
    batch: int = 4
    frames: int = 8
    lr: float = 5e-5
    fake_lr: float = 2e-4
    fake_updates: int = 1  # fake-score steps per generator step
    guidance: float = 3.0
    window: tuple[float, float] | None = (0.0, 1.0)  # CFG band of the real score; None = everywhere
    reward_weight: float = 0.05
    data_weight: float = 0.0  # a regression of the rollout onto the real window (its own speech), weighted as the init
    t_min: float = 0.02
    t_max: float = 0.98
    mouth_weight: float = 4.0
    lips_weight: float = 16.0
    seed: int = 0


def train_dmd(student: Teacher, teacher: Teacher, cfg: ModelConfig, ls: LatentSet, t_land: float, dc: DMDConfig,
              reward: SyncReward | None = None, crops=None, log=print) -> dict:
    """Self-Forcing rollout + Sync-Window DMD (+ sync reward when ``reward`` is given).

    ``crops`` (with ``reward``): the ``CropSet`` that ``ls`` encodes (source crops and masks)."""
    rng = np.random.default_rng(dc.seed)
    g = torch.Generator().manual_seed(dc.seed)
    fake = copy.deepcopy(teacher).train().requires_grad_(True)
    teacher.requires_grad_(False)
    student.requires_grad_(True)
    opt, sched = adamw_cosine(student.parameters(), dc.lr, dc.steps, warmup=20)
    fopt, fsched = adamw_cosine(fake.parameters(), dc.fake_lr, dc.steps * dc.fake_updates, warmup=20)
    guide = window_guidance(dc.guidance, dc.window)
    lips = lips_map(cfg)
    c = cfg.stream.chunk_frames
    zdim = ls.z[0].shape[0]
    t0, hist = time.perf_counter(), {"dmd": [], "data": [], "reward": [], "fake": []}
    student.train()
    for it in range(dc.steps):
        picks = ls.pick(rng, dc.batch, dc.frames)  # the reward needs to know where windows come from
        z, cond, mel, mask, ref = ls.gather(picks, dc.frames)
        weight = loss_weight(mask, dc.mouth_weight, lips, dc.lips_weight)
        shape = (dc.batch, zdim, dc.frames, *ls.z[0].shape[2:])
        noise, eps2 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        tok = student.tokens(mel)
        grad_step = int(torch.randint(0, 2, (1,), generator=g))
        x = rollout(student.dit, cfg, cond, mask, tok, noise, renoiser(eps2, t_land, c), t_land, grad_step=grad_step,
                    ref=ref)

        # distribution matching: x0_fake - x0_real at a random noise level
        t = float(torch.empty(1).uniform_(dc.t_min, dc.t_max, generator=g))
        eps = torch.randn(shape, generator=g)
        with torch.no_grad():
            x_t = (1.0 - t) * x.detach() + t * eps
            ttok = teacher.tokens(mel)
            real = teacher.x0(x_t, t, cond, mask, ttok, guide(t), ref=ref)
            fk = fake.x0(x_t, t, cond, mask, fake.tokens(mel), ref=ref)
            grad = fk - real
            norm = (x.detach() - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-4)
            target = x.detach() - grad / norm
        loss_dmd = 0.5 * weighted_mse(x, target, weight)
        loss = loss_dmd
        if dc.data_weight > 0:
            loss_d = weighted_mse(x, z, weight)
            loss = loss + dc.data_weight * loss_d
            hist["data"].append(float(loss_d.detach()))
        if reward is not None and dc.reward_weight > 0:
            src, soft = reward_inputs(crops, picks, dc.frames, ls.tc)
            loss_r = reward.loss(x, src, soft, mel)
            loss = loss + dc.reward_weight * loss_r
            hist["reward"].append(float(loss_r.detach()))
        optimizer_step(loss, opt, sched, student.parameters())
        hist["dmd"].append(float(loss_dmd.detach()))

        # fake score: flow matching on the student's samples
        xs = x.detach()
        for _ in range(dc.fake_updates):
            tf = sample_t(g, dc.batch, dc.t_min)
            e = torch.randn(shape, generator=g)
            ftok = fake.tokens(mel)
            lf = flow_matching_loss(lambda xx, tt: fake.forward_x0(xx, tt, cond, mask, ftok, ref), xs, tf, e, weight)
            optimizer_step(lf, fopt, fsched, fake.parameters())
            hist["fake"].append(float(lf.detach()))
        if it % 25 == 0 or it == dc.steps - 1:
            r = f"  reward {np.mean(hist['reward'][-25:]):.3f}" if hist["reward"] else ""
            r += f"  data {np.mean(hist['data'][-25:]):.4f}" if hist["data"] else ""
            log(f"  dmd step {it:4d}  dmd {np.mean(hist['dmd'][-25:]):.4f}  fake {np.mean(hist['fake'][-25:]):.4f}"
                f"{r}  {time.perf_counter() - t0:6.0f} s")
    student.eval()
    return {"steps": dc.steps, "seconds": time.perf_counter() - t0,
            **{f"final_{k}": float(np.mean(v[-25:])) for k, v in hist.items() if v}}
