"""Real faces that speak: exact talking targets made from one real photo or video frame.

``talk(PhotoFace(image, landmarks), params)`` makes one real face say the mouth parameters of
``distill.visemes.frame_params`` (``open``, ``spread``, ``round``, ``teeth`` per frame) by
warping its own lips and jaw and painting the mouth interior where the lips part. The lips,
skin and everything else keep the photo's own pixels (moved, never repainted); only the new
gap between the lips is drawn. The warped landmarks and the exact lip gap come back with the
frames, so each frame has its ground truth.

Geometry (all in the *mouth frame* of the input: origin between the mouth corners 61/291,
``x`` along the corners, ``v`` perpendicular, towards the chin; input pixels):

- **Vertical pass**, per column ``x``: eight keys from the landmarks, top to bottom: a line
  under the nose (fixed), the upper lip's outer and inner edge, the *seam* (where the lips
  part: the middle of the inner-lip gap, or the edge of the upper teeth in a smile), the
  lower lip's inner and outer edge, the chin (the lower face oval) and a line ``0.45`` mouth
  widths below it (fixed). Each key moves by an amount set by the parameters: the lower lip
  down by up to ``0.35 W`` at ``open = 1`` (``W`` the mouth width) along an opening profile
  across the mouth (elliptical; flatter with ``spread``, narrower with ``round``), the upper
  lip up by ``0.06 W``, the chin by half the lower lip (a jaw profile that fades towards the
  jaw's angles), the corners down with ``open`` and up with ``spread``; the lips thin with
  ``spread`` and ``open`` and thicken (pout, bunch around a smaller opening) with ``round``.
  Between keys the displacement is eased (smoothstep: C1, local, kept monotone), so the lip
  bodies move rigidly and the skin between them stretches. The seam has two displacements,
  the upper and the lower lip's: that is where the mouth tears open.
- **Horizontal pass**: the corners move out with ``spread`` (``0.10 W`` each) and in with
  ``round`` (``0.14 W``) and a little with ``open``; the lips stretch linearly between the
  corners, the pull fades out over the cheeks (before the face's edge) and vertically
  towards the nose line and the chin.
- The output is made by backward mapping (one ``cv2.remap`` per frame, composed with the
  optional similarity of the head motion and the crop). The warp is inverted per output
  pixel: per column the eased segments by Newton, the gentle horizontal pass by Newton; on
  a 2-pixel grid, bilinearly upsampled, where the field is smooth, and exactly per pixel
  around the lips, the corners' columns and the sheared skin under the nose (within 0.25
  output pixels of the exact map everywhere; tested). The returned landmarks are the forward
  warp of the input's (they and the pixels agree: tested both ways). Nothing moves above
  the nose line, beyond the lower face oval or more than ``0.45 W`` below the chin: those
  pixels are copied (``PhotoFace.support_polygon()``).

Interior: where the lips part (the tear), and, fading in as the mouth opens, over the old
lip line (or, when the input shows its teeth, the old interior below them), a mouth is
painted in linear light and composited anti-aliased from the exact sub-pixel lip curves:

- a near-black cavity in the person's lip colour reddened (mucosa): darkest behind the upper
  teeth and at the corners, a little light where the inner lips curve in and on the floor;
- upper teeth fixed to the skull (they do not move with the lips; opening and the upper lip
  rising reveal them): off-white at 1.8 x the skin's luminance with a little of the
  light's colour (or the person's own teeth colour when they show), incisors, laterals,
  canines and premolars at their frontal widths with rounded edges, per-tooth shading and
  jitter, faint interproximal lines that darken towards the edge, a translucent edge, the
  side teeth sinking into the corners' shadow with the mouth's warm light, the upper lip's
  shadow;
- for wide or "ee" mouths the tips of the lower teeth above the lower lip's middle, and a
  lit pink tongue whose back fades into the dark, with the lower lip's contact shadow;
- then blurred like the photo (the photo's edge blur is measured: re-blur ratio) and given
  the photo's grain (measured on the skin).

A face whose own teeth show (a smile: bright, low-saturation pixels fill 28 % of the inner
lips) keeps its upper teeth: the seam is put at their edge, so they stay with the upper lip
while the lower part of the old interior is repainted.

Limits: the warp opens a closed or nearly closed mouth; a mouth that is already open is
refused (lip opening above ``max_opening`` 0.30) and one that is partly open (above 0.15:
warned) keeps that opening as its rest pose (zero parameters give the input back). No
blinks or gaze (``Motion``'s pose only). The mouth is 2-D: no parallax, the lips' inner
surface is not revealed, the interior is a painting.

``python -m distill.photoreal --image PATH [--frame N] [--text "..."] --out sheet.png`` draws
a contact sheet (visemes and a spoken sentence, mouth crops enlarged).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from .visemes import PARAMS, P

__all__ = [
    "PhotoFace",
    "TalkingClip",
    "talk",
    "lip_opening",
    "face_box",
    "VISEMES",
    "contact_sheet",
    "main",
]

NUM_LANDMARKS = 468
# MediaPipe canonical face mesh indices; contours from the subject's right corner (image left)
# to the left corner
UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LOWER_OVAL = (132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
NOSE_TIP, SUBNASALE, CHIN = 1, 2, 152
UPPER_LIP_INNER, LOWER_LIP_INNER, MOUTH_RIGHT, MOUTH_LEFT = 13, 14, 61, 291

# Named mouth shapes for the contact sheet: (open, spread, round, teeth)
VISEMES: dict[str, tuple[float, float, float, float]] = {
    "closed": (0.0, 0.0, 0.0, 0.0),
    "slightly open": (0.3, 0.15, 0.0, 0.45),
    "wide open": (0.9, 0.2, 0.0, 0.7),
    "spread ee": (0.25, 0.9, 0.0, 0.8),
    "rounded oo": (0.22, 0.0, 1.0, 0.05),
}

# The motion model: fractions of the mouth width W at parameter 1 (see the module docstring)
LOWER_LIP_DROP = 0.35  # lower lip, centre, at open = 1
UPPER_LIP_RISE = 0.06
CHIN_DROP = 0.5 * LOWER_LIP_DROP  # "the chin about half of the lower lip"
CORNER_DOWN_OPEN = 0.05
CORNER_UP_SPREAD = 0.03
CORNER_OUT_SPREAD = 0.10  # per corner
CORNER_IN_ROUND = 0.14
CORNER_IN_OPEN = 0.04
BELOW_CHIN = 0.45  # the warp ends this far (x W) below the chin

_LUMA = np.array([0.2126, 0.7152, 0.0722])


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        fix = ("np.clip(image * 255, 0, 255).round().astype(np.uint8)" if np.issubdtype(img.dtype, np.floating)
               else "image.astype(np.uint8)")
        raise ValueError(f"image must be uint8 RGB [H, W, 3], got dtype {img.dtype}; convert it, e.g. {fix}")
    if img.ndim == 2:
        raise ValueError(f"image must be RGB [H, W, 3], got a grey image of shape {img.shape}; "
                         "use np.repeat(image[..., None], 3, axis=2)")
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"image must be RGB [H, W, 3] uint8, got shape {img.shape}"
                         + ("; pass one frame, e.g. frames[0]" if img.ndim == 4 else ""))
    if img.shape[2] == 4:
        raise ValueError(f"image must be RGB [H, W, 3], got 4 channels (shape {img.shape}); drop alpha: image[..., :3]")
    if img.shape[0] < 32 or img.shape[1] < 32:
        raise ValueError(f"image is too small ({img.shape[1]}x{img.shape[0]}); need at least 32x32 pixels")
    return np.ascontiguousarray(img)


def _check_landmarks(landmarks, hw: tuple[int, int]) -> np.ndarray:
    lm = np.asarray(landmarks)
    if lm.ndim == 3 and lm.shape[1] == NUM_LANDMARKS:
        raise ValueError(f"landmarks must be one face [468, 2 or 3], got {lm.shape[0]} faces (shape {lm.shape}); "
                         "pass one of them, e.g. landmarks[0]")
    if lm.ndim != 2 or lm.shape[0] != NUM_LANDMARKS or lm.shape[1] not in (2, 3):
        raise ValueError(f"landmarks must be MediaPipe face-mesh points [468, 2 or 3] (x, y[, z]) in image pixels, "
                         f"got shape {lm.shape}; e.g. lipforce_sdk.facemesh.LandmarkTracker().update(image).points")
    if not np.issubdtype(lm.dtype, np.number):
        raise ValueError(f"landmarks must be numbers, got dtype {lm.dtype}")
    lm = lm[:, :2].astype(np.float64)
    bad = ~np.isfinite(lm).all(axis=1)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(f"landmarks has NaN/Inf at {len(idx)} points (first indices {idx[:5].tolist()}); "
                         "pass the landmarks of a frame where the face was found")
    h, w = hw
    box = lm.min(0), lm.max(0)
    if box[0][0] < -0.5 * w or box[0][1] < -0.5 * h or box[1][0] > 1.5 * w or box[1][1] > 1.5 * h:
        raise ValueError(f"landmarks lie outside the {w}x{h} image (x {box[0][0]:.0f}..{box[1][0]:.0f}, "
                         f"y {box[0][1]:.0f}..{box[1][1]:.0f}); they must be in this image's pixels "
                         "(not normalised to [0, 1]: multiply by (W, H))")
    for i in (MOUTH_RIGHT, MOUTH_LEFT, UPPER_LIP_INNER, LOWER_LIP_INNER, CHIN, SUBNASALE):
        x, y = lm[i]
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"landmark {i} ({x:.1f}, {y:.1f}) is outside the {w}x{h} image: the mouth and chin "
                             "must be inside the frame")
    width = float(np.hypot(*(lm[MOUTH_LEFT] - lm[MOUTH_RIGHT])))
    iod = float(np.hypot(*(lm[list(LEFT_EYE)].mean(0) - lm[list(RIGHT_EYE)].mean(0))))
    if width < 8.0:
        raise ValueError(f"the mouth is only {width:.1f} px wide (landmarks 61-291); need at least 8 px: "
                         "use a larger face")
    chin_down = float(np.dot(lm[CHIN] - 0.5 * (lm[61] + lm[291]),
                             np.array([-(lm[291] - lm[61])[1], (lm[291] - lm[61])[0]]) / width))
    if lm[291, 0] <= lm[61, 0] or chin_down <= 0.2 * width or iod <= 0.3 * width:
        raise ValueError("landmarks do not look like one upright MediaPipe face (mouth corner 61 must be on the image "
                         "left of 291, the chin 152 below the mouth, the eyes apart); check the point order "
                         "(MediaPipe's canonical 468-point topology) and the image orientation")
    return lm


def lip_opening(landmarks) -> float:
    """Inner-lip gap over mouth width: ``|p13 - p14| / |p61 - p291|`` (0 closed, ~0.3-0.6 wide open)."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    gap = float(np.hypot(*(lm[LOWER_LIP_INNER] - lm[UPPER_LIP_INNER])))
    return gap / max(float(np.hypot(*(lm[MOUTH_LEFT] - lm[MOUTH_RIGHT]))), 1e-6)


