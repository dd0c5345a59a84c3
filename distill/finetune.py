"""Continue a trained student on more real talking heads, without its teacher.

    python -m distill.finetune --data CLIPS --out runs/ft/model            # from the bundled default
    python -m distill.finetune --data CLIPS --out M --model OTHER --steps 600 --sync-weight 0.2
    python -m distill.finetune --photos PHOTOS --photo-clips 1000 --fresh-dit --out M   # speaking photos

The recipe (``distill.recipe``) needs its teacher for DMD; this takes an SDK model directory as it
is (the bundled default, or any model the recipe wrote) and goes on training its DiT and audio
encoder on a folder of real talking-head clips with their own sound (``--data``, as the recipe's)
plus procedural pairs (``--procedural``, so the data it was first trained on stays in the mix), and/or on
face photos made to speak (``--photos``: ``--photo-clips`` clips, round robin over the faces,
``distill.photoreal``: exact targets, sentences drawn as the procedural pairs'; they count as real
clips for ``--real-share``; ``--teeth-repeat K`` makes each photo that shows its teeth K times as
often). ``--motion-weight K`` weights each mouth pixel's error up by K times the target's distance
from the reference frame there (``motion_loss_weight``): regression lands on the average mouth,
which opens too little (measured: smudges, not used; BENCHMARKS.md section 6). ``--voice-warp W
--voice-tilt DB`` give each training window's log-mels another voice (``augment_voice``: the mel axis
stretched by ``1 +- W``, a spectral tilt of ``+- DB``), so the mouth follows words in voices unlike the
training speech's. ``--fresh-dit`` starts the DiT from a seeded initialisation instead of the model's
(the audio encoder and VAE are the model's). ``--distill-guidance G --distill-weight W`` puts W of the
loss on the starting model's own output with audio guidance G on its second step (frozen, the same
windows, noise and voices; ``ScheduleConfig.guidance``; ``--distill-region lips`` (default), ``mouth`` or ``crop``:
where it acts, ``ScheduleConfig.guidance_region``), so one pass learns what two passes draw.
``--pixel-weight P`` adds P times a loss on the decoded mouth (``distill.student.MouthPixelLoss``: L1
and image-gradient L1 of the frozen decoder's mouth box against the decoded true latents, whatever the
latent target), so the mouth is judged as the decoder draws it against the real frames. The
objective is the enrollment's over many faces (``distill.enroll``: the runtime's own two-step cached
rollout, weighted MSE to the true latents, the mouth and lips weighted up, ``--shift-share`` of the
windows (half by default) with the face around the mouth from up to ``--context-shift`` frames away)
plus the recipe's SyncNet reward (``distill.student.SyncReward``, ``--sync-weight``): without the
reward, regression alone makes the mouth follow the sound less. Measured on eleven public clips
(BENCHMARKS.md section 6), neither beat the bundled default it starts from: regression shuts the mouth,
the reward paints a dark patch in it; judge a continued model by ``distill.realeval``'s sheets, not its
numbers alone, and by ``distill.follow`` whether its mouth follows the sound. The VAE is not trained.

Stages, each kept in ``--work`` (default ``OUT.work``) and reused when there:

1. ``clips.json``: every clip tracked (face mesh, cached as ``distill.realdata`` does) and its
   own-speech lip sync measured (``lipforce_sdk.face_quality``'s landmark opening vs the speech
   envelope); a clip is trained on only when ``r >= --min-lip-r`` (a sound track of music, of
   someone else, or out of sync teaches the mouth nothing). The file
   records each clip's SHA-256, so the data behind a model is known byte for byte.
2. ``data.npz``: the crops (``distill.crops``: the runtime's eye-aligned crops, masks, references).
3. ``latents.pt``: the model's frozen VAE encoder over them.
4. the DiT and audio encoder trained (``--steps``), kept as an exponential moving average.

The model directory at ``--out`` is the input model's with the two weight files replaced,
``finetune.json`` (settings, clips kept and dropped, losses) beside them and a section on what was
continued appended to its ``MODEL_CARD.md``. A ``--work`` folder serves any model with the same VAE
and configuration (``work_key``: a model continued from another reuses its folder); one made for other
data, other data settings or another VAE is refused rather than reused.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["FinetuneConfig", "select_clips", "finetune", "main"]


def _opt(default, help: str):
    """A ``FinetuneConfig`` field whose ``help`` is its command-line option's (``main``)."""
    return field(default=default, metadata={"help": help})


