"""Stage 4: the teacher's trajectory -> the sync window and the landing time ``t_land``.

Held-out windows are integrated with the teacher's Euler sampler (conditional, no guidance). At
every visited timestep ``t`` the x0 prediction is taken twice, conditional and with CFG, decoded,
composited as the runtime pastes it, and scored: Sync-C (the SyncNet scorer), the lip-gap error
against the renderer's geometry, PSNR inside the mouth. From the curves:

- **sync window** ``[lo, hi]``: the contiguous band of timesteps around the largest CFG sync gain
  (``Sync-C(cfg) - Sync-C(cond)``) where the gain is at least half of that maximum, and positive:
  where guidance moves the mouth toward the audio. Outside it CFG adds little sync (or costs
  fidelity), so the student's real score uses CFG only inside it.
- **t_land**: the middle of the window, on the sampler's grid: the student's second step starts
  from a state where the teacher's guidance still shapes the mouth.

Written as ``analysis.json``, ``analysis.md`` (table) and ``analysis.svg`` (plot).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from lipforce_sdk.geometry import GreenLimit
from lipforce_sdk.session import edge_match_on, fit_to_frame, green_limit_on

from .autoencoder import decode_latents
from .crops import from_unit
from .teacher import Ref, Teacher, sample, time_grid

__all__ = ["latents_to_frames", "teacher_latents", "trajectory_curves", "choose_window", "write_report", "svg_plot"]


@torch.no_grad()
def latents_to_frames(vae, z: torch.Tensor, clip) -> np.ndarray:
    """latents ``[z, C, h, w]`` of an evaluation ``CropClip`` (``keep_frames=True``) -> its source
    frames ``[C*Tc, H, W, 3]`` uint8 with the decoded crops pasted as the runtime pastes them
    (each frame's aligned crop, matched to the frame at the mask's edge unless ``LIPFORCE_EDGE_MATCH=0``,
    its mouth no greener than the frame's unless ``LIPFORCE_GREEN_LIMIT=0``, under its soft mask)."""
    gen = from_unit(decode_latents(vae, z[None])[0])
    src = clip.extra["pair"].source
    crops, masks, kps = clip.extra["crops"], clip.extra["masks"], clip.extra["keypoints"]
    match, limit = edge_match_on(), (GreenLimit() if green_limit_on() else None)

    def pasted(i: int) -> np.ndarray:
        image, kc = crops[i].crop(src[i]), kps[i].map(crops[i].to_crop_affine())
        g = fit_to_frame(gen[i], image, masks[i].hard, kc, match, limit.see(image, kc) if limit else None)
        return crops[i].paste(src[i], g, masks[i].soft)

    return np.stack([pasted(i) for i in range(gen.shape[0])])


@torch.no_grad()
def teacher_latents(teacher: Teacher, cond, mel, mask, noise, steps, guidance, frames: int, record=None,
                    ref: Ref | None = None):
    """A whole clip's latents from independent bidirectional windows of ``frames`` latent frames
    (the teacher's training length), each after the clip's reference ``ref`` (batch 1).
    ``record(t, x_t, x0, window)`` sees every state as in ``sample``, with ``window = (cond,
    mask, tok)``, the inputs of the window it belongs to."""
    n = cond.shape[1]
    tc = mel.shape[0] // n
    outs = []
    for s in range(0, n, frames):
        e = min(n, s + frames)
        win = (cond[None, :, s:e], mask[None, :, s:e], teacher.tokens(mel[None, s * tc:e * tc]))
        rec = None if record is None else (lambda t, x, x0, win=win: record(t, x, x0, win))
        outs.append(sample(teacher, *win, noise[None, :, s:e], steps, guidance, rec, ref=ref)[0])
    return torch.cat(outs, dim=1)


@torch.no_grad()
def trajectory_curves(teacher: Teacher, vae, ls, clips, scorer, steps: int, scale: float, frames: int,
                      seed: int = 0, progress: bool = True) -> list[dict]:
    """Per grid timestep, the mean scores of the conditional and the CFG x0 predictions on the
    evaluation clips ``clips`` (``CropClip`` with ``keep_frames``; ``ls`` their latents)."""
    from tqdm import tqdm

    from .evaluate import score_clip

    g = torch.Generator().manual_seed(seed)
    acc: dict[float, dict[str, list]] = {}
    for ci in tqdm(range(len(clips)), desc="trajectories", unit="clip", disable=not progress):
        cond = ls.cond[ci]
        noise = torch.randn(cond.shape, generator=g)
        ref = ls.ref([ci])
        preds: dict[float, dict[str, list]] = {}

        def rec(t, x, x0c, win):
            d = preds.setdefault(round(t, 6), {"cond": [], "cfg": []})
            d["cond"].append(x0c[0])
            d["cfg"].append(teacher.x0(x, t, *win, scale, ref=ref)[0])

        teacher_latents(teacher, cond, ls.mel[ci], ls.mask[ci], noise, steps, lambda t: 1.0, frames, rec, ref=ref)
        pair = clips[ci].extra["pair"]
        for t, d in preds.items():
            for kind in ("cond", "cfg"):
                frames_u8 = latents_to_frames(vae, torch.cat(d[kind], dim=1), clips[ci])
                sc = score_clip(frames_u8, pair, scorer)
                a = acc.setdefault(t, {}).setdefault(kind, [])
                a.append(sc)
    rows = []
    for t in sorted(acc, reverse=True):
        row = {"t": t}
        for kind in ("cond", "cfg"):
            for k in ("sync_c", "gap_mae_px", "psnr_in"):
                row[f"{k}_{kind}"] = float(np.nanmean([s[k] for s in acc[t][kind]]))
        row["sync_gain"] = row["sync_c_cfg"] - row["sync_c_cond"]
        rows.append(row)
    return rows


def choose_window(rows: list[dict], steps: int) -> tuple[tuple[float, float] | None, float]:
    """The sync window and ``t_land`` from the curves (see the module docstring)."""
    ts = [r["t"] for r in rows]
    gain = np.array([r["sync_gain"] for r in rows])
    k = int(np.argmax(gain))
    if gain[k] <= 0:
        return None, 0.5
    lo = hi = k
    thr = 0.5 * gain[k]
    while hi + 1 < len(rows) and gain[hi + 1] >= thr:
        hi += 1
    while lo - 1 >= 0 and gain[lo - 1] >= thr:
        lo -= 1
    window = (float(min(ts[lo], ts[hi])), float(max(ts[lo], ts[hi])))
    grid = [t for t in time_grid(steps) if 0.0 < t < 1.0]
    mid = 0.5 * (window[0] + window[1])
    t_land = float(min(grid, key=lambda t: (abs(t - mid), -t)))
    return window, t_land


def svg_plot(rows: list[dict], window, t_land: float, path: Path) -> None:
    """Sync-C and lip-gap error of the x0 predictions against t, as a dependency-free SVG."""
    w, h, m = 720, 300, 50
    panels = [("sync_c", "Sync-C of x0 prediction"), ("gap_mae_px", "lip-gap error (px)")]
    pw = (w - 3 * m) / 2
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             '<rect width="100%" height="100%" fill="white"/>']
    colours = {"cond": "#1f77b4", "cfg": "#d62728"}
    for pi, (key, title) in enumerate(panels):
        x0 = m + pi * (pw + m)
        vals = [r[f"{key}_{k}"] for r in rows for k in colours]
        lo, hi = min(vals), max(vals)
        hi = hi if hi > lo else lo + 1.0

        def px(t, v):
            return x0 + (1.0 - t) * pw, h - m - (v - lo) / (hi - lo) * (h - 2 * m)

        if window is not None:
            a, _ = px(window[1], lo)
            b, _ = px(window[0], lo)
            parts.append(f'<rect x="{a:.1f}" y="{m}" width="{max(b - a, 2):.1f}" height="{h - 2 * m}" fill="#eeeeaa"/>')
        xl, _ = px(t_land, lo)
        parts.append(f'<line x1="{xl:.1f}" y1="{m}" x2="{xl:.1f}" y2="{h - m}" stroke="#888" stroke-dasharray="4"/>')
        parts.append(f'<rect x="{x0}" y="{m}" width="{pw:.1f}" height="{h - 2 * m}" fill="none" stroke="black"/>')
        parts.append(f'<text x="{x0}" y="{m - 8}">{title}</text>')
        for t in (1.0, 0.75, 0.5, 0.25, 0.0):
            x, _ = px(t, lo)
            parts.append(f'<text x="{x - 8:.1f}" y="{h - m + 14}">{t:g}</text>')
        parts.append(f'<text x="{x0 + pw / 2 - 20:.1f}" y="{h - m + 30}">t (1 = noise)</text>')
        for v in (lo, hi):
            _, y = px(1.0, v)
            parts.append(f'<text x="{x0 - 44}" y="{y + 4:.1f}">{v:.3g}</text>')
        for kind, col in colours.items():
            pts = " ".join("{:.1f},{:.1f}".format(*px(r["t"], r[f"{key}_{kind}"])) for r in rows)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="2"/>')
    parts.append(f'<text x="{m}" y="{h - 6}" fill="#1f77b4">conditional</text>')
    parts.append(f'<text x="{m + 90}" y="{h - 6}" fill="#d62728">CFG</text>')
    parts.append(f'<text x="{m + 130}" y="{h - 6}">shaded: sync window; dashed: t_land</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def write_report(rows: list[dict], window, t_land: float, meta: dict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    (out_dir / "analysis.json").write_text(json.dumps({"rows": rows, "window": window, "t_land": t_land, **meta},
                                                      indent=1))
    lines = ["| t | Sync-C cond | Sync-C CFG | CFG gain | gap err cond (px) | gap err CFG (px) | PSNR in cond | PSNR in CFG |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        inside = window is not None and window[0] - 1e-6 <= r["t"] <= window[1] + 1e-6
        lines.append(f"| {r['t']:.4f}{' *' if inside else ''} | {r['sync_c_cond']:.3f} | {r['sync_c_cfg']:.3f} | "
                     f"{r['sync_gain']:+.3f} | {r['gap_mae_px_cond']:.2f} | {r['gap_mae_px_cfg']:.2f} | "
                     f"{r['psnr_in_cond']:.2f} | {r['psnr_in_cfg']:.2f} |")
    w = "none (CFG never helped sync)" if window is None else f"[{window[0]:.4f}, {window[1]:.4f}]"
    lines += ["", f"sync window (*): {w}; t_land = {t_land:.4f}"]
    (out_dir / "analysis.md").write_text("\n".join(lines) + "\n")
    svg_plot(rows, window, t_land, out_dir / "analysis.svg")
