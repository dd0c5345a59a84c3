"""Procedural talking faces with exact ground truth: identities, head motion, rendering, pairs.

The renderer draws a face crop as the SDK's ``FaceTracker`` would cut it (square, lips near
0.67 of the height, chin near 0.87), in NumPy: every shape is an (approximate) signed
distance field turned into pixel coverage over one pixel (analytic anti-aliasing), skin and
hair are shaded from a pseudo-3-D normal under a per-identity light. The head sways
(translation, rotation, scale about the neck), blinks and moves its gaze; the background and
the shoulders stay (the shoulders follow half of the head's translation).

The mouth is drawn last, from the mouth parameters of ``distill.visemes`` (open, spread,
round, teeth), and only inside ``lipforce_sdk.face.mouth_mask_hard(size)``: outside that
region a frame does not depend on the mouth at all, so two clips of one identity and one
motion driven by different speech are bit-identical outside the mask (``make_pair``).

Coordinates: crop units, ``(x, y)`` in ``[0, 1]`` across the crop, pixel ``j`` centred at
``(j + 0.5) / size``. "Local" coordinates are the head's own (before the pose is applied).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from lipforce_sdk.face import mouth_mask, mouth_mask_hard

from .speech import FPS, Speech
from .visemes import P, frame_params

__all__ = [
    "Identity",
    "Motion",
    "MouthGeometry",
    "Pair",
    "render_clip",
    "render_clips",
    "render_frame",
    "mouth_geometry",
    "make_pair",
    "MOUTH_BOX",
    "GEOMETRY",
    "keypoints",
    "clip_keypoints",
]

# Region of the crop that holds the mouth in every pose the renderer makes (y0, y1, x0, x1),
# crop units; mouth crops for the sync scorer are cut from here.
MOUTH_BOX = (0.56, 0.88, 0.26, 0.74)
GEOMETRY = ("gap_px", "width_px", "area_px", "teeth_px")  # columns of MouthGeometry.values

_PIVOT = (0.5, 0.72)  # the head rotates/scales about this point (the neck), crop units
_GAP = 0.085  # lip gap at open = 1, head units
_MIN_GAP_PX = 1.5  # a closed mouth still shows a dark line this thick (pixels)
_INTERIOR = np.array([0.14, 0.035, 0.04], np.float32)  # mouth interior (linear RGB in [0, 1])
_TEETH = np.array([0.93, 0.92, 0.88], np.float32)
_TONGUE = np.array([0.19, 0.045, 0.05], np.float32)  # as dark as the interior: the gap reads as one

_SKIN_TONES = np.array([
    [0.96, 0.80, 0.69], [0.91, 0.72, 0.58], [0.80, 0.59, 0.44],
    [0.66, 0.46, 0.32], [0.52, 0.35, 0.25], [0.42, 0.28, 0.20],
], np.float32)
_HAIR_COLOURS = np.array([
    [0.08, 0.06, 0.05], [0.20, 0.13, 0.08], [0.40, 0.26, 0.14], [0.62, 0.45, 0.25],
    [0.85, 0.72, 0.45], [0.55, 0.22, 0.10], [0.60, 0.60, 0.62], [0.30, 0.30, 0.32],
], np.float32)
_IRIS_COLOURS = np.array([
    [0.30, 0.18, 0.10], [0.18, 0.11, 0.07], [0.25, 0.45, 0.65], [0.30, 0.50, 0.35],
    [0.45, 0.38, 0.20], [0.40, 0.45, 0.50],
], np.float32)
_LUMA = np.array([0.299, 0.587, 0.114])
HAIR_STYLES = ("short", "long", "bob", "buzz", "curly", "fringe")


# --------------------------------------------------------------------------------------
# Identity and motion
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A seeded random face: shape, colours, hair, eyes, mouth and background.

    Build one with ``Identity.random(seed)``; all sizes are in head units (the crop side at
    scale 1). Frozen and hashable, so renders can cache per-identity layers.
    """

    seed: int
    face_center: tuple[float, float]
    face_axes: tuple[float, float]  # half width at the cheeks, half height
    jaw_taper: float  # how much narrower the face gets towards the chin
    skin: tuple[float, float, float]
    light: tuple[float, float, float]  # direction (x right, y down, z towards the camera)
    hair_style: str
    hair: tuple[float, float, float]
    hairline: float  # y of the hairline at the centre
    eye_y: float
    eye_dx: float  # half distance between the eyes
    eye_axes: tuple[float, float]
    iris: tuple[float, float, float]
    brow_y: float  # above the eye centre
    brow_thick: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float  # half width at rest
    lip_upper: float  # thickness at the centre
    lip_lower: float
    lip: tuple[float, float, float]
    shirt: tuple[float, float, float]
    bg_kind: int
    bg: tuple[tuple[float, float, float], tuple[float, float, float]]
    bg_seed: int

    @staticmethod
    def random(seed: int) -> "Identity":
        r = np.random.default_rng([int(seed), 0x1D])
        u = lambda a, b: float(r.uniform(a, b))  # noqa: E731
        t = u(0, len(_SKIN_TONES) - 1)
        i0 = int(t)
        skin = _SKIN_TONES[i0] * (1 - (t - i0)) + _SKIN_TONES[min(i0 + 1, len(_SKIN_TONES) - 1)] * (t - i0)
        skin = np.clip(skin * np.array([u(0.96, 1.04), u(0.96, 1.04), u(0.94, 1.04)]), 0, 1)
        hair = _HAIR_COLOURS[int(r.integers(len(_HAIR_COLOURS)))] * u(0.85, 1.15)
        iris = _IRIS_COLOURS[int(r.integers(len(_IRIS_COLOURS)))] * u(0.8, 1.2)
        lip_red = np.array([0.78, 0.32, 0.33])
        lip = np.clip((skin * (1 - u(0.3, 0.55)) + lip_red * u(0.3, 0.55)) * u(0.72, 0.85), 0, 1)
        lip = np.clip(lip * max(1.0, 0.25 / float(lip @ _LUMA)), 0, 1)  # lips stay well above the dark gap
        light = np.array([u(-0.6, 0.6), u(-0.7, -0.2), 1.0])
        light = light / np.linalg.norm(light)
        shirt = r.uniform(0.1, 0.9, 3)
        grey = u(0.2, 0.85)
        c1 = grey + (r.uniform(0.1, 0.9, 3) - grey) * u(0.2, 0.7)  # muted colours
        c2 = np.clip(c1 + r.uniform(-0.2, 0.2, 3), 0.05, 0.95)
        tup = lambda a: tuple(float(v) for v in np.clip(a, 0.0, 1.0))  # noqa: E731
        return Identity(
            seed=int(seed),
            face_center=(u(0.49, 0.51), u(0.47, 0.50)),
            face_axes=(u(0.26, 0.31), u(0.37, 0.41)),
            jaw_taper=u(0.10, 0.32),
            skin=tup(skin),
            light=tuple(float(v) for v in light),
            hair_style=HAIR_STYLES[int(r.integers(len(HAIR_STYLES)))],
            hair=tup(hair),
            hairline=u(0.20, 0.26),
            eye_y=u(0.41, 0.45),
            eye_dx=u(0.105, 0.13),
            eye_axes=(u(0.042, 0.055), u(0.018, 0.026)),
            iris=tup(iris),
            brow_y=u(0.045, 0.065),
            brow_thick=u(0.006, 0.012),
            brow_tilt=u(-0.01, 0.015),
            nose_len=u(0.08, 0.11),
            nose_w=u(0.028, 0.04),
            mouth_y=u(0.665, 0.69),
            mouth_w=u(0.078, 0.098),
            lip_upper=u(0.013, 0.020),
            lip_lower=u(0.017, 0.026),
            lip=tup(lip),
            shirt=tup(shirt),
            bg_kind=int(r.integers(4)),
            bg=(tup(c1), tup(c2)),
            bg_seed=int(r.integers(2**31)),
        )


