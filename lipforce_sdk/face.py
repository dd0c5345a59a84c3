"""Face handling: find the face, cut a square crop for the model, paste the result back.

The lip-sync model works on a square face crop of ``crop_size x crop_size`` pixels (128 for
the tiny model, 512 for the large ones) and re-renders the lower face inside it. This module
turns full frames into such crops and back:

- ``HaarFaceDetector``: OpenCV's frontal-face Haar cascade (bundled in the opencv wheel).
- ``FaceTracker``: per frame, the square crop box (a fixed box, or detection every N frames,
  widened by a margin to take in chin and forehead, smoothed over time, kept in the frame).
- ``crop`` / ``paste``: sub-pixel affine warp frame -> crop and back; ``paste`` blends with a
  feathered mask so no seam shows and leaves pixels outside the box untouched.
- ``mouth_mask`` / ``mouth_mask_hard``: the region of the crop the model re-renders.

Coordinates are full-frame pixels with pixel ``i`` covering ``[i, i + 1)``: a box
``(0, 0, W, H)`` is the whole ``W x H`` frame. Frames are RGB ``uint8`` ``[H, W, 3]``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import cv2
import numpy as np

__all__ = [
    "FaceBox",
    "FaceCrop",
    "FaceNotFoundError",
    "FaceDetector",
    "HaarFaceDetector",
    "FaceTracker",
    "crop",
    "paste",
    "feather_mask",
    "mouth_mask",
    "mouth_mask_hard",
]


class FaceNotFoundError(RuntimeError):
    """No face was found and no crop box was given, so there is nothing to crop."""


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned box in full-frame pixels: ``x0 <= x < x1``, ``y0 <= y < y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        vals = (self.x0, self.y0, self.x1, self.y1)
        if not all(math.isfinite(float(v)) for v in vals):
            raise ValueError(f"FaceBox coordinates must be finite, got {vals}")
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise ValueError(
                f"FaceBox needs x1 > x0 and y1 > y0, got (x0, y0, x1, y1) = {vals}; "
                "use FaceBox.from_xywh(x, y, w, h) for an (x, y, width, height) box"
            )

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> "FaceBox":
        """Box from its top-left corner and its width and height."""
        return cls(float(x), float(y), float(x) + float(w), float(y) + float(h))

    @classmethod
    def from_center(cls, cx: float, cy: float, side: float) -> "FaceBox":
        """Square box of the given side centred at ``(cx, cy)``."""
        h = float(side) / 2.0
        return cls(float(cx) - h, float(cy) - h, float(cx) + h, float(cy) + h)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0

    @property
    def area(self) -> float:
        return self.width * self.height

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def square(self) -> "FaceBox":
        """The square with the same centre and side ``max(width, height)``."""
        cx, cy = self.center
        return FaceBox.from_center(cx, cy, max(self.width, self.height))

    def iou(self, other: "FaceBox") -> float:
        """Intersection over union with another box, in ``[0, 1]``."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        return inter / (self.area + other.area - inter)


@dataclass(frozen=True)
class FaceCrop:
    """One tracked crop: ``image`` is RGB ``uint8`` ``[S, S, 3]`` cut from ``box``."""

    image: np.ndarray
    box: FaceBox
    frame_index: int
    detected: bool  # a detection ran on this frame and found a face


class FaceDetector(Protocol):
    """Anything with ``detect(frame_rgb_uint8 [H, W, 3]) -> FaceBox | None``."""

    def detect(self, frame: np.ndarray) -> FaceBox | None: ...


