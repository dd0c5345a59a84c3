"""The Lip Forcing recipe end to end on procedural talking faces: one command.

    python -m distill.recipe --work runs/recipe            # the full recipe (CPU: see README)
    python -m distill.recipe --work /tmp/smoke --smoke     # a few steps of every stage

Stages, each writing into ``--work`` and skipped when its output is already there (``--redo
STAGE`` runs one again):

1. ``data``      render the train and held-out pair sets (``dataset.py``)
2. ``vae``       train the streaming VAE, unit-scale its latents (``autoencoder.py``)
3. ``teacher``   train the bidirectional audio-conditioned DiT, flow matching + audio dropout
4. ``analysis``  the teacher's x0-prediction curves with and without CFG -> sync window, ``t_land``
5. ``student``   causal student: ODE-pair init, then Self-Forcing rollout + Sync-Window DMD + reward,
                 and the ablations (CFG everywhere, no reward, evenly spaced steps)
6. ``eval``      held-out table: teacher (N steps), student and ablations, same data and scorer

The student is written as an SDK model directory (``--work``/``model``) that ``Engine.load`` and
``lipforce export`` take as they are.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lipforce_sdk.config import from_name

__all__ = ["RecipeConfig", "main"]


@dataclass
class RecipeConfig:
    preset: str = "tiny"
    train_clips: int = 160
    held_out_clips: int = 24
    held_out_frames: int = 100  # held-out clips are cut to this many frames
    max_frames: int = 64  # procedural and photo training clips are cut to this many frames
    real_data: str | None = None  # folder of real talking-head clips (HDTF-style) trained on as well
    real_window: int = 50  # real clips are cut into pieces of this many frames
    photo_data: str | None = None  # folder of real face photos made to speak (distill.photoreal)
    photo_clips: int = 0  # speaking clips made from those photos
    ae_steps: int = 4000
    teacher_steps: int = 4000
    teacher_lips_steps: int = 2500  # a warm restart with the lips weighted up
    init_steps: int = 200
    dmd_steps: int = 150  # every student variant trains the same number of steps
    ode_pairs: int = 256  # teacher trajectories the student's init regresses on
    data_pairs: int = 0  # windows of the data itself the init regresses on as well (``student.data_pairs``)
    data_weight: float = 0.0  # DMD: weight of the rollout's regression onto the real window
    t_land: float | None = None  # step 2's noise level; None: chosen by the trajectory analysis
    sync_window: tuple[float, float] | None = None  # with ``t_land`` given: the CFG band (no analysis run)
    window_frames: int = 8  # latent frames per teacher window (its training length)
    teacher_eval_steps: int = 16  # Euler steps of the teacher (sampling, analysis, ODE pairs)
    guidance: float = 3.0
    decoder_steps: int = 0  # the VAE decoder adapted to the student's latents (``decoder.py``); 0: none
    init_from: str | None = None  # an SDK model directory whose audio encoder and DiT start the student
    analysis_clips: int = 8
    reward_weight: float = 0.05
    seed: int = 0

    @classmethod
    def smoke(cls) -> "RecipeConfig":
        return cls(train_clips=3, held_out_clips=2, held_out_frames=24, max_frames=40, ae_steps=2, teacher_steps=2,
                   teacher_lips_steps=1, init_steps=2,
                   dmd_steps=1, ode_pairs=4, data_pairs=4, data_weight=1.0, decoder_steps=2, window_frames=4,
                   teacher_eval_steps=4, analysis_clips=1)


def _log(msg: str) -> None:
    print(msg, flush=True)


def train_clips(rc: RecipeConfig, cfg) -> list:
    """The training clips: procedural pairs, and real clips / speaking photos where given."""
    from tqdm import tqdm

    from .crops import procedural_clip, real_clips

    clips = [procedural_clip(cfg, i, "train", max_frames=rc.max_frames)
             for i in tqdm(range(rc.train_clips), desc="procedural clips", unit="clip")]
    if rc.real_data:
        from .realdata import find_clips, load_clip

        for v, a in tqdm(find_clips(rc.real_data), desc="real clips", unit="clip"):
            clips += real_clips(cfg, load_clip(v, a), window=rc.real_window, stride=rc.real_window)
    if rc.photo_data and rc.photo_clips:
        from .crops import photo_clips

        clips += photo_clips(cfg, rc.photo_data, rc.photo_clips, max_frames=rc.max_frames, seed=rc.seed)
    return clips


def stage_data(work: Path, rc: RecipeConfig):
    """The training set (cached in the work directory) and the held-out clips with their frames
    and pairs (the evaluation needs their ground truth; rendering them takes about a minute)."""
    from .crops import CropSet, procedural_clip

    cfg = from_name(rc.preset)
    path = work / "data_train.npz"
    if path.is_file():
        tr = CropSet.load(path)
    else:
        tr = CropSet.build(cfg, train_clips(rc, cfg))
        tr.save(path)
    ho_clips = [procedural_clip(cfg, i, "held_out", max_frames=rc.held_out_frames, keep_frames=True)
                for i in range(rc.held_out_clips)]
    ho = CropSet.build(cfg, ho_clips)
    kinds = {k: sum(c.kind == k for c in tr.clips) for k in ("procedural", "real", "photo")}
    _log(f"data: {len(tr)} train clips {kinds} ({tr.num_frames} frames), {len(ho)} held-out clips ({ho.num_frames} frames)")
    return tr, ho


def stage_vae(work: Path, rc: RecipeConfig, tr):
    """The VAE as an autoencoder of the training crops (targets and masked sources); latents
    unit-scaled."""
    from lipforce_sdk.model.vae import make_vae

    from .autoencoder import AETrainConfig, normalize_latents, reconstruction_scores, train_autoencoder

    cfg = from_name(rc.preset)
    torch.manual_seed(rc.seed)
    vae = make_vae(cfg)

    def train() -> dict:
        ac = AETrainConfig(steps=rc.ae_steps, seed=rc.seed)
        _log(f"vae: training {ac.steps} steps")
        info = train_autoencoder(vae, tr, ac, log=_log)
        info["latent_scale"] = normalize_latents(vae, tr)
        sc = reconstruction_scores(vae, tr, clips=16)
        info["reconstruction_psnr_train"] = {k: float(sum(r[k] for r in sc) / len(sc)) for k in ("psnr", "psnr_lower")}
        _log(f"vae: {json.dumps(info)}")
        return info

    _load_or_train(work / "vae.safetensors", vae, train)
    return vae.eval()


def _load_or_train(path: Path, module: torch.nn.Module, train) -> dict:
    """Load ``module``'s weights from ``path``, or run ``train()`` and save them (with its info)."""
    from safetensors.torch import load_file, save_file

    info_path = path.with_suffix(".json")
    if path.is_file():
        module.load_state_dict(load_file(str(path)))
        return json.loads(info_path.read_text()) if info_path.is_file() else {}
    info = train()
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    info_path.write_text(json.dumps(info, indent=1))
    return info


