"""Per-frame face landmarks of one face in a video, as MediaPipe's face mesh tracks them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .detector import FaceDetection, FaceDetector
from .filters import OneEuroFilter
from .landmarks import MOUTH_POINTS, NUM_LANDMARKS, FaceLandmarks, LandmarkModel
from .roi import check_frame

__all__ = ["LandmarkTracker", "face_selector"]

FACE_SELECT = ("largest", "center")


def face_selector(select: str | tuple[float, float]):
    """``select`` (``LandmarkTracker``'s) -> ``f(faces, (h, w)) -> FaceDetection``."""

    def centre(d: FaceDetection) -> np.ndarray:
        return np.array([(d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2])

    if isinstance(select, str):
        if select == "largest":
            return lambda faces, hw: max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        if select == "center":
            return lambda faces, hw: min(faces, key=lambda d: float(np.hypot(*(centre(d) - [hw[1] / 2, hw[0] / 2]))))
        raise ValueError(f"select={select!r}: use one of {FACE_SELECT} or a point (x, y) in frame pixels")
    try:
        p = np.asarray(select, dtype=np.float64).reshape(2)
    except (TypeError, ValueError):
        raise ValueError(f"select={select!r}: use one of {FACE_SELECT} or a point (x, y) in frame pixels") from None
    if not np.all(np.isfinite(p)):
        raise ValueError(f"select={select!r}: the point must be finite")
    return lambda faces, hw: min(faces, key=lambda d: float(np.hypot(*(centre(d) - p))))


class LandmarkTracker:
    """Landmarks of the main face, frame after frame.

    Per frame: the landmark model runs on the ROI built from the previous frame's landmarks
    (their bounds x 1.5, rotated level with the outer eye corners, as MediaPipe's face mesh
    does); when there is no previous face, or the face-presence score falls below
    ``min_presence``, the detector searches the frame (see ``tile_every``) and the largest
    face found is used (its ROI from the detection's eyes and box). ``update`` returns ``None`` for a frame
    with no face and never raises for that; bad frames (dtype, shape) raise ``ValueError``.

    Smoothing (on by default) filters the returned points with a One Euro filter whose speed
    unit is the inter-ocular distance, so its settings do not depend on the face's size in
    pixels; the points in ``unsmoothed`` (default ``MOUTH_POINTS``: lips and jaw line) come back
    as measured. The ROI for the next frame always comes from the unsmoothed points (no lag in
    the tracking itself), and ``last_raw`` keeps them all. The smoothed points are for geometry
    that moves with the head and must not jitter (the eyes that align the crop); the mouth and
    jaw move with speech, faster than the filter follows at its low-speed cutoff, and a mouth
    mask drawn from smoothed lips trails the mouth it re-renders (on two real talking heads,
    their own speech through ``lipforce run``: 0.4-0.5 dB of lip box lost, BENCHMARKS.md
    section 6). A re-detection restarts the filter.

    Args:
        detector: a ``FaceDetector`` (default: full range, tiled for large frames).
        landmarks: a ``LandmarkModel`` (default: the bundled face mesh).
        min_presence: face-presence probability below which the face counts as lost.
        smoothing: ``True`` (``OneEuroFilter()``, documented there), ``False`` (off), or a
            ``OneEuroFilter`` (Hz; speed in inter-ocular distances per second), which the
            tracker then owns.
        unsmoothed: landmark indices returned as measured when smoothing is on (default
            ``MOUTH_POINTS``; ``()``: smooth every point).
        fps: frame rate used for timestamps when ``update`` is given none.
        tile_every: while no face is seen, the detector's tile search (for small faces in
            large frames, ~20x the cost of a whole-frame search) runs on the first search
            and then every ``tile_every``-th frame; the other frames search the whole frame
            only. 1 = tiles on every search.
        threads: ONNX Runtime threads for the default models.
        select: which face a search takes when it finds several: ``"largest"`` (default),
            ``"center"`` (nearest the frame's centre), or a point ``(x, y)`` in frame pixels
            (the face nearest it). Once found, a face is followed from frame to frame; a
            search happens again only where it is lost.
    """

    def __init__(
        self,
        detector: FaceDetector | None = None,
        landmarks: LandmarkModel | None = None,
        *,
        min_presence: float = 0.5,
        smoothing: bool | OneEuroFilter = True,
        unsmoothed: Sequence[int] = MOUTH_POINTS,
        fps: float = 25.0,
        tile_every: int = 5,
        threads: int | None = 1,
        select: str | tuple[float, float] = "largest",
    ) -> None:
        if not 0.0 < min_presence < 1.0:
            raise ValueError(f"min_presence must be in (0, 1), got {min_presence}; e.g. 0.5")
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be > 0, got {fps}")
        if not isinstance(tile_every, int) or tile_every < 1:
            raise ValueError(f"tile_every must be an int >= 1, got {tile_every!r}")
        if smoothing is True:
            smoothing = OneEuroFilter()
        elif smoothing is False or smoothing is None:
            smoothing = None
        elif not isinstance(smoothing, OneEuroFilter):
            raise TypeError(
                f"smoothing must be True (default filter), False (off) or a OneEuroFilter, "
                f"got {type(smoothing).__name__}"
            )
        self.detector = detector if detector is not None else FaceDetector(threads=threads)
        self.landmarks = landmarks if landmarks is not None else LandmarkModel(threads=threads)
        self.min_presence = float(min_presence)
        self.smoothing = smoothing  # the tracker owns its state (reset with the tracker)
        idx = np.unique(np.asarray(list(unsmoothed), np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= NUM_LANDMARKS):
            raise ValueError(f"unsmoothed must hold landmark indices in [0, {NUM_LANDMARKS}), got "
                             f"{idx.min()}..{idx.max()}; e.g. MOUTH_POINTS, or () to smooth every point")
        self.unsmoothed = idx
        self.fps = float(fps)
        self.tile_every = tile_every
        self.face = select  # as given; ``select`` picks among a search's faces
        self.select = face_selector(select)
        self.reset()

    def reset(self) -> None:
        """Forget the face, the filter state and the frame count (a new stream)."""
        self.frame_index = 0
        self.last_detected = False  # whether the last update ran the detector
        self.last_detection: FaceDetection | None = None
        self.last_raw: FaceLandmarks | None = None  # unsmoothed landmarks of the last update
        self._roi = None
        self._hw: tuple[int, int] | None = None
        self._searches = 0  # detector calls since the face was last seen
        if self.smoothing is not None:
            self.smoothing.reset()

    def _detect(self, frame: np.ndarray) -> FaceLandmarks | None:
        self.last_detected = True
        # the detector's tiled search (small faces in large frames) is costly: while no face
        # is seen it runs on every tile_every-th search only, the whole frame on the others
        tiled = self._searches % self.tile_every == 0
        self._searches += 1
        faces = self.detector.detect(frame, tiling=None if tiled else "off")
        self.last_detection = None
        if not faces:
            return None
        face = self.select(faces, frame.shape[:2])
        self.last_detection = face
        lm = self.landmarks(frame, face.roi())
        if lm.score < self.min_presence:
            return None
        # one tracking step on the detection's result: the detection ROI is coarser than the
        # landmark ROI the following frames use, so this makes frame 0 like the rest
        lm2 = self.landmarks(frame, lm.roi_for_next_frame())
        return lm2 if lm2.score >= self.min_presence else lm

    def update(self, frame: np.ndarray, timestamp: float | None = None) -> FaceLandmarks | None:
        """Landmarks in an RGB ``uint8`` frame ``[H, W, 3]``, or ``None`` when there is no face.

        Args:
            frame: the next frame of the stream.
            timestamp: its time in seconds (default ``frame_index / fps``); used by the
                smoothing only.
        """
        f = check_frame(frame)
        t = self.frame_index / self.fps if timestamp is None else float(timestamp)
        self.frame_index += 1
        if self._hw != f.shape[:2]:  # first frame, or a new frame size: start over
            self._hw = f.shape[:2]
            self._roi = None
        self.last_detected = False
        lm = None
        if self._roi is not None:
            lm = self.landmarks(f, self._roi)
            if lm.score < self.min_presence:
                lm = None
        if lm is None:
            lm = self._detect(f)
            if self.smoothing is not None:
                self.smoothing.reset()
        self.last_raw = lm
        if lm is None:
            self._roi = None
            return None
        self._searches = 0
        self._roi = lm.roi_for_next_frame()
        if self.smoothing is None:
            return lm
        iod = max(lm.interocular(), 1.0)
        pts = self.smoothing(lm.points, t, scale=iod).astype(np.float32)
        pts[self.unsmoothed] = lm.points[self.unsmoothed]
        return FaceLandmarks(pts, lm.score, lm.roi)

    __call__ = update
