"""BlazeFace face detection (MediaPipe's short- and full-range models, run by ONNX Runtime).

The model sees a square region of the frame resized to its input (128 or 192 pixels) and
scores a fixed grid of SSD anchors; each anchor regresses a box and 6 keypoints. Decoding,
thresholds and weighted non-maximum suppression follow MediaPipe's ``face_detection``
graph (``SsdAnchorsCalculator``, ``TensorsToDetectionsCalculator``,
``NonMaxSuppressionCalculator`` with ``WEIGHTED``, IoU 0.3).

Which faces are found (measured on the bundled photo clip, face width = cheek to cheek):
the full-range model (192 px input, the default) finds faces from about 10 px wide in its
input, i.e. 5 % of the frame's long side, up to about 80 % of it; the short-range model
(128 px) from about 16 px (12.5 %) up to the whole frame. ``detect`` first searches the
whole frame letterboxed to a square, as MediaPipe does; when that finds nothing in a large
frame it searches half-overlapping ``tile_side`` tiles (``tiling="fallback"``), so a face
down to about 20 px wide (5 % of a 384 px tile) is found in a 704x1216 frame. Candidates
from all regions are merged by the same weighted NMS.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ._runtime import make_session, model_path
from .roi import Roi, check_frame

__all__ = [
    "DetectorConfig",
    "SHORT_RANGE",
    "FULL_RANGE",
    "FaceDetection",
    "FaceDetector",
    "KEYPOINT_NAMES",
    "ssd_anchors",
    "weighted_nms",
]

# The 6 BlazeFace keypoints, in model order. "right" is the subject's right (image left
# in an unmirrored picture).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass(frozen=True)
class DetectorConfig:
    """One BlazeFace model and its decoding constants (MediaPipe's graph options)."""

    name: str
    file: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_score: float  # MediaPipe's min_score_thresh for this model
    num_boxes: int


SHORT_RANGE = DetectorConfig(
    "short_range", "face_detection_short_range.onnx", 128, (8, 16, 16, 16), 1.0, 0.5, 896
)
FULL_RANGE = DetectorConfig(
    "full_range", "face_detection_full_range_sparse.onnx", 192, (4,), 0.0, 0.6, 2304
)
_CONFIGS = {c.name: c for c in (SHORT_RANGE, FULL_RANGE)}


def ssd_anchors(cfg: DetectorConfig) -> np.ndarray:
    """Anchor centres ``float32 [num_boxes, 2]`` (x, y in [0, 1]), MediaPipe's order.

    ``SsdAnchorsCalculator`` with ``fixed_anchor_size`` (every anchor is 1 x 1, so only the
    centres matter): consecutive layers of equal stride share one feature map; each layer
    adds one anchor per cell (aspect ratio 1), plus one when
    ``interpolated_scale_aspect_ratio > 0``.
    """
    per_cell: list[tuple[int, int]] = []  # (stride, anchors per cell)
    i = 0
    strides = cfg.strides
    while i < len(strides):
        j, n = i, 0
        while j < len(strides) and strides[j] == strides[i]:
            n += 1 + (cfg.interpolated_scale_aspect_ratio > 0)
            j += 1
        per_cell.append((strides[i], n))
        i = j
    out = []
    for stride, n in per_cell:
        fm = int(math.ceil(cfg.input_size / stride))
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], 1)  # row-major over (y, x)
        out.append(np.repeat(centres, n, axis=0))
    anchors = np.concatenate(out).astype(np.float32)
    if len(anchors) != cfg.num_boxes:
        raise AssertionError(f"{cfg.name}: {len(anchors)} anchors, model has {cfg.num_boxes}")
    return anchors