@dataclass(frozen=True)
class Motion:
    """Seeded head motion: sway (translation, rotation, scale), blinks and gaze.

    Frame ``i``'s pose depends only on the seed and ``i`` (not on the clip length), so a longer
    clip starts with the same frames as a shorter one.

    Attributes:
        seed: everything below is drawn from it.
        amount: scales the sway (0 = still head).
    """

    seed: int
    amount: float = 1.0
    fps: float = FPS

    @staticmethod
    def random(seed: int, amount: float = 1.0) -> "Motion":
        return Motion(int(seed), float(amount))

    def _rng(self, tag: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0x40, tag])

    def pose(self, num_frames: int, start: int = 0) -> np.ndarray:
        """``[F, 4]`` float64: translation x, y (crop units), rotation (radians), scale."""
        t = (np.arange(start, start + num_frames) / self.fps)[:, None]  # [F, 1] seconds
        r = self._rng(1)
        amp = np.array([0.014, 0.010, math.radians(3.0), 0.025]) * self.amount
        out = np.zeros((num_frames, 4))
        for c in range(4):
            freqs = r.uniform(0.08, 0.6, 3)
            phases = r.uniform(0, 2 * np.pi, 3)
            weights = r.uniform(0.3, 1.0, 3)
            weights = weights / weights.sum()
            out[:, c] = amp[c] * (weights * np.sin(2 * np.pi * freqs * t + phases)).sum(axis=1)
        out[:, 3] += 1.0
        return out

    def blink(self, num_frames: int, start: int = 0) -> np.ndarray:
        """``[F]`` eyelid closure in [0, 1] (1 = closed)."""
        end = start + num_frames
        r = self._rng(2)
        out = np.zeros(end)
        t = float(r.uniform(0.3, 3.0))  # seconds of the first blink
        while t * self.fps < end + 10:
            dur = float(r.uniform(0.12, 0.22))
            centre = t * self.fps
            i = np.arange(end)
            x = np.abs(i + 0.5 - centre) / (0.5 * dur * self.fps)
            out = np.maximum(out, np.clip(1.0 - x**2, 0.0, 1.0) ** 0.7)
            t += float(r.uniform(1.5, 5.0))
        return out[start:end]

    def gaze(self, num_frames: int, start: int = 0) -> np.ndarray:
        """``[F, 2]`` iris offset (fractions of the eye's half axes), piecewise still with saccades."""
        end = start + num_frames
        r = self._rng(3)
        out = np.zeros((end, 2))
        i, g = 0, np.zeros(2)
        while i < end:
            n = int(r.integers(12, 60))
            out[i: i + n] = g
            i += n
            g = np.array([r.uniform(-0.35, 0.35), r.uniform(-0.15, 0.15)])
        return out[start:end]


# --------------------------------------------------------------------------------------
# Drawing helpers (all float32 [S, S] / [S, S, 3])
# --------------------------------------------------------------------------------------


def _cov(d_px: np.ndarray) -> np.ndarray:
    """Pixel coverage of a shape from its signed distance in pixels (> 0 outside)."""
    return np.clip(0.5 - d_px, 0.0, 1.0)


def _ellipse_d(x, y, cx, cy, ax, ay):
    """Approximate signed distance to an ellipse (first order, exact on the boundary)."""
    dx, dy = (x - cx) / ax, (y - cy) / ay
    r = np.sqrt(dx * dx + dy * dy) + 1e-9
    g = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2) / r + 1e-9
    return (r - 1.0) / g, dx, dy


