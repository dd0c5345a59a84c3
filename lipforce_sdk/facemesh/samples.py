"""Test pictures made from the bundled photo clip (no third-party art is needed or shipped).

Used by ``tests/test_facemesh.py``, ``python -m lipforce_sdk.facemesh.benchmark`` and its
contact sheet: the bundled real face (``lipforce_sdk/assets/photo/face.mp4``, public-domain
NASA portrait) made small on a large kiosk canvas, cartoonised with OpenCV filters, or with
its mouth opened by a jaw-drop warp.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .landmarks import CHIN, LIPS_INNER, MOUTH_LEFT, MOUTH_RIGHT, FaceLandmarks

__all__ = ["photo_clip", "on_canvas", "cartoonise", "open_mouth"]

PHOTO_CLIP = Path(__file__).resolve().parent.parent / "assets" / "photo" / "face.mp4"


def photo_clip(max_frames: int | None = None) -> np.ndarray:
    """Frames of the bundled photo clip: RGB ``uint8 [F, 320, 320, 3]``."""
    from ..media import iter_video_frames

    out = []
    for i, f in enumerate(iter_video_frames(PHOTO_CLIP)):
        if max_frames is not None and i >= max_frames:
            break
        out.append(f)
    return np.stack(out)


def on_canvas(
    image: np.ndarray,
    size: tuple[int, int] = (704, 1216),
    width_frac: float = 0.2,
    center: tuple[float, float] = (0.5, 0.4),
    background: int = 90,
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """``image`` scaled to ``width_frac`` of a ``size = (width, height)`` grey canvas.

    Returns the canvas, the scale applied and the top-left corner ``(x0, y0)`` where the
    image was placed (a point ``p`` of ``image`` lands at ``p * scale + (x0, y0)``; pixel
    centres included, as both use ``i + 0.5``).
    """
    w, h = size
    new_w = max(1, round(w * width_frac))
    scale = new_w / image.shape[1]
    new_h = max(1, round(image.shape[0] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(image, (new_w, new_h), interpolation=interp)
    scale_y = new_h / image.shape[0]
    if abs(scale_y - scale) > 1e-3 * scale:
        raise ValueError(f"canvas placement would distort the image ({scale} vs {scale_y})")
    canvas = np.full((h, w, 3), background, np.uint8)
    x0 = int(round(w * center[0] - new_w / 2))
    y0 = int(round(h * center[1] - new_h / 2))
    if x0 < 0 or y0 < 0 or x0 + new_w > w or y0 + new_h > h:
        raise ValueError(
            f"the scaled image ({new_w}x{new_h}) at ({x0}, {y0}) leaves the {w}x{h} canvas"
        )
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = small
    return canvas, scale, (x0, y0)


def cartoonise(image: np.ndarray, levels: int = 5, passes: int = 6) -> np.ndarray:
    """A flat-shaded cartoon of an RGB ``uint8`` image: repeated bilateral filtering (flat
    regions, kept edges), colour quantisation to ``levels`` per channel, black edge lines
    from an adaptive threshold of the median-blurred grey image."""
    x = image
    for _ in range(passes):
        x = cv2.bilateralFilter(x, 9, 40, 9)
    q = (np.floor(x.astype(np.float32) * (levels / 256.0)) + 0.5) * (256.0 / levels)
    q = np.clip(q, 0, 255).astype(np.uint8)
    gray = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 7)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    edges = cv2.erode(edges, np.ones((2, 2), np.uint8))
    return np.where(edges[..., None] > 0, q, 0).astype(np.uint8)


def open_mouth(image: np.ndarray, lm: FaceLandmarks, amount: float) -> np.ndarray:
    """Drop the lower lip and jaw of the face in ``image`` by ``amount`` pixels (a smooth
    warp below the lower inner lip, fading out sideways past the mouth corners and one
    lip-to-chin depth under the chin); the opened gap is painted dark like a mouth inside.

    ``lm`` are the landmarks of ``image`` itself.
    """
    h, w = image.shape[:2]
    lower = lm.xy(LIPS_INNER[:11]).astype(np.float64)  # 78 -> 14 -> 308: the lower inner lip
    lower = lower[np.argsort(lower[:, 0])]
    cx = float(lm.points[MOUTH_RIGHT, 0] + lm.points[MOUTH_LEFT, 0]) / 2
    half = abs(float(lm.points[MOUTH_LEFT, 0] - lm.points[MOUTH_RIGHT, 0])) / 2
    chin = float(lm.points[CHIN, 1])
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64) + 0.5, np.arange(h, dtype=np.float64) + 0.5)
    line = np.interp(xs, lower[:, 0], lower[:, 1])
    t = np.clip(1 - np.abs(xs - cx) / (1.6 * half), 0, 1)
    lateral = t * t * (3 - 2 * t)
    depth = max(chin - float(lower[:, 1].max()), 1.0)
    v = np.clip((chin + depth - ys) / depth, 0, 1)
    src_y = ys - amount * lateral * np.where(ys > line, v, 0.0)
    out = cv2.remap(
        image,
        (xs - 0.5).astype(np.float32),
        (src_y - 0.5).astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    out[(ys > line) & (src_y < line)] = (40, 16, 20)
    return out