def _check_params(params) -> np.ndarray:
    p = np.asarray(params)
    if p.ndim == 1 and p.shape[0] == P:
        raise ValueError(f"params must be [F, {P}] ({', '.join(PARAMS)}) per frame, got one row of shape {p.shape}; "
                         "use params[None] for one frame")
    if p.ndim != 2 or p.shape[1] != P:
        raise ValueError(f"params must be [F, {P}] ({', '.join(PARAMS)}) per frame, got shape {p.shape}; "
                         f"distill.visemes.frame_params(speech, F) gives them")
    if p.shape[0] < 1:
        raise ValueError("params has no frames (shape [0, 4]); give at least one")
    if not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"params must be numbers, got dtype {p.dtype}")
    p = p.astype(np.float64)
    if not np.isfinite(p).all():
        f, c = np.argwhere(~np.isfinite(p))[0]
        raise ValueError(f"params has NaN/Inf (first at frame {f}, {PARAMS[c]}); every value must be in [0, 1]")
    lo, hi = p.min(), p.max()
    if lo < -1e-6 or hi > 1 + 1e-6:
        f, c = np.argwhere((p < -1e-6) | (p > 1 + 1e-6))[0]
        raise ValueError(f"params must be in [0, 1]; frame {f} has {PARAMS[c]} = {p[f, c]:.4g} (range of the array "
                         f"{lo:.4g}..{hi:.4g}); clip them (np.clip(params, 0, 1)) or rescale")
    return np.clip(p, 0.0, 1.0)


def _motion_poses(motion, f: int) -> np.ndarray | None:
    if motion is None:
        return None
    if hasattr(motion, "pose"):
        pose = np.asarray(motion.pose(f), np.float64)
    else:
        pose = np.asarray(motion, np.float64)
    if pose.shape != (f, 4):
        raise ValueError(f"motion must be a distill.faces.Motion or poses [F, 4] (tx, ty in crop units, rotation in "
                         f"radians, scale) for the F = {f} frames of params, got shape {pose.shape}")
    if not np.isfinite(pose).all() or (pose[:, 3] <= 0.2).any() or (pose[:, 3] > 5).any():
        raise ValueError("motion poses must be finite with scale in (0.2, 5]; e.g. distill.faces.Motion.random(seed)")
    return pose


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _ss(t):
    """Smoothstep of ``t`` clipped to [0, 1]."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _to_lin(c):
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _to_srgb(c):
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def _curve(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A contour as (x, v) arrays with x increasing (sorted; ties nudged)."""
    o = np.argsort(pts[:, 0], kind="stable")
    x, v = pts[o, 0].copy(), pts[o, 1].copy()
    for i in range(1, len(x)):
        if x[i] <= x[i - 1]:
            x[i] = x[i - 1] + 1e-6
    return x, v