@dataclass(frozen=True)
class FaceDetection:
    """One detected face, in frame pixels.

    ``box`` is (x0, y0, x1, y1) (BlazeFace boxes run from the brows to below the mouth,
    cheek to cheek); ``keypoints`` ``float32 [6, 2]`` are ``KEYPOINT_NAMES`` in order;
    ``score`` is the detection probability.
    """

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    def roi(self, scale: float = 1.5) -> Roi:
        """The landmark model's ROI, as MediaPipe builds it from a detection: centred on the
        box, ``scale`` x its long side, rotated so the eyes (keypoints 0 -> 1) are level."""
        return Roi.around(self.box, self.keypoints[0], self.keypoints[1], scale)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3
) -> list[FaceDetection]:
    """MediaPipe's weighted non-maximum suppression.

    Take the best remaining detection; every remaining one whose IoU with it exceeds
    ``iou_threshold`` (itself included) is merged into it: box and keypoints become their
    score-weighted mean, the score stays the best one's. Repeat on the rest.

    Args:
        boxes: ``[N, 4]`` (x0, y0, x1, y1); keypoints ``[N, K, 2]``; scores ``[N]``.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    out = []
    remaining = np.arange(len(scores))
    while remaining.size:
        best = remaining[0]
        ious = _iou(boxes[best], boxes[remaining])
        group = remaining[ious > iou_threshold]
        if group.size == 0 or group[0] != best:  # best always merges with itself
            group = np.concatenate([[best], group[group != best]])
        w = scores[group].astype(np.float64)
        w = w / w.sum()
        box = (boxes[group] * w[:, None]).sum(0)
        kps = (keypoints[group] * w[:, None, None]).sum(0)
        out.append(
            FaceDetection(tuple(float(v) for v in box), kps.astype(np.float32), float(scores[best]))
        )
        remaining = remaining[~np.isin(remaining, group)]
    return out


class FaceDetector:
    """Find faces in an RGB ``uint8`` frame with BlazeFace (ONNX Runtime, no torch).

    Args:
        model: ``"full_range"`` (192 px input; faces from about 5 % of the frame's long side
            upward, the default) or ``"short_range"`` (128 px; faces that fill a good part
            of the image, as in a selfie), or a ``DetectorConfig``.
        min_score: detection probability threshold (default: MediaPipe's, 0.6 full range,
            0.5 short range).
        iou_threshold: weighted-NMS merge threshold (MediaPipe: 0.3).
        tiling: ``"fallback"`` (default): search tiles of a large frame when the whole frame
            gives nothing; ``"always"``: search the tiles too every time (finds small faces
            beside big ones, slower); ``"off"``: whole frame only. See ``detect``.
        tile_side: side of a tile in frame pixels (tiles overlap by half).
        model_dir: folder of the ``.onnx`` files (default: the bundled assets).
        threads: ONNX Runtime intra-op threads (``None``: its default, all cores).
        providers: ONNX Runtime execution providers (default CPU).
    """

    def __init__(
        self,
        model: str | DetectorConfig = "full_range",
        *,
        min_score: float | None = None,
        iou_threshold: float = 0.3,
        tiling: str = "fallback",
        tile_side: int = 384,
        model_dir: str | os.PathLike | None = None,
        threads: int | None = 1,
        providers: list | None = None,
    ) -> None:
        if isinstance(model, str):
            if model not in _CONFIGS:
                raise ValueError(f"model must be one of {sorted(_CONFIGS)}, got {model!r}")
            model = _CONFIGS[model]
        self.config = model
        self.min_score = float(model.min_score if min_score is None else min_score)
        if not 0.0 < self.min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score}")
        if not 0.0 < iou_threshold < 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
        if tile_side < model.input_size:
            raise ValueError(
                f"tile_side must be >= the model input ({model.input_size}), got {tile_side}"
            )
        if tiling not in ("fallback", "always", "off"):
            raise ValueError(f"tiling must be 'fallback', 'always' or 'off', got {tiling!r}")
        self.iou_threshold = float(iou_threshold)
        self.tiling = tiling
        self.tile_side = int(tile_side)
        self.anchors = ssd_anchors(model)
        self._session = make_session(model_path(model.file, model_dir), threads, providers)
        self._input = self._session.get_inputs()[0].name

    # -- one square region -------------------------------------------------------------

    def _tensor(
        self, frame: np.ndarray, x0: int, y0: int, side: int
    ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The square region ``[x0, x0 + side) x [y0, y0 + side)`` (black outside the frame)
        as the model's input ``float32 [S, S, 3]`` in [-1, 1], and the map back to the frame
        ``(ox, oy, sx, sy)``: tensor point ``(u, v)`` in [0, 1] is frame ``(ox + u sx, oy + v sy)``.

        Only the part inside the frame is resampled (area averaging when shrinking) and
        placed on a black canvas, so a letterboxed large frame costs one small resize.
        """
        h, w = frame.shape[:2]
        s = self.config.input_size
        vx0, vy0, vx1, vy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        scale = s / side
        # the visible part lands on tensor pixels [tx0, tx0 + tw) x [ty0, ty0 + th)
        tx0, ty0 = round((vx0 - x0) * scale), round((vy0 - y0) * scale)
        tw = max(1, min(s - tx0, round((vx1 - vx0) * scale)))
        th = max(1, min(s - ty0, round((vy1 - vy0) * scale)))
        interp = cv2.INTER_AREA if side > s else cv2.INTER_LINEAR
        part = cv2.resize(frame[vy0:vy1, vx0:vx1], (tw, th), interpolation=interp)
        img = np.zeros((s, s, 3), np.float32) - 1.0
        img[ty0 : ty0 + th, tx0 : tx0 + tw] = part.astype(np.float32) * (2.0 / 255.0) - 1.0
        # exact map of the resampled part: tensor x in [tx0, tx0 + tw) <- frame [vx0, vx1)
        sx, sy = (vx1 - vx0) / tw, (vy1 - vy0) / th
        return img, (vx0 - tx0 * sx, vy0 - ty0 * sy, s * sx, s * sy)

    def _decode(
        self,
        raw_boxes: np.ndarray,
        raw_scores: np.ndarray,
        maps: list[tuple[float, float, float, float]],
    ):
        """Model outputs of a batch of regions -> candidates in frame pixels above ``min_score``."""
        s = float(self.config.input_size)
        scores = 1.0 / (
            1.0 + np.exp(-np.clip(raw_scores[..., 0].astype(np.float64), -100.0, 100.0))
        )  # [B, N]
        all_b, all_k, all_s = [], [], []
        for b, (ox, oy, sx, sy) in enumerate(maps):
            keep = np.flatnonzero(scores[b] >= self.min_score)
            if keep.size == 0:
                continue
            r = raw_boxes[b, keep].astype(np.float64)  # [n, 16]
            a = self.anchors[keep].astype(np.float64)
            cx = r[:, 0] / s + a[:, 0]
            cy = r[:, 1] / s + a[:, 1]
            bw, bh = r[:, 2] / s, r[:, 3] / s
            box = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
            kps = r[:, 4:16].reshape(-1, 6, 2) / s + a[:, None, :]
            all_b.append(box * [sx, sy, sx, sy] + [ox, oy, ox, oy])
            all_k.append(kps * [sx, sy] + [ox, oy])
            all_s.append(scores[b, keep])
        if not all_s:
            return None
        return np.concatenate(all_b), np.concatenate(all_k), np.concatenate(all_s)

    def regions(
        self, height: int, width: int, *, tiles: bool = False
    ) -> list[tuple[int, int, int]]:
        """The square regions ``(x0, y0, side)`` searched in a ``width x height`` frame: the
        whole frame letterboxed or, with ``tiles``, ``tile_side`` tiles overlapping by half
        and covering it."""
        side = max(height, width)
        if not tiles:
            return [((width - side) // 2, (height - side) // 2, side)]
        t = self.tile_side
        step = t // 2

        def starts(n: int) -> list[int]:
            if n <= t:
                return [(n - t) // 2]
            k = int(math.ceil((n - t) / step))
            return [round(i * (n - t) / k) for i in range(k + 1)]

        return [(x, y, t) for y in starts(height) for x in starts(width)]

    def _run(self, frame: np.ndarray, regions: list[tuple[int, int, int]]):
        maps, boxes, scores = [], [], []
        for r in regions:  # the graphs have a fixed batch of 1
            x, m = self._tensor(frame, *r)
            b, s = self._session.run(None, {self._input: x[None]})
            maps.append(m)
            boxes.append(b)
            scores.append(s)
        return self._decode(np.concatenate(boxes), np.concatenate(scores), maps)

    def detect(self, frame: np.ndarray, *, tiling: str | None = None) -> list[FaceDetection]:
        """All faces in an RGB ``uint8`` frame ``[H, W, 3]``, best score first (may be empty).

        The whole frame is searched first; with ``tiling="fallback"`` the tiles are searched
        only when that finds nothing and the frame's long side exceeds 1.5 x ``tile_side``
        (``"always"``: tiles too, every time; ``"off"``: never). ``tiling`` here overrides
        the detector's setting for this call.
        """
        f = check_frame(frame)
        tiling = self.tiling if tiling is None else tiling
        if tiling not in ("fallback", "always", "off"):
            raise ValueError(f"tiling must be 'fallback', 'always' or 'off', got {tiling!r}")
        h, w = f.shape[:2]
        cand = self._run(f, self.regions(h, w))
        big = max(h, w) > 1.5 * self.tile_side
        if big and (tiling == "always" or (tiling == "fallback" and cand is None)):
            more = self._run(f, self.regions(h, w, tiles=True))
            if more is not None:
                cand = (
                    more
                    if cand is None
                    else tuple(np.concatenate([a, b]) for a, b in zip(cand, more))
                )
        if cand is None:
            return []
        return weighted_nms(*cand, iou_threshold=self.iou_threshold)

    __call__ = detect
