"""Rotated square regions of a frame, and cutting them out (shared by detector and landmarks).

Coordinates are full-frame pixels with pixel ``i`` covering ``[i, i + 1)`` (as in
``lipforce_sdk.face``): the centre of pixel ``(0, 0)`` is ``(0.5, 0.5)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..face import _check_frame

__all__ = ["Roi", "check_frame", "warp_roi"]


def check_frame(frame: np.ndarray, what: str = "frame") -> np.ndarray:
    """``frame`` as an RGB ``uint8`` ``[H, W, 3]`` array of at least 16 x 16, or a ``ValueError``
    saying the fix."""
    return _check_frame(frame, what, min_side=16)


@dataclass(frozen=True)
class Roi:
    """A square region of the frame, rotated by ``angle`` about its centre.

    ``angle`` (radians) is the rotation that takes the ROI's axes to the frame's: positive
    turns the ROI's x axis towards the frame's +y (clockwise on screen, y pointing down).
    MediaPipe's ``NormalizedRect.rotation`` has the same sign.
    """

    cx: float
    cy: float
    size: float  # side, frame pixels
    angle: float = 0.0

    def __post_init__(self) -> None:
        vals = (self.cx, self.cy, self.size, self.angle)
        if not all(math.isfinite(float(v)) for v in vals):
            raise ValueError(f"Roi values must be finite, got (cx, cy, size, angle) = {vals}")
        if not self.size > 0:
            raise ValueError(f"Roi size must be > 0 pixels, got {self.size}")

    @classmethod
    def around(
        cls,
        box: tuple[float, float, float, float],
        eye_a: np.ndarray,
        eye_b: np.ndarray,
        scale: float = 1.5,
    ) -> "Roi":
        """MediaPipe's ROI: centre of ``box`` (x0, y0, x1, y1), side ``scale`` x its long
        side, rotated so that the line from ``eye_a`` (the subject's right eye, on the image
        left) to ``eye_b`` is horizontal in the ROI."""
        x0, y0, x1, y1 = (float(v) for v in box)
        dx, dy = float(eye_b[0] - eye_a[0]), float(eye_b[1] - eye_a[1])
        angle = math.atan2(dy, dx)  # = -atan2(-dy, dx): MediaPipe's rotation with target 0
        return cls((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * scale, angle)

    def matrix(self, out_size: int) -> np.ndarray:
        """Affine ``[2, 3]`` taking ROI pixel coordinates (``out_size`` pixels a side) to
        frame coordinates (both with pixel centres at ``i + 0.5``)."""
        s = self.size / out_size
        c, si = math.cos(self.angle) * s, math.sin(self.angle) * s
        h = out_size / 2.0
        # frame = centre + R * s * (u - h)
        return np.array(
            [[c, -si, self.cx - c * h + si * h], [si, c, self.cy - si * h - c * h]], np.float64
        )

    def to_frame(self, pts: np.ndarray, out_size: int) -> np.ndarray:
        """ROI coordinates ``[N, 2]`` (of an ``out_size`` crop) -> frame pixels ``[N, 2]``."""
        m = self.matrix(out_size)
        return pts @ m[:, :2].T + m[:, 2]

    def corners(self) -> np.ndarray:
        """The four corners in frame pixels ``[4, 2]`` (ROI top-left, top-right, bottom-right,
        bottom-left)."""
        return self.to_frame(np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64), 1)

    def scaled(self, factor: float) -> "Roi":
        return Roi(self.cx, self.cy, self.size * factor, self.angle)


def warp_roi(
    frame: np.ndarray, roi: Roi, out_size: int, *, border: int = cv2.BORDER_REPLICATE
) -> np.ndarray:
    """Cut ``roi`` out of ``frame`` into an ``out_size x out_size`` image (bilinear).

    When the ROI is much larger than the output the frame is low-passed first (Gaussian
    with sigma ``0.5 * sqrt(shrink^2 - 1)``) so small features do not alias.
    """
    shrink = roi.size / out_size
    m = roi.matrix(out_size)
    # pixel-centre convention: cv2 maps output index j to input index; index = coord - 0.5
    m_idx = m.copy()
    m_idx[:, 2] += m[:, 0] * 0.5 + m[:, 1] * 0.5 - 0.5
    src = frame
    if shrink > 1.25:
        # blur only the part of the frame the ROI covers (plus the kernel's reach)
        sigma = 0.5 * math.sqrt(shrink * shrink - 1.0)
        pad = int(math.ceil(3 * sigma)) + 2
        c = roi.corners()
        x0 = max(0, int(math.floor(c[:, 0].min())) - pad)
        y0 = max(0, int(math.floor(c[:, 1].min())) - pad)
        x1 = min(frame.shape[1], int(math.ceil(c[:, 0].max())) + pad)
        y1 = min(frame.shape[0], int(math.ceil(c[:, 1].max())) + pad)
        if x1 > x0 and y1 > y0:
            src = cv2.GaussianBlur(frame[y0:y1, x0:x1], (0, 0), sigmaX=sigma, sigmaY=sigma)
            m_idx[0, 2] -= x0
            m_idx[1, 2] -= y0
    return cv2.warpAffine(
        src,
        m_idx,
        (out_size, out_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=border,
    )