def stage_teacher(work: Path, rc: RecipeConfig, latents):
    """The bidirectional teacher (after the clip's reference frames), flow matching; then a warm
    restart with the lips weighted up (the lip gap is a small part of the re-rendered region and
    the last thing a small model learns: without it the teacher paints an average mouth)."""
    from .teacher import Teacher, TeacherTrainConfig, teacher_config, train_teacher

    cfg = teacher_config(from_name(rc.preset))
    torch.manual_seed(rc.seed + 1)
    teacher = Teacher(cfg)
    phases = [("teacher_phase1", TeacherTrainConfig(steps=rc.teacher_steps, frames=rc.window_frames, seed=rc.seed)),
              ("teacher", TeacherTrainConfig(steps=rc.teacher_lips_steps, frames=rc.window_frames, seed=rc.seed + 1,
                                             lips_weight=16.0))]
    for name, tc in phases:
        info = _load_or_train(work / f"{name}.safetensors", teacher,
                              lambda tc=tc, name=name: (_log(f"{name}: training {tc.steps} steps"),
                                                        train_teacher(teacher, latents(), tc, log=_log))[1])
        _log(f"{name}: {json.dumps(info)}")
    return teacher.eval()


def stage_analysis(work: Path, rc: RecipeConfig, teacher, vae, ls_ho, ho, scorer):
    from .analysis import choose_window, trajectory_curves, write_report

    path = work / "analysis.json"
    if rc.t_land is not None:
        w = tuple(rc.sync_window) if rc.sync_window else None
        _log(f"analysis: skipped, sync window {w} and t_land {rc.t_land} given")
        return w, float(rc.t_land)
    if path.is_file():
        a = json.loads(path.read_text())
        return (tuple(a["window"]) if a["window"] else None), a["t_land"]
    n = min(rc.analysis_clips, len(ho))
    t0 = time.perf_counter()
    rows = trajectory_curves(teacher, vae, ls_ho, ho.clips[:n], scorer, rc.teacher_eval_steps, rc.guidance,
                             rc.window_frames, seed=rc.seed)
    window, t_land = choose_window(rows, rc.teacher_eval_steps)
    write_report(rows, window, t_land, {"clips": n, "steps": rc.teacher_eval_steps, "guidance": rc.guidance,
                                        "seconds": time.perf_counter() - t0}, work)
    _log(f"analysis: sync window {window}, t_land {t_land}")
    return window, t_land