def _poly_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def face_box(landmarks, scale: float = 3.0) -> tuple[float, float, float]:
    """The square crop around a face: ``(x0, y0, side)`` in image pixels, ``side = scale`` x
    the inter-ocular distance, centred between the eyes' midpoint and the mouth (the eyes
    land near 1/3 of the height, the lips near 0.67, as in the SDK's face crops)."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    er, el = lm[list(RIGHT_EYE)].mean(0), lm[list(LEFT_EYE)].mean(0)
    iod = float(np.hypot(*(el - er)))
    mouth = lm[[MOUTH_RIGHT, MOUTH_LEFT, UPPER_LIP_INNER, LOWER_LIP_INNER]].mean(0)
    c = 0.5 * (0.5 * (er + el) + mouth)
    side = scale * iod
    return float(c[0] - side / 2), float(c[1] - side / 2), float(side)


# --------------------------------------------------------------------------------------
# The face: geometry and look
# --------------------------------------------------------------------------------------


class _Geometry:
    """The input face in its mouth frame (see the module docstring)."""

    def __init__(self, lm: np.ndarray):
        p61, p291 = lm[MOUTH_RIGHT], lm[MOUTH_LEFT]
        d = p291 - p61
        self.W = W = float(np.hypot(*d))
        self.O = 0.5 * (p61 + p291)
        self.ex = d / W
        self.ey = np.array([-self.ex[1], self.ex[0]])
        m = self.to_mouth(lm)
        self.m = m
        self.x_mid = float(m[[13, 14, 0, 17], 0].mean())
        self.uo = _curve(m[list(UPPER_OUTER)])
        self.lo = _curve(m[list(LOWER_OUTER)])
        self.ui = _curve(m[list(UPPER_INNER)])
        self.li = _curve(m[list(LOWER_INNER)])
        xoL, xoR = float(m[61, 0]), float(m[291, 0])
        xiL = min(max(float(m[78, 0]), xoL + 0.01 * W), self.x_mid - 0.2 * W)
        xiR = max(min(float(m[308, 0]), xoR - 0.01 * W), self.x_mid + 0.2 * W)
        self.xo, self.xi = (xoL, xoR), (xiL, xiR)
        self.vc = (float(m[61, 1]), float(m[291, 1]))  # corner v (about 0)
        self.hw = (self.x_mid - xoL, xoR - self.x_mid)
        # the fixed line under the nose, the band the horizontal pull acts on
        v_lip_top, v_lip_bot = float(self.uo[1].min()), float(self.lo[1].max())
        v_sub = float(m[SUBNASALE, 1])
        self.v_top = min(v_sub + 0.15 * (v_lip_top - v_sub), v_lip_top - 0.08 * W)
        self.v_band = (v_lip_top, v_lip_bot)
        ov = m[list(LOWER_OVAL)]
        self.oval = _curve(ov)
        self.x_chin, self.v_chin = float(m[CHIN, 0]), float(m[CHIN, 1])
        self.jaw_half = (max(self.x_chin - float(ov[:, 0].min()), 0.6 * W),
                         max(float(ov[:, 0].max()) - self.x_chin, 0.6 * W))
        # how far beyond each corner the corner's pull reaches (stays inside the face)
        reach = [max((self.x_mid - float(ov[:, 0].min())) - self.hw[0], 0.2 * W),
                 max((float(ov[:, 0].max()) - self.x_mid) - self.hw[1], 0.2 * W)]
        self.sigma = tuple(float(np.clip(0.85 * r / h, 0.3, 1.5)) for r, h in zip(reach, self.hw))
        self.fall = tuple(float(min(0.5 * W, 0.8 * r)) for r in reach)
        self.margin = BELOW_CHIN * W
        self.seam_frac = 0.5  # where the lips part, as a fraction of the inner-lip gap
        # the support of the warp (mouth frame): x range, v range
        self.x_range = (min(self.x_mid - self.hw[0] * (1 + self.sigma[0]), float(ov[:, 0].min())) - 1.0,
                        max(self.x_mid + self.hw[1] * (1 + self.sigma[1]), float(ov[:, 0].max())) + 1.0)
        self.v_range = (self.v_top - 1.0,
                        max(float(ov[:, 1].max()), v_lip_bot + 0.15 * W) + self.margin + 1.0)

    def to_mouth(self, pts: np.ndarray) -> np.ndarray:
        q = np.asarray(pts, np.float64) - self.O
        return np.stack([q @ self.ex, q @ self.ey], axis=-1)

    def to_image(self, xv: np.ndarray) -> np.ndarray:
        return self.O + xv[..., :1] * self.ex + xv[..., 1:2] * self.ey

    def support_polygon(self) -> np.ndarray:
        """Corners of the region the warp may change, image pixels [4, 2]."""
        (x0, x1), (v0, v1) = self.x_range, self.v_range
        return self.to_image(np.array([[x0, v0], [x1, v0], [x1, v1], [x0, v1]]))


@dataclass(frozen=True)
class _Look:
    lip: np.ndarray  # linear RGB
    skin: np.ndarray
    teeth: np.ndarray
    has_teeth: bool  # the input already shows teeth between the lips
    noise: float  # sRGB units, per input pixel
    blur: float  # Gaussian sigma of the photo's edges, input pixels
    seam: float  # where the lips part, as a fraction of the inner-lip gap (the teeth's edge)
    tooth_var: np.ndarray  # per-tooth brightness and length jitter


def _polygon_mask(shape, pts: np.ndarray, scale: int = 4) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts * scale).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    return m.astype(bool)


def _estimate_look(img: np.ndarray, lm: np.ndarray, g: _Geometry) -> _Look:
    """Colours (lips, skin, teeth), noise, blur and the teeth of the input around the mouth."""
    H, Wd = img.shape[:2]
    W = g.W
    # work in the face's box (frames can be large)
    (bx0, by0), (bx1, by1) = np.floor(lm.min(0)).astype(int) - 4, np.ceil(lm.max(0)).astype(int) + 4
    bx0, by0, bx1, by1 = max(bx0, 0), max(by0, 0), min(bx1, Wd), min(by1, H)
    off = np.array([bx0, by0], np.float64)
    f = img[by0:by1, bx0:bx1].astype(np.float64) / 255.0
    h, w = f.shape[:2]
    lips = (_polygon_mask((h, w), lm[list(LIPS_OUTER)] - off)
            & ~_polygon_mask((h, w), lm[list(LIPS_INNER)] - off))
    lips = cv2.erode(lips.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool) if lips.sum() > 40 else lips
    lip = np.median(f[lips], axis=0) if lips.sum() >= 5 else np.array([0.7, 0.4, 0.4])
    # skin: between the lower lip and the chin, inside the lower face oval, off the lips
    oval = _polygon_mask((h, w), lm[list(LOWER_OVAL)] - off)
    pix_xy = np.stack(np.meshgrid(np.arange(w) + 0.5 + bx0, np.arange(h) + 0.5 + by0), -1).reshape(-1, 2)
    v = g.to_mouth(pix_xy)[:, 1].reshape(h, w)
    skin_m = oval & (v > g.v_band[1] + 0.08 * W) & (v < g.v_chin - 0.05 * W) & ~lips
    if skin_m.sum() < 20:
        skin_m = oval & ~lips
    skin = np.median(f[skin_m], axis=0) if skin_m.sum() >= 5 else lip
    # noise: robust spread of the skin's high-pass
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    gb = grey[by0:by1, bx0:bx1]
    hp = gb - cv2.GaussianBlur(gb, (0, 0), 1.2)
    noise = float(np.clip(1.4826 * np.median(np.abs(hp[skin_m])) if skin_m.sum() >= 20 else 0.01, 0.002, 0.04))
    # the visible interior: teeth are bright and less saturated than the lips
    inner = _polygon_mask((h, w), lm[list(LIPS_INNER)] - off)
    inner = cv2.erode(inner.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
    pix = f[inner]
    has_teeth, teeth = False, None
    skin_l = float(_to_lin(skin) @ _LUMA)
    lip_l = float(_to_lin(lip) @ _LUMA)
    lip_sat = float(lip.max() - lip.min())
    gap_px = float(np.hypot(*(lm[LOWER_LIP_INNER] - lm[UPPER_LIP_INNER])))
    if len(pix) >= 6 and gap_px >= max(3.0, 0.06 * W):
        lum = _to_lin(pix) @ _LUMA
        sat = pix.max(1) - pix.min(1)
        bright = (lum > max(1.3 * lip_l, 0.45 * skin_l, 0.08)) & (sat < 0.6 * lip_sat + 0.08)
        if bright.sum() >= max(6, 0.28 * len(pix)):  # teeth, not a few tips or highlights
            has_teeth = True
            bl = lum[bright]
            teeth = _to_lin(np.median(pix[bright][bl >= np.percentile(bl, 70)], axis=0))
    if teeth is None:  # off-white, a little of the light's colour, 1.8 x the skin's luminance
        skin_lin = _to_lin(skin)
        cast = skin_lin / max(float(skin_lin @ _LUMA), 1e-6)
        tint = np.array([1.0, 0.94, 0.84]) * 0.88 + cast * 0.12
        tl = float(np.clip(1.8 * skin_l, 0.28, 0.80))
        teeth = tint / float(tint @ _LUMA) * tl
    seam = _teeth_seam(grey, g) if has_teeth else 0.5
    rng = np.random.default_rng([int(np.round(lm[:20].sum() * 10)) & 0x7FFFFFFF, 0x7E])
    return _Look(lip=_to_lin(lip), skin=_to_lin(skin), teeth=np.clip(teeth, 0, 1), has_teeth=has_teeth,
                 noise=noise, blur=_estimate_blur(grey, lm), seam=seam,
                 tooth_var=rng.uniform(-0.04, 0.04, 16))


def _teeth_seam(grey: np.ndarray, g: _Geometry) -> float:
    """For a mouth showing its teeth: the fraction of the inner-lip gap (from the upper lip)
    where the upper teeth end (the strongest bright-to-dark step going down, just below it),
    so the upper teeth stay with the upper jaw and the lower teeth go with the lower."""
    xi0, xi1 = g.xi
    xs = np.linspace(g.x_mid + 0.6 * (xi0 - g.x_mid), g.x_mid + 0.6 * (xi1 - g.x_mid), 15)
    ui, li = np.interp(xs, *g.ui), np.interp(xs, *g.li)
    gray = grey.astype(np.float32)
    fr = []
    for x, a, b in zip(xs, ui, li):
        if b - a < 3.0:
            continue
        vs = np.linspace(a, b, max(int((b - a) * 4), 8))
        pts = g.to_image(np.stack([np.full_like(vs, x), vs], 1)).astype(np.float32)
        prof = cv2.remap(gray, pts[:, 0:1] - 0.5, pts[:, 1:2] - 0.5, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)[:, 0]
        prof = np.convolve(prof, np.ones(3) / 3, mode="same")
        step = prof[:-4] - prof[4:]  # bright above, dark below
        lo, hi = int(0.15 * len(step)), int(0.95 * len(step))
        if hi <= lo:
            continue
        i = lo + int(np.argmax(step[lo:hi]))
        fr.append((vs[i + 3] - a) / (b - a))
    if len(fr) < 3:
        return 0.5
    return float(np.clip(np.median(fr), 0.25, 0.92))


def _estimate_blur(grey: np.ndarray, lm: np.ndarray, ref: float = 1.5) -> float:
    """Gaussian sigma (pixels) of the photo's sharpest edges around the lower face: the
    gradient at an edge blurred by ``s`` drops by ``sqrt(s^2 + r^2) / s`` when blurred again
    by ``r`` (the re-blur ratio estimate of defocus)."""
    x0, y0 = np.floor(lm.min(0)).astype(int)
    x1, y1 = np.ceil(lm.max(0)).astype(int)
    h, w = grey.shape
    pad = 8
    x0, y0, x1, y1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w), min(y1 + pad, h)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return 0.8
    g = grey[y0:y1, x0:x1].astype(np.float32)

    def grad(a):
        gx = np.zeros_like(a)
        gy = np.zeros_like(a)
        gx[:, 1:-1] = 0.5 * (a[:, 2:] - a[:, :-2])
        gy[1:-1] = 0.5 * (a[2:] - a[:-2])
        return np.hypot(gx, gy)

    g1 = grad(g)
    g2 = grad(cv2.GaussianBlur(g, (0, 0), ref))
    inner = np.zeros_like(g1, bool)
    inner[4:-4, 4:-4] = True
    thr = np.percentile(g1[inner], 97)
    sel = inner & (g1 >= thr) & (g2 > 1e-4) & (g1 > 0.02)
    if sel.sum() < 20:
        return 0.8
    R = float(np.median(g1[sel] / g2[sel]))
    return float(np.clip(ref / math.sqrt(max(R * R - 1.0, 1e-3)), 0.4, 3.0))


class PhotoFace:
    """One real face to make speak: an RGB ``uint8`` image ``[H, W, 3]`` and its MediaPipe
    face-mesh landmarks ``[468, 2 or 3]`` (x, y in the image's pixels; z ignored).

    The mouth should be closed or nearly closed: the lip opening ``|p13 - p14| / |p61 - p291|``
    above ``max_opening`` is refused (``ValueError``), above ``warn_opening`` warned about
    (that opening is then the rest pose: zero parameters keep it). ``PhotoFace.detect(image)``
    finds the landmarks with ``lipforce_sdk.facemesh``.
    """

    def __init__(self, image, landmarks, *, max_opening: float = 0.30, warn_opening: float = 0.15):
        img = _check_image(image)
        lm = _check_landmarks(landmarks, img.shape[:2])
        self.image = img.copy()
        self.image.flags.writeable = False
        self.landmarks = lm.astype(np.float32)
        self.landmarks.flags.writeable = False
        self.opening = lip_opening(lm)
        if self.opening > max_opening:
            raise ValueError(
                f"the mouth is already open (lip opening |p13-p14|/|p61-p291| = {self.opening:.2f} > max_opening "
                f"{max_opening:.2f}); the generator opens a closed or nearly closed mouth: use a frame where the "
                "lips are together (e.g. another --frame), or raise max_opening")
        if self.opening > warn_opening:
            warnings.warn(
                f"the mouth is partly open (lip opening {self.opening:.2f} > {warn_opening:.2f}): that opening is the "
                "rest pose (params 0 keep it) and the mouth only opens further from it", UserWarning, stacklevel=2)
        self._g = _Geometry(lm)
        self._look = _estimate_look(img, lm, self._g)
        self._g.seam_frac = self._look.seam
        self._prepared: dict = {}

    @classmethod
    def detect(cls, image, **kwargs) -> "PhotoFace":
        """Find the face's landmarks with ``lipforce_sdk.facemesh`` and build the ``PhotoFace``."""
        from lipforce_sdk.facemesh import LandmarkTracker

        img = _check_image(image)
        lm = LandmarkTracker(smoothing=False).update(img)
        if lm is None:
            raise ValueError("no face found in the image (lipforce_sdk.facemesh); use a frontal face photo")
        return cls(img, lm.points, **kwargs)

    @property
    def mouth_width(self) -> float:
        return self._g.W

    @property
    def has_teeth(self) -> bool:
        """Whether the input already shows teeth between the lips (they are kept)."""
        return self._look.has_teeth

    def support_polygon(self) -> np.ndarray:
        """Corners ``[4, 2]`` (image pixels) of the rotated rectangle outside which the mouth
        warp leaves every pixel as it is (under the nose, around the lower face, to a little
        below the chin)."""
        return self._g.support_polygon().astype(np.float32)

    def _source(self, k: float) -> np.ndarray:
        """The image low-passed for sampling at ``k`` output pixels per input pixel (k < 0.8)."""
        if k >= 0.8:
            return self.image
        sigma = round(0.5 * math.sqrt(1.0 / (k * k) - 1.0), 1)
        if sigma not in self._prepared:
            x0, y0, side = face_box(self.landmarks, 4.0)
            h, w = self.image.shape[:2]
            pad = int(3 * sigma) + 2
            c0, r0 = max(int(x0) - pad, 0), max(int(y0) - pad, 0)
            c1, r1 = min(int(x0 + side) + pad, w), min(int(y0 + side) + pad, h)
            out = self.image.copy()
            if c1 > c0 and r1 > r0:
                out[r0:r1, c0:c1] = cv2.GaussianBlur(self.image[r0:r1, c0:c1], (0, 0), sigma)
            out.flags.writeable = False
            self._prepared = {sigma: out}  # one at a time
        return self._prepared[sigma]


# --------------------------------------------------------------------------------------
# The per-frame warp
# --------------------------------------------------------------------------------------

_NK = 8  # source keys: top, upper outer, upper inner, seam, lower inner, lower outer, chin, below chin
# displacements: d0, d1, d2, d3 upper, d3 lower, d4, d5, d6, d7 (9); out keys likewise (9)
_SRC_OF = (0, 1, 2, 3, 3, 4, 5, 6, 7)


class _Warp:
    """The warp for one frame's mouth parameters (see the module docstring)."""

    def __init__(self, g: _Geometry, params: np.ndarray):
        self.g = g
        o, s, r, t = (float(v) for v in params)
        self.o, self.s, self.r, self.t = o, s, r, t
        W = g.W
        self.C = (CORNER_OUT_SPREAD * s - CORNER_IN_ROUND * r - CORNER_IN_OPEN * o) * W
        self.Lc = LOWER_LIP_DROP * o * W
        self.Uc = UPPER_LIP_RISE * o * W
        self.J = CHIN_DROP * o * W
        self.cdy = (CORNER_DOWN_OPEN * o - CORNER_UP_SPREAD * s) * W
        self.pm = 2.0 + 1.5 * s * (1.0 - r)  # opening profile (1 - |u|^pm)^pb
        self.pb = 0.7 + 0.3 * r
        self.pw = 1.0 + 0.5 * r  # round: the opening spans less of the mouth's width
        self.au = -0.25 * o + 0.35 * r - 0.25 * s  # relative thickness change of the upper lip
        self.al = -0.10 * o + 0.30 * r - 0.20 * s
        self.zero = o == 0 and s == 0 and r == 0
        # contours after the horizontal pass
        mv = lambda c: (c[0] + self.dx(c[0], c[1]), c[1])  # noqa: E731
        self.uo, self.lo, self.ui, self.li = (_curve(np.stack(mv(c), 1)) for c in (g.uo, g.lo, g.ui, g.li))
        ox, ov = g.oval
        self.oval = _curve(np.stack([ox + self.dx(ox, ov), ov], 1))
        corners = np.array([[g.xo[0], g.vc[0]], [g.xo[1], g.vc[1]], [g.xi[0], 0.0], [g.xi[1], 0.0]])
        cx = corners[:, 0] + self.dx(corners[:, 0], np.array([g.vc[0], g.vc[1], g.vc[0], g.vc[1]]))
        self.xo = (float(cx[0]), float(cx[1]))
        self.xi = (float(cx[2]), float(cx[3]))
        self.x_mid = float(g.x_mid + self.dx(np.array([g.x_mid]), np.array([0.0]))[0])
        # seam values at the inner corners (the inner contours meet there)
        fs = g.seam_frac
        self.s_in = tuple((1 - fs) * np.interp(x, *self.ui) + fs * np.interp(x, *self.li) for x in self.xi)

    # ---- horizontal pass ----
    def _band(self, v):
        g = self.g
        (a0, a1), top, bot = g.v_band, g.v_top, g.v_chin
        up = _ss((v - top) / max(a0 - top, 1e-6))
        down = 1.0 - _ss((v - a1) / max(bot - a1, 1e-6))
        return np.where(v < a0, up, np.where(v > a1, down, 1.0))

    def dx(self, x, v):
        if self.C == 0.0:
            return np.zeros(np.shape(x))
        return self.C * self._g_and_slope(np.asarray(x, np.float64))[0] * self._band(np.asarray(v, np.float64))

    def _g_and_slope(self, x):
        g = self.g
        left = x < g.x_mid
        hw = np.where(left, g.hw[0], g.hw[1])
        sig = np.where(left, g.sigma[0], g.sigma[1])
        t = (x - g.x_mid) / hw
        at = np.abs(t)
        e = np.clip((at - 1.0) / sig, 0.0, 1.0)
        S = e * e * (3.0 - 2.0 * e)
        dS = np.where(at > 1.0, 6.0 * e * (1.0 - e) / sig, 0.0)
        val = t * (1.0 - S)
        slope = ((1.0 - S) - at * dS) / hw
        return val, slope

    def inv_dx(self, xp, v):
        """Source x of intermediate x' at source row v (Newton; the map is monotone)."""
        if self.C == 0.0:
            return xp
        b = self.C * self._band(v)
        act = b != 0.0
        if not act.any():
            return xp
        xa, ba = xp[act], b[act]
        x = xa - ba * self._g_and_slope(xa)[0]
        for _ in range(4):
            val, slope = self._g_and_slope(x)
            x = x - (x + ba * val - xa) / np.maximum(1.0 + ba * slope, 0.05)
        out = xp.copy()
        out[act] = x
        return out

    # ---- vertical pass ----
    def keys(self, x: np.ndarray):
        """Source keys ``[n, 8]`` and displacements ``[n, 9]`` at intermediate columns ``x``."""
        g, W = self.g, self.g.W
        x = np.asarray(x, np.float64)
        xoL, xoR = self.xo
        xiL, xiR = self.xi
        in_o = (x > xoL) & (x < xoR)
        in_i = (x > xiL) & (x < xiR)
        ui, li = np.interp(x, *self.ui), np.interp(x, *self.li)
        uo, lo = np.interp(x, *self.uo), np.interp(x, *self.lo)
        seam_o = np.interp(x, [xoL, xiL, xiR, xoR], [g.vc[0], self.s_in[0], self.s_in[1], g.vc[1]])
        fs = g.seam_frac
        seam = np.where(in_i, (1 - fs) * ui + fs * li, seam_o)
        K = np.empty((len(x), _NK))
        K[:, 3] = seam
        K[:, 2] = np.where(in_i, np.minimum(ui, seam), seam)
        K[:, 4] = np.where(in_i, np.maximum(li, seam), seam)
        K[:, 1] = np.where(in_o, np.minimum(uo, K[:, 2]), seam)
        K[:, 5] = np.where(in_o, np.maximum(lo, K[:, 4]), seam)
        K[:, 0] = np.minimum(g.v_top, K[:, 1] - 0.05 * W)
        K[:, 6] = np.maximum(np.interp(x, *self.oval), K[:, 5] + 0.15 * W)
        K[:, 7] = K[:, 6] + g.margin
        # opening profile across the mouth: 1 at the centre, 0 at the inner corners
        u = np.where(x < self.x_mid, (self.x_mid - x) / max(self.x_mid - xiL, 1e-6),
                     (x - self.x_mid) / max(xiR - self.x_mid, 1e-6))
        prof_o = np.where(u < 1.0, np.power(np.clip(1.0 - np.clip(u, 0, 1) ** 2, 0, 1), 0.7 - 0.25 * self.r), 0.0)
        u = u * self.pw
        prof = np.where(u < 1.0, np.power(np.clip(1.0 - np.power(np.clip(u, 0, 1), self.pm), 0, 1), self.pb), 0.0)
        beyond = np.where(x < xoL, xoL - x, np.where(x > xoR, x - xoR, 0.0))
        reach = np.where(x < self.x_mid, g.fall[0], g.fall[1])
        cd = self.cdy * (1.0 - _ss(beyond / reach))
        up_i = cd * (1.0 - prof) - self.Uc * prof
        low_i = cd * (1.0 - prof) + self.Lc * prof
        # the outer lip edges follow a broader profile: with round the lips bunch up around a
        # smaller opening instead of bending (the difference stays within the lip's thickness)
        up_o = cd * (1.0 - prof_o) - self.Uc * prof_o
        low_o = cd * (1.0 - prof_o) + self.Lc * prof_o
        thick_u, thick_l = K[:, 2] - K[:, 1], K[:, 5] - K[:, 4]
        d = np.zeros((len(x), 9))
        d[:, 1] = np.minimum(up_o, up_i) - self.au * np.where(self.au < 0, prof, 1.0) * thick_u
        d[:, 2] = d[:, 3] = up_i
        d[:, 4] = d[:, 5] = low_i
        d[:, 6] = np.maximum(low_o, low_i) + self.al * np.where(self.al < 0, prof, 1.0) * thick_l
        jh = np.where(x < g.x_chin, g.jaw_half[0], g.jaw_half[1])
        d[:, 7] = self.J * np.clip(1.0 - ((x - g.x_chin) / jh) ** 2, 0.0, 1.0) ** 1.2
        # keep every eased segment monotone (out spacing >= 0.4 x source spacing)
        L01 = K[:, 1] - K[:, 0]
        d[:, 1] = np.maximum(d[:, 1], -0.6 * L01)
        L67 = K[:, 7] - K[:, 6]
        d[:, 7] = np.minimum(d[:, 7], 0.6 * L67)
        L56 = K[:, 6] - K[:, 5]
        d[:, 7] = np.maximum(d[:, 7], d[:, 6] - 0.6 * L56)
        return K, d

    def forward(self, xv: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Warped positions of source mouth-frame points ``[n, 2]``; ``side`` -1 puts a point
        on the upper lip (above the tear), +1 on the lower, 0 decides by its position."""
        x, v = xv[:, 0], xv[:, 1]
        xp = x + self.dx(x, v)
        K, d = self.keys(xp)
        src = K[:, list(_SRC_OF)]
        upper = np.where(side < 0, True, np.where(side > 0, False, v < K[:, 3]))
        disp = np.zeros(len(v))

        def eased(i):
            span = np.maximum(src[:, i + 1] - src[:, i], 1e-9)
            tau = np.clip((v - src[:, i]) / span, 0.0, 1.0)
            return d[:, i] + (d[:, i + 1] - d[:, i]) * _ss(tau)

        for i in (0, 1, 2):
            sel = upper & (v >= src[:, i]) & (v < src[:, i + 1])
            disp = np.where(sel, eased(i), disp)
        disp = np.where(upper & (v >= src[:, 3]), d[:, 3], disp)
        disp = np.where(~upper & (v <= src[:, 4]), d[:, 4], disp)
        for i in (4, 5, 6, 7):
            sel = ~upper & (v > src[:, i]) & (v <= src[:, i + 1])
            disp = np.where(sel, eased(i), disp)
        return np.stack([xp, v + disp], 1)

    def table(self, x0: float, x1: float, step: float) -> "_Table":
        """Per-column quantities on a fine grid over ``[x0, x1]`` (looked up nearest)."""
        n = int(math.ceil((x1 - x0) / step)) + 2
        xs = x0 + step * np.arange(n)
        K, d = self.keys(xs)
        src = K[:, list(_SRC_OF)]
        out = src + d
        slope = np.gradient(out[:, [2, 3, 4, 5]], step, axis=0)
        ui_rest = np.interp(xs, *self.g.ui)[:, None]
        paint = np.concatenate([out[:, [2, 3, 4, 5]], slope, ui_rest], axis=1)
        return _Table(x0, step, n, src.astype(np.float32), d.astype(np.float32), out.astype(np.float32),
                      paint.astype(np.float32))

    def backward(self, xq: np.ndarray, vq: np.ndarray, tab: "_Table"):
        """Source (x, v) of warped mouth-frame points, their table rows and a tear flag."""
        fi = np.clip((xq - tab.x0) * (1.0 / tab.step), 0.0, tab.n - 1.001)
        i0 = fi.astype(np.int64)
        fr = (fi - i0).astype(np.float32)
        gr = 1.0 - fr
        out = tab.out[i0] * gr[:, None] + tab.out[i0 + 1] * fr[:, None]
        j = (vq[:, None] >= out).sum(axis=1) - 1  # segment index in the 9 out keys
        tear = j == 3
        seg = np.clip(j, 0, 7)
        fa, fb = i0 * 9 + seg, (i0 + 1) * 9 + seg
        src_f, d_f = tab.src.ravel(), tab.d.ravel()
        s0 = src_f[fa] * gr + src_f[fb] * fr
        s1 = src_f[fa + 1] * gr + src_f[fb + 1] * fr
        d0 = d_f[fa] * gr + d_f[fb] * fr
        d1 = d_f[fa + 1] * gr + d_f[fb + 1] * fr
        idx = np.where(fr < 0.5, i0, i0 + 1)
        L, D = s1 - s0, d1 - d0
        target = vq.astype(np.float32) - s0 - d0
        tau = np.clip(target / np.maximum(L + D, 1e-6), 0.0, 1.0)
        for _ in range(4):
            f = tau * L + D * (tau * tau * (3.0 - 2.0 * tau)) - target
            fp = L + D * (6.0 * tau * (1.0 - tau))
            tau = np.clip(tau - f / np.maximum(fp, 1e-6), 0.0, 1.0)
        v = (s0 + tau * L).astype(np.float64)
        inside = (j >= 0) & (j <= 7) & ~tear
        v = np.where(inside, v, vq)
        v = np.where(tear, tab.src[i0, 3] * gr + tab.src[i0 + 1, 3] * fr, v)
        x = self.inv_dx(xq, v)
        return x, v, idx, tear


@dataclass(frozen=True, eq=False)
class _Table:
    x0: float
    step: float
    n: int
    src: np.ndarray  # [n, 9] source keys (seam twice)
    d: np.ndarray  # [n, 9] displacements
    out: np.ndarray  # [n, 9] warped keys
    paint: np.ndarray  # [n, 9]: out keys 2, 3u, 3l, 4; their slopes; rest-pose upper inner lip


# --------------------------------------------------------------------------------------
# The mouth interior
# --------------------------------------------------------------------------------------

# upper teeth across the arch as seen from the front: boundaries (x W from the centre),
# relative length, brightness (the side teeth turn away and sink into the mouth's shadow)
_TOOTH_EDGES = np.array([0.0, 0.135, 0.23, 0.305, 0.36, 0.405, 0.445, 0.52])
_TOOTH_LEN = np.array([1.0, 0.90, 0.93, 0.80, 0.72, 0.65, 0.6])
_TOOTH_LUM = np.array([1.0, 0.88, 0.68, 0.46, 0.33, 0.25, 0.2])


def _cov_between(v, a, b, sa, sb, k):
    """Coverage of the band ``a < v < b`` (slopes sa, sb) for pixels ``1/k`` source px wide."""
    ca = np.clip(0.5 + (v - a) * k / np.sqrt(1.0 + sa * sa), 0.0, 1.0)
    cb = np.clip(0.5 + (b - v) * k / np.sqrt(1.0 + sb * sb), 0.0, 1.0)
    return np.clip(ca + cb - 1.0, 0.0, 1.0)


def _paint_interior(face: PhotoFace, w: _Warp, x, v, row, k: float, rng: np.random.Generator):
    """Colour (sRGB float) and coverage of the painted interior at mouth-frame points;
    ``row``: the points' ``_Table.paint`` rows."""
    g, look = face._g, face._look
    W = g.W
    row = row.astype(np.float64)
    top, t3u, t3l, bot = row[:, 0], row[:, 1], row[:, 2], row[:, 3]
    s_top, s_3u, s_3l, s_bot = row[:, 4], row[:, 5], row[:, 6], row[:, 7]
    ui_rest = row[:, 8]
    # coverage: the tear, and, fading in as the mouth opens, the input's old interior: all of
    # it, or only its lower part when the input shows its upper teeth (they are kept; the
    # lower part would otherwise bend with the lower lip)
    a = _cov_between(v, t3u, t3l, s_3u, s_3l, k)
    beta = float(_ss((w.Lc + w.Uc) / ((0.06 if look.has_teeth else 0.04) * W)))
    if beta > 0:
        old = _cov_between(v, t3u if look.has_teeth else top, bot, s_3u if look.has_teeth else s_top, s_bot, k)
        a = np.maximum(a, beta * old)
    if look.has_teeth:
        top = t3u
    gap = np.maximum(bot - top, 1e-3)
    gap_c = max(w.Lc + w.Uc + face.opening * W * (1.0 - look.seam if look.has_teeth else 1.0), 1e-3)  # at the centre
    xm = w.x_mid
    un = np.where(x < xm, (x - xm) / max(xm - w.xi[0], 1e-3), (x - xm) / max(w.xi[1] - xm, 1e-3))
    un = np.clip(un, -1.0, 1.0)
    au = np.abs(un)
    vt = v - top  # depth below the upper lip (source px)
    vn = np.clip(vt / gap, 0.0, 1.0)
    # --- the cavity: the lips' colour (reddened: mucosa) darkened to near black; darkest
    # behind the upper teeth and at the corners, a little light on the floor and where the
    # inner lips curve in
    mucosa = 0.5 * look.lip + 0.5 * np.array([0.45, 0.09, 0.08]) * (float(look.lip @ _LUMA) / 0.16)
    deep = mucosa * 0.03 + 0.0008
    dist_edge = np.minimum(vt, bot - v).clip(0)
    rim = np.exp(-dist_edge / (0.015 * W + 0.5 / k))
    col = deep[None, :] * (0.55 + 0.9 * vn ** 1.5)[:, None]
    col = col + (mucosa * 0.2 - deep)[None, :] * (0.6 * rim)[:, None]
    col *= (1.0 - 0.6 * au ** 3)[:, None]
    # --- tongue: a lit dome on the floor of a wide mouth, its back fading into the dark
    if gap_c > 0.10 * W:
        th = gap * 0.42 * float(_ss((gap_c - 0.10 * W) / (0.25 * W)))
        tongue_top = bot - th * np.sqrt(np.clip(1.0 - (un / 0.8) ** 2, 0.0, 1.0))
        soft = 0.35 * th + 0.8 / k
        ct = _ss((v - tongue_top) / np.maximum(soft, 1e-3)) * (th > 0.5 / k)
        tdepth = np.clip((v - tongue_top) / np.maximum(th, 1e-3), 0.0, 1.0)
        # pink, in the mouth's shade: hue between a tongue's pink and the lips', brightness
        # from the skin (lipstick says nothing about it)
        hue = 0.65 * np.array([0.62, 0.24, 0.25]) / 0.35 + 0.35 * mucosa / max(float(mucosa @ _LUMA), 1e-6)
        tongue = hue * (0.6 * float(look.skin @ _LUMA) / max(float(hue @ _LUMA), 1e-6))
        bright = (0.2 + 0.8 * _ss(tdepth / 0.45)) * (1.0 - 0.45 * _ss((tdepth - 0.55) / 0.45))
        bright *= 1.0 - 0.6 * (au / 0.8).clip(0, 1) ** 2
        groove = 1.0 - 0.12 * np.exp(-(un / 0.06) ** 2) * (1.0 - tdepth)
        lip_shadow = 1.0 - 0.7 * np.exp(-np.clip(bot - v, 0, None) / (0.012 * W + 0.6 / k))
        tcol = tongue[None, :] * (bright * groove * lip_shadow)[:, None]
        col = col * (1.0 - ct[:, None]) + tcol * ct[:, None]
    # --- lower teeth: their tips just above the lower lip's middle, for wide or "ee" mouths
    lt_h = W * 0.035 * min(float(_ss((w.o - 0.3) / 0.5) * (0.5 + 0.5 * w.t) + 0.6 * w.s * w.t), 1.0)
    if lt_h > 0.6 / k:
        lt_top = bot - 0.012 * W - lt_h * np.clip(1.0 - (un / 0.45) ** 2, 0.0, 1.0) ** 0.5
        cl = np.clip(0.5 + (v - lt_top) * k, 0.0, 1.0) * (au < 0.45)
        xs_w = np.abs(x - g.x_mid) / W
        ph = (xs_w / 0.075) % 1.0
        ltl = 0.8 * (1.0 - 0.6 * (au / 0.45) ** 2)
        ltl *= 1.0 - 0.3 * np.exp(-((np.minimum(ph, 1.0 - ph) * 0.075 * W * k) / 0.5) ** 2)
        ltl *= 1.0 - 0.6 * np.exp(-np.clip(bot - v, 0, None) / (0.008 * W + 0.5 / k))  # the lower lip's shadow
        ltc = look.teeth[None, :] * ltl[:, None] + mucosa[None, :] * (0.25 * (1.0 - ltl))[:, None]
        col = col * (1.0 - cl[:, None]) + ltc * cl[:, None]
    # --- upper teeth, fixed to the skull: they hang from the rest-pose upper lip
    teeth_len = W * (0.025 + 0.075 * w.t)
    if teeth_len > 0:
        xs = (x - g.x_mid) / W
        axs = np.abs(xs)
        ti = np.clip(np.searchsorted(_TOOTH_EDGES, axs, side="right") - 1, 0, len(_TOOTH_LEN) - 1)
        e0, e1 = _TOOTH_EDGES[ti], _TOOTH_EDGES[ti + 1]
        dpos = np.clip((axs - e0) / (e1 - e0) * 2.0 - 1.0, -1.0, 1.0)  # -1..1 across the tooth
        rounding = np.where(ti == 2, 1.0 - 0.18 * np.abs(dpos) ** 1.3, 1.0 - 0.12 * np.abs(dpos) ** 4)
        side = np.sign(xs)
        var = look.tooth_var[np.clip((ti + 8 * (side > 0)).astype(np.int64), 0, 15)]
        length = teeth_len * _TOOTH_LEN[ti] * rounding * (1.0 - 0.2 * au ** 2) * (1.0 + 0.6 * var)
        edge_v = ui_rest + length
        cov_t = np.clip(0.5 + (edge_v - v) * k, 0.0, 1.0) * (axs < _TOOTH_EDGES[-1])
        cov_t *= 1.0 - _ss((au - 0.75) / 0.25)
        half_px = 0.5 * (e1 - e0) * W * k
        gapline = np.exp(-(((1.0 - np.abs(dpos)) * half_px) / 0.5) ** 2)
        emb = _ss((v - (edge_v - 0.3 * length)) / (0.3 * length + 1e-6))  # towards the incisal edge
        lum = (_TOOTH_LUM[ti] + var) * (0.90 + 0.10 * np.cos(0.5 * np.pi * dpos))
        lum *= 1.0 - 0.65 * _ss((au - 0.3) / 0.5)  # the side teeth sink into the corners' shadow
        lum *= 1.0 - (0.10 + 0.45 * emb) * gapline
        lum *= 0.40 + 0.60 * _ss(vt / (0.035 * W))  # the upper lip's shadow on the teeth
        tr = _ss((v - edge_v + 0.018 * W) / (0.018 * W))  # the translucent incisal edge
        tcol = look.teeth[None, :] * lum[:, None] * (1.0 - tr[:, None] * np.array([0.22, 0.2, 0.12])[None, :])
        tcol += mucosa[None, :] * (0.25 * (1.0 - lum).clip(0, 1))[:, None]  # warm light inside the mouth
        col = col * (1.0 - cov_t[:, None]) + tcol * cov_t[:, None]
    # --- the shadow under the upper lip
    shade = 1.0 - 0.55 * np.exp(-vt.clip(0) / (0.018 * W + 0.5 / k))
    col = col * shade[:, None]
    return _to_srgb(col), a


def _composite(region: np.ndarray, idx: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, blur: float,
               noise: float, rng: np.random.Generator) -> None:
    """In place: the painted layer (sRGB, coverage at flat pixel ``idx``) over ``region``,
    blurred like the photo (``blur``: output pixels) and with its grain."""
    h, w = region.shape[:2]
    pa = np.zeros(h * w, np.float32)
    pa[idx] = alpha
    pc = np.zeros((h * w, 3), np.float32)
    pc[idx] = rgb * alpha[:, None]
    pa, pc = pa.reshape(h, w), pc.reshape(h, w, 3)
    if blur > 0.25:
        pa = cv2.GaussianBlur(pa, (0, 0), blur)
        pc = cv2.GaussianBlur(pc, (0, 0), blur)
    sel = pa > 1.0 / 512
    if not sel.any():
        return
    a = pa[sel][:, None]
    c = pc[sel]
    if noise > 0:
        c = c + rng.normal(0.0, noise, c.shape).astype(np.float32) * a
    base = region[sel].astype(np.float32) / 255.0
    region[sel] = np.clip(np.round((base * (1.0 - a) + c) * 255.0), 0, 255).astype(np.uint8)


def _roi_map(g: _Geometry, w: _Warp, tab: _Table, A: np.ndarray, r0: int, r1: int, c0: int, c1: int, k: float):
    """Input-image sampling coordinates (``cv2.remap`` convention) of the output pixels
    ``[r0:r1, c0:c1]``: the backward warp on a 2-pixel grid, bilinearly upsampled (the field is
    smooth there), and computed exactly per pixel around the lips (the tear, the corners).
    Returns ``(q [h, w, 2] float32, (flat indices, mouth coords, table rows) of the exact
    pixels or None)``."""
    h, wd = r1 - r0, c1 - c0
    # output pixel centre -> mouth frame: one affine map
    R = np.stack([g.ex, g.ey])  # [2, 2]
    M = R @ A[:2, :2]
    t = R @ (A[:2, 2] - g.O)

    def mouth(cols, rows):
        return (M[0, 0] * (cols + 0.5) + M[0, 1] * (rows + 0.5) + t[0],
                M[1, 0] * (cols + 0.5) + M[1, 1] * (rows + 0.5) + t[1])

    def source(x, v):
        xs, vs, tidx, tear = w.backward(x, v, tab)
        qx = g.O[0] + xs * g.ex[0] + vs * g.ey[0] - 0.5
        qy = g.O[1] + xs * g.ex[1] + vs * g.ey[1] - 0.5
        return qx, qy, tidx

    hc, wc = (h + 3) // 2, (wd + 3) // 2
    cr, cc = np.meshgrid(r0 + 2.0 * np.arange(hc), c0 + 2.0 * np.arange(wc), indexing="ij")
    x, v = mouth(cc.ravel(), cr.ravel())
    qx, qy, _ = source(x, v)
    coarse = np.stack([qx, qy], 1).reshape(hc, wc, 2).astype(np.float32)
    fy, fx = np.meshgrid(np.arange(h, dtype=np.float32) / 2, np.arange(wd, dtype=np.float32) / 2, indexing="ij")
    q = cv2.remap(coarse, fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # exactly around the lips: between the warped outer lip edges, corners included, with a margin
    rows, cols = np.mgrid[r0:r1, c0:c1]
    x, v = mouth(cols.ravel().astype(np.float64), rows.ravel().astype(np.float64))
    m = 3.0 / max(k, 1e-3) + 1.0
    i = np.clip(((x - tab.x0) / tab.step + 0.5).astype(np.int64), 0, tab.n - 1)
    if w.C != 0.0:  # the corners' pull shears the skin between the lips and the nose
        xl, xr = g.x_mid - g.hw[0] * (1 + g.sigma[0]), g.x_mid + g.hw[1] * (1 + g.sigma[1])
    else:
        xl, xr = w.xo
    near = (x > xl - m) & (x < xr + m)
    near &= (v > tab.out[i, 0] - m) & (v < tab.out[i, 6] + m)
    # and the columns where the opening profile ends (a kink that runs down to the chin)
    for xc in (w.xi[0], w.xi[1], w.xo[0], w.xo[1]):
        near |= np.abs(x - xc) < m
    eidx = np.flatnonzero(near)
    if len(eidx) == 0:
        return q, None
    ex, ev = x[eidx], v[eidx]
    qx, qy, tidx = source(ex, ev)
    qf = q.reshape(-1, 2)
    qf[eidx, 0], qf[eidx, 1] = qx, qy
    return q, (eidx, np.stack([ex, ev], 1), tidx)


# --------------------------------------------------------------------------------------
# talk()
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TalkingClip:
    """What ``talk`` returns.

    - ``frames`` ``uint8 [F, h, w, 3]``;
    - ``landmarks`` ``float32 [F, 468, 2]``: the input landmarks moved exactly as the warp
      (and the motion/crop) moved them, in the output frame's pixels (pixel ``i`` covers
      ``[i, i+1)``);
    - ``gap_px`` ``float32 [F]``: the inner-lip gap at the centre, ``|p13 - p14|`` of those
      landmarks, output pixels;
    - ``mouth_area`` ``float32 [F]``: area of the inner-lip polygon, output pixels²;
    - ``params`` ``float32 [F, 4]``: the mouth parameters;
    - ``transforms`` ``float64 [F, 2, 3]``: output pixel coordinates -> input image
      coordinates of the similarity (motion and crop; the mouth warp excluded).
    """

    frames: np.ndarray
    landmarks: np.ndarray
    gap_px: np.ndarray
    mouth_area: np.ndarray
    params: np.ndarray
    transforms: np.ndarray


_PIVOT = (0.5, 0.72)  # distill.faces: the head turns about the neck, crop units


def _similarity(box, size_out, pose) -> np.ndarray:
    """3x3 matrix: output continuous coords -> input image coords."""
    x0, y0, side = box
    # output -> crop units
    if size_out is not None:
        to_c = np.array([[1.0 / size_out, 0, 0], [0, 1.0 / size_out, 0], [0, 0, 1]])
    else:
        to_c = np.array([[1.0 / side, 0, -x0 / side], [0, 1.0 / side, -y0 / side], [0, 0, 1]])
    if pose is None:
        head = np.eye(3)
    else:
        tx, ty, rot, sc = (float(v) for v in pose)
        c, s = math.cos(-rot), math.sin(-rot)
        px, py = _PIVOT
        # l = R(-rot) (c - pivot - t) / sc + pivot
        R = np.array([[c / sc, -s / sc, 0], [s / sc, c / sc, 0], [0, 0, 1]])
        head = (np.array([[1, 0, px], [0, 1, py], [0, 0, 1]]) @ R
                @ np.array([[1, 0, -px - tx], [0, 1, -py - ty], [0, 0, 1]]))
    to_img = np.array([[side, 0, x0], [0, side, y0], [0, 0, 1]])
    return to_img @ head @ to_c


def talk(face: PhotoFace, params, motion=None, out_size: int | None = None, seed: int = 0) -> TalkingClip:
    """Make ``face`` say ``params`` (``[F, 4]`` open, spread, round, teeth in [0, 1], e.g.
    ``distill.visemes.frame_params(speech, F)``).

    Args:
        face: the ``PhotoFace``.
        params: mouth parameters per frame.
        motion: ``None`` (a still head), a ``distill.faces.Motion`` or its poses ``[F, 4]``
            (tx, ty in crop units, rotation in radians, scale about the neck): a similarity
            of each whole frame about the face.
        out_size: ``None`` for frames of the input's size, or ``S``: ``S x S`` frames cut
            around the face (a square of 3 inter-ocular distances, ``face_box``).
        seed: the grain of the painted interior (frames are a deterministic function of the
            inputs and the seed).

    Returns:
        ``TalkingClip``. With all-zero params, no motion and no crop the frames equal the
        input image bit for bit.
    """
    if not isinstance(face, PhotoFace):
        raise TypeError(f"face must be a PhotoFace(image, landmarks), got {type(face).__name__}")
    p = _check_params(params)
    F = p.shape[0]
    poses = _motion_poses(motion, F)
    if out_size is not None:
        if isinstance(out_size, bool) or not isinstance(out_size, (int, np.integer)) or not 32 <= int(out_size) <= 4096:
            raise ValueError(f"out_size must be None (input size) or an int in [32, 4096], got {out_size!r}; e.g. 256")
        out_size = int(out_size)
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    g = face._g
    H, Wimg = face.image.shape[:2]
    box = face_box(face.landmarks)
    oh, ow = (out_size, out_size) if out_size is not None else (H, Wimg)
    frames = np.empty((F, oh, ow, 3), np.uint8)
    lms = np.empty((F, NUM_LANDMARKS, 2), np.float32)
    gaps = np.empty(F, np.float32)
    areas = np.empty(F, np.float32)
    transforms = np.empty((F, 2, 3))
    src_m = g.to_mouth(face.landmarks.astype(np.float64))
    side = np.zeros(NUM_LANDMARKS)
    side[list(UPPER_INNER[1:-1]) + list(UPPER_OUTER[1:-1])] = -1
    side[list(LOWER_INNER[1:-1]) + list(LOWER_OUTER[1:-1])] = 1
    support = g.support_polygon()
    if not (poses is None and out_size is None):
        gy, gx = np.mgrid[0:oh, 0:ow].astype(np.float64) + 0.5
    for f in range(F):
        A = _similarity(box, out_size, None if poses is None else poses[f])
        transforms[f] = A[:2]
        Ainv = np.linalg.inv(A)
        k = float(math.sqrt(abs(np.linalg.det(Ainv[:2, :2]))))  # output px per input px
        src_img = face._source(k)
        w = _Warp(g, p[f])
        # landmarks
        warped = g.to_image(w.forward(src_m, side))
        o_lm = warped @ Ainv[:2, :2].T + Ainv[:2, 2]
        lms[f] = o_lm
        gaps[f] = float(np.hypot(*(o_lm[LOWER_LIP_INNER] - o_lm[UPPER_LIP_INNER])))
        areas[f] = _poly_area(o_lm[list(LIPS_INNER)].astype(np.float64))
        # the region of the output the mouth warp can touch
        sup_o = support @ Ainv[:2, :2].T + Ainv[:2, 2]
        c0 = int(np.clip(math.floor(sup_o[:, 0].min()) - 2, 0, ow))
        c1 = int(np.clip(math.ceil(sup_o[:, 0].max()) + 2, 0, ow))
        r0 = int(np.clip(math.floor(sup_o[:, 1].min()) - 2, 0, oh))
        r1 = int(np.clip(math.ceil(sup_o[:, 1].max()) + 2, 0, oh))
        identity = poses is None and out_size is None
        if identity:
            frame = face.image.copy()
            if w.zero or c1 <= c0 or r1 <= r0:
                frames[f] = frame
                continue
            map_x = np.empty((r1 - r0, c1 - c0), np.float32)
            map_y = np.empty_like(map_x)
        else:
            map_x = (A[0, 0] * gx + A[0, 1] * gy + (A[0, 2] - 0.5)).astype(np.float32)
            map_y = (A[1, 0] * gx + A[1, 1] * gy + (A[1, 2] - 0.5)).astype(np.float32)
        paint = None
        if c1 > c0 and r1 > r0 and not w.zero:
            step = min(0.125, 0.125 / max(k, 1e-3))
            tab = w.table(g.x_range[0] - 2, g.x_range[1] + 2, step)
            q, exact = _roi_map(g, w, tab, A, r0, r1, c0, c1, k)
            if identity:
                map_x[:], map_y[:] = q[..., 0], q[..., 1]
            else:
                map_x[r0:r1, c0:c1], map_y[r0:r1, c0:c1] = q[..., 0], q[..., 1]
            if exact is not None:
                eidx, xv, tidx = exact
                prow = tab.paint[tidx]
                band = (xv[:, 1] > prow[:, 0] - 2.0 / k) & (xv[:, 1] < prow[:, 3] + 2.0 / k)
                band &= (xv[:, 0] > w.xi[0] - 2.0 / k) & (xv[:, 0] < w.xi[1] + 2.0 / k)
                if band.any():
                    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, f, 0x9A])
                    sel = np.flatnonzero(band)
                    rgb, alpha = _paint_interior(face, w, xv[sel, 0], xv[sel, 1], prow[sel], k, rng)
                    paint = (eidx[sel], rgb, alpha, rng)
        border = cv2.BORDER_REFLECT_101
        out = cv2.remap(src_img, map_x, map_y, cv2.INTER_LINEAR, borderMode=border)
        if identity:
            region = out
        else:
            region = out[r0:r1, c0:c1]
        if paint is not None:
            idx, rgb, alpha, rng = paint
            region = np.ascontiguousarray(region)
            look = face._look
            blur = math.sqrt(max((look.blur * k) ** 2 - 0.35 ** 2, 0.0))
            grain = look.noise * min(1.0, 1.0 / max(k, 1e-3)) * 0.9
            _composite(region, idx, rgb, alpha, blur, grain, rng)
        if identity:
            frame[r0:r1, c0:c1] = region
            frames[f] = frame
        else:
            out[r0:r1, c0:c1] = region
            frames[f] = out
    return TalkingClip(frames, lms, gaps, areas, p.astype(np.float32), transforms)


# --------------------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------------------


def _read_image(path: str, frame: int) -> np.ndarray:
    low = path.lower()
    if low.endswith((".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read image {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    from lipforce_sdk.media import iter_video_frames

    for i, fr in enumerate(iter_video_frames(path)):
        if i == frame:
            return np.ascontiguousarray(fr)
    raise SystemExit(f"{path} has fewer than {frame + 1} frames")


def _label(img: np.ndarray, text: str, scale: float = 0.45) -> np.ndarray:
    out = img.copy()
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    if tw > img.shape[1] - 10:
        scale *= (img.shape[1] - 10) / tw
    cv2.putText(out, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _mouth_crop(frame: np.ndarray, lm: np.ndarray, ref: np.ndarray, enlarge: int = 3) -> np.ndarray:
    """The mouth region enlarged: a box ``1.8 x 1.2`` mouth widths of the rest pose ``ref``,
    placed from the nose tip (which the warp does not move)."""
    W = float(np.hypot(*(ref[MOUTH_LEFT] - ref[MOUTH_RIGHT])))
    c = lm[NOSE_TIP] + (ref[[MOUTH_RIGHT, MOUTH_LEFT]].mean(0) - ref[NOSE_TIP]) + np.array([0.0, 0.2 * W])
    hw, hh = 0.9 * W, 0.6 * W
    x0, y0 = int(round(c[0] - hw)), int(round(c[1] - hh))
    x1, y1 = x0 + int(round(2 * hw)), y0 + int(round(2 * hh))
    h, w = frame.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, x1, y0, y1 = x0 + pad, x1 + pad, y0 + pad, y1 + pad
    crop = frame[y0:y1, x0:x1]
    return cv2.resize(crop, ((x1 - x0) * enlarge, (y1 - y0) * enlarge), interpolation=cv2.INTER_CUBIC)


def _fit(img: np.ndarray, width: int) -> np.ndarray:
    """Pad (centred) or shrink ``img`` to ``width``."""
    h, w = img.shape[:2]
    if w > width:
        return cv2.resize(img, (width, int(round(h * width / w))), interpolation=cv2.INTER_AREA)
    left = (width - w) // 2
    return np.pad(img, ((0, 0), (left, width - w - left), (0, 0)), constant_values=24)


def contact_sheet(face: PhotoFace, text: str | None = None, size: int = 256, voice: str = "en-us",
                  rate: int = 150, strip: int = 12) -> tuple[np.ndarray, dict]:
    """An RGB contact sheet: per viseme the whole crop and the mouth enlarged 3x; with
    ``text``, ``strip`` frames of the sentence spoken (mouths enlarged 2x, the parameters
    written on them) and a few whole frames. Returns (image, info)."""
    names = list(VISEMES)
    params = np.array([VISEMES[n] for n in names], np.float32)
    t0 = time.perf_counter()
    clip = talk(face, params, out_size=size)
    info = {"ms_per_frame_visemes": (time.perf_counter() - t0) * 1e3 / len(names),
            "opening": face.opening, "has_teeth": face.has_teeth}
    ref = clip.landmarks[0]
    crops = [_label(_mouth_crop(fr, ref, ref), f"{n}: gap {gp:.1f} px")
             for fr, n, gp in zip(clip.frames, names, clip.gap_px)]
    cw = max(c.shape[1] for c in crops)
    cols = [np.concatenate([_fit(_label(fr, n), cw), _fit(c, cw)], 0) for fr, n, c in zip(clip.frames, names, crops)]
    rows = [np.concatenate(cols, 1)]
    if text:
        from .faces import Motion
        from .speech import synthesize
        from .visemes import frame_params

        sp = synthesize(text, voice, rate).padded(0.2, 0.2)
        n = sp.num_frames()
        sp = sp.fit_frames(n)
        fp = frame_params(sp, n)
        t0 = time.perf_counter()
        tc = talk(face, fp, motion=Motion.random(7, amount=0.6), out_size=size)
        info["ms_per_frame_sentence"] = (time.perf_counter() - t0) * 1e3 / n
        info["frames"] = n
        speaking = np.flatnonzero(fp[:, 0] > 0.02)
        lo, hi = (speaking[0], speaking[-1]) if len(speaking) else (0, n - 1)
        pick = np.unique(np.linspace(lo, hi, strip).round().astype(int))
        cells = []
        for i in pick:
            mc = _mouth_crop(tc.frames[i], tc.landmarks[i], ref, enlarge=2)
            o, s_, r, t = fp[i]
            cells.append(_label(mc, f"{i}: o{o:.2f} s{s_:.2f} r{r:.2f} t{t:.2f}", 0.4))
        width = rows[0].shape[1]
        per = max(1, width // cells[0].shape[1])
        for j in range(0, len(cells), per):
            part = cells[j: j + per]
            part += [np.zeros_like(cells[0])] * (per - len(part))
            rows.append(np.concatenate(part, 1))
        full = [_label(tc.frames[i], f"frame {i}") for i in pick[:: max(1, len(pick) // 5)][:6]]
        rows.append(np.concatenate(full, 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, 0), info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.photoreal", description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True, help="a photo (png/jpg) or a video")
    ap.add_argument("--frame", type=int, default=0, help="frame of a video (default 0)")
    ap.add_argument("--text", default=None, help="a sentence to speak (espeak-ng)")
    ap.add_argument("--voice", default="en-us")
    ap.add_argument("--size", type=int, default=256, help="output crop size (default 256)")
    ap.add_argument("--max-opening", type=float, default=0.30)
    ap.add_argument("--out", required=True, help="the PNG to write")
    a = ap.parse_args(argv)
    img = _read_image(a.image, a.frame)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        face = PhotoFace.detect(img, max_opening=a.max_opening)
    for wr in caught:
        print(f"note: {wr.message}")
    sheet, info = contact_sheet(face, a.text, a.size, a.voice)
    cv2.imwrite(a.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"{a.out}: {sheet.shape[1]}x{sheet.shape[0]}; lip opening of the input {info['opening']:.3f}"
          f"{' (teeth showing: kept)' if info['has_teeth'] else ''}; "
          + "; ".join(f"{k} {v:.1f}" for k, v in info.items() if k.startswith("ms")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