def _check_frame(frame: np.ndarray, what: str = "frame", min_side: int = 2) -> np.ndarray:
    """``frame`` as an RGB ``uint8`` ``[H, W, 3]`` array of at least ``min_side`` pixels a side, or
    a ``ValueError`` saying the fix."""
    f = np.asarray(frame)
    if f.ndim != 3 or f.shape[2] != 3:
        raise ValueError(
            f"{what} must be RGB [H, W, 3], got shape {f.shape}; convert grayscale/RGBA to RGB "
            "first (e.g. cv2.cvtColor(x, cv2.COLOR_GRAY2RGB))"
        )
    if f.dtype != np.uint8:
        raise ValueError(
            f"{what} must be uint8, got {f.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    if f.shape[0] < min_side or f.shape[1] < min_side:
        raise ValueError(f"{what} is {f.shape[1]}x{f.shape[0]} pixels; need at least {min_side}x{min_side}")
    return f


def _as_box(box) -> FaceBox:
    if isinstance(box, FaceBox):
        return box
    try:
        vals = [float(v) for v in box]
    except TypeError:
        raise TypeError(
            f"box must be a FaceBox or (x0, y0, x1, y1), got {type(box).__name__}: {box!r}"
        ) from None
    if len(vals) != 4:
        raise ValueError(f"box must have 4 numbers (x0, y0, x1, y1), got {box!r}")
    return FaceBox(*vals)


# --------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------


class HaarFaceDetector:
    """Frontal-face detector using the Haar cascade shipped in the opencv wheel.

    Args:
        cascade_path: cascade XML; default
            ``cv2.data.haarcascades + "haarcascade_frontalface_default.xml"``.
        max_side: frames whose longer side exceeds this are downscaled before detection
            (speed); the box is returned in full-frame pixels.
        scale_factor, min_neighbors: ``cv2.CascadeClassifier.detectMultiScale`` settings.
        min_face_frac: smallest face searched for, as a fraction of the shorter side of
            the (downscaled) frame.
    """

    CASCADE_NAME = "haarcascade_frontalface_default.xml"

    def __init__(
        self,
        cascade_path: str | os.PathLike | None = None,
        *,
        max_side: int = 480,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face_frac: float = 0.08,
    ) -> None:
        if cascade_path is None:
            data = getattr(cv2, "data", None)
            folder = getattr(data, "haarcascades", None)
            if folder is None:
                raise FileNotFoundError(
                    f"OpenCV {cv2.__version__} does not bundle Haar cascades (cv2.data is "
                    "missing; OpenCV 5 wheels dropped them); install "
                    "'opencv-python-headless<5', pass cascade_path= to a "
                    f"{self.CASCADE_NAME}, or give the tracker a fixed box="
                )
            cascade_path = os.path.join(folder, self.CASCADE_NAME)
        cascade_path = os.fspath(cascade_path)
        if not os.path.isfile(cascade_path):
            raise FileNotFoundError(
                f"Haar cascade {cascade_path!r} not found (OpenCV {cv2.__version__}); "
                "install 'opencv-python-headless<5' (its wheel bundles the cascades), pass "
                "cascade_path= to the XML file, or give the tracker a fixed box="
            )
        self._cascade = cv2.CascadeClassifier(cascade_path)
        if self._cascade.empty():
            raise ValueError(
                f"OpenCV could not load the cascade {cascade_path!r}; the file is not a "
                "valid Haar cascade XML (re-install opencv-python-headless<5)"
            )
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32 pixels, got {max_side}")
        if not scale_factor > 1.0:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}; e.g. 1.1")
        if not 0.0 < min_face_frac < 1.0:
            raise ValueError(f"min_face_frac must be in (0, 1), got {min_face_frac}")
        self.cascade_path = cascade_path
        self.max_side = int(max_side)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_face_frac = float(min_face_frac)

    def detect(self, frame: np.ndarray) -> FaceBox | None:
        """Largest frontal face in an RGB ``uint8`` frame ``[H, W, 3]``, or ``None``."""
        f = _check_frame(frame)
        h, w = f.shape[:2]
        gray = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(
                gray,
                (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=cv2.INTER_AREA,
            )
        gray = cv2.equalizeHist(gray)
        min_px = max(12, int(self.min_face_frac * min(gray.shape)))
        faces = self._cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_px, min_px),
        )
        if len(faces) == 0:
            return None
        x, y, bw, bh = max((tuple(map(float, r)) for r in faces), key=lambda r: r[2] * r[3])
        sx, sy = w / gray.shape[1], h / gray.shape[0]
        return FaceBox(x * sx, y * sy, (x + bw) * sx, (y + bh) * sy)