STUDENT_VARIANTS = {
    # name: (window from the analysis?, sync reward?, t_land from the analysis?)
    "student": dict(window="analysis", reward=True, t_land="analysis"),
    "cfg_everywhere": dict(window=None, reward=True, t_land="analysis"),
    "no_reward": dict(window="analysis", reward=False, t_land="analysis"),
    "even_schedule": dict(window="analysis", reward=True, t_land=0.5),
}


def stage_student(work: Path, rc: RecipeConfig, name: str, teacher, vae, latents, crops, scorer, window, t_land):
    import copy

    from .student import DMDConfig, SyncReward, data_pairs, ode_pairs, train_dmd, train_ode_init
    from .teacher import as_student, window_guidance

    v = STUDENT_VARIANTS[name]
    cfg = from_name(rc.preset)
    tl = t_land if v["t_land"] == "analysis" else float(v["t_land"])
    win = window if v["window"] == "analysis" else None
    init_path = work / f"init_t{tl:.4f}.safetensors"
    student = copy.deepcopy(teacher)
    if rc.init_from:
        _warm_start(student, Path(rc.init_from))
    student = as_student(student, cfg)
    guide = window_guidance(rc.guidance, window)
    dc = DMDConfig(steps=rc.dmd_steps, frames=rc.window_frames, guidance=rc.guidance, window=win, seed=rc.seed,
                   reward_weight=rc.reward_weight if v["reward"] else 0.0, data_weight=rc.data_weight)

    def init():
        _log(f"{name}: init pairs: {rc.ode_pairs} from the teacher ({rc.teacher_eval_steps} steps), "
             f"{rc.data_pairs} from the data, t_land {tl}")
        parts = []
        if rc.ode_pairs:
            parts.append(ode_pairs(teacher, latents(), rc.ode_pairs, rc.window_frames, rc.teacher_eval_steps, guide, tl,
                                   seed=rc.seed))
        if rc.data_pairs:
            parts.append(data_pairs(latents(), rc.data_pairs, rc.window_frames, tl, seed=rc.seed))
        pairs = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return train_ode_init(student, cfg, pairs, rc.init_steps, tl, dc.mouth_weight, dc.lips_weight, seed=rc.seed,
                              log=_log)

    _load_or_train(init_path, student, init)
    reward = SyncReward(copy.deepcopy(vae), copy.deepcopy(scorer.net), cfg) if v["reward"] else None

    def dmd():
        _log(f"{name}: Self-Forcing DMD {dc.steps} steps (CFG window {win}, reward {v['reward']}, t_land {tl})")
        return train_dmd(student, teacher, cfg, latents(), tl, dc, reward=reward, crops=crops, log=_log)

    info = _load_or_train(work / f"{name}.safetensors", student, dmd)
    return student.eval(), tl, info


