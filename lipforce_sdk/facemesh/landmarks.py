"""MediaPipe's 468-point face mesh model (ONNX Runtime), and the named points the SDK uses.

Index conventions are MediaPipe's canonical face mesh (``face_mesh_connections.py``):
"right"/"left" are the **subject's** (``RIGHT_EYE`` is on the image left in an unmirrored
picture). Ordered contours run around the feature without repeating the first point.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._runtime import make_session, model_path
from .roi import Roi, check_frame, warp_roi

__all__ = [
    "FaceLandmarks",
    "LandmarkModel",
    "NUM_LANDMARKS",
    "NOSE_TIP",
    "CHIN",
    "FOREHEAD",
    "UPPER_LIP_INNER",
    "LOWER_LIP_INNER",
    "UPPER_LIP_OUTER",
    "LOWER_LIP_OUTER",
    "MOUTH_RIGHT",
    "MOUTH_LEFT",
    "RIGHT_EYE_OUTER",
    "RIGHT_EYE_INNER",
    "LEFT_EYE_INNER",
    "LEFT_EYE_OUTER",
    "RIGHT_EYE",
    "LEFT_EYE",
    "RIGHT_EYEBROW",
    "LEFT_EYEBROW",
    "LIPS_OUTER",
    "LIPS_INNER",
    "FACE_OVAL",
    "JAW",
    "MOUTH_POINTS",
]

NUM_LANDMARKS = 468

NOSE_TIP = 1
CHIN = 152  # bottom of the chin on the face oval
FOREHEAD = 10  # top of the face oval
UPPER_LIP_INNER = 13  # middle of the upper lip's inner edge
LOWER_LIP_INNER = 14  # middle of the lower lip's inner edge
UPPER_LIP_OUTER = 0
LOWER_LIP_OUTER = 17
MOUTH_RIGHT = 61  # mouth corner, subject's right (image left)
MOUTH_LEFT = 291
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133
LEFT_EYE_INNER, LEFT_EYE_OUTER = 362, 263

# fmt: off
# eye contours: from the outer corner along the lower lid to the inner corner, back along
# the upper lid (16 points each)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
# eyebrows: lower edge from the outer end, then the upper edge (10 points each)
RIGHT_EYEBROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_EYEBROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
# lips: from the right mouth corner along the lower lip to the left corner, back along the
# upper lip (20 points each); the inner contour runs between the inner corners 78 and 308
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375,
              291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324,
              308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
# face oval: from the top of the forehead (10) clockwise on screen (down the image-right
# side, under the chin, up the image-left side), 36 points
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288,
             397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136,
             172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
# the jaw line: the lower part of the face oval from the right cheek (234, image left) under
# the chin (152) to the left cheek (454), 21 points
JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
       377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
# fmt: on
# what moves with speech: both lip contours (their corners among them) and the jaw line, 61
# points; ``LandmarkTracker`` passes these unsmoothed
MOUTH_POINTS = tuple(sorted(set(LIPS_OUTER) | set(LIPS_INNER) | set(JAW)))


@dataclass(frozen=True)
class FaceLandmarks:
    """468 face landmarks of one face in one frame.

    ``points`` ``float32 [468, 3]``: x, y in frame pixels (pixel ``i`` covers ``[i, i+1)``),
    z a relative depth in the same pixel scale (MediaPipe's convention: origin near the
    head's centre, smaller = nearer the camera). ``score``: the model's face-presence
    probability in the ROI.
    ``roi``: the region the model saw.
    """

    points: np.ndarray
    score: float
    roi: Roi

    # the module's index constants, also reachable from an instance (lm.LIPS_OUTER)
    NOSE_TIP: ClassVar[int] = NOSE_TIP
    CHIN: ClassVar[int] = CHIN
    UPPER_LIP_INNER: ClassVar[int] = UPPER_LIP_INNER
    LOWER_LIP_INNER: ClassVar[int] = LOWER_LIP_INNER
    MOUTH_RIGHT: ClassVar[int] = MOUTH_RIGHT
    MOUTH_LEFT: ClassVar[int] = MOUTH_LEFT
    RIGHT_EYE: ClassVar[tuple[int, ...]] = RIGHT_EYE
    LEFT_EYE: ClassVar[tuple[int, ...]] = LEFT_EYE
    LIPS_OUTER: ClassVar[tuple[int, ...]] = LIPS_OUTER
    LIPS_INNER: ClassVar[tuple[int, ...]] = LIPS_INNER
    FACE_OVAL: ClassVar[tuple[int, ...]] = FACE_OVAL
    JAW: ClassVar[tuple[int, ...]] = JAW

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, np.float32)
        if pts.shape != (NUM_LANDMARKS, 3):
            raise ValueError(
                f"points must be [{NUM_LANDMARKS}, 3] (x, y, z), got shape {pts.shape}"
            )
        object.__setattr__(self, "points", pts)

    def xy(self, indices=None) -> np.ndarray:
        """``float32 [N, 2]`` pixel positions of ``indices`` (all points by default)."""
        p = self.points[:, :2]
        return p if indices is None else p[np.asarray(indices)]

    def eye_centers(self) -> np.ndarray:
        """``float32 [2, 2]``: centres (mean of the 16 contour points) of the subject's right
        eye (image left) and left eye."""
        return np.stack([self.xy(RIGHT_EYE).mean(0), self.xy(LEFT_EYE).mean(0)]).astype(np.float32)

    def interocular(self) -> float:
        """Distance between the eye centres, pixels."""
        a, b = self.eye_centers()
        return float(np.hypot(*(b - a)))

    def mouth_width(self) -> float:
        """Distance between the mouth corners 61 and 291, pixels."""
        return float(np.hypot(*(self.points[MOUTH_LEFT, :2] - self.points[MOUTH_RIGHT, :2])))

    def lip_opening(self) -> float:
        """Inner-lip gap (points 13-14) over the mouth width (61-291): 0 for closed lips,
        about 0.3-0.6 for a wide-open mouth. Scale- and rotation-free."""
        gap = float(
            np.hypot(*(self.points[LOWER_LIP_INNER, :2] - self.points[UPPER_LIP_INNER, :2]))
        )
        return gap / max(self.mouth_width(), 1e-6)

    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounds (x0, y0, x1, y1) of all points, pixels."""
        p = self.points[:, :2]
        lo, hi = p.min(0), p.max(0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def roi_for_next_frame(self, scale: float = 1.5) -> Roi:
        """MediaPipe's tracking ROI: centre of the points' bounds, ``scale`` x their long
        side, rotated so the outer eye corners (33 -> 263) are level."""
        return Roi.around(
            self.box(), self.points[RIGHT_EYE_OUTER], self.points[LEFT_EYE_OUTER], scale
        )


class LandmarkModel:
    """The face mesh model: a frame and a face ROI in, ``FaceLandmarks`` out.

    The ROI is cut out (rotated, bilinear, border pixels replicated, low-passed when
    shrinking), resized to 192x192, scaled to [0, 1]; the 1404 outputs are x, y, z in
    crop pixels, projected back through the ROI (z scaled like x and y).

    Args:
        model_dir: folder of ``face_landmark.onnx`` (default: the bundled assets).
        threads: ONNX Runtime intra-op threads (``None``: its default, all cores).
        providers: ONNX Runtime execution providers (default CPU).
    """

    FILE = "face_landmark.onnx"
    INPUT_SIZE = 192

    def __init__(
        self,
        *,
        model_dir: str | os.PathLike | None = None,
        threads: int | None = 1,
        providers: list | None = None,
    ) -> None:
        self._session = make_session(model_path(self.FILE, model_dir), threads, providers)
        self._input = self._session.get_inputs()[0].name

    def crop(self, frame: np.ndarray, roi: Roi) -> np.ndarray:
        """The model's view of ``roi``: RGB ``uint8 [192, 192, 3]``."""
        return warp_roi(check_frame(frame), roi, self.INPUT_SIZE)

    def __call__(self, frame: np.ndarray, roi: Roi) -> FaceLandmarks:
        """Landmarks of the face in ``roi`` of an RGB ``uint8`` frame ``[H, W, 3]``.

        Always returns landmarks; ``score`` says whether a face is there (MediaPipe keeps
        them when ``score >= 0.5`` while tracking).
        """
        if not isinstance(roi, Roi):
            raise TypeError(f"roi must be a lipforce_sdk.facemesh.Roi, got {type(roi).__name__}")
        s = self.INPUT_SIZE
        img = self.crop(frame, roi)
        x = (img.astype(np.float32) * (1.0 / 255.0))[None]
        raw, flag = self._session.run(None, {self._input: x})
        pts = raw.reshape(NUM_LANDMARKS, 3).astype(np.float64)
        out = np.empty((NUM_LANDMARKS, 3), np.float32)
        out[:, :2] = roi.to_frame(pts[:, :2], s)
        out[:, 2] = pts[:, 2] * (roi.size / s)
        score = 1.0 / (1.0 + math.exp(-float(np.clip(flag.reshape(-1)[0], -100.0, 100.0))))
        return FaceLandmarks(out, score, roi)
