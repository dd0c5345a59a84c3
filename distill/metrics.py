"""Fidelity and mouth-shape measures on face crops (NumPy / SciPy, no torch).

- ``psnr`` / ``ssim``: over the whole crop or a region. SSIM is Wang et al. (2004): Gaussian
  window sigma 1.5 truncated at 3.5 sigma (11 x 11), K1 = 0.01, K2 = 0.03, population
  (co)variances, per colour channel then averaged, so it matches
  ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255)`` on the pixels away from the border.
- ``outside_mouth(size)``: the pixels whose whole SSIM window lies outside
  ``mouth_mask_hard`` (what a lip-sync model must leave as it was: identity, background,
  pose); ``inside_mouth(size)``: the hard mask itself.
- ``measure_mouth``: the lip gap measured in the pixels of a frame (rendered or generated),
  compared with ``distill.faces.mouth_geometry`` by ``mouth_error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy import ndimage

from lipforce_sdk.face import mouth_mask_hard

__all__ = [
    "psnr",
    "ssim",
    "ssim_map",
    "outside_mouth",
    "inside_mouth",
    "fidelity",
    "measure_mouth",
    "mouth_error",
    "MouthError",
]

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5: an 11 x 11 window
K1, K2 = 0.01, 0.03


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 2:
        raise ValueError(f"images must be at least [H, W], got shape {a.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def _weights(mask: np.ndarray | None, shape: tuple[int, ...], hw_axes: tuple[int, int]) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask, np.float64)
    h, w = shape[hw_axes[0]], shape[hw_axes[1]]
    if m.shape != (h, w):
        raise ValueError(f"mask must be [H, W] = {(h, w)} like the images, got shape {m.shape}")
    if m.sum() <= 0:
        raise ValueError("mask is empty (all zero): there are no pixels to measure")
    return m


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of ``[..., H, W, C]`` (or ``[..., H, W]``) images.

    The squared error is pooled over every pixel and channel of every image (weighted by
    ``mask`` ``[H, W]`` when given); identical inputs give ``inf``.
    """
    a, b = _pair(a, b)
    axes = (-3, -2) if a.ndim >= 3 and a.shape[-1] in (1, 3, 4) else (-2, -1)
    m = _weights(mask, a.shape, axes)
    se = (a - b) ** 2
    if m is None:
        mse = float(se.mean())
    else:
        mm = m[:, :, None] if axes == (-3, -2) else m
        mm = np.broadcast_to(mm, se.shape)
        mse = float((se * mm).sum() / mm.sum())
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def _filt(x: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(x, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-pixel SSIM of two ``[H, W]`` or ``[H, W, C]`` images, averaged over channels: ``[H, W]``."""
    a, b = _pair(a, b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3:
        raise ValueError(f"ssim_map takes one image [H, W] or [H, W, C], got shape {a.shape}")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    out = np.zeros(a.shape[:2])
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = _filt(x), _filt(y)
        vx = _filt(x * x) - mx * mx
        vy = _filt(y * y) - my * my
        cxy = _filt(x * y) - mx * my
        out += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return out / a.shape[2]


@lru_cache(maxsize=16)
def _border(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    r = SSIM_RADIUS
    m[r: h - r, r: w - r] = True
    return m


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, data_range: float = 255.0) -> float:
    """Mean SSIM of ``[..., H, W, C]`` images (each image separately, then averaged).

    Averaged over the pixels at least ``SSIM_RADIUS`` from the border (as skimage does), times
    ``mask`` ``[H, W]`` when given. Identical inputs give 1.0.
    """
    a, b = _pair(a, b)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
        a, b = a[..., None], b[..., None]
    h, w = a.shape[-3], a.shape[-2]
    wgt = _border(h, w).astype(np.float64)
    m = _weights(mask, a.shape, (-3, -2))
    if m is not None:
        wgt = wgt * m
    if wgt.sum() <= 0:
        raise ValueError("the mask has no pixels at least 5 from the border: nothing to measure")
    flat_a = a.reshape(-1, h, w, a.shape[-1])
    flat_b = b.reshape(-1, h, w, a.shape[-1])
    vals = [float((ssim_map(x, y, data_range) * wgt).sum() / wgt.sum()) for x, y in zip(flat_a, flat_b)]
    return float(np.mean(vals))


@lru_cache(maxsize=16)
def _outside(size: int) -> np.ndarray:
    hard = mouth_mask_hard(size) > 0
    grown = ndimage.binary_dilation(hard, np.ones((2 * SSIM_RADIUS + 1,) * 2, bool))
    m = (~grown).astype(np.float32)
    m.flags.writeable = False
    return m


def outside_mouth(size: int) -> np.ndarray:
    """``[S, S]`` float32 0/1: pixels whose 11 x 11 SSIM window does not touch the mouth mask."""
    return _outside(int(size)).copy()


def inside_mouth(size: int) -> np.ndarray:
    """``[S, S]`` float32 0/1: ``mouth_mask_hard(size)``."""
    return mouth_mask_hard(int(size))


def fidelity(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR / SSIM of ``[F, S, S, 3]`` uint8 clips outside and inside the mouth region."""
    s = int(np.asarray(pred).shape[-2])
    out, ins = outside_mouth(s), inside_mouth(s)
    return {
        "psnr_out": psnr(pred, target, out),
        "ssim_out": ssim(pred, target, out),
        "psnr_in": psnr(pred, target, ins),
        "ssim_in": ssim(pred, target, ins),
    }


# --------------------------------------------------------------------------------------
# Mouth shape from pixels
# --------------------------------------------------------------------------------------

# Where the lip gap can be, in crop units (y0, y1, x0, x1), for the renderer's poses.
_SEARCH = (0.60, 0.84, 0.32, 0.68)
_EXPECT = (0.5, 0.69)  # typical gap centre (x, y)
_CENTRE = (0.62, 0.78, 0.40, 0.60)  # the gap's centroid is always in here (y0, y1, x0, x1)
_DARK_ABS, _DARK_REL = 0.12, 0.45  # a core gap pixel: luminance below max(ABS, REL * skin)
_TEETH_CHROMA = 0.12  # teeth: nearly grey ...
_TEETH_BRIGHT = 0.55  # ... and brighter than this (and than the skin)
_INTERIOR_DEFAULT = np.array([0.12, 0.03, 0.035], np.float32)
_TEETH_DEFAULT = np.array([0.90, 0.89, 0.85], np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _unmix(px: np.ndarray, c_lip: np.ndarray, c_gap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of ``c_gap`` in each colour of ``px`` [n, 3] as a mix of ``c_lip`` and ``c_gap``,
    and the distance of the colour from that mixing line."""
    d = c_gap - c_lip
    t = ((px - c_lip) @ d) / max(float(d @ d), 1e-6)
    resid = np.linalg.norm(px - (c_lip + np.clip(t, 0, 1)[:, None] * d), axis=1)
    return np.clip(t, 0.0, 1.0), resid


def _measure_one(img: np.ndarray) -> tuple[float, float, float, float]:
    s = img.shape[0]
    y0, y1, x0, x1 = (int(round(v * s)) for v in _SEARCH)
    roi = img[y0:y1, x0:x1].astype(np.float32) / 255.0  # [h, w, 3]
    h, w = roi.shape[:2]
    lum = _luma(roi)
    skin = float(np.median(lum))
    chroma = roi.max(axis=-1) - roi.min(axis=-1)
    dark = lum < max(_DARK_ABS, _DARK_REL * skin)
    teeth = (chroma < _TEETH_CHROMA) & (lum > _TEETH_BRIGHT) & (lum > 1.05 * skin)
    # 1. the gap: the dark region nearest the usual mouth position that stays off the search
    #    box's edge (hair and background touch it), with the teeth that touch it
    n, lab = cv2.connectedComponents((dark | teeth).astype(np.uint8), connectivity=8)
    ey, ex = _EXPECT[1] * s - y0, _EXPECT[0] * s - x0
    best, best_d = 0, np.inf
    for k in range(1, n):
        yy, xx = np.nonzero(lab == k)
        if yy.min() == 0 or xx.min() == 0 or yy.max() == h - 1 or xx.max() == w - 1:
            continue
        cyf, cxf = (yy.mean() + y0 + 0.5) / s, (xx.mean() + x0 + 0.5) / s
        if not (_CENTRE[0] <= cyf <= _CENTRE[1] and _CENTRE[2] <= cxf <= _CENTRE[3]):
            continue
        dd = float(np.min((yy - ey) ** 2 + (xx - ex) ** 2))
        if dd < best_d:
            best, best_d = k, dd
    if best == 0:
        return 0.0, 0.0, 0.0, 0.0
    core = (lab == best) & dark
    tl, _ = ndimage.label(teeth)
    touch = np.unique(tl[ndimage.binary_dilation(lab == best, np.ones((5, 3), bool)) & teeth])
    teeth_sel = np.isin(tl, touch[touch > 0])
    gap = core | teeth_sel
    gap = ndimage.binary_closing(gap, np.ones((3, 1), bool)) | gap  # teeth/interior seams
    gap = ndimage.binary_fill_holes(gap)
    # 2. sub-pixel edges: pixels on or just outside the gap's boundary are a mix of a lip colour
    #    and the gap colour (interior or teeth); unmix them along the colour line
    inner = ndimage.binary_erosion(gap, np.ones((3, 3), bool))
    edge = ndimage.binary_dilation(gap, np.ones((3, 3), bool)) & ~inner
    ring = ndimage.binary_dilation(gap, np.ones((5, 5), bool)) & ~ndimage.binary_dilation(gap, np.ones((3, 3), bool))
    c_lip = np.median(roi[ring], axis=0) if ring.any() else np.median(roi.reshape(-1, 3), axis=0)
    c_int = np.median(roi[core & inner], axis=0) if (core & inner).sum() >= 3 else _INTERIOR_DEFAULT
    c_teeth = np.median(roi[teeth_sel], axis=0) if teeth_sel.sum() >= 3 else _TEETH_DEFAULT
    score = inner.astype(np.float64)
    px = roi[edge]
    f_int, r_int = _unmix(px, c_lip, c_int)
    f_teeth, r_teeth = _unmix(px, c_lip, c_teeth)
    score[edge] = np.where(r_teeth < r_int, f_teeth, f_int)
    teeth_score = np.where(teeth_sel & inner, 1.0, 0.0)
    seam = inner & ~teeth_sel & ndimage.binary_dilation(teeth_sel, np.ones((3, 3), bool))
    if seam.any():  # inside the gap, between teeth and interior: the teeth's share
        teeth_score[seam] = _unmix(roi[seam], c_int, c_teeth)[0]
    teeth_score[edge] = np.where((r_teeth < r_int) & ndimage.binary_dilation(teeth_sel)[edge], f_teeth, 0.0)
    area = float(score.sum())
    gap_h = float(score.sum(axis=0).max())
    width = 4.0 * area / (np.pi * gap_h) if gap_h > 0 else 0.0
    return gap_h, width, area, float(teeth_score.sum())


def measure_mouth(frames: np.ndarray) -> np.ndarray:
    """Measure the lip gap of face crops ``[F, S, S, 3]`` (or one ``[S, S, 3]``) uint8 RGB.

    1. Find the gap: pixels darker than ``max(0.12, 0.45 x skin)`` in luminance (skin = the
       median of the mouth area), the connected region of them nearest the usual mouth
       position and off the search box's edge, plus the bright, nearly grey pixels (teeth)
       touching it, holes filled.
    2. Measure with sub-pixel edges: each pixel on the gap's boundary counts for the fraction
       of gap colour in it, unmixing its colour between the surrounding lip colour and the
       gap's own colour (interior or teeth), as anti-aliasing mixed them.

    Returns:
        ``[F, 4]`` float32 in pixels, the columns of ``distill.faces.GEOMETRY``: gap height at
        its tallest column, gap width (from area and height, as for an ellipse), gap area,
        visible teeth area. A frame with no gap gives zeros.
    """
    f = np.asarray(frames)
    single = f.ndim == 3
    if single:
        f = f[None]
    if f.ndim != 4 or f.shape[-1] != 3 or f.shape[1] != f.shape[2]:
        raise ValueError(f"frames must be [F, S, S, 3] RGB crops, got shape {f.shape}")
    if f.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {f.dtype}")
    out = np.array([_measure_one(x) for x in f], np.float32)
    return out[0] if single else out


@dataclass(frozen=True)
class MouthError:
    """Mouth-shape error of a clip against its ground truth, in pixels of the crop.

    ``gap_mae`` / ``width_mae``: mean absolute error of the lip-gap height / width (width
    only over frames whose true gap is at least 2 px, where a width is visible);
    ``gap_corr``: Pearson correlation of measured and true gap over the clip (1 = the mouth
    opens and closes when it should; ``nan`` if either is constant).
    """

    gap_mae: float
    width_mae: float
    gap_corr: float
    frames: int


def mouth_error(frames: np.ndarray, truth: np.ndarray) -> MouthError:
    """``measure_mouth(frames)`` against ``truth`` ``[F, 4]`` (``mouth_geometry(...).values``)."""
    est = measure_mouth(frames)
    t = np.asarray(truth, np.float32)
    if t.shape != est.shape:
        raise ValueError(f"truth must be [F, 4] = {est.shape} (mouth_geometry(...).values), got {t.shape}")
    gap_mae = float(np.abs(est[:, 0] - t[:, 0]).mean())
    vis = t[:, 0] >= 2.0
    width_mae = float(np.abs(est[vis, 1] - t[vis, 1]).mean()) if vis.any() else float("nan")
    if est[:, 0].std() > 0 and t[:, 0].std() > 0:
        corr = float(np.corrcoef(est[:, 0], t[:, 0])[0, 1])
    else:
        corr = float("nan")
    return MouthError(gap_mae, width_mae, corr, int(t.shape[0]))