def _warm_start(student, model_dir: Path) -> None:
    """The audio encoder and DiT of an SDK model directory (an earlier student of this preset) as
    the student's start; its head's output form is the one in its manifest."""
    from lipforce_sdk.model.checkpoint import load_model

    old = load_model(model_dir)
    student.audio_encoder.load_state_dict(old.audio_encoder.state_dict())
    student.dit.load_state_dict(old.dit.state_dict())
    student.cfg = student.dit.cfg = old.cfg
    _log(f"student: starts from {model_dir} (dit.output={old.cfg.dit.output!r})")


def stage_decoder(work: Path, rc: RecipeConfig, name: str, student, vae, latents, crops, t_land):
    """The VAE with its decoder adapted to this student's latents (``decoder.py``); the VAE as it
    is when ``rc.decoder_steps`` is 0."""
    import copy

    from .decoder import DecoderConfig, adapt_decoder

    if not rc.decoder_steps:
        return vae
    out = copy.deepcopy(vae)
    dc = DecoderConfig(steps=rc.decoder_steps, windows=min(DecoderConfig.windows, 8 * rc.decoder_steps), seed=rc.seed)
    info = _load_or_train(work / f"decoder_{name}.safetensors", out,
                          lambda: (_log(f"{name}: decoder adapted to the student, {dc.steps} steps"),
                                   adapt_decoder(out, student, from_name(rc.preset), latents(), crops, t_land, dc,
                                                 frames=rc.window_frames, log=_log))[1])
    _log(f"{name} decoder: {json.dumps(info)}")
    return out.eval()


def write_model_dir(out: Path, rc: RecipeConfig, student, vae, t_land: float, card: dict | None = None) -> Path:
    """The student as an SDK model directory (``Engine.load(out)``)."""
    from lipforce_sdk.model.checkpoint import LipSyncModel, save_model

    cfg = from_name(rc.preset).replace(schedule={"t_land": round(float(t_land), 6)})
    model = LipSyncModel(cfg)
    model.vae.load_state_dict(vae.state_dict())
    model.audio_encoder.load_state_dict(student.audio_encoder.state_dict())
    model.dit.load_state_dict(student.dit.state_dict())
    return save_model(model.eval(), out, **({"training": card} if card else {}))


ROW_KEYS = ("sync_c", "sync_d", "offset", "gap_mae_px", "gap_corr", "psnr_out", "ssim_out", "psnr_in")


def _mean(scores: list[dict]) -> dict:
    import numpy as np

    def nanmean(v):  # nan when no clip gives a value (e.g. a gap correlation of a still mouth)
        v = np.asarray(v, np.float64)
        return float(v[~np.isnan(v)].mean()) if (~np.isnan(v)).any() else float("nan")

    out = {k: nanmean([s[k] for s in scores]) for k in ROW_KEYS}
    out["offset_exact"] = float(np.mean([s["offset"] == 0 for s in scores]))
    return out


def data_description(rc: RecipeConfig) -> str:
    parts = [f"{rc.train_clips} procedural talking-face pairs (distill.data, split 'train')"]
    if rc.real_data:
        from .realdata import find_clips  # the clips trained on: those with speech, any video container

        n = len(find_clips(rc.real_data)) if Path(rc.real_data).is_dir() else None
        parts.append(f"{n or 'the'} real talking-head clips with their own speech (folder `{Path(rc.real_data).name}`, "
                     f"cut into {rc.real_window}-frame pieces, self-supervised)")
    if rc.photo_data and rc.photo_clips:
        n = len([p for p in Path(rc.photo_data).iterdir() if p.is_file()]) if Path(rc.photo_data).is_dir() else None
        parts.append(f"{rc.photo_clips} speaking clips made from {n or 'the'} real face photos (folder "
                     f"`{Path(rc.photo_data).name}`, distill.photoreal)")
    return "; ".join(parts)


