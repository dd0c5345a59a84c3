"""Face landmarks without torch: MediaPipe's face detector and 468-point face mesh, converted
to ONNX and run by ONNX Runtime (NumPy + OpenCV + onnxruntime only).

```python
from lipforce_sdk.facemesh import LandmarkTracker

tracker = LandmarkTracker()              # full-range BlazeFace + face mesh, One Euro smoothing
for frame in frames:                     # RGB uint8 [H, W, 3]
    lm = tracker.update(frame)           # FaceLandmarks, or None when there is no face
    if lm is not None:
        left, right = lm.eye_centers()   # for aligning the crop
        lips = lm.xy(lm.LIPS_OUTER)      # ordered contour, frame pixels
        opening = tracker.last_raw.lip_opening()   # inner-lip gap / mouth width (unsmoothed)
```

Pieces: ``FaceDetector`` (BlazeFace, boxes + 6 keypoints; tiles for small faces in large
frames), ``LandmarkModel`` (frame + ``Roi`` -> ``FaceLandmarks``), ``LandmarkTracker``
(MediaPipe's detect-then-track loop with optional ``OneEuroFilter`` smoothing), index
constants of the mesh (``LIPS_OUTER``, ``LIPS_INNER``, ``FACE_OVAL``, ``JAW``, eyes, ...).

The models (``lipforce_sdk/assets/facemesh/``, see its ``NOTICE.md``) come from the
mediapipe 0.10.21 wheel (Apache-2.0) and are converted by ``python -m
lipforce_sdk.facemesh.convert``; they match the TFLite originals to about 1e-6 relative.

Measured on the bundled photo clip (``tests/test_facemesh.py``; ``python -m
lipforce_sdk.facemesh.benchmark`` prints the per-frame cost and draws a contact sheet):

- real faces: eye centres and mouth within 3.4 % of the inter-ocular distance (iod) of the
  hand marks over the whole clip; 1-2 % (mean) from MediaPipe's own FaceMesh pipeline;
- small faces: the photo frame at 1/5 of a 704x1216 or 576x768 canvas (a face about 40 px
  wide, 17-22 px between the eyes) is found (tile search) and tracked; its landmarks
  equal the full-size face's, scaled down, within 1-2 % of the iod (mean);
- in-plane tilt (roll) up to about 60 degrees: as upright; 90 degrees: the detector's eye
  keypoints are poor and tracking needs a few frames to settle; upside down: not found;
- illustrated faces (the photo cartoonised: flat colours, black edge lines) are found;
  landmarks are 6-7 % of the iod off the photo's, the outer lips 9-11 %, and the lip
  opening is not reliable (0.32-0.34 where the photo reads 0.17: the drawn lines around
  the teeth read as an open mouth);
- profile faces are not covered: BlazeFace and the mesh are made for frontal to
  three-quarter views; no profile picture was available to measure where they stop.
"""

from .detector import FULL_RANGE, SHORT_RANGE, DetectorConfig, FaceDetection, FaceDetector
from .filters import OneEuroFilter
from .landmarks import (
    CHIN,
    FACE_OVAL,
    JAW,
    LEFT_EYE,
    LEFT_EYEBROW,
    LIPS_INNER,
    LIPS_OUTER,
    LOWER_LIP_INNER,
    MOUTH_LEFT,
    MOUTH_POINTS,
    MOUTH_RIGHT,
    NOSE_TIP,
    NUM_LANDMARKS,
    RIGHT_EYE,
    RIGHT_EYEBROW,
    UPPER_LIP_INNER,
    FaceLandmarks,
    LandmarkModel,
)
from .roi import Roi
from .tracker import LandmarkTracker

__all__ = [
    "LandmarkTracker",
    "FaceLandmarks",
    "LandmarkModel",
    "FaceDetector",
    "FaceDetection",
    "DetectorConfig",
    "FULL_RANGE",
    "SHORT_RANGE",
    "OneEuroFilter",
    "Roi",
    "NUM_LANDMARKS",
    "NOSE_TIP",
    "CHIN",
    "UPPER_LIP_INNER",
    "LOWER_LIP_INNER",
    "MOUTH_RIGHT",
    "MOUTH_LEFT",
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
