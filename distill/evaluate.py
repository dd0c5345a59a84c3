"""Held-out evaluation of a lip-sync model on procedural pairs, and agreement between backends.

- ``score_clip(pred, pair, scorer)``: the measures of one clip, whatever made ``pred`` (a
  model, a backend, the ground truth itself): Sync-C / Sync-D / offset of ``pred`` with the
  pair's audio, the lip gap against the renderer's exact geometry, PSNR / SSIM outside and
  inside the mouth against ``pair.target``.
- ``held_out_pairs``, ``render_engine``, ``evaluate`` / ``summarize``: held-out pairs (256 x 256
  frames) through an ``Engine`` (``render_offline`` with the source's exact keypoints), per-clip
  scores and means. Sync is scored on the eye-aligned mouth crops the runtime cuts; the lip gap
  and PSNR / SSIM on the frames scaled to 128 x 128 (the procedural framing).
- ``compare_backends``: the same pairs through torch, ONNX Runtime and (where there is one)
  TensorRT; the metrics of each backend against torch's, checked against ``TOLERANCES``.

    python -m distill.evaluate --model DIR --backends torch onnxruntime --clips 8 [--max-frames 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .data import make_sample_pair
from .faces import MouthGeometry, Pair
from .metrics import fidelity, mouth_error

__all__ = [
    "METRICS",
    "TOLERANCES",
    "PIXEL_TOLERANCE",
    "score_clip",
    "held_out_pairs",
    "cut_pair",
    "pair_keypoints",
    "aligned_crops",
    "render_engine",
    "Summary",
    "summarize",
    "results_table",
    "evaluate",
    "BackendComparison",
    "compare_backends",
    "main",
]

# The keys of ``score_clip``'s dict, in table order.
METRICS = ("sync_c", "sync_d", "offset", "gap_mae_px", "gap_corr", "psnr_out", "ssim_out", "psnr_in", "ssim_in")

# Largest allowed |metric(backend) - metric(torch)| on any clip.
#
# Measured: on the bundled model (fp32, decomposed attention, CPU), ONNX Runtime's decoder
# output differs from torch's by <= 2e-8 and the 496 frames of 8 held-out clips are
# bit-identical, so every difference is 0. Backends that compute in other ways (TensorRT on a
# GPU) differ by float rounding, which flips pixels of the re-rendered mouth by a level or two.
# So the tolerances are set from how far such flips move each metric: adding random integer
# noise in [-1, 1] to *every* pixel of the mouth region (``mouth_mask > 0``) of 8 held-out
# clips (both the source and the target frames) moved Sync-C by <= 0.002, Sync-D by <= 0.0017,
# the gap MAE by <= 0.028 px, the gap correlation by <= 0.017, PSNR inside the mouth by
# <= 0.066 dB (at 30 dB; the shift grows as the model's own error shrinks: 10 log10(1 + (2/3) /
# MSE) gives ~0.14 dB at 35 dB) and SSIM inside by <= 0.0062; noise in [-3, 3] moved them by
# <= 0.005, 0.002, 0.06 px, 0.047, 0.39 dB and 0.035. The tolerances pass the first with a
# margin of about 3x or more, and lie far below what a change of the mouth moves (target vs
# source frames: Sync-C ~0.4, gap MAE ~1 px).
# Outside the mouth the composite keeps the input pixels exactly (PSNR inf, SSIM 1 for every
# backend), so any difference there is a bug.
# ``offset`` is compared after ties: a backend's offset counts as torch's when torch's distance
# at it is within the Sync-D tolerance of its minimum (the argmin of a flat curve, as an
# untrained model gives, is noise). ``gap_corr`` is NaN when the measured gap is constant (an
# untrained model draws no gap): NaN on both sides counts as equal, on one side as a difference.
TOLERANCES: dict[str, float] = {
    "sync_c": 0.01,
    "sync_d": 0.01,
    "offset": 0.0,
    "gap_mae_px": 0.1,
    "gap_corr": 0.05,
    "psnr_out": 0.1,
    "ssim_out": 0.002,
    "psnr_in": 0.2,
    "ssim_in": 0.02,
}
# Largest allowed |pixel(backend) - pixel(torch)| over all frames, in uint8 levels: rounding
# flips of a level, rarely two, as tests/test_export_onnx.py allows for whole streams.
PIXEL_TOLERANCE = 2

_BACKENDS = ("torch", "onnxruntime", "tensorrt")


SCORE_SIZE = 128  # frames are scored as 128 x 128 face crops (the procedural framing: lips near 0.67)


def _check_pred(pred, pair: Pair) -> np.ndarray:
    p = np.asarray(pred)
    want = pair.target.shape
    if p.shape != want or p.dtype != np.uint8:
        raise ValueError(
            f"pred must be uint8 frames shaped like pair.target {want} ([F, S, S, 3]), got {p.dtype} {p.shape}"
            + ("; convert with np.clip(x, 0, 255).astype(np.uint8)" if p.shape == want else ""))
    return p


def pair_keypoints(pair: Pair) -> list:
    """Exact keypoints of the pair's source frames (what the runtime's face source gives)."""
    from .faces import clip_keypoints

    return clip_keypoints(pair.identity, pair.motion, pair.params_src, int(pair.source.shape[1]))


def aligned_crops(frames: np.ndarray, pair: Pair, size: int = SCORE_SIZE) -> np.ndarray:
    """The eye-aligned mouth crops of ``frames`` cut as the runtime cuts the pair's source (the
    scorer's view)."""
    from lipforce_sdk.geometry import CropAligner

    al = CropAligner(size)
    return np.stack([al(kp).crop(f) for kp, f in zip(pair_keypoints(pair), frames)])