def _reference_rows(rc: RecipeConfig, teacher, vae, ho, ls_ho, scorer, window) -> list[dict]:
    """The held-out rows that do not depend on a student: ground truth, input video, the teacher."""
    from .analysis import latents_to_frames, teacher_latents
    from .evaluate import score_clip
    from .teacher import window_guidance

    pairs_ho = [c.extra["pair"] for c in ho.clips]
    rows = [
        {"name": "ground truth (target clip)", **_mean([score_clip(p.target, p, scorer) for p in pairs_ho])},
        {"name": "input video (mouth of other speech)", **_mean([score_clip(p.source, p, scorer) for p in pairs_ho])},
    ]
    n_steps = rc.teacher_eval_steps
    teachers = [(f"teacher, {n_steps} Euler steps, CFG in sync window", window_guidance(rc.guidance, window)),
                (f"teacher, {n_steps} Euler steps, CFG everywhere", window_guidance(rc.guidance, None)),
                (f"teacher, {n_steps} Euler steps, no CFG", lambda t: 1.0)]
    for label, guide in teachers:
        g = torch.Generator().manual_seed(rc.seed + 7)
        scores, secs, frames = [], 0.0, 0
        for i, (c, p) in enumerate(zip(ho.clips, pairs_ho)):
            noise = torch.randn(ls_ho.cond[i].shape, generator=g)
            t0 = time.perf_counter()
            z = teacher_latents(teacher, ls_ho.cond[i], ls_ho.mel[i], ls_ho.mask[i], noise, n_steps, guide,
                                rc.window_frames, ref=ls_ho.ref([i]))
            out = latents_to_frames(vae, z, c)
            secs += time.perf_counter() - t0
            frames += out.shape[0]
            scores.append(score_clip(out, p, scorer))
        rows.append({"name": label, "kind": "teacher", **_mean(scores), "ms_per_frame": 1000.0 * secs / frames})
        _log(f"eval: {rows[-1]}")
    return rows


def stage_eval(work: Path, rc: RecipeConfig, teacher, vae, ho, ls_ho, scorer, window, students: dict) -> list[dict]:
    """Held-out rows, same pairs and scorer for all: references, teacher, student and ablations.
    The rows that depend on no student are kept in ``results_teacher.json`` (a re-run after a
    student or decoder changed scores only the students)."""
    from lipforce_sdk.session import Engine

    from .evaluate import render_engine, score_clip

    pairs_ho = [c.extra["pair"] for c in ho.clips]
    cached = work / "results_teacher.json"
    if cached.is_file():
        rows = json.loads(cached.read_text())
    else:
        rows = _reference_rows(rc, teacher, vae, ho, ls_ho, scorer, window)
        cached.write_text(json.dumps(rows, indent=1))
    for name, (student, t_land, student_vae) in students.items():
        card = {"recipe": "python -m distill.recipe", "variant": name, "t_land": round(float(t_land), 6),
                "sync_window": window if name != "cfg_everywhere" else None, "guidance": rc.guidance,
                "data": data_description(rc),
                "steps": {"vae": rc.ae_steps, "teacher": rc.teacher_steps + rc.teacher_lips_steps, "ode_init": rc.init_steps,
                          "dmd": rc.dmd_steps, "decoder": rc.decoder_steps}}
        d = write_model_dir(work / "models" / name, rc, student, student_vae, t_land, card)
        engine = Engine.load(d, backend="torch")
        scores, secs, frames = [], 0.0, 0
        for p in pairs_ho:
            out, spf = render_engine(engine, p)
            secs += spf * out.shape[0]
            frames += out.shape[0]
            scores.append(score_clip(out, p, scorer))
        label = {"student": f"student, 2 steps (1, {t_land:g}), Sync-Window DMD + reward",
                 "cfg_everywhere": "ablation: CFG at every timestep", "no_reward": "ablation: no sync reward",
                 "even_schedule": f"ablation: even two-step schedule (1, {t_land:g})"}[name]
        rows.append({"name": label, "kind": name, **_mean(scores), "ms_per_frame": 1000.0 * secs / frames})
        _log(f"eval: {rows[-1]}")
    return rows


