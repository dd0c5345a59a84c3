"""How much of an exact mouth a model draws: the speaking-photo rig as an articulation probe.

    python -m distill.articulation --faces FACE [FACE ...] --out runs/articulation [--model DIR]
        [--sentences 3] [--split held_out]

Issue 11's lip r and silence measures both wait on how far the model opens the mouth. On a real
clip nobody knows how far the person would have opened it for the new speech; here the answer is
exact. Each face (an image, or the first frame of a video whose lips are together) is made
to say ``--sentences`` espeak-ng sentences of ``--split`` by ``distill.photoreal`` (the rig the
photo training clips come from): a clip of the face at rest under a gentle head motion (what the
model is given, with the sentence's sound) and the same clip with the rig's mouth for that
sentence (what a perfect model would draw). The model runs as ``lipforce run`` does
(``cli.run_clip``); the face mesh reads the inner-lip opening of both, and over the speaking frames
(speech envelope above its 60th percentile) this reports:

- **amplitude**: the output's opening std over the exact mouth's (1: opens as far as the rig;
  ~0.1: the mouth barely moves);
- **r**: the correlation of the two openings, best over +-2 frames of lag (follows the right
  moments, whatever its size).

Writes ``results.json`` / ``results.md``, each clip's videos and, with ``--sheet``, a contact sheet
per clip (rows: the exact mouth, then the model's) under ``--out``. A face that cannot be used (none
found, the lips apart in every frame scanned) is skipped and listed, and the others are measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["ArticulationRow", "opening_amplitude", "probe_face", "main"]

SPEAKING_PERCENTILE = 60  # frames whose speech envelope is above this percentile count as speaking
MAX_LAG = 2  # frames


@dataclass
class ArticulationRow:
    face: str
    sentence: int
    frames: int
    exact_std: float  # the rig's opening std over the speaking frames (face mesh)
    model_std: float
    amplitude: float  # model_std / exact_std
    r: float  # best over +-MAX_LAG frames
    lag: int


def opening_amplitude(model: np.ndarray, exact: np.ndarray,
                      envelope: np.ndarray) -> tuple[float, float, float, float, int]:
    """``(exact_std, model_std, amplitude, r, lag)`` of two per-frame lip openings (NaN where no
    face was read) over the frames whose ``envelope`` is above its ``SPEAKING_PERCENTILE``; ``r`` is
    the largest correlation over lags ``-MAX_LAG..MAX_LAG`` (positive: the model's opening later)."""
    model, exact, envelope = (np.asarray(a, np.float64) for a in (model, exact, envelope))
    if not model.shape == exact.shape == envelope.shape or model.ndim != 1:
        raise ValueError(f"openings and envelope must be 1-D of one length, got {model.shape}, {exact.shape}, "
                         f"{envelope.shape}")
    speaking = envelope > np.percentile(envelope, SPEAKING_PERCENTILE)
    ok = speaking & ~np.isnan(model) & ~np.isnan(exact)
    if ok.sum() < 3:
        raise ValueError(f"only {int(ok.sum())} speaking frames with both openings read: too few to compare")
    e_std, m_std = float(np.std(exact[ok])), float(np.std(model[ok]))
    best, best_lag = -np.inf, 0
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        a = model[lag:] if lag >= 0 else model[:lag]
        b = exact[: len(exact) - lag] if lag >= 0 else exact[-lag:]
        both = ~np.isnan(a) & ~np.isnan(b)
        if both.sum() < 3 or np.std(a[both]) == 0 or np.std(b[both]) == 0:
            continue
        r = float(np.corrcoef(a[both], b[both])[0, 1])
        if r > best:
            best, best_lag = r, lag
    return e_std, m_std, m_std / e_std if e_std > 0 else float("nan"), float(best), best_lag


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
SCAN_FRAMES = 250  # of a video, for a frame with the lips together


def _face(path: Path):
    """The ``PhotoFace`` of an image, or of a video's first frame whose lips are together (the
    frame of the smallest lip opening among its first ``SCAN_FRAMES`` when none is)."""
    import cv2

    from lipforce_sdk.facemesh import LandmarkTracker

    from .photoreal import PhotoFace, lip_opening

    if path.suffix.lower() not in VIDEO_SUFFIXES:
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise ValueError(f"{str(path)!r} is not an image or video OpenCV can read")
        return PhotoFace.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap = cv2.VideoCapture(str(path))
    tracker = LandmarkTracker(smoothing=False)
    best = None
    try:
        for _ in range(SCAN_FRAMES):
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            lm = tracker.update(rgb)
            if lm is None:
                continue
            op = lip_opening(lm.points)
            if best is None or op < best[0]:
                best = (op, rgb, lm.points)
            if op <= 0.15:
                break
    finally:
        cap.release()
    if best is None:
        raise ValueError(f"no face found in the first {SCAN_FRAMES} frames of {str(path)!r} (lipforce_sdk.facemesh)")
    return PhotoFace(best[1], best[2])


def probe_face(engine, face_path: str | Path, out: str | Path, sentences: int = 3, split: str = "held_out",
               sheet: bool = False, models=None, seed: int = 0) -> list[ArticulationRow]:
    """The rows of one face (module docstring); the clips are written under ``out``. ``models``:
    ``(FaceDetector, LandmarkModel)`` for the sheets (default: the bundled face mesh)."""
    from lipforce_sdk.cli import run_clip
    from lipforce_sdk.media import read_video, write_video, write_wav
    from lipforce_sdk.sync_check import speech_envelope

    from .faces import Motion
    from .photoreal import talk
    from .realdata import track_points
    from .speech import sample_spec, synthesize
    from .visemes import frame_params

    face_path, out = Path(face_path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    face = _face(face_path)
    fps = engine.config.stream.fps
    rows = []
    for k in range(sentences):
        rng = np.random.default_rng([seed, k, 0xA27])
        sp = synthesize(sample_spec(rng, split)).padded(0.6, 0.6)
        n = sp.num_frames(fps)
        sp = sp.fit_frames(n, fps)
        audio = sp.audio[: int(round(n * sp.sample_rate / fps))]
        motion = Motion.random(int(rng.integers(1 << 30)), amount=0.3)
        rest = talk(face, np.zeros((n, 4), np.float32), motion, seed=k)
        exact = talk(face, frame_params(sp, n, fps), motion, seed=k)
        name = f"{face_path.stem}.{k}"
        rest_path, wav, exact_path, dst = (out / f"{name}.{s}" for s in ("rest.mp4", "wav", "exact.mp4", "model.mp4"))
        write_video(rest_path, rest.frames, fps)
        write_video(exact_path, exact.frames, fps)
        write_wav(wav, audio)
        run_clip(engine, rest_path, wav, dst, progress=False)
        got, _ = read_video(dst)
        env = speech_envelope(audio, sp.sample_rate, fps, n)
        e_std, m_std, amp, r, lag = opening_amplitude(track_points(got[:n])[1], track_points(exact.frames)[1], env)
        rows.append(ArticulationRow(face_path.name, k, n, e_std, m_std, amp, r, lag))
        if sheet:
            from lipforce_sdk.face_quality import face_quality

            face_quality(exact_path, dst, wav, sheet=out / f"{name}.png", models=models)
    return rows


def to_markdown(rows: list[ArticulationRow]) -> str:
    lines = ["| face | sentence | frames | exact std | model std | amplitude | r (lag) |", "|" + " --- |" * 7]
    for x in rows:
        lines.append(f"| {x.face} | {x.sentence} | {x.frames} | {x.exact_std:.3f} | {x.model_std:.3f} | "
                     f"{x.amplitude:.2f} | {x.r:.2f} ({x.lag:+d}) |")
    if rows:
        mean = {k: np.mean([getattr(x, k) for x in rows]) for k in ("exact_std", "model_std", "amplitude", "r")}
        lines.append(f"| mean | | | {mean['exact_std']:.3f} | {mean['model_std']:.3f} | {mean['amplitude']:.2f} | "
                     f"{mean['r']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from lipforce_sdk.cli import add_schedule_options, schedule_choice  # the same options as `lipforce run`

    ap = argparse.ArgumentParser(prog="python -m distill.articulation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", nargs="+", required=True,
                    help="face images (mouth closed) or videos (their first frame with the lips together)")
    ap.add_argument("--out", required=True, help="folder for the clips and results")
    ap.add_argument("--model", default=None, help="model directory (default: the bundled one)")
    ap.add_argument("--backend", default="torch")
    add_schedule_options(ap)
    ap.add_argument("--sentences", type=int, default=3, help="sentences per face")
    ap.add_argument("--split", default="held_out", choices=["train", "held_out"], help="whose sentences")
    ap.add_argument("--sheet", action="store_true", help="a contact sheet per clip")
    a = ap.parse_args(argv)
    from lipforce_sdk import Engine

    if a.sentences < 1:
        print("error: --sentences must be >= 1", file=sys.stderr)
        return 1
    for f in a.faces:
        if not Path(f).is_file():
            print(f"error: face {f!r} does not exist", file=sys.stderr)
            return 1
    engine = Engine.load(a.model, backend=a.backend, **schedule_choice(a))
    out = Path(a.out)
    rows: list[ArticulationRow] = []
    skipped = []
    for f in a.faces:
        t0 = time.perf_counter()
        try:
            got = probe_face(engine, f, out, a.sentences, a.split, sheet=a.sheet)
        except ValueError as e:  # no face, mouth open, too few frames read: the other faces go on
            print(f"skipped {f}: {e}", file=sys.stderr)
            skipped.append({"face": str(f), "why": str(e)})
            continue
        rows += got
        for x in got:
            print(f"{x.face} sentence {x.sentence}: amplitude {x.amplitude:.2f} (std {x.model_std:.3f} of "
                  f"{x.exact_std:.3f}), r {x.r:.2f} at lag {x.lag:+d}", flush=True)
        print(f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    if not rows:
        print("error: no face could be measured (above)", file=sys.stderr)
        return 1
    (out / "results.json").write_text(json.dumps({"rows": [asdict(x) for x in rows], "skipped": skipped}, indent=1))
    (out / "results.md").write_text(to_markdown(rows))
    print(to_markdown(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