# --------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------


class FaceTracker:
    """Per-frame square crop box for the model, steady over time.

    With ``box=`` the tracker returns that box for every frame (made square around its
    centre with side ``max(width, height)``; no detection, margin or smoothing). Otherwise
    it runs ``detector`` (default ``HaarFaceDetector()``) every ``detect_every`` frames
    (every frame until a first face is found), reuses the last face in between and when a
    detection fails, and turns the face box into the crop box:

    1. widen by ``margin`` x face size on every side and move down by ``chin_shift`` x
       face size (a Haar box runs from the brows to the lower lip; the crop must hold the
       chin and the jaw when the mouth opens), keep it square;
    2. smooth centre and side with an exponential moving average
       (``state = smoothing * state + (1 - smoothing) * target``) so the crop does not
       jitter; a jump larger than ``snap`` x side (a cut) resets the average;
    3. if the box fits in the frame, shift it inside; otherwise keep it centred and let
       ``crop`` pad with replicated border pixels.

    Args:
        crop_size: side of the model's crop in pixels (``crop`` output size).
        detector: any object with ``detect(frame) -> FaceBox | None``.
        box: fixed crop box ``FaceBox`` or ``(x0, y0, x1, y1)`` in frame pixels.
        smoothing: EMA weight of the past, in ``[0, 1)``; 0 disables smoothing.
        margin: extra border around the face on each side, as a fraction of its size.
        chin_shift: downward shift of the crop centre, as a fraction of the face size.
        detect_every: run the detector every N frames (N >= 1).
        snap: re-centre immediately when the face moves more than this x side.
    """

    def __init__(
        self,
        crop_size: int,
        detector: FaceDetector | None = None,
        box: FaceBox | tuple[float, float, float, float] | None = None,
        *,
        smoothing: float = 0.8,
        margin: float = 0.3,
        chin_shift: float = 0.1,
        detect_every: int = 5,
        snap: float = 0.5,
    ) -> None:
        if not isinstance(crop_size, (int, np.integer)) or crop_size < 8:
            raise ValueError(
                f"crop_size must be an int >= 8 (the model's crop side), got {crop_size!r}"
            )
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}; e.g. 0.8")
        if not margin >= 0.0:
            raise ValueError(f"margin must be >= 0, got {margin}; e.g. 0.3")
        if not isinstance(detect_every, (int, np.integer)) or detect_every < 1:
            raise ValueError(f"detect_every must be an int >= 1, got {detect_every!r}")
        if not snap > 0.0:
            raise ValueError(f"snap must be > 0, got {snap}")
        self.crop_size = int(crop_size)
        self.fixed_box = _as_box(box).square() if box is not None else None
        if self.fixed_box is None and detector is None:
            detector = HaarFaceDetector()
        self.detector = detector
        self.smoothing = float(smoothing)
        self.margin = float(margin)
        self.chin_shift = float(chin_shift)
        self.detect_every = int(detect_every)
        self.snap = float(snap)
        self.reset()

    def reset(self) -> None:
        """Forget the face, the smoothing state, the frame size and the frame count."""
        self.frame_index = 0
        self.last_face: FaceBox | None = None  # raw detector output last found
        self.last_detected = False  # whether the last update's detection found a face
        self._since_detect = 0
        self._state: np.ndarray | None = None  # [cx, cy, side]
        self._frame_hw: tuple[int, int] | None = None

    def _target(self, face: FaceBox) -> np.ndarray:
        cx, cy = face.center
        size = max(face.width, face.height)
        return np.array(
            [cx, cy + self.chin_shift * size, size * (1.0 + 2.0 * self.margin)], np.float64
        )

    def update(self, frame: np.ndarray) -> FaceBox:
        """The square crop box for the next frame (RGB ``uint8`` ``[H, W, 3]``).

        Raises:
            FaceNotFoundError: no face in this frame and none in any earlier frame.
            ValueError: the frame size differs from the previous frames (call reset()).
        """
        f = _check_frame(frame)
        h, w = f.shape[:2]
        if self._frame_hw is None:
            self._frame_hw = (h, w)
        elif self._frame_hw != (h, w):
            raise ValueError(
                f"frame {self.frame_index} is {w}x{h} but earlier frames were "
                f"{self._frame_hw[1]}x{self._frame_hw[0]}; call reset() before changing "
                "the frame size"
            )
        index = self.frame_index
        self.frame_index += 1
        self.last_detected = False
        if self.fixed_box is not None:
            b = self.fixed_box
            if b.x1 <= 0 or b.y1 <= 0 or b.x0 >= w or b.y0 >= h:
                raise ValueError(
                    f"the fixed box {b.as_tuple()} lies outside the {w}x{h} frame; pass a "
                    "box in this frame's pixel coordinates"
                )
            return b

        if self.last_face is None or self._since_detect + 1 >= self.detect_every:
            self._since_detect = 0
            face = self.detector.detect(f)
            if face is not None:
                self.last_face = face
                self.last_detected = True
        else:
            self._since_detect += 1
        if self.last_face is None:
            raise FaceNotFoundError(
                f"no face found in frame {index} ({w}x{h}) nor in any earlier frame, so "
                "there is no crop box; pass box=(x0, y0, x1, y1) (the crop region in "
                "pixels) to FaceTracker, or give frames with a frontal, unoccluded face"
            )

        target = self._target(self.last_face)
        if self._state is None:
            self._state = target
        else:
            jump = np.hypot(*(target[:2] - self._state[:2]))
            if jump > self.snap * self._state[2]:
                self._state = target
            else:
                a = self.smoothing
                self._state = a * self._state + (1.0 - a) * target
        cx, cy, side = (float(v) for v in self._state)
        half = side / 2.0
        if side <= w:
            cx = min(max(cx, half), w - half)
        if side <= h:
            cy = min(max(cy, half), h - half)
        return FaceBox.from_center(cx, cy, side)

    __call__ = update

    def crop(self, frame: np.ndarray) -> FaceCrop:
        """``update(frame)`` then ``crop(frame, box, crop_size)``."""
        index = self.frame_index
        box = self.update(frame)
        return FaceCrop(
            image=crop(frame, box, self.crop_size),
            box=box,
            frame_index=index,
            detected=self.last_detected,
        )