def results_markdown(rows: list[dict], n_clips: int, frames: int) -> str:
    head = ("| model | Sync-C ↑ | Sync-D ↓ | offset 0 | lip-gap error (px) ↓ | gap corr ↑ | PSNR out (dB) | "
            "SSIM out | PSNR in (dB) | ms / frame |")
    lines = [head, "| --- " * 10 + "|"]
    for r in rows:
        ms = f"{r['ms_per_frame']:.1f}" if "ms_per_frame" in r else "-"
        lines.append(f"| {r['name']} | {r['sync_c']:.3f} | {r['sync_d']:.3f} | {100 * r['offset_exact']:.0f}% | "
                     f"{r['gap_mae_px']:.2f} | {r['gap_corr']:.2f} | {r['psnr_out']:.2f} | {r['ssim_out']:.4f} | "
                     f"{r['psnr_in']:.2f} | {ms} |")
    lines.append("")
    lines.append(f"{n_clips} held-out clips ({frames} frames; held-out sentences, identities and motions), "
                 "one SyncNet scorer; means over clips. ms / frame: this machine's CPU, PyTorch fp32, "
                 "including audio/VAE encoding, decoding and compositing.")
    return "\n".join(lines) + "\n"


def install_default(work: Path, dest: Path | None = None) -> Path:
    """Copy the trained student into the SDK's bundled default model directory, with its model
    card (data, recipe, scores) from this work directory's results."""
    import shutil

    from lipforce_sdk.session import default_model_dir

    dest = Path(dest) if dest is not None else default_model_dir()
    src = work / "models" / "student"
    res = json.loads((work / "results.json").read_text())
    rcfg = RecipeConfig(**res["recipe"])
    for f in ("manifest.json", "dit.safetensors", "vae.safetensors", "audio_encoder.safetensors"):
        shutil.copyfile(src / f, dest / f)
    ana = ((work / "analysis.md").read_text() if (work / "analysis.md").is_file() else
           f"Not run for this model: `t_land` = {rcfg.t_land:g} and the CFG band {rcfg.sync_window} were set in the recipe "
           "(`RecipeConfig.t_land`, `sync_window`): the paper's mid-trajectory landing, since this teacher follows the "
           "audio too weakly for its trajectories to locate the band.\n")
    rc = res["recipe"]
    w = res["window"]
    cfg = from_name(rcfg.preset)
    megabytes = sum((src / f).stat().st_size for f in ("dit.safetensors", "vae.safetensors", "audio_encoder.safetensors")) / 1e6
    extra = (work / "real_faces.md").read_text() if (work / "real_faces.md").is_file() else ""
    source_form = ("" if cfg.dit.output != "source" else
                   " Its DiT does not draw the mouth from noise: it corrects the masked source, whose hole holds the "
                   "first reference frame's latents (`dit.output = \"source\"`, `stream.fill = \"reference\"`), so "
                   "lips, teeth and skin texture come from the person and the DiT moves them with the speech.")
    card = f"""# lipforce default model (`{rcfg.preset}` preset, trained)

The model `Engine.load()` uses when given no path. A causal two-step student of the Lip Forcing
recipe (`distill/`), no public weights. It re-renders the mouth region of a
{cfg.stream.resolution} x {cfg.stream.resolution} eye-aligned mouth crop (nose tip to chin,
`lipforce_sdk.geometry`) to match new speech, copying lips, teeth and skin from {cfg.stream.sink_frames}
clean reference frames of the person held in its KV cache's sink; the rest of the frame is left
as it was.{source_form}

- **Size:** DiT dim {cfg.dit.dim}, {cfg.dit.num_layers} layers, patch {cfg.dit.patch_size[1]}; per-frame VAE with
  {cfg.vae.spatial_compression}x spatial compression ({cfg.latent_hw[0]} x {cfg.latent_hw[1]} x {cfg.vae.z_dim} latents, no frames
  packed together); {cfg.video_frames_per_chunk}-frame chunks (algorithmic latency {cfg.algorithmic_latency_ms():.0f} ms).
  VAE, audio encoder and DiT together
  {megabytes:.1f} MB (fp32 safetensors).
- **Data:** {data_description(rcfg)}. Procedural faces: varied identity, head sway, blinks, the
  mouth following espeak-ng speech through its phoneme timing. Real clips: self-supervised (the
  mouth hidden, the clip's own speech as the condition, its frames as the target). Photos: the
  face's own lips and jaw warped by the viseme track of espeak-ng speech, the mouth interior
  painted (`distill/photoreal.py`). Real data came from public GitHub repositories, used locally
  for training and not redistributed; see BENCHMARKS.md for the sources.
- **Recipe** (`python -m distill.recipe --work runs/recipe --data CLIPS --photos PHOTOS`, see
  `distill/README.md`): VAE ({rc["ae_steps"]} steps) -> bidirectional teacher after the reference
  frames, flow matching with audio dropout ({rc["teacher_steps"]} + {rc.get("teacher_lips_steps", 0)} steps, the second with
  the lips weighted up)
  -> {"CFG band and `t_land` set" if rcfg.t_land is not None else "trajectory analysis"}: sync window {("[%.4f, %.4f]" % tuple(w)) if w else "none"}, `t_land` = {res["t_land"]:g}
  -> causal student{" started from the audio encoder and DiT of an earlier student (`init_from`; a head whose output form changed starts at zero)" if rc.get("init_from") else ""}: init ({rc["init_steps"]} steps) regressed through its own cached two-step rollout on
  {rc["ode_pairs"]} teacher ODE pairs and {rc.get("data_pairs", 0)} windows of the data itself (mouth hidden, own speech,
  real frames as target), then Self-Forcing rollout with its KV cache and Sync-Window DMD (CFG
  {rc["guidance"]:g} only inside the window) plus the SyncNet reward (weight {rc["reward_weight"]:g}) and the
  regression onto the real window (weight {rc.get("data_weight", 0):g}) ({rc["dmd_steps"]} steps).
  {f"-> the VAE decoder adapted to the student's latents ({rc.get('decoder_steps', 0)} steps, `distill/decoder.py`)." if rc.get("decoder_steps") else ""}
  Sampling: two steps, `t = 1` and `t = {res["t_land"]:g}`, then the clean cache pass.
- **Limits:** a {megabytes:.0f} MB model: the mouth interior (teeth, tongue) is soft, a face
  whose lips or lighting differ much from the training data's comes out less sharp, and the lips
  follow new speech less well than a real speaker's (see "Real faces" below and BENCHMARKS.md).
  The mouth starts from the reference frames (by default the stream's first frames): one with an
  open mouth or a turned head shows through; pass closed-mouth frames as
  `engine.session(reference=...)`, or enroll the avatar. Faces turned past about 60 degrees are
  not tracked. Not for identity-sensitive use.
{extra}
## Held-out procedural scores

{(work / "results.md").read_text()}
## Teacher trajectory (sync window, `t_land`)

{ana}"""
    (dest / "MODEL_CARD.md").write_text(card)
    return dest


