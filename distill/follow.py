"""Does a model's mouth follow the sound? Per clip, in latent space, in a minute or two.

    python -m distill.follow --clips data/eval_talking --model M [M ...] [--work W] [--json OUT]

Each clip with its own sound (tracked, cut and encoded as ``distill.finetune`` does; the files kept
in ``--work``, default ``CLIPS.follow``, and reused) is split into windows of ``--frames`` latent
frames, and every window is rendered as at run time: the two-step cached rollout, the frame's own
face around the mouth as the condition, the reference in the sink. Twice: with the window's own
speech, and with the same clip's speech from half its windows away. Over the lips region of the
mask, each window's time mean removed, the output's motion is set against the true latents':

- ``motion``: the output's std over the real one's (1: the mouth moves as much as the person's);
- ``own``: their correlation with the window's own speech;
- ``other``: the same with the other speech. A model that reads the mouth off the jaw and chin
  around the mask scores as high here as with its own speech; ``own - other`` is what the sound adds.

On clips a model was trained on this says whether it fitted them; on clips it never saw, whether
it draws the person's articulation rather than a mouth that opens with the loudness (which the
landmark lip r of ``distill.realeval`` also rewards). No pixels are decoded: pair it with
``distill.realeval``'s sheets. Every model must share the VAE the latents were made with.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["motion_scores", "follow_clip", "follow", "main"]


def motion_scores(x, z, where) -> tuple[float, float]:
    """``(motion, corr)`` of output latents ``x`` against true ``z`` (``[B, C, L, h, w]``) over the
    boolean ``where`` (broadcast to them), each window's mean over its ``L`` frames removed."""
    import torch

    dx, dz = x - x.mean(2, keepdim=True), z - z.mean(2, keepdim=True)
    w = where.expand_as(dz)
    a, b = dx[w].double(), dz[w].double()
    sa, sb = float(a.std()), float(b.std())
    if not sb:
        return float("nan"), float("nan")
    if sa <= 1e-6 * sb:  # a mouth that does not move (up to rounding) follows nothing
        return sa / sb, float("nan")
    return sa / sb, float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def follow_clip(model, ls, pieces: list[int], frames: int = 8, batch: int = 32, seed: int = 3) -> dict:
    """The scores of one clip whose pieces (indices into ``ls``, a ``distill.teacher.LatentSet``)
    are ``pieces``: ``windows``, ``motion``, ``own``, ``other`` (``None`` with one window)."""
    import torch

    from .student import renoiser, rollout
    from .teacher import Ref, lips_map

    cfg = model.cfg
    picks = [(i, s) for i in pieces for s in range(0, ls.z[i].shape[1] - frames + 1, frames)]
    if not picks:
        return {"windows": 0, "motion": None, "own": None, "other": None}
    z, cond, mel, mask, ref = ls.gather(picks, frames)
    n = len(picks)
    other_mel = mel.roll(n // 2, 0) if n > 1 else None
    where = (lips_map(cfg)[None, None, None] * mask.amax(1, keepdim=True)) > 0.3
    g = torch.Generator().manual_seed(seed)
    noise, eps2 = torch.randn(z.shape, generator=g), torch.randn(z.shape, generator=g)
    t_land, c = cfg.schedule.t_land, cfg.stream.chunk_frames
    outs = {}
    with torch.no_grad():
        for name, m in (("own", mel), ("other", other_mel)):
            if m is None:
                continue
            parts = []
            for k in range(0, n, batch):
                sl = slice(k, k + batch)
                r = None if ref is None else Ref(ref.x0[sl], ref.cond[sl], ref.mask[sl])
                parts.append(rollout(model.dit, cfg, cond[sl], mask[sl], model.audio_encoder(m[sl]), noise[sl],
                                     renoiser(eps2[sl], t_land, c), t_land, ref=r))
            outs[name] = torch.cat(parts)
    motion, own = motion_scores(outs["own"], z, where)
    other = motion_scores(outs["other"], z, where)[1] if "other" in outs else None
    return {"windows": n, "motion": motion, "own": own, "other": other}


def follow(clips: str | Path, models: list[str | Path], work: str | Path | None = None, frames: int = 8,
           progress: bool = True) -> list[dict]:
    """One row per (model, clip): ``model``, ``clip`` and :func:`follow_clip`'s scores."""
    from lipforce_sdk.model import load_model

    from .finetune import FinetuneConfig, _prepare, vae_sha256

    clips = Path(clips)
    work = Path(work) if work is not None else clips.with_name(clips.name + ".follow")
    models = [Path(m) for m in models]
    for m in models:
        if not (m / "manifest.json").is_file():
            raise FileNotFoundError(f"{str(m)!r} is not a model directory (no manifest.json)")
    shas = [vae_sha256(m) for m in models]
    key = {"data": str(clips.resolve()), "vae": shas[0]}
    key_path = work / "follow.json"
    made = json.loads(key_path.read_text()) if key_path.is_file() else key
    if len(set(shas)) > 1 or made.get("vae") != key["vae"]:
        raise ValueError("the models do not share one VAE (or --work was made with another): the latents are the "
                         "VAE's; measure each VAE with its own --work")
    if made != key:
        raise ValueError(f"--work {str(work)!r} holds the files of other clips ({key_path}); pass a new --work")
    work.mkdir(parents=True, exist_ok=True)
    key_path.write_text(json.dumps(key))
    first = load_model(models[0])
    fc = FinetuneConfig(procedural=0, min_lip_r=-1.0)  # every clip with a face, its sync not required
    _, _, cs, ls = _prepare(clips, first, fc, work, progress)
    by = defaultdict(list)
    for i, c in enumerate(cs.clips):
        if c.kind != "procedural":
            by[c.name.rsplit("@", 1)[0]].append(i)  # pieces are named CLIP@START
    rows = []
    for md in models:
        model = first if md == models[0] else load_model(md)
        for name, pieces in sorted(by.items()):
            rows.append({"model": str(md), "clip": name, **follow_clip(model, ls, pieces, frames)})
    return rows


def _fmt(v) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def table(rows: list[dict]) -> str:
    """Markdown: one line per (model, clip), then each model's mean over its clips."""
    out = ["| model | clip | windows | motion | own | other | own - other |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    by = defaultdict(list)
    for r in rows:
        by[r["model"]].append(r)
        d = None if r["other"] is None or r["own"] is None else r["own"] - r["other"]
        out.append(f"| {Path(r['model']).name} | {r['clip']} | {r['windows']} | {_fmt(r['motion'])} | {_fmt(r['own'])} "
                   f"| {_fmt(r['other'])} | {_fmt(d)} |")
    for m, rs in by.items():
        mean = {k: float(np.nanmean([np.nan if r[k] is None else r[k] for r in rs]))
                for k in ("motion", "own", "other")}
        out.append(f"| {Path(m).name} | mean of {len(rs)} clips | {sum(r['windows'] for r in rs)} "
                   f"| {_fmt(mean['motion'])} "
                   f"| {_fmt(mean['own'])} | {_fmt(mean['other'])} | {_fmt(mean['own'] - mean['other'])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.follow", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", required=True, help="folder of talking-head clips with their own sound")
    ap.add_argument("--model", nargs="+", required=True, help="model directories (one VAE)")
    ap.add_argument("--work", default=None, help="tracks, crops and latents (default: CLIPS.follow)")
    ap.add_argument("--frames", type=int, default=8, help="latent frames per window")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    try:
        rows = follow(a.clips, a.model, a.work, a.frames, progress=not a.no_progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