def _over(img: np.ndarray, colour, alpha: np.ndarray) -> None:
    """In place: ``img = img * (1 - alpha) + colour * alpha``; colour is [3] or [S, S, 3]."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += np.asarray(colour, np.float32) * a


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@lru_cache(maxsize=64)
def _background(identity: Identity, size: int) -> np.ndarray:
    """The static background ``[S, S, 3]`` float32 (read-only, shared)."""
    r = np.random.default_rng(identity.bg_seed)
    u = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(u, u, indexing="ij")
    c1, c2 = np.array(identity.bg[0], np.float32), np.array(identity.bg[1], np.float32)
    kind = identity.bg_kind
    if kind == 0:  # linear gradient
        ang = r.uniform(0, 2 * np.pi)
        t = 0.5 + 0.7 * ((x - 0.5) * np.cos(ang) + (y - 0.5) * np.sin(ang))
    elif kind == 1:  # soft stripes
        ang = r.uniform(0, np.pi)
        f = r.uniform(3, 9)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * f * (x * np.cos(ang) + y * np.sin(ang)) + r.uniform(0, 6.3))
    elif kind == 2:  # blurred blobs
        t = np.zeros_like(x)
        for _ in range(6):
            cx, cy, s = r.uniform(0, 1), r.uniform(0, 1), r.uniform(0.1, 0.35)
            t += r.uniform(0.3, 1.0) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
        t = t / max(float(t.max()), 1e-6)
    else:  # a wall and a floor
        t = (y > r.uniform(0.75, 0.9)).astype(np.float32) * 0.8 + 0.2 * y
    t = np.clip(t, 0.0, 1.0)[..., None]
    img = (c1 * (1 - t) + c2 * t).astype(np.float32)
    img *= (1.0 - 0.25 * ((x - 0.5) ** 2 + (y - 0.5) ** 2))[..., None]  # light vignette
    grain = np.random.default_rng(identity.bg_seed + 1).normal(0, 0.012, (size, size, 1)).astype(np.float32)
    out = np.clip(img + grain, 0.0, 1.0).astype(np.float32)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    u = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(u, u, indexing="ij")
    return x, y


@lru_cache(maxsize=8)
def _mask_hard(size: int) -> np.ndarray:
    m = mouth_mask_hard(size) > 0
    m.flags.writeable = False
    return m


def _local(pose: np.ndarray, size: int, frac: float = 1.0, rotate: bool = True):
    """Local (head) coordinates of every pixel under ``pose`` and the pixels per head unit."""
    x, y = _grid(size)
    tx, ty, rot, sc = float(pose[0]) * frac, float(pose[1]) * frac, float(pose[2]), float(pose[3])
    if not rotate:
        rot, sc = 0.0, 1.0
    px, py = _PIVOT
    dx, dy = x - px - tx, y - py - ty
    c, s = math.cos(-rot), math.sin(-rot)
    lx = (c * dx - s * dy) / sc + px
    ly = (s * dx + c * dy) / sc + py
    return lx.astype(np.float32), ly.astype(np.float32), sc * size


def _to_crop(pose: np.ndarray, lx: float, ly: float) -> tuple[float, float]:
    """Crop coordinates of a head-local point under ``pose``."""
    tx, ty, rot, sc = (float(v) for v in pose)
    px, py = _PIVOT
    dx, dy = (lx - px) * sc, (ly - py) * sc
    c, s = math.cos(rot), math.sin(rot)
    return c * dx - s * dy + px + tx, s * dx + c * dy + py + ty


def _window(pose: np.ndarray, size: int, x0: float, y0: float, x1: float, y1: float, pad: int = 2):
    """Pixel slices ``(rows, cols)`` covering the head-local rectangle ``[x0, x1] x [y0, y1]``."""
    pts = [_to_crop(pose, a, b) for a in (x0, x1) for b in (y0, y1)]
    xs = [p[0] * size for p in pts]
    ys = [p[1] * size for p in pts]
    c0 = min(max(int(math.floor(min(xs))) - pad, 0), size)
    c1 = min(max(int(math.ceil(max(xs))) + pad, 0), size)
    r0 = min(max(int(math.floor(min(ys))) - pad, 0), size)
    r1 = min(max(int(math.ceil(max(ys))) + pad, 0), size)
    return slice(r0, r1), slice(c0, c1)


# --------------------------------------------------------------------------------------
# The face
# --------------------------------------------------------------------------------------


class _Canvas:
    """A frame being drawn: the image, the head-local coordinates of its pixels, the pose."""

    def __init__(self, img: np.ndarray, pose: np.ndarray, size: int):
        self.img, self.pose, self.size = img, pose, size
        self.x, self.y, self.ppu = _local(pose, size)  # ppu: pixels per head unit

    def win(self, x0: float, y0: float, x1: float, y1: float):
        """(image view, x, y) over the pixels that hold the head-local rectangle."""
        r, c = _window(self.pose, self.size, x0, y0, x1, y1)
        return self.img[r, c], self.x[r, c], self.y[r, c]


def _rbox_d(x, y, cx, cy, hw, hh, rad):
    """Signed distance to a rounded box (centre, half sizes, corner radius)."""
    qx = np.abs(x - cx) - hw + rad
    qy = np.abs(y - cy) - hh + rad
    out = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return out + np.minimum(np.maximum(qx, qy), 0.0) - rad


def _head_d(idt: Identity, x, y):
    """Signed distance (head units) of the egg-shaped head and its shading normal."""
    cx, cy = idt.face_center
    ax, ay = idt.face_axes
    below = _smoothstep(cy - 0.05, cy + ay, y)
    axy = ax * (1.0 - idt.jaw_taper * below**1.3)
    d, dx, dy = _ellipse_d(x, y, cx, cy, axy, ay)
    r2 = np.clip(dx * dx + dy * dy, 0.0, 1.0)
    nz = np.sqrt(1.0 - 0.85 * r2)
    return d, dx, dy, nz


def _shade(idt: Identity, nx, ny, nz, ambient=0.45, diffuse=0.6):
    lx, ly, lz = idt.light
    n = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-9
    lam = np.clip((nx * lx + ny * ly + nz * lz) / n, 0.0, 1.0)
    return ambient + diffuse * lam


def _strands(x, y, cx, amp):
    return 1.0 + amp * np.sin((x - cx) * 260.0 + 3.0 * np.sin(y * 40.0))


def _draw_hair_back(cv: _Canvas, idt: Identity) -> None:
    cx, cy = idt.face_center
    ax, ay = idt.face_axes
    hair = np.array(idt.hair, np.float32)
    st = idt.hair_style
    if st not in ("long", "bob", "curly"):
        return
    img, x, y = cv.win(cx - ax - 0.12, cy - ay - 0.1, cx + ax + 0.12, cy + ay + 0.25)
    if st == "long":
        d = _rbox_d(x, y, cx, cy + 0.08, ax + 0.05, ay * 0.55 + 0.1, 0.06)
        d = np.minimum(d, _ellipse_d(x, y, cx, cy - 0.04, ax + 0.05, ay * 0.8)[0])
    elif st == "bob":
        d = _rbox_d(x, y, cx, cy + 0.02, ax + 0.045, 0.2, 0.07)
        d = np.minimum(d, _ellipse_d(x, y, cx, cy - 0.04, ax + 0.045, ay * 0.8)[0])
    else:  # curly
        dd, dx, dy = _ellipse_d(x, y, cx, cy - 0.07, ax + 0.08, ay * 0.85)
        d = dd - 0.012 * np.sin(np.arctan2(dy, dx) * 17.0)
    shade = (0.6 + 0.3 * _smoothstep(cy + 0.35, cy - 0.3, y)) * _strands(x, y, cx, 0.10)
    _over(img, hair[None, None, :] * shade[..., None], _cov(d * cv.ppu))


def _draw_neck_torso(cv: _Canvas, idt: Identity) -> None:
    cx, cy = idt.face_center
    ax, ay = idt.face_axes
    skin = np.array(idt.skin, np.float32)
    nw = ax * 0.55
    img, x, y = cv.win(cx - nw - 0.02, cy + 0.05, cx + nw + 0.02, 1.6)
    d = np.maximum(np.abs(x - cx) - nw, cy + 0.1 - y)
    shade = 0.62 + 0.25 * _smoothstep(cy + ay - 0.02, cy + ay + 0.15, y)  # shadow under the chin
    _over(img, skin[None, None, :] * shade[..., None], _cov(d * cv.ppu))
    # shoulders: half the head's translation, no rotation
    tx, ty, tppu = _local(cv.pose, cv.size, frac=0.5, rotate=False)
    r0 = int(0.6 * cv.size)
    tx, ty, img = tx[r0:], ty[r0:], cv.img[r0:]
    shirt = np.array(idt.shirt, np.float32)
    dd, ddx, _ = _ellipse_d(tx, ty, 0.5, 1.16, 0.46, 0.24)
    collar = _ellipse_d(tx, ty, 0.5, 0.91, nw * 1.25, 0.06)[0]
    d_shirt = np.maximum(dd, -collar)
    sh = (0.75 + 0.25 * np.clip(-ddx * 0.5 + 0.6, 0, 1)).astype(np.float32)
    _over(img, shirt[None, None, :] * sh[..., None], _cov(d_shirt * tppu))


def _draw_head(cv: _Canvas, idt: Identity) -> None:
    cx, cy = idt.face_center
    ax, ay = idt.face_axes
    skin = np.array(idt.skin, np.float32)
    for side in (-1.0, 1.0):  # ears
        ex, ey = cx + side * (ax - 0.004), idt.eye_y + 0.035
        img, x, y = cv.win(ex - 0.03, ey - 0.052, ex + 0.03, ey + 0.052)
        d, dx, dy = _ellipse_d(x, y, ex, ey, 0.028, 0.05)
        lit = _shade(idt, side * np.clip(dx, -1, 1), dy * 0.5, np.full_like(x, 0.4))
        inner = np.exp(-((dx * 1.6) ** 2 + (dy * 1.4) ** 2))
        _over(img, skin[None, None, :] * (lit * (1.0 - 0.25 * inner))[..., None] * 0.92, _cov(d * cv.ppu))
    img, x, y = cv.win(cx - ax - 0.01, cy - ay - 0.01, cx + ax + 0.01, cy + ay + 0.01)
    d, dx, dy, nz = _head_d(idt, x, y)
    lit = _shade(idt, dx, dy, nz)
    # nose: a lit ridge, a shadow on the side away from the light and under the tip
    ny0 = idt.eye_y + 0.01
    ny1 = ny0 + idt.nose_len
    along = _smoothstep(ny0, ny1, y) * _smoothstep(ny1 + 0.02, ny1 - 0.01, y)
    side = (x - cx) / idt.nose_w
    away = -1.0 if idt.light[0] >= 0 else 1.0
    lit = lit + 0.10 * along * np.exp(-(side * 1.8) ** 2) - 0.12 * along * np.exp(-2.0 * (side - 0.9 * away) ** 2)
    lit = lit - 0.16 * np.exp(-(((x - cx) / (idt.nose_w * 1.1)) ** 2 + ((y - ny1 - 0.012) / 0.012) ** 2))
    for s in (-1.0, 1.0):  # eye sockets
        lit = lit - 0.06 * np.exp(-(((x - cx - s * idt.eye_dx) / 0.06) ** 2 + ((y - idt.eye_y) / 0.035) ** 2))
    blush = np.exp(-(((np.abs(x - cx) - idt.eye_dx - 0.01) / 0.045) ** 2 + ((y - idt.eye_y - 0.1) / 0.035) ** 2))
    col = skin[None, None, :] * lit[..., None]
    col = col * (1 - 0.12 * blush[..., None]) + np.array([0.85, 0.35, 0.35], np.float32) * 0.12 * blush[..., None]
    # philtrum and the chin (static: the mouth layer draws the lips over them)
    phil = np.exp(-(((x - cx) / 0.012) ** 2)) * _smoothstep(ny1 + 0.01, ny1 + 0.025, y) * _smoothstep(
        idt.mouth_y, idt.mouth_y - 0.03, y)
    chin = np.exp(-(((x - cx) / 0.06) ** 2 + ((y - cy - ay + 0.045) / 0.025) ** 2))
    col = col * (1.0 - 0.07 * phil[..., None] + 0.05 * chin[..., None])
    _over(img, col.astype(np.float32), _cov(d * cv.ppu))
    for s in (-1.0, 1.0):  # nostrils
        nx_ = cx + s * idt.nose_w * 0.55
        img, x, y = cv.win(nx_ - 0.02, ny1 - 0.01, nx_ + 0.02, ny1 + 0.015)
        dn = _ellipse_d(x, y, nx_, ny1 + 0.004, idt.nose_w * 0.32, 0.007)[0]
        _over(img, skin * 0.35, 0.8 * _cov(dn * cv.ppu))


def _draw_eyes(cv: _Canvas, idt: Identity, blink: float, gaze: np.ndarray) -> None:
    cx, _ = idt.face_center
    ea, eb = idt.eye_axes
    skin = np.array(idt.skin, np.float32)
    hair = np.array(idt.hair, np.float32)
    white0 = np.array([0.93, 0.91, 0.88], np.float32)
    for s in (-1.0, 1.0):
        ex, ey = cx + s * idt.eye_dx, idt.eye_y
        by = ey - eb - idt.brow_y
        img, x, y = cv.win(ex - ea * 1.45, by - 0.03, ex + ea * 1.45, ey + eb + 0.006)
        ppu = cv.ppu
        d_eye = _ellipse_d(x, y, ex, ey, ea, eb)[0]
        lid = ey - eb + 2.0 * eb * float(blink)  # the upper lid comes down with the blink
        a = _cov(np.maximum(d_eye, lid - y) * ppu)
        white = white0 * (0.85 + 0.15 * _smoothstep(ey - eb, ey + eb, y))[..., None]
        _over(img, white, a)
        ir = eb * 1.05
        ix, iy = ex + float(gaze[0]) * ea * 0.5, ey + float(gaze[1]) * eb
        ring = np.clip(np.sqrt((x - ix) ** 2 + (y - iy) ** 2) / ir, 0, 1)
        iris = np.array(idt.iris, np.float32)[None, None, :] * (1.1 - 0.5 * ring)[..., None]
        _over(img, iris, a * _cov((ring - 1.0) * ir * ppu))
        _over(img, np.array([0.03, 0.03, 0.04], np.float32), a * _cov((ring - 0.42) * ir * ppu))
        d_hl = _ellipse_d(x, y, ix + ir * 0.35, iy - ir * 0.35, ir * 0.2, ir * 0.2)[0]
        _over(img, np.array([1.0, 1.0, 1.0], np.float32), 0.8 * a * _cov(d_hl * ppu))
        # the lid (skin) above its edge, the lash line along the edge, the eye outline
        lid_a = _cov(np.maximum(d_eye, y - lid) * ppu) * np.float32(blink > 0.02)
        _over(img, skin * 0.85, lid_a)
        lash = np.clip(1.0 - np.abs(d_eye) * ppu / 1.1, 0, 1) * (y < ey + 0.2 * eb) * np.float32(blink < 0.9)
        lid_line = np.clip(1.0 - np.abs(y - lid) * ppu / 1.2, 0, 1) * (d_eye < 0.002)
        _over(img, hair * 0.3 + 0.02, 0.85 * np.maximum(lash, lid_line).astype(np.float32))
        crease = np.exp(-(((y - (ey - eb - 0.012)) / 0.005) ** 2)) * np.exp(-(((x - ex) / (ea * 0.9)) ** 2))
        _over(img, skin * 0.6, 0.35 * crease.astype(np.float32))
        # brow: a thick tapered arc
        bw = ea * 1.3
        t = (x - ex - s * 0.006) / bw
        yc = by - 0.012 * (1.0 - t * t) + s * idt.brow_tilt * t
        th = idt.brow_thick * (1.0 - 0.45 * np.clip(s * t, 0, 1))
        d_brow = np.maximum(np.abs(y - yc) - th, (np.abs(t) - 1.0) * bw)
        _over(img, hair * 0.8 + skin * 0.1, 0.9 * _cov(d_brow * ppu))


def _draw_hair_front(cv: _Canvas, idt: Identity) -> None:
    cx, cy = idt.face_center
    ax, ay = idt.face_axes
    hair = np.array(idt.hair, np.float32)
    st = idt.hair_style
    img, x, y = cv.win(cx - ax - 0.06, cy - ay - 0.08, cx + ax + 0.06, cy + 0.35)
    if st == "buzz":
        d_cap, dx, dy = _ellipse_d(x, y, cx, cy - 0.005, ax + 0.006, ay + 0.006)
    else:
        d_cap, dx, dy = _ellipse_d(x, y, cx, cy - 0.025, ax + 0.022, ay + 0.04)
    # the hairline: high in the middle, down to the temples at the sides
    xn = (x - cx) / ax
    line = idt.hairline + 0.09 * xn**2
    if st == "fringe":
        line = line + 0.05 * np.exp(-(xn / 0.6) ** 2) + 0.01 * np.sin(xn * 25.0)
    d = np.maximum(d_cap, y - line)
    if st in ("long", "bob"):
        drop = 0.3 if st == "long" else 0.16
        for s in (-1.0, 1.0):  # locks falling along the sides of the face
            d = np.minimum(d, _rbox_d(x, y, cx + s * (ax + 0.012), cy - 0.12 + 0.5 * drop, 0.024, 0.12 + 0.5 * drop, 0.0235))
    dx, dy = np.clip(dx, -0.8, 0.8), np.clip(dy, -0.8, 0.8)
    lit = _shade(idt, dx, dy, np.sqrt(np.clip(1.0 - 0.8 * (dx * dx + dy * dy), 0.05, 1)))
    amp = 0.04 if st == "buzz" else 0.12
    col = hair[None, None, :] * (lit * _strands(x, y, cx, amp))[..., None]
    alpha = _cov(d * cv.ppu) * (0.8 if st == "buzz" else 1.0)
    _over(img, col.astype(np.float32), alpha.astype(np.float32))


# --------------------------------------------------------------------------------------
# The mouth
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MouthShape:
    cx: float
    cy: float  # centre of the lip gap
    w: float  # half width of the lips (corner to corner)
    wi: float  # half width of the gap
    hi: float  # half height of the gap
    tu: float  # upper lip thickness at the centre
    tl: float
    teeth_h: float  # height of the visible upper teeth, from the top of the gap


def _mouth_shape(idt: Identity, params: np.ndarray, ppu: float) -> _MouthShape:
    o, sp, rd, te = (float(np.clip(v, 0.0, 1.0)) for v in params[:4])
    g = o * _GAP
    hi = max(0.5 * g, 0.5 * _MIN_GAP_PX / ppu)
    w = idt.mouth_w * (1.0 + 0.22 * sp - 0.30 * rd)
    return _MouthShape(
        cx=idt.face_center[0],
        cy=idt.mouth_y + 0.25 * g,
        w=w,
        wi=w * (0.88 - 0.22 * rd),
        hi=hi,
        tu=idt.lip_upper * (1.0 + 0.35 * rd),
        tl=idt.lip_lower * (1.0 + 0.30 * rd),
        teeth_h=te * min(g, 0.6 * _GAP) * 0.55,  # no teeth in a closed mouth's lip line
    )


def _draw_mouth(cv: _Canvas, idt: Identity, params: np.ndarray) -> None:
    """Lips, gap, teeth and tongue (the caller keeps only the mask region)."""
    m = _mouth_shape(idt, params, cv.ppu)
    ppu = cv.ppu
    img, x, y = cv.win(m.cx - m.w * 1.1 - 0.03, m.cy - m.hi - m.tu * 1.3 - 0.01,
                       m.cx + m.w * 1.1 + 0.03, m.cy + m.hi + m.tl + 0.05)
    skin = np.array(idt.skin, np.float32)
    lip = np.array(idt.lip, np.float32)
    xo = (x - m.cx) / m.w  # [-1, 1] across the lips
    xi = (x - m.cx) / m.wi  # [-1, 1] across the gap
    so = np.sqrt(np.clip(1.0 - xo * xo, 0.0, 1.0))
    si = np.sqrt(np.clip(1.0 - xi * xi, 0.0, 1.0))
    gap_top = m.cy - m.hi * si
    gap_bot = m.cy + m.hi * si
    bow = 1.0 - 0.35 * np.exp(-((xo / 0.12) ** 2)) + 0.12 * np.exp(-(((np.abs(xo) - 0.25) / 0.15) ** 2))
    top = m.cy - m.hi * so - m.tu * so**0.6 * bow
    bot = m.cy + m.hi * so + m.tl * so**0.5
    # soft shadow under the lower lip and at the corners (skin darkening)
    sh = np.exp(-(((y - bot - 0.012) / 0.01) ** 2)) * np.exp(-((xo / 0.9) ** 2))
    for s in (-1.0, 1.0):
        sh = sh + 0.8 * np.exp(-(((x - m.cx - s * m.w * 1.02) / 0.01) ** 2 + ((y - m.cy) / 0.012) ** 2))
    _over(img, skin * 0.5, (0.18 * np.clip(sh, 0, 1)).astype(np.float32))
    # lips: between the outer contours, inside the corners; the lower lip has a highlight
    d_lips = np.maximum(np.maximum(top - y, y - bot), (np.abs(xo) - 1.0) * m.w)
    upper = (y < m.cy).astype(np.float32)
    hl = np.exp(-(((y - (m.cy + m.hi * so + 0.45 * m.tl)) / (m.tl * 0.5 + 1e-4)) ** 2)) * so
    lshade = 0.85 * upper + (1.0 - upper) * (1.0 + 0.18 * hl)
    _over(img, lip[None, None, :] * lshade[..., None].astype(np.float32), _cov(d_lips * ppu))
    # the gap: dark interior, tongue at the bottom, upper teeth at the top
    d_gap = np.maximum(np.maximum(gap_top - y, y - gap_bot), (np.abs(xi) - 1.0) * m.wi)
    a_gap = _cov(d_gap * ppu)
    depth = np.clip(1.0 - 0.4 * (xi * xi), 0.5, 1.0)
    _over(img, _INTERIOR[None, None, :] * depth[..., None], a_gap)
    d_tongue = _ellipse_d(x, y, m.cx, m.cy + m.hi * 1.05, m.wi * 0.6, m.hi * 0.55 + 1e-4)[0]
    _over(img, _TONGUE, a_gap * _cov(d_tongue * ppu) * float(np.clip(m.hi * 2 / _GAP * 1.5 - 0.4, 0, 1)))
    if m.teeth_h > 0:
        teeth_edge = m.cy - m.hi + m.teeth_h * (0.6 + 0.4 * si)
        a_teeth = a_gap * _cov((y - teeth_edge) * ppu)
        tooth = 0.92 + 0.08 * np.cos((x - m.cx) / (0.018 * m.w / 0.08) * 2 * np.pi) ** 8
        _over(img, _TEETH[None, None, :] * (tooth * (0.9 + 0.1 * si))[..., None].astype(np.float32),
              a_teeth.astype(np.float32))


# --------------------------------------------------------------------------------------
# Public rendering API
# --------------------------------------------------------------------------------------


def _check_params(mouth_params: np.ndarray) -> np.ndarray:
    p = np.asarray(mouth_params, np.float32)
    if p.ndim != 2 or p.shape[1] != P:
        raise ValueError(f"mouth_params must be [F, {P}] (open, spread, round, teeth), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("mouth_params contain NaN or Inf")
    return p


def _check_size(size) -> int:
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size must be an int >= 32 (crop side in pixels), got {size!r}")
    return int(size)


def _base(identity: Identity, pose: np.ndarray, blink: float, gaze: np.ndarray, size: int) -> _Canvas:
    """Everything but the mouth."""
    cv = _Canvas(_background(identity, size).copy(), pose, size)
    _draw_hair_back(cv, identity)
    _draw_neck_torso(cv, identity)
    _draw_head(cv, identity)
    _draw_eyes(cv, identity, blink, gaze)
    _draw_hair_front(cv, identity)
    return cv


def _with_mouth(cv: _Canvas, identity: Identity, mouth: np.ndarray) -> np.ndarray:
    """A copy of the canvas image with the mouth drawn inside ``mouth_mask_hard`` only."""
    mcv = _Canvas.__new__(_Canvas)
    mcv.__dict__.update(cv.__dict__)
    mcv.img = cv.img.copy()
    _draw_mouth(mcv, identity, mouth)
    mask = _mask_hard(cv.size)
    return np.where(mask[..., None], mcv.img, cv.img)


def render_frame(identity: Identity, pose: np.ndarray, blink: float, gaze: np.ndarray,
                 mouth: np.ndarray | None, size: int = 128) -> np.ndarray:
    """One frame, float32 ``[S, S, 3]`` in [0, 1]; ``mouth`` = ``[P]`` or None (no mouth drawn).

    The pixels outside ``mouth_mask_hard(size)`` do not depend on ``mouth``.
    """
    cv = _base(identity, np.asarray(pose, np.float64), float(blink), np.asarray(gaze), _check_size(size))
    return cv.img if mouth is None else _with_mouth(cv, identity, np.asarray(mouth, np.float32))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render_clips(identity: Identity, motion: Motion, mouth_params: list[np.ndarray], size: int = 128,
                 start_frame: int = 0) -> list[np.ndarray]:
    """Several clips of one identity and motion that differ only in the mouth: the face is
    drawn once per frame and each mouth on a copy. Returns one ``[F, S, S, 3]`` uint8 per
    entry of ``mouth_params`` (each ``[F, P]``, same F)."""
    ps = [_check_params(p) for p in mouth_params]
    size = _check_size(size)
    f = ps[0].shape[0]
    if any(p.shape[0] != f for p in ps):
        raise ValueError(f"all mouth_params need the same number of frames, got {[p.shape[0] for p in ps]}")
    pose, blink, gaze = motion.pose(f, start_frame), motion.blink(f, start_frame), motion.gaze(f, start_frame)
    outs = [np.empty((f, size, size, 3), np.uint8) for _ in ps]
    for i in range(f):
        cv = _base(identity, pose[i], float(blink[i]), gaze[i], size)
        for out, p in zip(outs, ps):
            out[i] = _to_uint8(_with_mouth(cv, identity, p[i]))
    return outs


def render_clip(identity: Identity, motion: Motion, mouth_params: np.ndarray, size: int = 128,
                start_frame: int = 0) -> np.ndarray:
    """Frames ``[start_frame, start_frame + F)`` of ``identity`` moving with ``motion``, mouth
    driven by ``mouth_params`` ``[F, P]``: RGB uint8 ``[F, S, S, 3]``. Deterministic."""
    return render_clips(identity, motion, [mouth_params], size, start_frame)[0]


@dataclass(frozen=True, eq=False)
class MouthGeometry:
    """Exact mouth geometry of rendered frames, in pixels of the crop.

    ``values`` ``[F, 4]`` columns (``GEOMETRY``): lip-gap height at the centre, gap width,
    gap area (dark interior + teeth), visible teeth area; ``centre`` ``[F, 2]`` the gap centre
    (x, y) in crop pixels.
    """

    values: np.ndarray
    centre: np.ndarray

    @property
    def gap_px(self) -> np.ndarray:
        return self.values[:, 0]

    @property
    def width_px(self) -> np.ndarray:
        return self.values[:, 1]


def mouth_geometry(identity: Identity, motion: Motion, mouth_params: np.ndarray, size: int = 128,
                   start_frame: int = 0) -> MouthGeometry:
    """Ground truth for ``distill.metrics.measure_mouth``: what ``render_clip`` drew."""
    p = _check_params(mouth_params)
    f = p.shape[0]
    pose = motion.pose(f, start_frame)
    vals = np.zeros((f, 4))
    centre = np.zeros((f, 2))
    for i in range(f):
        ppu = float(pose[i, 3]) * size
        m = _mouth_shape(identity, p[i], ppu)
        gap = 2.0 * m.hi * ppu
        width = 2.0 * m.wi * ppu
        area = math.pi * m.wi * m.hi * ppu * ppu
        # visible teeth: within the gap, above teeth_edge(x) = top + teeth_h (0.6 + 0.4 si)
        if m.teeth_h > 0:
            xs = np.linspace(-1.0, 1.0, 2001)
            si = np.sqrt(np.clip(1.0 - xs * xs, 0.0, 1.0))
            h = np.clip(np.minimum(m.cy - m.hi + m.teeth_h * (0.6 + 0.4 * si), m.cy + m.hi * si)
                        - (m.cy - m.hi * si), 0.0, None)
            teeth = float(np.trapezoid(h, xs) * m.wi) * ppu * ppu
        else:
            teeth = 0.0
        vals[i] = (gap, width, area, teeth)
        cx, cy = _to_crop(pose[i], m.cx, m.cy)
        centre[i] = (cx * size - 0.5, cy * size - 0.5)
    return MouthGeometry(vals.astype(np.float32), centre.astype(np.float32))


def keypoints(identity: Identity, pose: np.ndarray, mouth: np.ndarray, size: int = 128):
    """Exact ``lipforce_sdk.geometry.FaceKeypoints`` of one rendered frame (frame pixels of a
    ``size`` render): eye centres, nose tip, mouth corners, outer/inner lip contours and the jaw
    line, as ``render_frame`` draws them under ``pose`` with mouth parameters ``mouth`` ``[P]``."""
    from lipforce_sdk.geometry import FaceKeypoints

    idt = identity
    pose = np.asarray(pose, np.float64)
    ppu = float(pose[3]) * size
    m = _mouth_shape(idt, np.asarray(mouth, np.float32), ppu)

    def px(lx, ly):
        pts = [_to_crop(pose, float(a), float(b)) for a, b in zip(np.atleast_1d(lx), np.atleast_1d(ly))]
        return np.asarray(pts) * size

    xo = np.linspace(-1.0, 1.0, 11)
    so = np.sqrt(np.clip(1.0 - xo * xo, 0.0, 1.0))
    bow = 1.0 - 0.35 * np.exp(-((xo / 0.12) ** 2)) + 0.12 * np.exp(-(((np.abs(xo) - 0.25) / 0.15) ** 2))
    top = m.cy - m.hi * so - m.tu * so**0.6 * bow
    bot = m.cy + m.hi * so + m.tl * so**0.5
    outer_x = np.concatenate([m.cx + xo * m.w, (m.cx + xo * m.w)[::-1][1:-1]])
    outer_y = np.concatenate([bot, top[::-1][1:-1]])
    si = so  # the gap spans the inner width with the same profile
    inner_x = np.concatenate([m.cx + xo * m.wi, (m.cx + xo * m.wi)[::-1][1:-1]])
    inner_y = np.concatenate([m.cy + m.hi * si, (m.cy - m.hi * si)[::-1][1:-1]])
    cx, cy = idt.face_center
    ax, ay = idt.face_axes
    ys = np.linspace(idt.mouth_y - 0.02, cy + ay * 0.999, 9)
    below = np.clip((ys - (cy - 0.05)) / (ay + 0.05), 0.0, 1.0)
    below = below * below * (3.0 - 2.0 * below)
    half = ax * (1.0 - idt.jaw_taper * below**1.3) * np.sqrt(np.clip(1.0 - ((ys - cy) / ay) ** 2, 0.0, 1.0))
    jaw_x = np.concatenate([cx - half, (cx + half)[::-1][1:]])
    jaw_y = np.concatenate([ys, ys[::-1][1:]])
    return FaceKeypoints(
        eyes=px([cx - idt.eye_dx, cx + idt.eye_dx], [idt.eye_y, idt.eye_y]),
        nose_tip=px(cx, idt.eye_y + 0.01 + idt.nose_len)[0],
        mouth_corners=px([m.cx - m.w, m.cx + m.w], [m.cy, m.cy]),
        lips_outer=px(outer_x, outer_y),
        lips_inner=px(inner_x, inner_y),
        jaw=px(jaw_x, jaw_y),
        source="exact",
    )


def clip_keypoints(identity: Identity, motion: Motion, mouth_params: np.ndarray, size: int = 128,
                   start_frame: int = 0) -> list:
    """``keypoints`` of every frame of ``render_clip(identity, motion, mouth_params, size)``."""
    p = _check_params(mouth_params)
    pose = motion.pose(p.shape[0], start_frame)
    return [keypoints(identity, pose[i], p[i], size) for i in range(p.shape[0])]


# --------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Pair:
    """One training/evaluation sample of the video-to-video lip-sync task.

    Attributes:
        source: ``[F, S, S, 3]`` uint8, the input video: same identity and motion, mouth
            driven by other speech (``speech_src``).
        target: ``[F, S, S, 3]`` uint8, the answer: mouth driven by ``audio``.
        audio: ``[F * 640]`` float32 16 kHz, the new speech (frame ``i`` owns samples
            ``[640 i, 640 (i + 1))``).
        params: ``[F, P]`` mouth parameters of ``target``; ``params_src`` those of ``source``.
        mask_hard / mask_soft: ``[S, S]`` float32, ``mouth_mask_hard(S)`` / ``mouth_mask(S)``:
            ``source`` and ``target`` are equal wherever ``mask_hard`` is 0.
        geometry: exact mouth geometry of ``target`` (pixels).
    """

    source: np.ndarray
    target: np.ndarray
    audio: np.ndarray
    params: np.ndarray
    params_src: np.ndarray
    mask_hard: np.ndarray
    mask_soft: np.ndarray
    geometry: MouthGeometry
    identity: Identity
    motion: Motion
    speech: Speech
    speech_src: Speech
    fps: float = field(default=FPS)


def make_pair(identity: Identity, motion: Motion, speech_src: Speech, speech_tgt: Speech,
              size: int = 128, num_frames: int | None = None) -> Pair:
    """Source and target clips of one identity and motion, mouths driven by two speeches.

    The clip is ``num_frames`` long (default: as long as ``speech_tgt``); each speech is cut or
    padded with silence to that length, so ``audio`` has exactly ``F * 640`` samples.
    """
    f = speech_tgt.num_frames() if num_frames is None else int(num_frames)
    if f < 1:
        raise ValueError(f"num_frames must be >= 1, got {f}")
    tgt = speech_tgt.fit_frames(f)
    src = speech_src.fit_frames(f)
    p_tgt = frame_params(tgt, f)
    p_src = frame_params(src, f)
    source, target = render_clips(identity, motion, [p_src, p_tgt], size)
    return Pair(
        source=source,
        target=target,
        audio=tgt.audio,
        params=p_tgt,
        params_src=p_src,
        mask_hard=mouth_mask_hard(size),
        mask_soft=mouth_mask(size),
        geometry=mouth_geometry(identity, motion, p_tgt, size),
        identity=identity,
        motion=motion,
        speech=tgt,
        speech_src=src,
    )