STAGES = ("data", "vae", "teacher", "analysis", "student", "eval")


def work_config(work: Path) -> RecipeConfig | None:
    """The ``RecipeConfig`` a work directory was started with (``recipe.json``), if any."""
    p = Path(work) / "recipe.json"
    if not p.is_file():
        return None
    try:
        return RecipeConfig(**json.loads(p.read_text()))
    except TypeError:
        return None


def _stage_outputs(work: Path, stage: str) -> list[Path]:
    """The files whose presence makes ``stage`` skip (``--redo`` removes them)."""
    pats = {"data": ["data_train.npz"], "vae": ["vae.*"], "teacher": ["teacher_phase1.*", "teacher.*"],
            "analysis": ["analysis.*"], "student": ["init_t*.*", "decoder_*.*"] + [f"{v}.*" for v in STUDENT_VARIANTS],
            "eval": ["results.*", "results_teacher.json"]}[stage]
    return sorted({p for pat in pats for p in work.glob(pat) if p.is_file()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.recipe", description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, type=Path, help="work directory (stage outputs, results)")
    ap.add_argument("--smoke", action="store_true", help="a few steps of every stage (CI)")
    ap.add_argument("--until", choices=STAGES, default="eval", help="stop after this stage")
    ap.add_argument("--redo", action="append", default=[], choices=STAGES, help="run a stage again")
    ap.add_argument("--variants", nargs="+", choices=list(STUDENT_VARIANTS), default=list(STUDENT_VARIANTS),
                    help="student variants to train in this process (to spread them over processes)")
    ap.add_argument("--install-default", action="store_true",
                    help="copy the trained student (and its model card) into lipforce_sdk/assets/default")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    ap.add_argument("--data", default=None, help="a folder of real talking-head clips with their sound to train on too")
    ap.add_argument("--photos", default=None, help="a folder of real face photos to make speak and train on too")
    ap.add_argument("--photo-clips", type=int, default=None, help="speaking clips to make from --photos")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rc = RecipeConfig.smoke() if a.smoke else RecipeConfig()
    if a.data:
        rc.real_data = str(Path(a.data).resolve())
    if a.photos:
        rc.photo_data = str(Path(a.photos).resolve())
        rc.photo_clips = a.photo_clips if a.photo_clips is not None else 200
    saved = work_config(a.work)
    if saved is not None and not a.smoke and (a.data is None and a.photos is None):
        rc = saved  # a resumed run keeps its data sources
    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe.json").write_text(json.dumps(asdict(rc), indent=1))
    for st in a.redo:
        for p in _stage_outputs(work, st):
            p.unlink()
    if a.install_default:
        _log(f"installed {install_default(work)}")
        return 0
    t0 = time.perf_counter()
    tr, ho = stage_data(work, rc)
    if a.until == "data":
        return 0
    vae = stage_vae(work, rc, tr)
    if a.until == "vae":
        return 0
    from .syncnet import SyncScorer
    from .teacher import LatentSet

    cfg = from_name(rc.preset)
    # the training latents, encoded once when a stage first trains (a resumed run may need none)
    latents = functools.cache(lambda: LatentSet.encode(vae, tr, cfg))
    teacher = stage_teacher(work, rc, latents)
    if a.until == "teacher":
        return 0
    ls_ho = LatentSet.encode(vae, ho, cfg)
    scorer = SyncScorer.load()
    window, t_land = stage_analysis(work, rc, teacher, vae, ls_ho, ho, scorer)
    if a.until == "analysis":
        return 0
    students = {}
    for name in a.variants:
        st, tl, _ = stage_student(work, rc, name, teacher, vae, latents, tr, scorer, window, t_land)
        students[name] = (st, tl, stage_decoder(work, rc, name, st, vae, latents, tr, tl))
    if a.until == "student":
        return 0
    rows = stage_eval(work, rc, teacher, vae, ho, ls_ho, scorer, window, students)
    md = results_markdown(rows, len(ho), ho.num_frames)
    (work / "results.json").write_text(json.dumps({"rows": rows, "window": window, "t_land": t_land,
                                                   "recipe": asdict(rc)}, indent=1))
    (work / "results.md").write_text(md)
    print(md)
    _log(f"done in {time.perf_counter() - t0:.0f} s; the student model directory: {work / 'models' / 'student'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