def _at(frames: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if frames.shape[1] == size:
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def _score(pred, pair: Pair, scorer):
    p = _check_pred(pred, pair)
    sync = scorer.score(aligned_crops(p, pair), pair.audio)
    k = SCORE_SIZE / p.shape[1]
    me = mouth_error(_at(p, SCORE_SIZE), pair.geometry.values * np.array([k, k, k * k, k * k], np.float32))
    fid = fidelity(_at(p, SCORE_SIZE), _at(pair.target, SCORE_SIZE))
    row = {
        "sync_c": float(sync.sync_c),
        "sync_d": float(sync.sync_d),
        "offset": float(sync.offset),
        "gap_mae_px": float(me.gap_mae),
        "gap_corr": float(me.gap_corr),
        "psnr_out": float(fid["psnr_out"]),
        "ssim_out": float(fid["ssim_out"]),
        "psnr_in": float(fid["psnr_in"]),
        "ssim_in": float(fid["ssim_in"]),
    }
    return row, sync


def score_clip(pred: np.ndarray, pair: Pair, scorer) -> dict[str, float]:
    """Measures of frames ``pred`` (uint8 ``[F, S, S, 3]``, shaped like ``pair.target``).

    Keys (``METRICS``): ``sync_c``, ``sync_d``, ``offset`` (frames, > 0: video lags audio) of
    ``scorer.score(pred, pair.audio)``; ``gap_mae_px`` (lip-gap height mean absolute error in
    pixels) and ``gap_corr`` (its correlation, NaN for a constant gap) against
    ``pair.geometry``; ``psnr_out`` / ``ssim_out`` outside the mouth and ``psnr_in`` /
    ``ssim_in`` inside it, against ``pair.target`` (``inf`` / 1.0 where equal).

    Raises:
        ValueError: ``pred`` is not uint8 or not shaped like ``pair.target``.
    """
    return _score(pred, pair, scorer)[0]


def cut_pair(pair: Pair, num_frames: int) -> Pair:
    """The first ``num_frames`` frames of ``pair``: frames, audio, mouth parameters, geometry and
    speech cut alike, so every frame keeps the mouth of the full clip. (``make_pair(...,
    num_frames=)`` would instead compute the visemes of the cut speech, whose last frames
    differ by up to ~0.3 in a mouth parameter where the cut ends a phoneme early.) Longer than
    the pair: the pair itself."""
    f = int(num_frames)
    if f < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if f >= pair.target.shape[0]:
        return pair
    speech = pair.speech.fit_frames(f, pair.fps)
    return dataclasses.replace(
        pair,
        source=pair.source[:f].copy(),
        target=pair.target[:f].copy(),
        audio=speech.audio,
        params=pair.params[:f].copy(),
        params_src=pair.params_src[:f].copy(),
        geometry=MouthGeometry(pair.geometry.values[:f].copy(), pair.geometry.centre[:f].copy()),
        speech=speech,
        speech_src=pair.speech_src.fit_frames(f, pair.fps),
    )


def held_out_pairs(n: int, max_frames: int | None = None, size: int = 256) -> list[Pair]:
    """Held-out pairs ``0 .. n-1`` (``make_sample_pair(i, "held_out", size)``: frames of ``size``
    pixels), each cut to at most ``max_frames`` frames when given."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pairs = [make_sample_pair(i, "held_out", size) for i in range(int(n))]
    return pairs if max_frames is None else [cut_pair(p, max_frames) for p in pairs]


def render_engine(engine, pair: Pair) -> tuple[np.ndarray, float]:
    """``pair.source`` lip-synced to ``pair.audio`` by ``engine`` (``render_offline`` with the
    source's exact keypoints): ``(frames uint8 [F, S, S, 3], wall seconds per frame)``."""
    from lipforce_sdk.offline import render_offline

    kps = pair_keypoints(pair)
    t0 = time.perf_counter()
    out = render_offline(engine, pair.audio, pair.source, keypoints=kps)
    dt = time.perf_counter() - t0
    return out, dt / max(1, out.shape[0])


def _mean(values: Sequence[float]) -> float:
    """Mean ignoring NaN (NaN when all are NaN)."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


@dataclass
class Summary:
    """Scores of one model (or one source of frames) on a list of pairs.

    ``clips``: ``score_clip`` per pair; ``mean``: per metric, the mean over clips (NaN ignored);
    ``sync_dists``: the scorer's mean distance per offset ``-15 .. 15`` per clip;
    ``seconds_per_frame``: render wall time per frame (None when the frames were given);
    ``frames``: the scored frames per clip, when kept.
    """

    name: str
    clips: list[dict[str, float]]
    mean: dict[str, float]
    sync_dists: list[np.ndarray]
    seconds_per_frame: float | None = None
    frames: list[np.ndarray] | None = None


def results_table(summaries: Sequence[Summary], digits: int = 3) -> str:
    """Markdown table, one row per summary: name, the means in ``METRICS`` order, s/frame."""
    head = ["", *METRICS, "s/frame"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in summaries:
        cells = [s.name, *(_fmt(s.mean[k], digits) for k in METRICS), _fmt(s.seconds_per_frame, 4)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(preds: Sequence[np.ndarray], pairs: Sequence[Pair], scorer, name: str = "",
              keep_frames: bool = False, seconds_per_frame: float | None = None) -> Summary:
    """Score given frames (one ``[F, S, S, 3]`` array per pair) into a ``Summary``."""
    if len(preds) != len(pairs):
        raise ValueError(f"got {len(preds)} clips of frames for {len(pairs)} pairs")
    if not pairs:
        raise ValueError("no pairs to score")
    rows, dists = [], []
    for p, pair in zip(preds, pairs):
        r, sync = _score(p, pair, scorer)
        rows.append(r)
        dists.append(np.asarray(sync.dists, np.float64))
    mean = {k: _mean([r[k] for r in rows]) for k in METRICS}
    return Summary(name, rows, mean, dists, seconds_per_frame,
                   [np.asarray(p) for p in preds] if keep_frames else None)


def evaluate(engine, pairs: Sequence[Pair], scorer, *, keep_frames: bool = False, name: str | None = None,
             warmup: bool = True) -> Summary:
    """Render every pair with ``engine`` (``render_engine``) and score it.

    ``warmup`` first renders one chunk of the first pair untimed, so the first call's one-off
    costs (allocations, kernel selection) stay out of ``seconds_per_frame``.
    """
    if not pairs:
        raise ValueError("no pairs to evaluate")
    if warmup:
        fv = int(engine.config.video_frames_per_chunk)
        render_engine(engine, cut_pair(pairs[0], fv))
    preds, total_s, total_f = [], 0.0, 0
    for pair in pairs:
        frames, spf = render_engine(engine, pair)
        preds.append(frames)
        total_s += spf * frames.shape[0]
        total_f += frames.shape[0]
    nm = name if name is not None else getattr(getattr(engine, "backend", None), "name", "engine")
    return summarize(preds, pairs, scorer, nm, keep_frames, total_s / max(1, total_f))


# --------------------------------------------------------------------------------------
# Backends against torch
# --------------------------------------------------------------------------------------


def _diff(a: float, b: float) -> float:
    """|a - b| with equal infinities and NaN on both sides counting as 0, NaN on one side as inf."""
    if math.isnan(a) or math.isnan(b):
        return 0.0 if (math.isnan(a) and math.isnan(b)) else math.inf
    if a == b:
        return 0.0
    return abs(a - b)


def _offset_diff(ref_dists: np.ndarray, ref_off: float, off: float, tie: float) -> float:
    """Offset difference in frames, 0 when torch's curve has a tie (within ``tie``) at ``off``."""
    if off == ref_off:
        return 0.0
    k = int(off) + (len(ref_dists) - 1) // 2
    if 0 <= k < len(ref_dists) and ref_dists[k] - np.nanmin(ref_dists) <= tie:
        return 0.0
    return abs(off - ref_off)


@dataclass
class BackendComparison:
    """Result of ``compare_backends``.

    ``summaries``: per backend run (torch first); ``references``: ground truth (``target``)
    and the unchanged input (``source``) scored the same way; ``max_diff[backend][metric]``:
    the largest difference from torch over clips; ``pixel_diff[backend]``: the largest
    |pixel difference| from torch over all frames; ``passed[backend]``; ``skipped``: backends
    not run, with the reason.
    """

    summaries: dict[str, Summary]
    references: dict[str, Summary]
    max_diff: dict[str, dict[str, float]]
    pixel_diff: dict[str, int]
    passed: dict[str, bool]
    skipped: dict[str, str] = field(default_factory=dict)
    clips: int = 0
    frames: int = 0

    @property
    def ok(self) -> bool:
        """Every backend that ran is within the tolerances."""
        return all(self.passed.values())

    def failures(self, backend: str) -> list[str]:
        """The metrics of ``backend`` out of tolerance."""
        out = [k for k in METRICS if self.max_diff[backend][k] > TOLERANCES[k]]
        if self.pixel_diff[backend] > PIXEL_TOLERANCE:
            out.append("pixels")
        return out

    def to_markdown(self) -> str:
        """Means per backend (and references), max |difference| from torch, PASS/FAIL."""
        names = list(self.summaries)
        others = [b for b in names if b != "torch"]
        refs = list(self.references)
        head = (["metric", "tolerance"] + [f"{b}" for b in names] + [f"{r} (reference)" for r in refs]
                + [f"max abs diff {b}" for b in others])
        lines = [f"{self.clips} held-out clips, {self.frames} frames; means over clips, differences per clip "
                 "against torch", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for k in METRICS:
            cells = [k, _fmt(TOLERANCES[k], 4)]
            cells += [_fmt(self.summaries[b].mean[k], 4) for b in names]
            cells += [_fmt(self.references[r].mean[k], 4) for r in refs]
            cells += [_fmt(self.max_diff[b][k], 4) + ("" if self.max_diff[b][k] <= TOLERANCES[k] else " FAIL")
                      for b in others]
            lines.append("| " + " | ".join(cells) + " |")
        cells = ["pixels (uint8 levels)", str(PIXEL_TOLERANCE)] + ["" for _ in names + refs]
        cells += [str(self.pixel_diff[b]) + ("" if self.pixel_diff[b] <= PIXEL_TOLERANCE else " FAIL") for b in others]
        lines.append("| " + " | ".join(cells) + " |")
        cells = ["render s/frame", ""] + [_fmt(self.summaries[b].seconds_per_frame, 4) for b in names]
        cells += ["" for _ in refs + others]
        lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for b in others:
            bad = self.failures(b)
            lines.append(f"{b} vs torch: " + ("PASS" if not bad else "FAIL (" + ", ".join(bad) + ")"))
        for b, why in self.skipped.items():
            lines.append(f"{b}: skipped ({why})")
        return "\n".join(lines)


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    try:
        from lipforce_sdk.engine import EngineError, detect_tensorrt, local_gpu
    except ImportError as e:
        return f"lipforce_sdk.engine does not import: {e}"
    try:
        detect_tensorrt()
    except EngineError as e:
        return str(e)
    if local_gpu() is None:
        return "no CUDA GPU found"
    return None


def compare_backends(model_dir: str | Path | None = None, backends: Sequence[str] = ("torch", "onnxruntime"),
                     clips: int = 8, max_frames: int | None = None, out: str | Path | None = None, scorer=None,
                     log: Callable[[str], None] | None = print, steps: int | None = None) -> BackendComparison:
    """Render the same held-out pairs with each backend and compare every metric with torch's.

    ``model_dir`` (default: the bundled model) holds PyTorch weights; for ``onnxruntime`` /
    ``tensorrt`` it is exported to ONNX (fp32, ``attention="decomposed"``) under ``out``
    (default: a temporary directory, removed afterwards) and, for ``tensorrt``, built into
    engines there. ``tensorrt`` is skipped, with the reason logged, where TensorRT does not
    import or there is no GPU. torch is the reference and always runs. ``steps``: the schedule's
    denoising steps for every backend (``Engine.load(steps=)``; default the model's own).
    """
    from lipforce_sdk.session import Engine, default_model_dir

    unknown = [b for b in backends if b not in _BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; choose from {_BACKENDS}")
    say = log or (lambda s: None)
    names = ["torch"] + [b for b in dict.fromkeys(backends) if b != "torch"]
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    if scorer is None:
        from .syncnet import SyncScorer

        scorer = SyncScorer.load()
    skipped: dict[str, str] = {}
    if "tensorrt" in names:
        why = _tensorrt_unavailable()
        if why is not None:
            skipped["tensorrt"] = why
            names.remove("tensorrt")
            say(f"tensorrt: skipped ({why})")

    tmp = tempfile.TemporaryDirectory(prefix="lipforce_eval_") if out is None else None
    work = Path(tmp.name) if tmp is not None else Path(out)
    try:
        dirs = {"torch": model_dir}
        if any(b != "torch" for b in names):
            from lipforce_sdk.export import export_model
            from lipforce_sdk.model import load_model

            onnx_dir = work / "onnx"
            say(f"exporting {model_dir} to ONNX (fp32, attention=decomposed) in {onnx_dir}")
            export_model(load_model(model_dir), onnx_dir, precision="fp32", attention="decomposed", progress=False)
            dirs["onnxruntime"] = onnx_dir
            if "tensorrt" in names:
                from lipforce_sdk.engine import build_model

                trt_dir = work / "tensorrt"
                say(f"building TensorRT engines (fp32) in {trt_dir}")
                build_model(onnx_dir, trt_dir, progress=False)
                dirs["tensorrt"] = trt_dir

        pairs = held_out_pairs(clips, max_frames)
        n_frames = int(sum(p.target.shape[0] for p in pairs))
        say(f"{len(pairs)} held-out pairs, {n_frames} frames")
        summaries: dict[str, Summary] = {}
        for b in names:
            engine = Engine.load(dirs[b], backend=b, steps=steps)
            summaries[b] = evaluate(engine, pairs, scorer, keep_frames=True, name=b)
            close = getattr(engine.backend, "close", None)
            if callable(close):
                close()
            say(f"{b}: rendered in {summaries[b].seconds_per_frame:.4f} s/frame")
        refs = {"target": summarize([p.target for p in pairs], pairs, scorer, "target"),
                "source": summarize([p.source for p in pairs], pairs, scorer, "source")}
    finally:
        if tmp is not None:
            tmp.cleanup()

    ref = summaries["torch"]
    max_diff, pixel_diff, passed = {}, {}, {}
    for b in names:
        s = summaries[b]
        md = {}
        for k in METRICS:
            if k == "offset":
                d = [_offset_diff(ref.sync_dists[i], rc[k], c[k], TOLERANCES["sync_d"])
                     for i, (rc, c) in enumerate(zip(ref.clips, s.clips))]
            else:
                d = [_diff(c[k], rc[k]) for rc, c in zip(ref.clips, s.clips)]
            md[k] = float(max(d))
        max_diff[b] = md
        pixel_diff[b] = int(max(int(np.abs(f.astype(np.int16) - g.astype(np.int16)).max())
                                for f, g in zip(s.frames, ref.frames)))
    result = BackendComparison(summaries, refs, max_diff, pixel_diff, {}, skipped, len(pairs), n_frames)
    for b in names:
        passed[b] = not result.failures(b)
    result.passed = passed
    return result


def build_parser() -> argparse.ArgumentParser:
    from lipforce_sdk.config import SCHEDULE_STEPS

    p = argparse.ArgumentParser(prog="python -m distill.evaluate",
                                description="Held-out lip-sync measures per backend, each checked against torch.")
    p.add_argument("--model", default=None, help="model directory with PyTorch weights (default: the bundled model)")
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=list(_BACKENDS))
    p.add_argument("--clips", type=int, default=8, help="held-out pairs 0 .. clips-1")
    p.add_argument("--max-frames", type=int, default=None, help="cut each pair to at most this many frames")
    p.add_argument("--out", default=None, help="keep the exported ONNX / engines here (default: a temporary dir)")
    p.add_argument("--scorer", default=None, help="sync scorer weights (default: distill/weights/syncnet.safetensors)")
    p.add_argument("--steps", type=int, choices=SCHEDULE_STEPS, default=None,
                   help="denoising steps per chunk, as `lipforce run --steps` (default: the model's own)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Print the comparison as markdown; 0 when every backend is within tolerance, else 1."""
    a = build_parser().parse_args(argv)
    scorer = None
    if a.scorer:
        from .syncnet import SyncScorer

        scorer = SyncScorer.load(a.scorer)
    res = compare_backends(a.model, a.backends, a.clips, a.max_frames, a.out, scorer,
                           log=lambda s: print(s, file=sys.stderr), steps=a.steps)
    print(res.to_markdown())
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