# --------------------------------------------------------------------------------------
# Crop / paste
# --------------------------------------------------------------------------------------


def _gather(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """``img[y0:y1, x0:x1]`` with replicated borders where the range leaves the image."""
    h, w = img.shape[:2]
    if 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h:
        return img[y0:y1, x0:x1]
    ys = np.clip(np.arange(y0, y1), 0, h - 1)
    xs = np.clip(np.arange(x0, x1), 0, w - 1)
    return img[ys[:, None], xs[None, :]]


def _antialias_sigma(shrink: float) -> float:
    """The Gaussian ``_antialias`` low-passes with before shrinking by ``shrink``; 0: none."""
    return 0.0 if shrink <= 1.25 else 0.5 * math.sqrt(shrink * shrink - 1.0)


def _antialias(img: np.ndarray, shrink: float) -> np.ndarray:
    """Low-pass before a resampling that shrinks by ``shrink`` (> 1) to avoid aliasing."""
    sigma = _antialias_sigma(shrink)
    if sigma == 0.0:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)


def crop(frame: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """Cut ``box`` out of ``frame`` and resample it to ``size x size``.

    Sub-pixel exact (bilinear, low-passed first when shrinking); where the box leaves the
    frame the border pixels are replicated. A non-square box is stretched to the square.

    Args:
        frame: RGB ``uint8`` ``[H, W, 3]``.
        box: region in frame pixels.
        size: output side.

    Returns:
        RGB ``uint8`` ``[size, size, 3]``.
    """
    f = _check_frame(frame)
    box = _as_box(box)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    sx, sy = box.width / size, box.height / size
    pad = 2 + int(math.ceil(1.5 * max(sx, sy)))
    rx0, ry0 = int(math.floor(box.x0)) - pad, int(math.floor(box.y0)) - pad
    rx1, ry1 = int(math.ceil(box.x1)) + pad, int(math.ceil(box.y1)) + pad
    roi = _antialias(_gather(f, rx0, ry0, rx1, ry1), max(sx, sy))
    # crop pixel j (centre j + 0.5) <- frame x = x0 + (j + 0.5) * sx, frame index x - 0.5
    m = np.array(
        [
            [sx, 0.0, box.x0 + 0.5 * sx - 0.5 - rx0],
            [0.0, sy, box.y0 + 0.5 * sy - 0.5 - ry0],
        ]
    )
    return cv2.warpAffine(
        roi,
        m,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


@lru_cache(maxsize=16)
def _feather_cached(size: int, feather: float) -> np.ndarray:
    if feather <= 0.0:
        return np.ones((size, size), np.float32)
    width = max(feather * size, 1.0)
    i = np.arange(size, dtype=np.float64)
    d = np.minimum(i, size - 1 - i)  # 0 at the outermost pixels
    t = np.clip(d / width, 0.0, 1.0)
    ramp = t * t * (3.0 - 2.0 * t)  # smoothstep: zero slope at both ends
    m = (ramp[:, None] * ramp[None, :]).astype(np.float32)
    m.flags.writeable = False
    return m


def feather_mask(size: int, feather: float = 0.1) -> np.ndarray:
    """Blend weights of a pasted crop: ``float32 [size, size]``, 1 inside, 0 at the edge.

    Each side ramps with a smoothstep over ``feather * size`` pixels (the outermost pixels
    are exactly 0), so the pasted crop fades into the frame with no step.
    ``feather=0`` gives all ones (a hard paste).
    """
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5] (fraction of the crop side), got {feather}")
    return _feather_cached(int(size), float(feather)).copy()


def paste(
    frame: np.ndarray,
    box: FaceBox,
    crop_img: np.ndarray,
    feather: float = 0.1,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Warp ``crop_img`` back into ``box`` of ``frame`` and blend it in; returns a new frame.

    The inverse of ``crop``: the crop is resampled to the box (bilinear, low-passed first
    when shrinking) and blended as ``frame * (1 - w) + crop * w`` with
    ``w = feather_mask(S, feather) * mask``. Pixels outside the box are returned exactly as
    they were; ``frame`` itself is not modified.

    Args:
        frame: RGB ``uint8`` ``[H, W, 3]``.
        box: the box the crop was cut from (frame pixels).
        crop_img: RGB ``uint8`` ``[S, S, 3]``.
        feather: width of the soft edge as a fraction of ``S`` (0 = hard edge).
        mask: optional ``float32 [S, S]`` weights in ``[0, 1]`` (e.g. ``mouth_mask(S)``)
            to paste only part of the crop.

    Returns:
        RGB ``uint8`` ``[H, W, 3]``.
    """
    f = _check_frame(frame)
    c = _check_frame(crop_img, "crop_img")
    box = _as_box(box)
    s = c.shape[0]
    if c.shape[1] != s:
        raise ValueError(f"crop_img must be square [S, S, 3], got shape {c.shape}")
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5] (fraction of the crop side), got {feather}")
    weight = _feather_cached(s, float(feather))
    if mask is not None:
        mask = np.asarray(mask, np.float32)
        if mask.shape != (s, s):
            raise ValueError(
                f"mask must be [S, S] = {(s, s)} like the crop, got shape {mask.shape}"
            )
        weight = weight * np.clip(mask, 0.0, 1.0)
    h, w = f.shape[:2]
    sx, sy = box.width / s, box.height / s
    # only the part of the box where the weight is non-zero (e.g. the mouth) is touched
    rows = np.flatnonzero(weight.any(axis=1))
    cols = np.flatnonzero(weight.any(axis=0))
    out = f.copy()
    if rows.size == 0:
        return out  # nothing to paste
    rx0 = max(0, int(math.floor(box.x0 + (cols[0] - 1) * sx)))
    ry0 = max(0, int(math.floor(box.y0 + (rows[0] - 1) * sy)))
    rx1 = min(w, int(math.ceil(box.x0 + (cols[-1] + 2) * sx)))
    ry1 = min(h, int(math.ceil(box.y0 + (rows[-1] + 2) * sy)))
    if rx1 <= rx0 or ry1 <= ry0:
        return out  # box entirely outside the frame
    # frame index X (centre X + 0.5) -> crop index j = (X + 0.5 - x0) / sx - 0.5
    m = np.array(
        [
            [1.0 / sx, 0.0, (rx0 + 0.5 - box.x0) / sx - 0.5],
            [0.0, 1.0 / sy, (ry0 + 0.5 - box.y0) / sy - 0.5],
        ]
    )
    size = (rx1 - rx0, ry1 - ry0)
    src = _antialias(c, 1.0 / min(sx, sy))
    warped = cv2.warpAffine(
        src, m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    ).astype(np.float32)
    wgt = cv2.warpAffine(
        weight, m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
    )[..., None]
    roi = out[ry0:ry1, rx0:rx1].astype(np.float32)
    blended = roi + (warped - roi) * wgt  # exactly roi where wgt == 0
    out[ry0:ry1, rx0:rx1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------
# Mouth region (crop coordinates)
# --------------------------------------------------------------------------------------

# The lower-face region in crop units (side = 1): below TOP, inside an ellipse around the
# jaw. Matches the FaceTracker defaults (margin 0.3, chin_shift 0.1), where the nose tip sits
# near 0.5 of the crop height, the lips near 0.65 and the chin near 0.85.
MOUTH_TOP = 0.55
_JAW_CENTER = (0.5, 0.55)
_JAW_AXES = (0.34, 0.39)


def _mouth_distance(size: int, top: float) -> np.ndarray:
    """Approximate signed distance (pixels, > 0 inside) to the mouth region's boundary."""
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8 (the crop side), got {size!r}")
    if not 0.0 <= top < 0.95:
        raise ValueError(f"top must be in [0, 0.95) (fraction of the crop height), got {top}")
    u = (np.arange(size, dtype=np.float64) + 0.5) / size
    y, x = u[:, None], u[None, :]
    ax, ay = _JAW_AXES
    r = np.sqrt(((x - _JAW_CENTER[0]) / ax) ** 2 + ((y - _JAW_CENTER[1]) / ay) ** 2)
    d_ellipse = (1.0 - r) * min(ax, ay)
    d_top = y - top
    return np.minimum(d_ellipse, d_top) * size


def mouth_mask(size: int, top: float = MOUTH_TOP, feather: float = 0.06) -> np.ndarray:
    """Soft mask of the lower face that the model re-renders, in crop coordinates.

    1 below ``top`` (fraction of the crop height) inside the jaw ellipse, 0 outside, with
    a smoothstep edge ``feather * size`` pixels wide that lies inside
    ``mouth_mask_hard(size, top)`` (the soft mask is 0 wherever the hard one is 0).

    Returns:
        ``float32 [size, size]`` in ``[0, 1]``.
    """
    if not 0.0 < feather <= 0.5:
        raise ValueError(f"feather must be in (0, 0.5], got {feather}; use mouth_mask_hard for 0")
    d = _mouth_distance(size, top)
    t = np.clip(d / (feather * size), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def mouth_mask_hard(size: int, top: float = MOUTH_TOP) -> np.ndarray:
    """Binary mask of the same region, for hiding the source mouth from the model.

    Returns:
        ``float32 [size, size]`` of 0/1; 1 where the source is masked.
    """
    return (_mouth_distance(size, top) > 0.0).astype(np.float32)