@dataclass
class FinetuneConfig:
    steps: int = _opt(600, "optimiser steps")
    lr: float = _opt(3e-4, "peak learning rate (AdamW, cosine decay after 20 warm-up steps)")
    batch: int = _opt(4, "training windows per step")
    video_frames: int = _opt(8, "video frames per training window (rounded to whole chunks)")
    ema: float = _opt(0.995, "decay of the weight average kept as the result")
    sync_weight: float = _opt(0.2, "weight of the SyncNet reward; 0: regression only")
    mouth_weight: float = _opt(4.0, "added to the loss weight (1) where the mouth is re-rendered (the mask's hole)")
    lips_weight: float = _opt(16.0, "added to the loss weight over the lips (the soft lips box of the crop) "
                                    "inside the hole")
    context_shift: int = _opt(6, "latent frames the face around the mouth may come from away from the "
                                 "window; 0: always from the same frame")
    shift_share: float = _opt(0.5, "share of the windows whose face around the mouth is from another "
                                   "moment")
    real_share: float = _opt(0.6, "share of the training windows taken from real clips (the rest procedural)")
    procedural: int = _opt(80, "procedural training pairs kept in the mix")
    window: int = _opt(50, "real clips are cut into pieces of this many frames")
    max_seconds: float = _opt(30.0, "seconds used of each real clip")
    min_lip_r: float = _opt(0.2, "a real clip's own-speech landmark lip r needed to train on it")
    seed: int = _opt(0, "seed of the window picks, noise and augmentation")
    photo_clips: int = _opt(200, "speaking clips made from --photos")
    teeth_repeat: int = _opt(1, "a photo that shows its teeth comes this many times in the photo clips' round")
    motion_weight: float = _opt(0.0, "the mouth's latent pixels weighted up by how far the target is from "
                                     "the reference (0: off)")
    voice_warp: float = _opt(0.0, "each window's log-mels stretched along the mel axis by a factor in 1 +- this")
    voice_tilt: float = _opt(0.0, "... and tilted by up to +- this many dB from the lowest mel band to the highest")
    fresh_dit: bool = _opt(False, "start the DiT from a seeded initialisation, not the model's")
    distill_guidance: float = _opt(1.0, "a second target: the starting model's own output with this step-2 "
                                        "audio guidance (1: off)")
    distill_weight: float = _opt(0.5, "that target's share of the loss (the true latents' is the rest)")
    distill_region: str = _opt("lips", "where that guidance acts: lips, mouth or crop "
                                             "(ScheduleConfig.guidance_region)")
    pixel_weight: float = _opt(0.0, "weight of a loss on the decoded mouth (L1 and image-gradient L1 against the "
                               "decoded true latents, distill.student.MouthPixelLoss); 0: latents only")

    def validate(self) -> "FinetuneConfig":
        for name in ("steps", "batch", "video_frames", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.procedural < 0 or self.context_shift < 0 or self.photo_clips < 0:
            raise ValueError("--procedural, --context-shift and --photo-clips must be >= 0")
        if self.teeth_repeat < 1:
            raise ValueError(f"--teeth-repeat must be >= 1 (got {self.teeth_repeat})")
        if not 0.0 <= self.real_share <= 1.0 or not 0.0 <= self.ema < 1.0:
            raise ValueError("--real-share must be in [0, 1] and --ema in [0, 1)")
        if not 0.0 <= self.shift_share <= 1.0:
            raise ValueError(f"--shift-share must be in [0, 1] (got {self.shift_share})")
        if self.lr <= 0 or self.sync_weight < 0 or self.motion_weight < 0 or self.pixel_weight < 0:
            raise ValueError("--lr must be > 0, --sync-weight, --motion-weight and --pixel-weight >= 0")
        if self.distill_guidance < 0 or not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"--distill-guidance must be >= 0 and --distill-weight in [0, 1] (got "
                             f"{self.distill_guidance}, {self.distill_weight})")
        from lipforce_sdk.config import GUIDANCE_REGIONS

        if self.distill_region not in GUIDANCE_REGIONS:
            raise ValueError(f"--distill-region must be {' or '.join(GUIDANCE_REGIONS)} (got {self.distill_region!r})")
        if not 0.0 <= self.voice_warp < 0.5 or self.voice_tilt < 0:
            raise ValueError(f"--voice-warp must be in [0, 0.5) and --voice-tilt >= 0 (got {self.voice_warp}, "
                             f"{self.voice_tilt})")
        return self


