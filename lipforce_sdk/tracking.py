"""Where a stream's face keypoints come from, frame by frame.

A *face source* turns each frame into ``FaceKeypoints`` (``lipforce_sdk.geometry``), from which
the session cuts the eye-aligned mouth crop and the mouth mask:

- ``MeshFaceSource``: MediaPipe's face mesh through ONNX Runtime (``lipforce_sdk.facemesh``),
  tracked from frame to frame; real and illustrated faces, small faces in large frames.
- ``BoxFaceSource``: a fixed face-crop box and a mean-face template inside it (no detection).
- ``HaarFaceSource``: OpenCV's Haar detector (``lipforce_sdk.face.FaceTracker``) and the template.
- ``KeypointsFaceSource``: keypoints given per frame (annotated clips, prepared avatars).
- ``AutoFaceSource``: the mesh, falling back to Haar where the mesh finds no face.

``update(frame)`` returns the keypoints or ``None`` where the face is not found; a source keeps
no more than one frame of memory besides its tracker's, and ``reset()`` forgets it.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from .face import FaceBox, FaceTracker, _as_box
from .geometry import FaceKeypoints

__all__ = ["FaceSource", "MeshFaceSource", "BoxFaceSource", "HaarFaceSource", "KeypointsFaceSource",
           "AutoFaceSource", "default_face_source"]


class FaceSource(Protocol):
    def update(self, frame: np.ndarray) -> FaceKeypoints | None: ...

    def reset(self) -> None: ...


class MeshFaceSource:
    """Face-mesh landmarks (468 points) -> keypoints; ``tracker`` is a
    ``lipforce_sdk.facemesh.LandmarkTracker`` (default: one with the bundled models, taking the
    face ``select`` names where several are seen: ``"largest"``, ``"center"`` or a point (x, y))."""

    def __init__(self, tracker=None, select: str | tuple[float, float] = "largest"):
        if tracker is None:
            from .facemesh import LandmarkTracker

            tracker = LandmarkTracker(select=select)
        self.tracker = tracker

    @property
    def select(self):
        """The face the tracker takes where several are seen (its ``select``, as given)."""
        return getattr(self.tracker, "face", "largest")

    def update(self, frame: np.ndarray) -> FaceKeypoints | None:
        lm = self.tracker.update(frame)
        return None if lm is None else FaceKeypoints.from_mediapipe(lm.points)

    def reset(self) -> None:
        self.tracker.reset()


class BoxFaceSource:
    """A fixed square face-crop box (``FaceTracker``'s framing) with the mean-face template."""

    def __init__(self, box: FaceBox | tuple[float, float, float, float]):
        self.box = _as_box(box).square()
        self._kp = FaceKeypoints.template(self.box)

    def update(self, frame: np.ndarray) -> FaceKeypoints:
        h, w = frame.shape[:2]
        b = self.box
        if b.x1 <= 0 or b.y1 <= 0 or b.x0 >= w or b.y0 >= h:
            raise ValueError(f"the fixed box {b.as_tuple()} lies outside the {w}x{h} frame; pass a box in this "
                             "frame's pixel coordinates")
        return self._kp

    def reset(self) -> None:
        pass


class HaarFaceSource:
    """OpenCV's Haar detector through ``FaceTracker`` (its smoothed face-crop box) and the template."""

    def __init__(self, tracker: FaceTracker | None = None):
        self.tracker = tracker or FaceTracker(128)

    def update(self, frame: np.ndarray) -> FaceKeypoints | None:
        from .face import FaceNotFoundError

        try:
            box = self.tracker.update(frame)
        except FaceNotFoundError:
            return None
        return FaceKeypoints.template(box)

    def reset(self) -> None:
        self.tracker.reset()


class KeypointsFaceSource:
    """Keypoints given per frame (frame ``i`` of the stream takes ``keypoints[i % len]``)."""

    def __init__(self, keypoints: Sequence[FaceKeypoints]):
        if len(keypoints) == 0:
            raise ValueError("KeypointsFaceSource needs at least one FaceKeypoints")
        self.keypoints = list(keypoints)
        self._i = 0

    def update(self, frame: np.ndarray) -> FaceKeypoints:
        kp = self.keypoints[self._i % len(self.keypoints)]
        self._i += 1
        return kp

    def reset(self) -> None:
        self._i = 0


class AutoFaceSource:
    """The face mesh; where it finds no face, the Haar detector's box and the template."""

    def __init__(self, mesh: MeshFaceSource | None = None, haar: HaarFaceSource | None = None):
        self.mesh = mesh or MeshFaceSource()
        self._haar = haar
        self.last_source: str | None = None

    @property
    def select(self):
        return getattr(self.mesh, "select", "largest")

    @property
    def haar(self) -> HaarFaceSource:
        if self._haar is None:
            self._haar = HaarFaceSource()
        return self._haar

    def update(self, frame: np.ndarray) -> FaceKeypoints | None:
        kp = self.mesh.update(frame)
        if kp is None:
            kp = self.haar.update(frame)
        self.last_source = None if kp is None else kp.source
        return kp

    def reset(self) -> None:
        self.mesh.reset()
        if self._haar is not None:
            self._haar.reset()


def default_face_source(box=None, keypoints: Sequence[FaceKeypoints] | None = None,
                        select: str | tuple[float, float] = "largest") -> FaceSource:
    """``keypoints`` given -> ``KeypointsFaceSource``; ``box`` -> ``BoxFaceSource``; else
    ``AutoFaceSource`` whose face mesh takes the face ``select`` names (``MeshFaceSource``)."""
    if keypoints is not None:
        return KeypointsFaceSource(keypoints)
    if box is not None:
        return BoxFaceSource(box)
    return AutoFaceSource(MeshFaceSource(select=select))
