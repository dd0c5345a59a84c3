"""Face crop / paste / tracking / detection (lipforce_sdk.face)."""

from __future__ import annotations

import json
import math
import os

import cv2
import numpy as np
import pytest

from lipforce_sdk import face
from lipforce_sdk.face import FaceBox, FaceNotFoundError, FaceTracker, HaarFaceDetector

PHOTO_DIR = os.path.join(os.path.dirname(face.__file__), "assets", "photo")  # a real face under motion


def smooth_frame(h: int = 240, w: int = 320) -> np.ndarray:
    """A band-limited RGB test image (low-frequency sinusoids): resampling is near-lossless."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(2 * np.pi * x / 53.0) * np.cos(2 * np.pi * y / 71.0)
    g = 128 + 90 * np.sin(2 * np.pi * (x + 2 * y) / 97.0)
    b = 60 + 0.5 * x * 255 / w + 0.3 * y * 255 / h
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def outside(box: FaceBox, h: int, w: int) -> np.ndarray:
    """Pixels [i, i+1) that do not touch the box (bool [H, W])."""
    ys = np.arange(h)[:, None]
    xs = np.arange(w)[None, :]
    return (xs + 1 <= box.x0) | (xs >= box.x1) | (ys + 1 <= box.y0) | (ys >= box.y1)


def inside(box: FaceBox, h: int, w: int, border: float = 0.0) -> np.ndarray:
    """Pixels lying entirely inside the box shrunk by ``border`` pixels (bool [H, W])."""
    ys = np.arange(h)[:, None]
    xs = np.arange(w)[None, :]
    return (
        (xs >= box.x0 + border) & (xs + 1 <= box.x1 - border)
        & (ys >= box.y0 + border) & (ys + 1 <= box.y1 - border)
    )


@pytest.fixture(scope="module")
def sample():
    from lipforce_sdk.media import read_video

    frames, fps = read_video(os.path.join(PHOTO_DIR, "face.mp4"))
    with open(os.path.join(PHOTO_DIR, "face_boxes.json")) as f:
        meta = json.load(f)
    return frames, fps, meta


# -------------------------------------------------------------------------------- crop/paste


@pytest.mark.parametrize(
    "box, size",
    [
        (FaceBox(70.3, 40.7, 170.3, 140.7), 128),  # upscale 1.28x
        (FaceBox(50.6, 20.2, 250.6, 220.2), 128),  # downscale 1.56x (low-passed)
        (FaceBox(100.0, 60.0, 228.0, 188.0), 128),  # integer, scale 1
        (FaceBox(-30.5, 150.25, 90.5, 271.25), 96),  # leaves the frame (left, bottom)
    ],
)
def test_crop_then_paste_returns_the_frame(box, size):
    frame = smooth_frame()
    before = frame.copy()
    c = face.crop(frame, box, size)
    assert c.shape == (size, size, 3) and c.dtype == np.uint8
    out = face.paste(frame, box, c, feather=0.1)
    assert np.array_equal(frame, before), "paste modified its input frame"
    h, w = frame.shape[:2]
    out_mask = outside(box, h, w)
    assert np.array_equal(out[out_mask], frame[out_mask]), f"pixels outside {box} changed"
    err = np.abs(out.astype(int) - frame.astype(int))[inside(box, h, w) & ~out_mask]
    # two bilinear resamplings of a band-limited image; the downscale is low-passed first
    limit = 12 if box.width / size > 1.25 else 4
    assert err.max() <= limit, f"{box=} {size=}: max error {err.max()} > {limit}"
    assert err.mean() <= limit / 4, f"{box=} {size=}: mean error {err.mean():.2f}"


def test_crop_at_scale_one_is_exact():
    frame = smooth_frame()
    box = FaceBox(100.0, 60.0, 228.0, 188.0)
    assert np.array_equal(face.crop(frame, box, 128), frame[60:188, 100:228])


def test_crop_replicates_border_outside_the_frame():
    frame = smooth_frame()
    box = FaceBox(-64.0, 0.0, 64.0, 128.0)  # left half outside
    c = face.crop(frame, box, 128)
    # every crop column left of the frame edge repeats frame column 0
    assert np.array_equal(c[:, :64], np.repeat(frame[:128, :1], 64, axis=1))
    assert np.array_equal(c[:, 64:], frame[:128, :64])


def test_paste_feather_has_no_step():
    frame = np.zeros((200, 240, 3), np.uint8)
    white = np.full((128, 128, 3), 255, np.uint8)
    box = FaceBox(60.4, 40.7, 160.4, 140.7)
    feather = 0.1
    out = face.paste(frame, box, white, feather=feather).astype(int)
    grad = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    ramp_px = feather * box.width  # the smoothstep's steepest slope is 1.5 / ramp
    bound = 1.5 * 255 / ramp_px + 4
    assert grad <= bound, f"max step {grad} > {bound:.1f} across the feathered edge"
    assert out[90, 110].min() == 255, "the centre of the box should be the crop"
    hard = face.paste(frame, box, white, feather=0.0).astype(int)
    hard_grad = np.abs(np.diff(hard, axis=1)).max()
    assert hard_grad > 3 * bound, f"feather=0 should give a hard edge, max step {hard_grad}"


def test_paste_with_mouth_mask_touches_only_the_lower_face():
    frame = smooth_frame()
    box = FaceBox(80.0, 40.0, 208.0, 168.0)  # scale 1, crop 128
    red = np.zeros((128, 128, 3), np.uint8)
    red[..., 0] = 255
    out = face.paste(frame, box, red, mask=face.mouth_mask(128))
    changed = np.any(out != frame, axis=-1)
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 40 + int(face.MOUTH_TOP * 128), "pasted above the mouth region"
    assert changed[40 + 90, 80 + 64], "mouth centre not pasted"


def test_feather_mask_shape_and_range():
    m = face.feather_mask(64, 0.1)
    assert m.shape == (64, 64) and m.dtype == np.float32
    assert m[0].max() == 0 and m[:, -1].max() == 0 and m[32, 32] == 1.0
    with pytest.raises(ValueError, match="feather"):
        face.feather_mask(64, 0.7)


# -------------------------------------------------------------------------------- mouth mask


@pytest.mark.parametrize("size", [64, 128, 512])
def test_mouth_mask_covers_the_lower_face_softly(size):
    soft = face.mouth_mask(size)
    hard = face.mouth_mask_hard(size)
    assert soft.shape == hard.shape == (size, size)
    assert soft.dtype == hard.dtype == np.float32
    assert set(np.unique(hard)) <= {0.0, 1.0}
    assert soft.min() >= 0 and soft.max() == pytest.approx(1.0)
    top = int(math.floor(face.MOUTH_TOP * size))
    assert soft[:top].max() == 0 and hard[:top].max() == 0, "mask reaches above the mouth"
    assert soft[int(0.7 * size), size // 2] == pytest.approx(1.0), "mouth centre not covered"
    assert np.all(soft[hard == 0] == 0), "soft mask leaks outside the hard mask"
    assert hard[int(0.7 * size), 1] == 0 and hard[int(0.7 * size), -2] == 0, "not inside the jaw"
    # soft edge: no jump bigger than a smoothstep over feather * size pixels allows
    step = max(np.abs(np.diff(soft, axis=0)).max(), np.abs(np.diff(soft, axis=1)).max())
    assert step <= 1.5 / (0.06 * size) * 1.6 + 1e-6, f"{size=}: max step {step:.3f}"


# -------------------------------------------------------------------------------- tracker


class ScriptedDetector:
    """Returns the boxes it is given in turn (None = no face) and counts its calls."""

    def __init__(self, boxes):
        self.boxes = list(boxes)
        self.calls = 0

    def detect(self, frame):
        b = self.boxes[min(self.calls, len(self.boxes) - 1)]
        self.calls += 1
        return b


def test_tracker_smooths_a_noisy_moving_face():
    rng = np.random.default_rng(0)
    n, side, noise = 200, 80.0, 4.0
    t = np.arange(n)
    true_cx = 320 + 60 * np.sin(2 * np.pi * t / 150)
    true_cy = 240 + 30 * np.cos(2 * np.pi * t / 110)
    noisy = np.stack([true_cx, true_cy], 1) + rng.normal(0, noise, (n, 2))
    sizes = side + rng.normal(0, noise, n)
    det = ScriptedDetector(FaceBox.from_center(x, y, s) for (x, y), s in zip(noisy, sizes))
    tracker = FaceTracker(128, detector=det, detect_every=1, smoothing=0.8, margin=0.3)
    frame = np.zeros((480, 640, 3), np.uint8)
    boxes = [tracker.update(frame) for _ in range(n)]
    assert det.calls == n
    out = np.array([b.center for b in boxes])
    out_side = np.array([b.width for b in boxes])
    assert np.allclose([b.width for b in boxes], [b.height for b in boxes]), "not square"

    def jitter(x):  # frame-to-frame acceleration: insensitive to slow motion and lag
        return np.std(np.diff(x, n=2, axis=0))

    ratio = jitter(out) / jitter(noisy)
    assert ratio < 0.2, f"output jitter is {ratio:.2f} x the input's"
    assert jitter(out_side / 1.6) / jitter(sizes) < 0.2  # side = face size x (1 + 2 margin)
    # ... while following the face: an EMA lags by smoothing / (1 - smoothing) frames
    expect = np.stack([true_cx, true_cy + tracker.chin_shift * side], 1)
    speed = np.abs(np.diff(expect, axis=0)).max()
    bound = 0.8 / 0.2 * speed + 2 * noise
    err = np.abs(out[20:] - expect[20:]).max()
    assert err < bound, f"tracked centre is {err:.1f} px from the face (bound {bound:.1f})"
    assert np.abs(out_side[20:] - side * 1.6).max() < 8.0


def test_tracker_detects_every_n_frames_and_reuses_the_last_face():
    a = FaceBox(100, 100, 180, 180)
    det = ScriptedDetector([None, None, a, None, None])  # found on the 3rd call, then lost
    tracker = FaceTracker(64, detector=det, detect_every=5, smoothing=0.0, margin=0.0,
                          chin_shift=0.0)
    frame = np.zeros((300, 300, 3), np.uint8)
    with pytest.raises(FaceNotFoundError):
        tracker.update(frame)  # frame 0: call 1
    with pytest.raises(FaceNotFoundError):
        tracker.update(frame)  # frame 1: call 2 (detects every frame until a face is found)
    boxes = [tracker.update(frame) for _ in range(13)]  # frames 2..14
    # found at frame 2 (call 3); then detection at frames 7 and 12 (calls 4, 5) fails
    assert det.calls == 5
    assert all(b == a for b in boxes), "the last face should be reused when detection fails"


def test_tracker_keeps_the_box_inside_the_frame():
    det = ScriptedDetector([FaceBox(2, 2, 62, 62)])  # face in the top-left corner
    tracker = FaceTracker(64, detector=det)
    b = tracker.update(np.zeros((240, 320, 3), np.uint8))
    assert b.x0 >= 0 and b.y0 >= 0 and b.x1 <= 320 and b.y1 <= 240
    assert b.width == pytest.approx(60 * 1.6)
    big = FaceTracker(64, detector=ScriptedDetector([FaceBox(0, 0, 100, 100)]))
    b = big.update(np.zeros((100, 100, 3), np.uint8))  # crop larger than the frame: centred
    assert b.center == pytest.approx((50.0, 50.0 + 0.1 * 100))


def test_tracker_snaps_after_a_cut():
    det = ScriptedDetector([FaceBox(100, 100, 180, 180)] * 3 + [FaceBox(400, 300, 480, 380)])
    tracker = FaceTracker(64, detector=det, detect_every=1, smoothing=0.9)
    frame = np.zeros((480, 640, 3), np.uint8)
    for _ in range(3):
        tracker.update(frame)
    b = tracker.update(frame)
    assert b.center[0] == pytest.approx(440.0), "a jump of several face sizes should re-centre"


def test_fixed_box_bypasses_detection():
    class NoDetector:
        def detect(self, frame):
            raise AssertionError("the detector must not run when a box is given")

    tracker = FaceTracker(128, detector=NoDetector(), box=(10.5, 20.0, 110.5, 100.0))
    frame = smooth_frame()
    crops = [tracker.crop(frame) for _ in range(3)]
    expect = FaceBox(10.5, 10.0, 110.5, 110.0)  # squared around the centre, side = max
    assert all(c.box == expect for c in crops)
    assert [c.frame_index for c in crops] == [0, 1, 2]
    assert np.array_equal(crops[0].image, face.crop(frame, expect, 128))
    # without any detector argument, a fixed box never builds the Haar detector
    assert FaceTracker(128, box=expect).detector is None


def test_no_face_ever_found_raises_with_the_frame_index():
    tracker = FaceTracker(128, detector=ScriptedDetector([None]))
    blank = np.full((120, 160, 3), 127, np.uint8)
    for i in range(3):
        with pytest.raises(FaceNotFoundError, match=rf"frame {i} \(160x120\).*box="):
            tracker.update(blank)
    tracker.reset()
    with pytest.raises(FaceNotFoundError, match="frame 0"):
        tracker.update(blank)


def test_no_face_with_the_haar_detector():
    tracker = FaceTracker(128)
    with pytest.raises(FaceNotFoundError, match="box="):
        tracker.update(np.full((240, 320, 3), 90, np.uint8))


def test_tracker_rejects_bad_input():
    with pytest.raises(ValueError, match="crop_size"):
        FaceTracker(4, box=(0, 0, 10, 10))
    with pytest.raises(ValueError, match="smoothing"):
        FaceTracker(64, box=(0, 0, 10, 10), smoothing=1.0)
    with pytest.raises(ValueError, match="x1 > x0"):
        FaceTracker(64, box=(10, 0, 5, 10))
    tracker = FaceTracker(64, box=(0, 0, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        tracker.update(np.zeros((64, 64, 3), np.float32))
    tracker.update(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="reset"):
        tracker.update(np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        FaceTracker(64, box=(500, 500, 600, 600)).update(np.zeros((64, 64, 3), np.uint8))


# -------------------------------------------------------------------------------- detection


def test_missing_cascade_says_what_to_install(monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"opencv-python-headless<5.*box="):
        HaarFaceDetector(cascade_path="/nonexistent/haarcascade.xml")
    monkeypatch.delattr(cv2, "data")  # as in an OpenCV 5 wheel
    with pytest.raises(FileNotFoundError, match=r"opencv-python-headless<5"):
        HaarFaceDetector()


def test_haar_finds_the_face_in_every_sample_frame(sample):
    frames, fps, meta = sample
    assert len(frames) == meta["num_frames"] and fps == meta["fps"]
    det = HaarFaceDetector()
    ious = []
    for i, (frame, truth) in enumerate(zip(frames, meta["frames"])):
        b = det.detect(frame)
        assert b is not None, f"no face detected in sample frame {i}"
        ious.append(b.iou(FaceBox(*truth["face_box"])))
        for x, y in truth["eyes"]:
            assert b.x0 < x < b.x1 and b.y0 < y < b.y1, f"frame {i}: eye ({x}, {y}) not in {b}"
    assert min(ious) > 0.45, f"worst IoU with the annotated face {min(ious):.2f}"


def test_haar_detection_downscales_big_frames(sample):
    frames, _, meta = sample
    big = cv2.resize(frames[0], (1280, 1280), interpolation=cv2.INTER_CUBIC)
    b = HaarFaceDetector(max_side=320).detect(big)
    truth = FaceBox(*(4 * v for v in meta["frames"][0]["face_box"]))
    assert b is not None and b.iou(truth) > 0.45, f"{b} vs {truth}"


def test_tracked_crop_holds_the_mouth_in_the_masked_region(sample):
    frames, _, meta = sample
    tracker = FaceTracker(128)  # Haar detector, defaults
    hard = face.mouth_mask_hard(128)
    prev = None
    for i, (frame, truth) in enumerate(zip(frames, meta["frames"])):
        c = tracker.crop(frame)
        b = c.box
        mx, my = truth["mouth"]
        u = int((mx - b.x0) / b.width * 128)
        v = int((my - b.y0) / b.height * 128)
        assert hard[v, u] == 1, f"frame {i}: mouth at crop ({u}, {v}) outside the mask"
        fx0, fy0, fx1, fy1 = truth["face_box"]
        assert b.y1 > fy1 and b.x0 < fx0 and b.x1 > fx1, f"frame {i}: {b} cuts the face"
        if prev is not None:  # the sample moves slowly: the crop must too
            step = np.hypot(b.center[0] - prev.center[0], b.center[1] - prev.center[1])
            assert step < 3.0, f"frame {i}: crop centre jumped {step:.1f} px"
        prev = b