def _log(msg: str) -> None:
    print(msg, flush=True)


def own_speech_sync(clip) -> dict:
    """The clip's landmark lip opening against its own speech envelope: ``r``, ``lag``, the
    shifted-speech null's 95th percentile (``None`` for clips of 2 s or less)."""
    from lipforce_sdk.face_quality import _lip_sync
    from lipforce_sdk.sync_check import speech_envelope

    from .realdata import FPS, SR

    env = speech_envelope(clip.audio, SR, FPS, clip.num_frames)
    ls = _lip_sync(clip.opening.copy(), env, FPS, [])
    if ls is None:
        return {"r": None, "lag": None, "null_p95": None}
    return {"r": ls.r, "lag": ls.lag, "null_p95": ls.null_p95}


def select_clips(rows: list[dict], min_lip_r: float) -> list[dict]:
    """The rows (``clips.json``) to train on: a face on 80% of the frames or more, and a mouth that
    follows the clip's own sound (``r >= min_lip_r``). The shifted-speech null is recorded, not
    required: on clips of 4-5 s it rests on few shifts (p95 0.30-0.52 on the public clips of
    BENCHMARKS.md section 6, where real speakers reach 0.22-0.88). Each row gets ``kept`` and, when
    dropped, ``why``."""
    for row in rows:
        r = row.get("r")
        why = None
        if row["face_share"] < 0.8:
            why = f"a face on {row['face_share']:.0%} of the frames"
        elif r is None:
            why = "lip opening not measured"
        elif r < min_lip_r:
            why = f"own-speech lip r {r:.2f} < {min_lip_r:g}"
        row["kept"], row["why"] = why is None, why
    return [row for row in rows if row["kept"]]


def _photo_rows(photos: Path) -> list[dict]:
    """The image files of ``photos`` (those the face mesh skips too) by name and SHA-256."""
    from lipforce_sdk.manifest import sha256_file

    from .crops import photo_files

    return [{"name": p.name, "sha256": sha256_file(p)} for p in photo_files(photos)]


