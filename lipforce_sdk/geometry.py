"""Face geometry: keypoints -> an eye-aligned mouth crop, a mouth mask from the lips and the jaw,
and the paste back that leaves every pixel outside the mask exactly as it was.

The model re-renders the mouth of a square crop of ``S x S`` pixels. The crop is *aligned*: its
rotation and scale come from the two eye centres (inter-ocular distance ``d``, roll of the eye
line) and its centre from the mouth corners, so every face, large or small, tilted or not, gives
the model its mouth at the same place and size (about ``0.8 d / (side * d)`` of the crop width).
It covers the lower face: from above the nose tip to below the chin (``CropSpec``).

The mask (what the model re-renders, in crop pixels) is the convex hull of the outer lip contour,
widened by a margin, and the jaw line below the mouth, moved a little inwards: the lips, the
mouth's surroundings and the chin, which moves when the jaw opens; not the skin between the nose
and the upper lip beyond the margin, nor anything outside the jaw. ``paste`` blends the result
back under the soft mask only, so outside the hard mask the output frame equals the input bit for
bit.

Coordinates: frame pixels with pixel ``i`` covering ``[i, i + 1)`` (as ``lipforce_sdk.face``);
crop pixels likewise. Frames are RGB ``uint8`` ``[H, W, 3]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from .config import GUIDANCE_REGIONS
from .face import FaceBox, _antialias, _antialias_sigma, _as_box, _check_frame, _gather

__all__ = [
    "FaceKeypoints",
    "CropSpec",
    "AlignedCrop",
    "MouthMask",
    "CropAligner",
    "mouth_mask_for",
    "limit_green",
    "GreenLimit",
    "lip_box",
    "green_minus_red_histogram",
    "mouth_polygon",
    "soft_mask",
    "match_edge",
    "lips_region",
    "mouth_region",
    "guidance_region",
    "LIPS_BOX",
    "MOUTH_BOX",
    "MEDIAPIPE",
]

# How a generated crop is resampled into the frame (the weight map stays bilinear, so the pixels
# it leaves alone are exactly those it left before).
PASTE_INTERPOLATION = cv2.INTER_CUBIC  # sharper than bilinear where the face is larger than the crop


def _mediapipe_indices() -> dict:
    from .facemesh import landmarks as mp

    return {"left_eye": mp.RIGHT_EYE, "right_eye": mp.LEFT_EYE, "nose_tip": mp.NOSE_TIP,
            "mouth_corners": (mp.MOUTH_RIGHT, mp.MOUTH_LEFT), "lips_outer": mp.LIPS_OUTER,
            "lips_inner": mp.LIPS_INNER, "jaw": mp.JAW}


# The MediaPipe face-mesh indices ``FaceKeypoints.from_mediapipe`` reads, by image side for an
# unmirrored face ("left_eye" = the image-left eye = the subject's right).
MEDIAPIPE = _mediapipe_indices()


def _pts(a, n: int | None, what: str) -> np.ndarray:
    p = np.asarray(a, np.float64)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 2 or (n is not None and p.shape[0] != n) or p.shape[0] == 0:
        raise ValueError(f"{what} must be {'[' + str(n) if n else '[N'}, 2] points, got shape {np.shape(a)}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{what} contains NaN/Inf")
    return p


@dataclass(frozen=True)
class FaceKeypoints:
    """What face geometry needs, in frame pixels (``float64``).

    Attributes:
        eyes: ``[2, 2]`` eye centres, image-left first.
        nose_tip: ``[2]``.
        mouth_corners: ``[2, 2]`` image-left first.
        lips_outer: ``[N, 2]`` outer lip contour (closed polygon).
        lips_inner: ``[M, 2]`` inner lip contour (closed polygon).
        jaw: ``[K, 2]`` jaw line below the mouth, one cheek through the chin to the other.
        source: where they came from (``"mesh"``, ``"template"``, ``"exact"``).
    """

    eyes: np.ndarray
    nose_tip: np.ndarray
    mouth_corners: np.ndarray
    lips_outer: np.ndarray
    lips_inner: np.ndarray
    jaw: np.ndarray
    source: str = "mesh"

    def __post_init__(self):
        for name, n in (("eyes", 2), ("nose_tip", 1), ("mouth_corners", 2), ("lips_outer", None),
                        ("lips_inner", None), ("jaw", None)):
            p = _pts(getattr(self, name), n, name)
            object.__setattr__(self, name, p[0] if name == "nose_tip" else p)
        if np.hypot(*(self.eyes[1] - self.eyes[0])) < 1e-3:
            raise ValueError(f"the two eye centres coincide ({self.eyes.tolist()}); the face cannot be aligned")

    @classmethod
    def from_mediapipe(cls, points: np.ndarray) -> "FaceKeypoints":
        """From MediaPipe face-mesh landmarks ``[468 (or 478), 2+]`` in frame pixels."""
        p = np.asarray(points, np.float64)
        if p.ndim != 2 or p.shape[0] < 468 or p.shape[1] < 2:
            raise ValueError(f"MediaPipe landmarks must be [468, 2 or 3], got shape {p.shape}")
        m = MEDIAPIPE
        p = p[:, :2]
        eyes = np.stack([p[list(m["left_eye"])].mean(0), p[list(m["right_eye"])].mean(0)])
        if eyes[0, 0] > eyes[1, 0]:  # image-left first (the subject's right eye, unless mirrored)
            eyes = eyes[::-1]
        return cls(eyes=eyes, nose_tip=p[m["nose_tip"]], mouth_corners=p[list(m["mouth_corners"])],
                   lips_outer=p[list(m["lips_outer"])], lips_inner=p[list(m["lips_inner"])], jaw=p[list(m["jaw"])],
                   source="mesh")

    @classmethod
    def template(cls, box: FaceBox | tuple[float, float, float, float]) -> "FaceKeypoints":
        """A mean face placed in a square face-crop box (``FaceTracker``'s framing: the face with a
        30% margin, shifted down by 10%: eyes near 0.43 of the height, lips near 0.67, chin near
        0.87). The fallback where no landmarks are available (a given box, a Haar detection)."""
        b = _as_box(box)
        u = np.array

        def at(x, y):
            return np.stack([b.x0 + np.asarray(x) * b.width, b.y0 + np.asarray(y) * b.height], -1)

        a = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        lo = at(0.5 - 0.092 * np.cos(a), 0.675 + 0.028 * np.sin(a))
        li = at(0.5 - 0.075 * np.cos(a), 0.675 + 0.006 * np.sin(a))
        t = np.linspace(np.pi * 0.1, np.pi * 0.9, 17)
        jaw = at(0.5 - 0.25 * np.cos(t), 0.62 + 0.25 * np.sin(t))
        return cls(eyes=at(u([0.382, 0.618]), u([0.43, 0.43])), nose_tip=at(0.5, 0.545),
                   mouth_corners=at(u([0.408, 0.592]), u([0.675, 0.675])), lips_outer=lo, lips_inner=li,
                   jaw=jaw, source="template")

    @property
    def eye_distance(self) -> float:
        return float(np.hypot(*(self.eyes[1] - self.eyes[0])))

    @property
    def mouth_width(self) -> float:
        return float(np.hypot(*(self.mouth_corners[1] - self.mouth_corners[0])))

    def lip_opening(self) -> float:
        """Inner-lip opening over mouth width: the largest vertical extent of the inner contour
        across its middle third, divided by the corner-to-corner width."""
        inner = self.lips_inner
        u = (self.mouth_corners[1] - self.mouth_corners[0]) / max(self.mouth_width, 1e-9)
        v = np.array([-u[1], u[0]])
        c = self.mouth_corners.mean(0)
        x, y = (inner - c) @ u, (inner - c) @ v
        mid = np.abs(x) <= self.mouth_width / 6.0
        if mid.sum() < 2:
            return 0.0
        return float((y[mid].max() - y[mid].min()) / max(self.mouth_width, 1e-9))

    def map(self, affine: np.ndarray) -> "FaceKeypoints":
        """Every point through a 2x3 affine map (continuous coordinates)."""
        a = np.asarray(affine, np.float64)

        def f(p):
            return p @ a[:, :2].T + a[:, 2]

        return replace(self, eyes=f(self.eyes), nose_tip=f(self.nose_tip), mouth_corners=f(self.mouth_corners),
                       lips_outer=f(self.lips_outer), lips_inner=f(self.lips_inner), jaw=f(self.jaw))


# --------------------------------------------------------------------------------------
# The aligned crop
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropSpec:
    """Framing of the mouth crop, in inter-ocular distances ``d``: a square of side ``side * d``
    whose centre is ``down * d`` below the mouth corners' midpoint (perpendicular to the eye
    line). With the defaults the crop spans from about 0.65 d above the mouth line (above the
    nose tip) to 1.15 d below it (below an open jaw's chin)."""

    side: float = 1.8
    down: float = 0.25

    def mouth_box(self) -> tuple[float, float, float, float]:
        """``(y0, y1, x0, x1)`` crop fractions of a 0.4 x 0.6 box around the mouth (where the
        lips move, with some chin): the sync scorer's view of a crop."""
        cy = 0.5 - self.down / self.side + 0.02
        return (cy - 0.2, cy + 0.2, 0.2, 0.8)

    def validate(self) -> "CropSpec":
        if not 0.5 <= self.side <= 6.0:
            raise ValueError(f"CropSpec.side={self.side} must be in [0.5, 6] inter-ocular distances")
        if not -2.0 <= self.down <= 2.0:
            raise ValueError(f"CropSpec.down={self.down} must be in [-2, 2] inter-ocular distances")
        return self


# Boxes of an eye-aligned crop, as crop fractions (x0, x1 across; above, below the mouth corners' line):
# ``LIPS_BOX`` the lips and the gap between them (``lips_region``); ``MOUTH_BOX`` the part of it
# between the mouth corners (``mouth_region``: every framing's corners lie outside it, at about 0.29
# and 0.71 of the crop) and from the upper lip's middle to the lower lip's.
LIPS_BOX = (0.27, 0.73, 0.07, 0.11)
MOUTH_BOX = (0.36, 0.64, 0.05, 0.08)


def _box_region(resolution: int, latent_hw: tuple[int, int], box: tuple[float, float, float, float],
                spec: CropSpec | None) -> np.ndarray:
    spec = CropSpec() if spec is None else spec
    s = int(resolution)
    h, w = (int(v) for v in latent_hw)
    if s % h or s % w:
        raise ValueError(f"the crop ({s} px) must be a whole number of latent pixels ({h} x {w})")
    x0, x1, up, down = box
    cy = 0.5 - spec.down / spec.side  # the mouth corners' line
    m = np.zeros((s, s), np.float32)
    m[int((cy - up) * s):int((cy + down) * s), int(x0 * s):int(x1 * s)] = 1.0
    m = cv2.GaussianBlur(m, (0, 0), s / 64)
    return np.ascontiguousarray(m.reshape(h, s // h, w, s // w).mean(axis=(1, 3)), dtype=np.float32)


def lips_region(resolution: int, latent_hw: tuple[int, int], spec: CropSpec | None = None) -> np.ndarray:
    """Per latent pixel ``[h, w]`` float32 in [0, 1]: where the lips and the gap between them are in
    an eye-aligned crop of ``resolution`` pixels (``spec``'s framing puts every mouth there): a box
    from 0.07 of the crop above the mouth corners' line to 0.11 below it, 0.27-0.73 across
    (``LIPS_BOX``), blurred by a Gaussian of 1/64 of the crop, averaged over each latent pixel. The
    training loss weighs the lips by it (``distill.teacher.lips_map``); audio guidance acts inside
    it with ``ScheduleConfig.guidance_region = "lips"``."""
    return _box_region(resolution, latent_hw, LIPS_BOX, spec)


def mouth_region(resolution: int, latent_hw: tuple[int, int], spec: CropSpec | None = None) -> np.ndarray:
    """As ``lips_region`` over ``MOUTH_BOX``: between the mouth corners (0.36-0.64 across), from
    0.05 of the crop above the corners' line to 0.08 below it. Audio guidance acts inside it with
    ``ScheduleConfig.guidance_region = "mouth"``: the lips part further, the corners and the skin
    beside and below them as the unguided pass draws them."""
    return _box_region(resolution, latent_hw, MOUTH_BOX, spec)


def guidance_region(name: str, resolution: int, latent_hw: tuple[int, int],
                    spec: CropSpec | None = None) -> np.ndarray | None:
    """Where audio guidance acts (``ScheduleConfig.guidance_region``): ``None`` for ``"crop"`` (all of
    it), else ``lips_region`` (``"lips"``) or ``mouth_region`` (``"mouth"``), ``[h, w]`` float32."""
    boxes = {"lips": LIPS_BOX, "mouth": MOUTH_BOX}
    if name not in GUIDANCE_REGIONS:
        raise ValueError(f"guidance region {name!r}: one of {', '.join(map(repr, GUIDANCE_REGIONS))}")
    return None if name == "crop" else _box_region(resolution, latent_hw, boxes[name], spec)


@dataclass(frozen=True)
class AlignedCrop:
    """A square crop of ``size`` pixels: crop continuous point ``q`` <-> frame point
    ``centre + (q / size - 0.5) * side * [u v]`` (``u`` along the eye line, ``v`` perpendicular,
    downwards)."""

    centre: tuple[float, float]
    side: float  # in frame pixels
    angle: float  # roll of the eye line, radians (image y down)
    size: int

    @classmethod
    def from_keypoints(cls, kp: FaceKeypoints, size: int, spec: CropSpec = CropSpec()) -> "AlignedCrop":
        d = kp.eye_distance
        ev = kp.eyes[1] - kp.eyes[0]
        ang = math.atan2(ev[1], ev[0])
        v = np.array([-math.sin(ang), math.cos(ang)])
        c = kp.mouth_corners.mean(0) + spec.down * d * v
        return cls((float(c[0]), float(c[1])), float(spec.side * d), float(ang), int(size))

    @property
    def scale(self) -> float:
        """Frame pixels per crop pixel."""
        return self.side / self.size

    def at_size(self, size: int) -> "AlignedCrop":
        """The same region of the frame, cut at ``size`` pixels."""
        return replace(self, size=int(size))

    def to_frame_affine(self) -> np.ndarray:
        """2x3: crop continuous coordinates -> frame continuous coordinates."""
        s = self.scale
        cu, su = math.cos(self.angle), math.sin(self.angle)
        u, v = np.array([cu, su]), np.array([-su, cu])
        origin = np.asarray(self.centre) - 0.5 * self.side * (u + v)
        return np.column_stack([u * s, v * s, origin])

    def to_crop_affine(self) -> np.ndarray:
        """2x3: frame continuous coordinates -> crop continuous coordinates."""
        a = self.to_frame_affine()
        inv = np.linalg.inv(a[:, :2])
        return np.column_stack([inv, -inv @ a[:, 2]])

    def corners(self) -> np.ndarray:
        """``[4, 2]`` frame points of the crop's corners."""
        a = self.to_frame_affine()
        q = np.array([[0, 0], [self.size, 0], [self.size, self.size], [0, self.size]], np.float64)
        return q @ a[:, :2].T + a[:, 2]

    def bbox(self) -> FaceBox:
        """The axis-aligned frame box around the crop."""
        c = self.corners()
        return FaceBox(float(c[:, 0].min()), float(c[:, 1].min()), float(c[:, 0].max()), float(c[:, 1].max()))

    def _index_affine(self, a: np.ndarray, x0: int = 0, y0: int = 0) -> np.ndarray:
        """A continuous-coordinate map as a pixel-index map (index = continuous - 0.5), with the
        destination offset by ``(x0, y0)`` pixels (a region of interest)."""
        m = a.copy()
        m[:, 2] = a[:, 2] + a[:, :2] @ np.array([0.5, 0.5]) - 0.5 - np.array([x0, y0])
        return m

    def crop(self, frame: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """The crop ``[S, S, 3]`` uint8: bilinear (what the model sees; ``interpolation`` e.g.
        ``cv2.INTER_CUBIC`` for crops kept for their detail), low-passed first when the face is
        larger than the crop; replicated border pixels where the crop leaves the frame."""
        f = _check_frame(frame)
        b = self.bbox()
        pad = 2 + int(math.ceil(1.5 * self.scale))
        rx0, ry0 = int(math.floor(b.x0)) - pad, int(math.floor(b.y0)) - pad
        rx1, ry1 = int(math.ceil(b.x1)) + pad, int(math.ceil(b.y1)) + pad
        roi = _antialias(_gather(f, rx0, ry0, rx1, ry1), self.scale)
        a = self.to_frame_affine()
        a = np.column_stack([a[:, :2], a[:, 2] - np.array([rx0, ry0])])
        m = self._index_affine(a)
        return cv2.warpAffine(roi, m, (self.size, self.size), flags=interpolation | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def frame_weight(self, weight: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
        """``weight`` ``[S, S]`` mapped into a frame of ``frame_hw`` as ``paste`` maps it (bilinear,
        0 outside the crop): ``float32 [H, W]``. ``paste`` changes no pixel where this is 0."""
        h, w = frame_hw
        m = self._index_affine(self.to_crop_affine())
        return cv2.warpAffine(np.asarray(weight, np.float32), m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def paste_footprint(self, weight: np.ndarray, size: int | None = None) -> tuple[int, int, int, int] | None:
        """``(y0, y1, x0, x1)``, end exclusive: the pixels of a picture of this crop at ``size`` (default
        the crop's own) that ``paste`` reads with ``weight``. Two pictures equal inside it paste to the
        same frame, so work on the picture (the mouth exemplars' detail) can stop at it. ``None``
        where ``weight`` is 0 everywhere (``paste`` reads nothing)."""
        w = np.asarray(weight)
        rows, cols = np.flatnonzero(w.any(axis=1)), np.flatnonzero(w.any(axis=0))
        if rows.size == 0:
            return None
        p = self.size if size is None else int(size)
        f = p / self.size
        # paste low-passes a picture finer than the frame (_antialias): uint8, so a kernel of radius ~3 sigma
        sigma = _antialias_sigma(1.0 / self.at_size(p).scale)
        aa = 0 if sigma == 0.0 else int(math.ceil(3.0 * sigma)) + 1
        # a frame pixel has weight where the bilinear weight map, at its crop index u, touches a nonzero
        # weight: r0 - 1 < u < r1 + 1; the picture is sampled at (u + 0.5) f - 0.5, bicubic: 2 pixels each side
        m = 3 + aa

        def span(lo, hi):
            return (max(0, int(math.floor((lo - 0.5) * f - 0.5)) - m),
                    min(p, int(math.floor((hi + 1.5) * f - 0.5)) + m + 1))

        (y0, y1), (x0, x1) = span(rows[0], rows[-1]), span(cols[0], cols[-1])
        return y0, y1, x0, x1

    def paste(self, frame: np.ndarray, crop_img: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """``frame * (1 - w) + crop * w`` with ``w`` = ``weight`` ``[S, S]`` mapped into the frame;
        a new frame. Where the mapped weight is 0 (everywhere outside its support) the frame's
        pixels are returned exactly as they were. ``crop_img`` is this region cut at ``S`` pixels,
        or at any other square size (``at_size``: a picture with more detail than the crop's
        size holds); the weights map from ``S`` either way, so the pixels left alone are the same."""
        f = _check_frame(frame)
        c = _check_frame(crop_img, "crop_img")
        s = self.size
        if c.shape[0] != c.shape[1]:
            raise ValueError(f"crop_img must be square [N, N, 3] (this crop at some size), got shape {c.shape}")
        w = np.asarray(weight, np.float32)
        if w.shape != (s, s):
            raise ValueError(f"weight must be [{s}, {s}] like the crop, got shape {w.shape}")
        out = f.copy()
        rows, cols = np.flatnonzero(w.any(axis=1)), np.flatnonzero(w.any(axis=0))
        if rows.size == 0:
            return out
        a = self.to_frame_affine()
        q = np.array([[cols[0] - 1, rows[0] - 1], [cols[-1] + 2, rows[0] - 1], [cols[-1] + 2, rows[-1] + 2],
                      [cols[0] - 1, rows[-1] + 2]], np.float64)
        p = q @ a[:, :2].T + a[:, 2]
        h, wd = f.shape[:2]
        rx0, ry0 = max(0, int(math.floor(p[:, 0].min()))), max(0, int(math.floor(p[:, 1].min())))
        rx1, ry1 = min(wd, int(math.ceil(p[:, 0].max()))), min(h, int(math.ceil(p[:, 1].max())))
        if rx1 <= rx0 or ry1 <= ry0:
            return out
        # frame index (X, Y) of the region -> crop index (of the weights, and of the picture at its size)
        def region_map(crop: "AlignedCrop") -> np.ndarray:
            m = crop._index_affine(crop.to_crop_affine())
            m[:, 2] += m[:, :2] @ np.array([rx0, ry0])
            return m

        pic = self if c.shape[0] == s else self.at_size(c.shape[0])
        size = (rx1 - rx0, ry1 - ry0)
        src = _antialias(c, 1.0 / pic.scale)
        warped = cv2.warpAffine(src, region_map(pic), size, flags=PASTE_INTERPOLATION | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        wgt = cv2.warpAffine(w, region_map(self), size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]
        roi = out[ry0:ry1, rx0:rx1].astype(np.float32)
        blended = roi + (warped - roi) * wgt  # exactly roi where wgt == 0
        out[ry0:ry1, rx0:rx1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out


# --------------------------------------------------------------------------------------
# The mouth mask
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MouthMask:
    """The re-rendered region of one crop: ``hard`` ``[S, S]`` 0/1 (hidden from the model),
    ``soft`` ``[S, S]`` in [0, 1] (paste weights, 0 wherever ``hard`` is 0), ``polygon`` in crop
    pixels."""

    hard: np.ndarray
    soft: np.ndarray
    polygon: np.ndarray

    def latent(self, factor: int) -> np.ndarray:
        """The model's mask input: a latent pixel is masked if any of its pixels is."""
        s = self.hard.shape[0]
        return self.hard.reshape(s // factor, factor, s // factor, factor).max(axis=(1, 3)).astype(np.float32)


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def mouth_polygon(kp_crop: FaceKeypoints, lip_margin: float = 0.1, side_margin: float = 0.15,
                  min_half_width: float = 0.55, jaw_offset: float = 0.1) -> np.ndarray:
    """The mask polygon (crop pixels) from keypoints already in crop coordinates.

    The convex hull of: the outer lips pushed out from their centre by ``lip_margin`` (up/down)
    and ``side_margin`` (sideways) inter-ocular distances ``d``; two points on the mouth line at
    least ``min_half_width * d`` either side of the mouth centre (a rounded mouth in the source
    must leave room for a spread one); and the jaw-line points below the mouth within that width
    (plus 0.2 d), pushed ``jaw_offset * d`` away from the mouth (room for the chin to drop when
    the jaw opens). Margins scale with ``d``, not with the mouth, so the mask's size does not
    follow what the source mouth is saying."""
    d = kp_crop.eye_distance
    lo = kp_crop.lips_outer
    c = lo.mean(0)
    dv = lo - c
    n = dv / np.maximum(np.linalg.norm(dv, axis=1, keepdims=True), 1e-9)
    grown = lo + n * d * np.array([side_margin, lip_margin])
    u = kp_crop.mouth_corners[1] - kp_crop.mouth_corners[0]
    u = u / max(float(np.linalg.norm(u)), 1e-9)
    half = max(0.5 * kp_crop.mouth_width + side_margin * d, min_half_width * d)
    mc = kp_crop.mouth_corners.mean(0)
    sides = np.stack([mc - half * u, mc + half * u])
    jaw = kp_crop.jaw
    along = (jaw - mc) @ u
    down = (jaw - mc) @ np.array([-u[1], u[0]])
    near = jaw[(np.abs(along) <= half + 0.2 * d) & (down > 0)]
    pts = [grown, sides]
    if len(near):
        dj = near - c
        pts.append(near + dj / np.maximum(np.linalg.norm(dj, axis=1, keepdims=True), 1e-9) * jaw_offset * d)
    return _hull(np.concatenate(pts))


def mouth_mask_for(kp_crop: FaceKeypoints, size: int, feather: float = 0.05) -> MouthMask:
    """Rasterise ``mouth_polygon`` into a ``MouthMask`` of ``size`` pixels; the soft mask ramps
    from 0 at the polygon's edge to 1 over ``feather * size`` pixels inside it (smoothstep)."""
    poly = mouth_polygon(kp_crop)
    hard = np.zeros((size, size), np.uint8)
    # pixel centres inside the polygon (continuous coords: pixel j's centre at j + 0.5)
    cv2.fillPoly(hard, [np.round((poly - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return MouthMask(hard=hard.astype(np.float32), soft=soft_mask(hard, feather), polygon=poly)


def soft_mask(hard: np.ndarray, feather: float = 0.05) -> np.ndarray:
    """Paste weights inside a hard mask ``[S, S]`` (0/1): a smoothstep from 0 at its edge to 1
    ``feather * S`` pixels inside (distance transform); 0 wherever ``hard`` is 0."""
    h = (np.asarray(hard) > 0).astype(np.uint8)
    dist = cv2.distanceTransform(h, cv2.DIST_L2, 5)  # pixels to the nearest unmasked pixel
    t = np.clip((dist - 0.5) / max(feather * h.shape[0], 1.0), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32) * h


# The edge match (``match_edge``): the Gaussian's sigma and the ring's width, in pixels of a 128 px
# crop (scaled with the crop's side)
EDGE_MATCH_SIGMA = 5.0 / 128
EDGE_MATCH_RING = 10.0 / 128
EDGE_MATCH_LIMIT = 16.0  # levels: ring pixels further off than this are left out
EDGE_MATCH_SIDE = 128  # the correction is smooth: a larger crop's is made at this side and enlarged


def match_edge(gen: np.ndarray, image: np.ndarray, hard: np.ndarray, sigma: float = EDGE_MATCH_SIGMA,
               ring: float = EDGE_MATCH_RING, limit: float = EDGE_MATCH_LIMIT) -> np.ndarray:
    """A generated crop ``gen`` matched to the input crop ``image`` (both ``[S, S, 3]`` uint8) at the
    edge of the hard mask ``[S, S]``: their difference, measured only in a ring of ``ring * S``
    pixels just outside the mask (pixels the model was shown; those where it is off by more than
    ``limit`` levels on a channel left out: edges, not shading), is smoothed by a normalised Gaussian
    of ``sigma * S`` pixels (a square kernel cut at 2 sigma on each axis) and added to ``gen``. Inside
    the mask the correction reaches 2 sigma past its edge (2.8 on a diagonal): the colour and shading
    the model drew at the seam are brought to the frame's; the mouth itself is left as drawn. Where
    the ring is empty (no mask, or a mask that fills the crop) ``gen`` comes back unchanged, as it
    does where it equals ``image`` in the ring. Pixels outside the mask change too; the paste never
    reads them. A crop larger than ``EDGE_MATCH_SIDE`` has its correction made at that side (area
    shrink) and enlarged (bilinear): the same smooth field at a sixteenth of the work for 512 px."""
    h = np.asarray(hard) > 0
    s = h.shape[0]
    if not h.any():
        return gen
    if s <= EDGE_MATCH_SIDE:
        fill = _edge_fill(gen, image, h, sigma * s, ring * s, limit)
    else:
        n = EDGE_MATCH_SIDE
        small = [cv2.resize(x, (n, n), interpolation=cv2.INTER_AREA) for x in (gen, image, h.astype(np.float32))]
        fill = _edge_fill(small[0], small[1], small[2] > 0.5, sigma * n, ring * n, limit)
        if fill is not None:
            fill = cv2.resize(fill, (s, s), interpolation=cv2.INTER_LINEAR)
    if fill is None:
        return gen
    out = np.add(gen, fill, dtype=np.float32)
    return np.clip(np.rint(out, out=out), 0, 255, out=out).astype(np.uint8)


def _edge_fill(gen: np.ndarray, image: np.ndarray, h: np.ndarray, sig: float, ring: float,
               limit: float) -> np.ndarray | None:
    """``match_edge``'s correction ``[S, S, 3]`` float32 at the crop's own side (``None``: none)."""
    s = h.shape[0]
    sig = max(sig, 0.5)
    rad = max(int(round(ring)), 1)
    k = 2 * int(math.ceil(2.0 * sig)) + 1  # the Gaussian cut at 2 sigma: the reach past the ring
    ys, xs = np.flatnonzero(h.any(axis=1)), np.flatnonzero(h.any(axis=0))
    if ys.size == 0:
        return None
    m = rad + k // 2 + 1
    y0, y1, x0, x1 = max(0, ys[0] - m), min(s, ys[-1] + m + 1), max(0, xs[0] - m), min(s, xs[-1] + m + 1)
    hh = h[y0:y1, x0:x1].astype(np.uint8)
    grown = cv2.dilate(hh, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rad + 1, 2 * rad + 1)))
    d = image[y0:y1, x0:x1].astype(np.float32) - gen[y0:y1, x0:x1].astype(np.float32)
    # the ring outside the mask, less the pixels that differ by more than ``limit``: an edge the model
    # drew a pixel off (hair, jaw line, nostril) is not a shading to carry in
    a = np.abs(d)
    off = np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])  # (a.max(axis=-1) is slower)
    w = ((grown > hh) & (off <= limit)).astype(np.float32)
    if not w.any():
        return None
    d *= w[..., None]
    num = cv2.GaussianBlur(d, (k, k), sig, borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(w, (k, k), sig, borderType=cv2.BORDER_CONSTANT)
    fill = np.zeros(h.shape + (3,), np.float32)
    fill[y0:y1, x0:x1] = num / np.maximum(den, np.float32(1e-3))[..., None]  # fades out where the ring's weight ends
    return fill


# The mouth's colour limit (``GreenLimit``, ``limit_green``): the box round the lips (outer-lip
# bounds widened by this x mouth width on every side, as ``face_quality``'s lip box), the levels of
# G - R allowed above the person's own 99.9th percentile there (as measure 8), and the ramp at the
# box's edge (x crop side)
GREEN_BOX_WIDEN = 0.25
GREEN_LEVELS = 4
GREEN_PERCENTILE = 99.9
GREEN_FEATHER = 0.03
# the luma-keeping step that takes G - R down by one level: red up, green down (Rec. 601 weights)
_WARM = np.array([0.587, -0.299, 0.0], np.float32) / np.float32(0.886)


def green_minus_red_histogram(px: np.ndarray) -> np.ndarray:
    """Histogram ``[511]`` of ``G - R`` over the RGB ``uint8`` pixels ``px`` (bin ``d + 255``)."""
    d = px[..., 1].astype(np.int16) - px[..., 0].astype(np.int16) + 255
    return np.bincount(d.ravel(), minlength=511)


def lip_box(kp_crop: FaceKeypoints, size: int, widen: float = GREEN_BOX_WIDEN) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` crop pixels of the box round the outer lips, widened by ``widen`` x the
    mouth's width on every side and cut to the crop; ``None`` where nothing of it is in the crop."""
    lips = kp_crop.lips_outer
    m = widen * kp_crop.mouth_width
    x0, y0 = (int(math.floor(max(v, 0.0))) for v in lips.min(0) - m)
    x1, y1 = (int(math.ceil(min(v, float(size)))) for v in lips.max(0) + m)
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


class GreenLimit:
    """How green a stream's mouth may be drawn: the person's own ``G - R`` over the lip box of every
    input crop seen so far (a histogram, in frame order), its 99.9th percentile plus ``levels``.

    Lips, skin, teeth and the inside of a mouth are red over green, each person by their own margin
    (BENCHMARKS.md section 6 has the percentile on its real clips), and the general model draws an
    open mouth as a grey-green band above it.
    ``see(image, kp_crop)`` adds one input crop and returns the limit for its frame (``None`` where
    its lip box is outside the crop); ``reset()`` starts a new stream. Frame order only: a stream cut
    into any pieces gets the same limits."""

    def __init__(self, levels: float = GREEN_LEVELS, widen: float = GREEN_BOX_WIDEN):
        self.levels, self.widen = float(levels), float(widen)
        self.reset()

    def reset(self) -> None:
        self.hist = np.zeros(511, np.int64)  # bin G - R + 255

    def see(self, image: np.ndarray, kp_crop: FaceKeypoints) -> float | None:
        box = lip_box(kp_crop, image.shape[0], self.widen)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        self.hist += green_minus_red_histogram(image[y0:y1, x0:x1])
        c = np.cumsum(self.hist)
        return float(np.searchsorted(c, GREEN_PERCENTILE / 100.0 * c[-1]) - 255) + self.levels


def limit_green(gen: np.ndarray, kp_crop: FaceKeypoints, limit: float | None, widen: float = GREEN_BOX_WIDEN,
                feather: float = GREEN_FEATHER) -> np.ndarray:
    """A generated crop ``gen`` (``[S, S, 3]`` RGB uint8) whose mouth is no greener than ``limit``
    (``GreenLimit``: the person's own): in the box round the lips (``lip_box``; ``kp_crop``: the
    frame's keypoints in crop pixels), a pixel whose ``G - R`` is above the limit has red raised and
    green lowered, its luma kept (Rec. 601), until it is at the limit: a grey-green band drawn where
    teeth and the inside of the mouth belong takes the person's own warmth. Every pixel at or under
    the limit, and every pixel outside the box, comes back bit-identical; the step ramps in over
    ``feather * S`` pixels at the box's edge. ``limit`` ``None``: ``gen`` as it is."""
    if limit is None:
        return gen
    s = gen.shape[0]
    box = lip_box(kp_crop, s, widen)
    if box is None:
        return gen
    x0, y0, x1, y1 = box
    b = gen[y0:y1, x0:x1]
    over = b[..., 1].astype(np.int16) - b[..., 0] - np.float32(limit)
    ys, xs = np.nonzero(over > 0)
    if ys.size == 0:
        return gen
    # the box's ramp: 0 at its edge to 1 at feather * S inside it (smoothstep), at the pixels over
    inside = np.minimum(np.minimum(ys + 0.5, (y1 - y0) - ys - 0.5), np.minimum(xs + 0.5, (x1 - x0) - xs - 0.5))
    t = np.clip(inside / max(feather * s, 1.0), 0.0, 1.0).astype(np.float32)
    step = over[ys, xs].astype(np.float32) * (t * t * (3.0 - 2.0 * t))
    px = b[ys, xs].astype(np.float32) + step[:, None] * _WARM
    out = gen.copy()
    out[y0 + ys, x0 + xs] = np.clip(np.rint(px), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------
# Steady crops over time
# --------------------------------------------------------------------------------------


@dataclass
class CropAligner:
    """Per frame: keypoints -> ``AlignedCrop``, smoothed with a One Euro filter
    (``lipforce_sdk.facemesh.OneEuroFilter``) over (centre, log side, angle), speed measured in
    crop sides per second, so that jitter of a few landmarks does not shake the crop and a moving
    head is followed without lag; a jump of more than ``snap`` sides (a cut) resets it."""

    size: int
    spec: CropSpec = field(default_factory=CropSpec)
    fps: float = 25.0
    min_cutoff: float = 1.0
    beta: float = 6.0
    snap: float = 0.5

    def __post_init__(self):
        from .facemesh.filters import OneEuroFilter

        self.spec = self.spec.validate()
        self._f = OneEuroFilter(self.min_cutoff, self.beta, 1.0)
        self.reset()

    def reset(self) -> None:
        self._f.reset()
        self._last: AlignedCrop | None = None
        self._n = 0

    def __call__(self, kp: FaceKeypoints) -> AlignedCrop:
        raw = AlignedCrop.from_keypoints(kp, self.size, self.spec)
        if self._last is not None and np.hypot(*(np.subtract(raw.centre, self._last.centre))) > self.snap * self._last.side:
            self.reset()
        ang = raw.angle
        if self._last is not None:  # unwrap the angle next to the last one
            ang = self._last.angle + (ang - self._last.angle + np.pi) % (2 * np.pi) - np.pi
        if self._last is None:
            self._ref = raw.side  # the unit of every component: pixels of the first crop side
        r = self._ref
        # (x, y, r log side, r angle): speeds in crop sides per second whatever the face size
        x = self._f(np.array([raw.centre[0], raw.centre[1], r * math.log(raw.side), r * ang]), self._n / self.fps,
                    scale=r)
        self._n += 1
        out = AlignedCrop((float(x[0]), float(x[1])), float(math.exp(x[2] / r)), float(x[3] / r), self.size)
        self._last = out
        return out
