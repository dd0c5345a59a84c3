"""Per-frame cost and a contact sheet of the face landmark tracker (a script, not a test).

    python -m lipforce_sdk.facemesh.benchmark [--threads 1] [--repeat 30] [--sheet facemesh.png]

Prints a table: detector (full range on the whole frame, on a 704x1216 kiosk frame with
and without the tile fallback, short range), landmark model (crop + model + projection),
tracker per frame (tracking, with and without smoothing; searching a frame with no face). With ``--sheet`` it also draws
the landmarks on the bundled photo, on the photo made small on a 704x1216 canvas, on a
cartoonised photo, and on the photo with its mouth opened by a warp (lip opening printed).
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np

from . import samples
from .detector import FaceDetector
from .landmarks import (
    FACE_OVAL,
    LEFT_EYE,
    LIPS_INNER,
    LIPS_OUTER,
    RIGHT_EYE,
    FaceLandmarks,
    LandmarkModel,
)
from .tracker import LandmarkTracker


def _time(fn, repeat: int) -> tuple[float, float]:
    """(median, fastest) wall time of ``fn`` in ms; the fastest shows the cost on an idle
    machine when other processes share the cores."""
    fn()  # warm-up
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(t)), 1e3 * float(np.min(t))


def _time_mean(fn, repeat: int) -> tuple[float, float]:
    """(mean, mean) over ``repeat`` calls in ms: for costs that vary from call to call by
    design (the tracker's periodic tile search)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    ms = 1e3 * (time.perf_counter() - t0) / repeat
    return ms, ms


def timings(threads: int | None, repeat: int) -> list[tuple[str, tuple[float, float]]]:
    frames = samples.photo_clip(40)
    f0 = frames[0]
    kiosk, _, _ = samples.on_canvas(f0, (704, 1216), 0.2)
    empty = np.full((1216, 704, 3), 90, np.uint8)
    full = FaceDetector("full_range", threads=threads)
    whole = FaceDetector("full_range", threads=threads, tiling="off")
    short = FaceDetector("short_range", threads=threads)
    lmm = LandmarkModel(threads=threads)
    roi = LandmarkTracker(full, lmm, smoothing=False).update(f0).roi
    rows = [
        ("detector full range, 320x320 frame", _time(lambda: full.detect(f0), repeat)),
        (
            "detector full range, 704x1216, whole frame only",
            _time(lambda: whole.detect(kiosk), repeat),
        ),
        (
            "detector full range, 704x1216, no face (tile fallback: 1 + 18 runs)",
            _time(lambda: full.detect(empty), max(3, repeat // 5)),
        ),
        ("detector short range, 320x320 frame", _time(lambda: short.detect(f0), repeat)),
        ("landmark model (crop + model + projection)", _time(lambda: lmm(f0, roi), repeat)),
    ]
    for smooth in (False, True):
        tr = LandmarkTracker(full, lmm, smoothing=smooth)
        tr.update(frames[0])
        i = [0]

        def step():
            i[0] = i[0] % (len(frames) - 1) + 1
            tr.update(frames[i[0]])

        rows.append(
            (
                f"tracker per frame, tracking, smoothing {'on' if smooth else 'off'}",
                _time(step, repeat),
            )
        )
    tr = LandmarkTracker(full, lmm, smoothing=True)
    tr.update(kiosk)
    rows.append(
        (
            "tracker per frame, 704x1216 kiosk frame, small face",
            _time(lambda: tr.update(kiosk), repeat),
        )
    )
    lost = LandmarkTracker(full, lmm)  # nobody in front of the kiosk: searching every frame
    rows.append(
        (
            f"tracker per frame, 704x1216, no face (mean; tiles every {lost.tile_every}th frame)",
            _time_mean(lambda: lost.update(empty), 2 * lost.tile_every),
        )
    )
    return rows


def _draw(img: np.ndarray, lm: FaceLandmarks | None, thickness: int = 1) -> np.ndarray:
    out = img.copy()
    if lm is None:
        cv2.putText(out, "no face", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 0, 0), 2)
        return out
    for p in lm.points[:, :2]:
        cv2.circle(out, (int(p[0]), int(p[1])), 0, (0, 255, 0), -1)
    for contour, colour in (
        (LIPS_OUTER, (255, 60, 60)),
        (LIPS_INNER, (255, 200, 0)),
        (FACE_OVAL, (0, 200, 255)),
        (RIGHT_EYE, (255, 0, 255)),
        (LEFT_EYE, (255, 0, 255)),
    ):
        pts = np.round(lm.xy(contour)).astype(np.int32)
        cv2.polylines(out, [pts], True, colour, thickness, cv2.LINE_AA)
    return out


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(out, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(path: str) -> None:
    f0 = samples.photo_clip(1)[0]
    det, lmm = FaceDetector(), LandmarkModel()

    def track(img, n=3):
        tr = LandmarkTracker(det, lmm, smoothing=False)
        lm = None
        for _ in range(n):
            lm = tr.update(img)
        return lm

    tiles = []
    lm = track(f0)
    tiles.append(
        _label(
            _draw(f0, lm),
            f"photo: iod {lm.interocular():.0f}px, lip opening {lm.lip_opening():.2f}",
        )
    )
    kiosk, scale, (x0, y0) = samples.on_canvas(f0, (704, 1216), 0.2)
    small = track(kiosk)
    side = 160
    cx, cy = x0 + 0.5 * f0.shape[1] * scale, y0 + 0.45 * f0.shape[0] * scale
    m = np.float32([[side / 320, 0, cx - side / 2], [0, side / 320, cy - side / 2]])
    zoom = cv2.warpAffine(kiosk, m, (320, 320), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    if small is not None:  # landmarks into the zoomed view
        pts = (small.points[:, :2] - [cx - side / 2, cy - side / 2]) * (320 / side)
        small_z = FaceLandmarks(
            np.concatenate([pts, small.points[:, 2:]], 1), small.score, small.roi
        )
    else:
        small_z = None
    tiles.append(_label(_draw(zoom, small_z), "photo at 1/5 of a 704x1216 canvas (x2 zoom)"))
    toon = samples.cartoonise(f0)
    lt = track(toon)
    tiles.append(
        _label(
            _draw(toon, lt),
            f"cartoonised: lip opening {lt.lip_opening():.2f}" if lt else "cartoonised",
        )
    )
    opened = samples.open_mouth(f0, lm, 12)
    lo = track(opened)
    tiles.append(
        _label(_draw(opened, lo), f"mouth opened 12px: lip opening {lo.lip_opening():.2f}")
    )
    sheet = np.hstack(tiles)
    cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {path} ({sheet.shape[1]}x{sheet.shape[0]})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lipforce_sdk.facemesh.benchmark", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)"
    )
    ap.add_argument(
        "--repeat", type=int, default=30, help="timed runs per row (median and fastest reported)"
    )
    ap.add_argument("--sheet", help="also write a contact sheet PNG here")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"onnxruntime {ort.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s), "
        f"load average {load:.1f}; {args.repeat} runs per row"
    )
    print(f"{'what':<76} {'median ms':>10} {'min ms':>8}")
    for name, (med, fastest) in timings(args.threads, args.repeat):
        print(f"{name:<76} {med:10.2f} {fastest:8.2f}")
    if args.sheet:
        contact_sheet(args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