def _prepare(data: Path | None, model, fc: FinetuneConfig, work: Path, progress: bool = True,
             photos: Path | None = None, crops: bool = True):
    """Stages 1-3: ``clips.json`` and ``data.npz`` in one pass over the clips (each read once), then
    the latents; each file written whole (``distill.enroll._atomic``) and reused when there. Returns
    ``(rows, kinds, cs, ls)``; with ``crops=False`` ``cs`` is None (the crops are read only to encode
    latents not yet made, then let go: 1000 photo clips are about 8 GB of crops)."""
    import torch
    from tqdm import tqdm

    from lipforce_sdk.manifest import sha256_file

    from .crops import CropSet, photo_clips, procedural_clip, real_clips
    from .enroll import _atomic, _save_torch
    from .realdata import find_clips, load_clip
    from .teacher import LatentSet

    cfg = model.cfg
    rows_path, data_path, lat_path = work / "clips.json", work / "data.npz", work / "latents.pt"
    if rows_path.is_file() and data_path.is_file():
        rows = json.loads(rows_path.read_text())
        cs = CropSet.load(data_path) if crops or not lat_path.is_file() else None
    else:
        found = find_clips(data) if data is not None else []
        if data is not None and not found:
            raise ValueError(f"no clip with sound in {str(data)!r}: put talking-head videos there (each with its "
                             "audio track or a NAME.wav beside it)")
        rows, clips = [], []
        for v, a in tqdm(found, desc="track clips", unit="clip", disable=not progress):
            c = load_clip(v, a, max_seconds=fc.max_seconds)
            row = {"name": v.stem, "video": str(v), "audio": str(a), "sha256": sha256_file(v),
                   "frames": c.num_frames, "face_share": float(c.found().mean()), **own_speech_sync(c)}
            rows.append(row)
            if select_clips([row], fc.min_lip_r):
                clips += real_clips(cfg, c, window=fc.window, stride=fc.window)
        if not any(r["kept"] for r in rows) and not fc.procedural and not (photos and fc.photo_clips):
            why = "; ".join(f"{r['name']}: {r['why']}" for r in rows)
            raise ValueError(f"no clip passed the own-speech check ({why}) and --procedural is 0: nothing to train on")
        if photos is not None and fc.photo_clips:
            clips += photo_clips(cfg, photos, fc.photo_clips, max_frames=64, seed=fc.seed, progress=progress,
                                 teeth_repeat=fc.teeth_repeat)
        clips += [procedural_clip(cfg, i, "train", max_frames=64)
                  for i in tqdm(range(fc.procedural), desc="procedural pairs", unit="pair", disable=not progress)]
        cs = CropSet.build(cfg, clips)
        _atomic(data_path, cs.save)
        _atomic(rows_path, lambda t: t.write_text(json.dumps(rows, indent=1)))
    kinds = CropSet.load_kinds(data_path) if cs is None else [c.kind for c in cs.clips]
    if lat_path.is_file():
        ls = LatentSet(**torch.load(lat_path, weights_only=True, mmap=True))  # shared pages, read as used
    else:
        with torch.no_grad():
            ls = LatentSet.encode(model.vae, cs, cfg)
        _save_torch(lat_path, {f.name: getattr(ls, f.name) for f in dataclasses.fields(ls)})
    return rows, kinds, cs if crops else None, ls


MOTION_CAP = 4.0  # a latent pixel's distance from the reference counts up to this many times the mean


def motion_loss_weight(z, ref_x0, mask, motion_weight: float):
    """Per latent pixel ``[B, 1, L, h, w]``: ``1 + motion_weight * d`` inside the re-rendered mouth
    (1 outside), ``d`` the target's distance from the first reference frame there (mean over the
    latent channels) over its mean inside the mouth over the batch, capped at ``MOTION_CAP``.

    Regression to a target drawn from many mouths for one sound lands on their average, a mouth
    nearer the reference than any of them: it opens too little. A weight that grows with the
    target's own distance from the reference moves the optimum towards the mouths that move most
    (the weighted mean ``E[w z] / E[w]``), where the reference is what the model starts from
    (``stream.fill = "reference"``). ``z`` ``[B, C, L, h, w]``, ``ref_x0`` ``[B, C, R, h, w]``,
    ``mask`` ``[B, Tc, L, h, w]``."""
    import torch

    m = mask.amax(1, keepdim=True)
    d = (z - ref_x0[:, :, :1]).abs().mean(1, keepdim=True)
    mean = (d * m).sum() / m.sum().clamp(min=1.0)
    d = (d / mean.clamp(min=1e-8)).clamp(max=MOTION_CAP)
    return torch.ones_like(d) + motion_weight * d * m


def augment_voice(mel, gen, warp: float, tilt_db: float):
    """Another voice for the same words: log-mels ``[B, F, W, n_mels]`` (natural log of power, as
    ``lipforce_sdk.audio``) with each window's mel axis stretched by a factor ``a`` drawn from
    ``1 +- warp`` (band ``k`` takes the value at ``k / a``, linearly interpolated, the ends held: a
    longer or shorter vocal tract moves the formants) and a spectral tilt drawn from ``+- tilt_db``
    dB, linear from the lowest band to the highest (another microphone, room or voice). Two draws
    per window from ``gen``, warp first."""
    import math

    import torch

    b, n = mel.shape[0], mel.shape[-1]
    a = 1 + (torch.rand(b, generator=gen) * 2 - 1) * warp
    k = torch.arange(n, dtype=mel.dtype)
    src = (k[None] / a[:, None]).clamp(0, n - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = src - lo
    sh = [b] + [1] * (mel.dim() - 2) + [n]
    lo, hi, w = lo.view(sh).expand_as(mel), hi.view(sh).expand_as(mel), w.view(sh)
    mel = torch.gather(mel, -1, lo) * (1 - w) + torch.gather(mel, -1, hi) * w
    t = (torch.rand(b, generator=gen) * 2 - 1) * tilt_db * math.log(10) / 10
    return mel + (t[:, None] * torch.linspace(-0.5, 0.5, n)[None]).view(sh)


def _train(model, kinds: list[str], ls, fc: FinetuneConfig, progress: bool = True, cs=None) -> dict:
    import torch
    from tqdm import tqdm

    from .enroll import _shift_condition
    from .optim import adamw_cosine, optimizer_step
    from .student import MouthPixelLoss, SyncReward, renoiser, reward_inputs, rollout, weighted_mse
    from .syncnet import SyncScorer
    from .teacher import lips_map, loss_weight

    if fc.motion_weight > 0 and not ls.has_ref:
        raise ValueError("--motion-weight needs the clips' reference frames (the model's stream.sink = 'reference')")
    if fc.sync_weight > 0 and cs is None:
        raise ValueError("the sync reward needs the crops: pass cs (distill.finetune._prepare with crops=True)")
    cfg = model.cfg
    tc, c = cfg.vae.temporal_compression, cfg.stream.chunk_frames
    frames = max(c, (max(1, fc.video_frames // tc) // c) * c)
    kinds = np.asarray(kinds)
    fits = np.array([z.shape[1] >= frames for z in ls.z])
    real = np.flatnonzero((kinds != "procedural") & fits)
    proc = np.flatnonzero((kinds == "procedural") & fits)
    if not len(real) and not len(proc):
        raise ValueError(f"no training clip has {frames} frames")
    params = list(model.dit.parameters()) + list(model.audio_encoder.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt, sched = adamw_cosine(params, fc.lr, fc.steps, warmup=20)
    avg = [p.detach().clone() for p in params]
    rng = np.random.default_rng(fc.seed)
    gen = torch.Generator().manual_seed(fc.seed)
    voice_gen = torch.Generator().manual_seed(fc.seed + 1)
    lips, t_land = lips_map(cfg), cfg.schedule.t_land
    frozen_vae = copy.deepcopy(model.vae) if fc.sync_weight > 0 or fc.pixel_weight > 0 else None  # decodes only
    reward = SyncReward(frozen_vae, SyncScorer.load().net, cfg) if fc.sync_weight > 0 else None
    pixel = MouthPixelLoss(frozen_vae, cfg) if fc.pixel_weight > 0 else None
    guided = fc.distill_guidance != 1.0
    if guided:  # the starting model, frozen: its guided output is a target
        start_dit, start_audio = copy.deepcopy(model.dit).eval(), copy.deepcopy(model.audio_encoder).eval()
    model.dit.train()
    model.audio_encoder.train()
    hist = []
    t0 = time.perf_counter()
    with tqdm(total=fc.steps, desc="finetune", unit="step", disable=not progress) as bar:
        for it in range(fc.steps):
            picks = []
            for _ in range(fc.batch):
                pool = real if len(real) and (not len(proc) or rng.random() < fc.real_share) else proc
                i = int(pool[int(rng.integers(len(pool)))])
                picks.append((i, int(rng.integers(0, ls.z[i].shape[1] - frames + 1))))
            z, cond, mel, mask, ref = ls.gather(picks, frames)
            if fc.context_shift:
                _shift_condition(ls, picks, frames, fc.context_shift, rng, cond, fc.shift_share)
            noise = torch.randn(z.shape, generator=gen)
            eps2 = torch.randn(z.shape, generator=gen)
            grad_step = int(torch.randint(0, 2, (1,), generator=gen))
            heard = mel
            if fc.voice_warp or fc.voice_tilt:
                heard = augment_voice(mel, voice_gen, fc.voice_warp, fc.voice_tilt)
            out = rollout(model.dit, cfg, cond, mask, model.audio_encoder(heard), noise, renoiser(eps2, t_land, c),
                          t_land, grad_step=grad_step, ref=ref)
            w = loss_weight(mask, fc.mouth_weight, lips, fc.lips_weight)
            if fc.motion_weight > 0:
                w = w * motion_loss_weight(z, ref.x0, mask, fc.motion_weight)
            loss = weighted_mse(out, z, w)
            if guided:
                with torch.no_grad():
                    target = rollout(start_dit, cfg, cond, mask, start_audio(heard), noise, renoiser(eps2, t_land, c),
                                     t_land, grad_step=None, ref=ref, guidance=fc.distill_guidance,
                                     guidance_region=fc.distill_region)
                loss = (1.0 - fc.distill_weight) * loss + fc.distill_weight * weighted_mse(out, target, w)
            if pixel is not None:
                loss = loss + fc.pixel_weight * pixel.loss(out, z)  # the real frames, whatever the latent target
            if reward is not None:
                src, soft = reward_inputs(cs, picks, frames, tc)
                loss = loss + fc.sync_weight * reward.loss(out, src, soft, mel)
            optimizer_step(loss, opt, sched, params)
            with torch.no_grad():
                torch._foreach_lerp_(avg, [p.detach() for p in params], 1.0 - min(fc.ema, (1 + it) / (10 + it)))
            hist.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(hist[-50:]):.4f}")
    with torch.no_grad():
        for p, a in zip(params, avg):
            p.copy_(a)
    model.eval()
    return {"first_loss": float(np.mean(hist[:50])), "final_loss": float(np.mean(hist[-50:])),
            "seconds": time.perf_counter() - t0, "real_windows": int(len(real)), "procedural_windows": int(len(proc))}


def _card_section(model_dir: Path, fc: FinetuneConfig, info: dict, rows: list[dict], photos: dict | None) -> str:
    kept = [r for r in rows if r["kept"]]
    lines = [f"- `{r['name']}` ({r['frames']} frames, own-speech lip r {r['r']:.2f}, sha256 {r['sha256'][:12]}...)"
             for r in kept]
    dit = (f"its DiT started from a seeded initialisation (seed {fc.seed}) and was trained, with the audio "
           "encoder, " if fc.fresh_dit else "its DiT and audio encoder were trained ")
    real = f"{len(kept)} of {len(rows)} real clips" if rows else "no real clip"
    teeth = f"; those showing their teeth {fc.teeth_repeat} times as often" if fc.teeth_repeat > 1 else ""
    spoken = (f", {fc.photo_clips} speaking clips made from {len(photos['files'])} face photos (folder "
              f"`{Path(photos['folder']).name}`, distill.photoreal{teeth})" if photos and fc.photo_clips else "")
    extra = (f", the mouth's pixels weighted up by their distance from the reference ({fc.motion_weight:g})"
              if fc.motion_weight > 0 else "")
    if fc.distill_guidance != 1.0:
        extra += (f", {fc.distill_weight:g} of the loss toward the starting model's own output with audio guidance "
                  f"{fc.distill_guidance:g} on its second step"
                  f"{ {'lips': ' over the lips', 'mouth': ' between the mouth corners'}.get(fc.distill_region, '')}"
                  " (the guidance learnt into one pass)")
    if fc.pixel_weight > 0:
        extra += (f", a loss on the decoded mouth (L1 and image-gradient L1 against the decoded real frames, weight "
                  f"{fc.pixel_weight:g})")
    if fc.voice_warp or fc.voice_tilt:
        extra += (f", the log-mels of each window warped by up to {fc.voice_warp:g} and tilted by up to "
                   f"{fc.voice_tilt:g} dB (another voice for the same words)")
    return (f"\n\n## Continued with `distill.finetune`\n\nEverything above describes the model this one started "
            f"from (`{model_dir}`). Then {dit}{fc.steps} {'' if fc.fresh_dit else 'more '}steps (lr {fc.lr:g}, "
            f"sync reward weight {fc.sync_weight:g}{extra}, EMA {fc.ema:g}; loss {info['first_loss']:.4f} -> "
            f"{info['final_loss']:.4f}) on {real}{spoken} ({info['real_windows']} pieces) and {fc.procedural} "
            "procedural pairs, without a teacher; the VAE is the same. Its scores are not the ones above: measure it "
            "(`python -m distill.realeval --model DIR`). Clips (all of them, with the reason for those left out, "
            "in `finetune.json`):\n\n" + "\n".join(lines) + "\n")


def vae_sha256(model_dir: str | Path) -> str:
    """SHA-256 of a model directory's VAE weights (names, dtypes, shapes and values; not the file's
    other bytes): what the latents made from its crops depend on."""
    import hashlib

    from safetensors.numpy import load_file

    from lipforce_sdk.manifest import read_manifest

    m, _ = read_manifest(model_dir)
    h = hashlib.sha256()
    for k, v in sorted(load_file(str(Path(model_dir) / m["weights"]["vae"])).items()):
        h.update(f"{k}:{v.dtype}:{v.shape}".encode())
        h.update(v.tobytes())
    return h.hexdigest()


def work_key(model_dir: Path, data: Path | None, photos: Path | None, fc: FinetuneConfig) -> dict:
    """What a work folder's files (clips, crops, latents) depend on: the data and its settings, the
    model's configuration (the crop's geometry) and its VAE's weights (the latents), not its DiT or
    audio encoder, so that a model continued from another shares its work folder."""
    from lipforce_sdk.manifest import read_manifest

    manifest, _ = read_manifest(model_dir)
    key = {"data": None if data is None else str(data.resolve()), "vae": vae_sha256(model_dir),
           "config": _config_key(manifest["config"]),
           **{k: getattr(fc, k) for k in ("window", "max_seconds", "min_lip_r", "procedural")}}
    if photos is not None:
        key.update(photos=str(photos.resolve()), photo_clips=fc.photo_clips, seed=fc.seed)
        if fc.teeth_repeat != 1:
            key.update(teeth_repeat=fc.teeth_repeat)
    return key


def _config_key(config: dict) -> dict:
    """The part of a manifest's ``config`` a work folder depends on: all of it but the sampling
    schedule (``schedule``: the steps, the guidance, the seed), which changes no crop or latent. So a
    manifest written before a schedule field existed and one written after, with the same model,
    share their work folders."""
    return {k: v for k, v in config.items() if k != "schedule"} if isinstance(config, dict) else config


def _same_work(old: dict, key: dict, data: Path | None, photos: Path | None, fc: FinetuneConfig) -> bool:
    """``old`` (a work folder's ``work.json``) holds what ``key`` asks for (a key written with the
    schedule in its ``config`` counts without it). A folder made before the key named the VAE names
    the model directory it was made from instead: it is the same when that directory, still there,
    gives this key."""
    if old == key or ("config" in old and {**old, "config": _config_key(old["config"])} == key):
        return True
    legacy = old.get("model")
    if "vae" in old or not isinstance(legacy, str) or not (Path(legacy) / "manifest.json").is_file():
        return False
    settings = {k: v for k, v in key.items() if k not in ("vae", "config")}
    return {k: v for k, v in old.items() if k != "model"} == settings \
        and work_key(Path(legacy), data, photos, fc) == key


def finetune(data: str | Path | None, out: str | Path, model_dir: str | Path | None = None,
             work: str | Path | None = None, fc: FinetuneConfig | None = None, progress: bool = True,
             photos: str | Path | None = None) -> Path:
    """Fine-tune ``model_dir`` on the clips in ``data`` and/or the face photos in ``photos`` (module
    docstring); returns ``out``."""
    from safetensors.torch import save_file

    from lipforce_sdk.model import load_model
    from lipforce_sdk.session import default_model_dir

    fc = (fc or FinetuneConfig()).validate()
    data, photos = (None if p is None else Path(p) for p in (data, photos))
    if data is None and photos is None:
        raise ValueError("nothing to train on: pass --data (talking-head clips with their sound) and/or --photos "
                         "(face photos with a closed mouth)")
    if photos is not None and not photos.is_dir():
        raise FileNotFoundError(f"--photos {str(photos)!r} is not a folder")
    model_dir, out = Path(model_dir) if model_dir is not None else default_model_dir(), Path(out)
    if not (model_dir / "manifest.json").is_file():
        raise FileNotFoundError(f"{str(model_dir)!r} is not a model directory (no manifest.json)")
    if out.exists():
        raise FileExistsError(f"{str(out)!r} exists; pass a new --out (nothing is overwritten)")
    work = Path(work) if work is not None else out.with_name(out.name + ".work")
    key = work_key(model_dir, data, photos, fc)
    key_path = work / "work.json"
    if key_path.is_file() and not _same_work(json.loads(key_path.read_text()), key, data, photos, fc):
        raise ValueError(f"--work {str(work)!r} holds the files of another run ({key_path}: "
                         f"{key_path.read_text().strip()}); pass a new --work or remove it")
    work.mkdir(parents=True, exist_ok=True)
    key_path.write_text(json.dumps(key))
    model = load_model(model_dir)
    if fc.fresh_dit:
        import torch

        from lipforce_sdk.model import LipSyncModel

        torch.manual_seed(fc.seed)  # the DiT a model built from this seed has
        model.dit.load_state_dict(LipSyncModel(model.cfg).dit.state_dict())
    rows, kinds, cs, ls = _prepare(data, model, fc, work, progress, photos, crops=fc.sync_weight > 0)
    shown = {"folder": str(photos.resolve()), "files": _photo_rows(photos)} if photos is not None else None
    kept = [r for r in rows if r["kept"]]
    for r in rows:
        _log(f"{'keep' if r['kept'] else 'drop'} {r['name']}: {r['frames']} frames, own-speech lip r "
             f"{'-' if r['r'] is None else format(r['r'], '.2f')}" + ("" if r["kept"] else f" ({r['why']})"))
    info = _train(model, kinds, ls, fc, progress=progress, cs=cs)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(model_dir, tmp)
    save_file({k: v.contiguous() for k, v in model.dit.state_dict().items()}, str(tmp / "dit.safetensors"))
    save_file({k: v.contiguous() for k, v in model.audio_encoder.state_dict().items()},
              str(tmp / "audio_encoder.safetensors"))
    (tmp / "finetune.json").write_text(json.dumps({"from": str(model_dir), "settings": asdict(fc), **info,
                                                   "clips": rows, "photos": shown}, indent=1))
    card = tmp / "MODEL_CARD.md"
    with open(card, "a", encoding="utf-8") as f:
        f.write(_card_section(model_dir, fc, info, rows, shown))
    tmp.rename(out)
    _log(f"finetune: {len(kept)} of {len(rows)} clips, {fc.photo_clips if photos else 0} photo clips, "
         f"{fc.procedural} procedural pairs, loss "
         f"{info['first_loss']:.4f} -> {info['final_loss']:.4f} in {info['seconds'] / 60:.1f} min -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.finetune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="folder of real talking-head clips with their own sound")
    ap.add_argument("--photos", default=None, help="folder of face photos (closed mouth) to make speak and train on")
    ap.add_argument("--out", required=True, help="the new model directory (must not exist)")
    ap.add_argument("--model", default=None, help="model directory to start from (default: the bundled one)")
    ap.add_argument("--work", default=None, help="intermediate files (default: OUT.work)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-progress", action="store_true")
    d = FinetuneConfig()
    for f in dataclasses.fields(FinetuneConfig):
        name, v, help = "--" + f.name.replace("_", "-"), getattr(d, f.name), f.metadata["help"]
        if isinstance(v, bool):
            ap.add_argument(name, action="store_true", help=help)
        else:
            shown = v if isinstance(v, str) else f"{v:g}"
            ap.add_argument(name, type=type(v), default=v, help=f"{help} (default: {shown})")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    fc = FinetuneConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(FinetuneConfig)})
    try:
        finetune(a.data, a.out, a.model, a.work, fc, progress=not a.no_progress, photos=a.photos)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
