"""Face landmarks (lipforce_sdk.facemesh): converted models vs TFLite, geometry on real,
small and cartoonised faces, tracking, smoothing, bad input.

Real faces come from the bundled photo clip (public-domain NASA portrait under a gentle
warp, ``lipforce_sdk/assets/photo``) and, where scikit-image is installed, from
``skimage.data.astronaut()``. Tolerances are in units of the inter-ocular distance (iod).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip(
    "onnxruntime",
    reason="ONNX Runtime not installed (a base dependency: pip install 'onnxruntime>=1.20')",
)

from lipforce_sdk import facemesh as fm  # noqa: E402
from lipforce_sdk.facemesh import convert, detector, samples  # noqa: E402
from lipforce_sdk.facemesh.landmarks import LandmarkModel  # noqa: E402

ASSETS = Path(fm.__file__).resolve().parent.parent / "assets"
FACEMESH = ASSETS / "facemesh"
PHOTO_BOXES = ASSETS / "photo" / "face_boxes.json"

# parity: ONNX Runtime vs the TFLite interpreter, relative to the output's magnitude
# (measured: max abs diff 1.5e-4 on outputs of magnitude ~150, i.e. ~1e-6 relative)
PARITY_RTOL = 1e-4


@pytest.fixture(scope="module")
def clip():
    return samples.photo_clip()


@pytest.fixture(scope="module")
def boxes():
    with open(PHOTO_BOXES) as fh:
        return json.load(fh)["frames"]


@pytest.fixture(scope="module")
def models():
    return fm.FaceDetector(), LandmarkModel()


def _tracker(models, smoothing=False):
    det, lmm = models
    return fm.LandmarkTracker(det, lmm, smoothing=smoothing)


def _track(models, image, n=3):
    tr = _tracker(models)
    lm = None
    for _ in range(n):
        lm = tr.update(image)
    return lm


@pytest.fixture(scope="module")
def clip_landmarks(clip, models):
    """Unsmoothed landmarks of every frame of the photo clip, and the detector call count."""
    tr = _tracker(models)
    out, detections = [], 0
    for f in clip:
        out.append(tr.update(f))
        detections += tr.last_detected
    return out, detections


def _real_images(clip):
    images = [("photo clip frame 0", clip[0]), ("photo clip frame 75", clip[75])]
    try:
        from skimage import data
    except ImportError:
        print("scikit-image not installed: parity on the bundled clip only")
    else:
        images.append(("skimage astronaut", data.astronaut()))
    return images


# --------------------------------------------------------------------------------------
# converted models
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", convert.MODELS, ids=lambda s: s.onnx_name)
def test_onnx_matches_tflite(spec, clip, models):
    litert = pytest.importorskip(
        "ai_edge_litert.interpreter",
        reason="ai-edge-litert not installed (pip install 'lipforce[test]'): no TFLite reference",
    )
    import onnxruntime as ort

    tflite = FACEMESH / "tflite" / os.path.basename(spec.wheel_path)
    interp = litert.Interpreter(model_path=str(tflite))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    size = int(inp["shape"][1])
    sess = ort.InferenceSession(str(FACEMESH / spec.onnx_name), providers=["CPUExecutionProvider"])
    lmm = models[1]
    for name, img in _real_images(clip):
        if spec.onnx_name == "face_landmark.onnx":  # the model's real input: the face ROI
            roi = _track(models, img, 1).roi
            x = lmm.crop(img, roi).astype(np.float32) / 255.0
        else:  # the whole picture, as the detector sees it, in [-1, 1]
            x = (
                cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
                / 127.5
                - 1.0
            )
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        refs = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x[None]})))
        for out_name in spec.output_names:
            got = outs[out_name]
            (ref,) = [r for r in refs if r.shape == got.shape]
            diff = float(np.abs(got - ref).max())
            scale = float(np.abs(ref).max())
            print(
                f"{spec.onnx_name} {out_name} on {name}: max |onnx - tflite| = {diff:.2e} (max |tflite| {scale:.1f})"
            )
            assert diff <= PARITY_RTOL * max(scale, 1.0), (
                f"{spec.onnx_name} output {out_name} on {name}: max abs diff {diff:.3e} > "
                f"{PARITY_RTOL} x {scale:.3g}"
            )


def test_converter_reproduces_bundled_models(tmp_path):
    pytest.importorskip(
        "onnx", reason="the converter needs onnx (pip install 'lipforce[facemesh-convert]')"
    )
    written = convert.convert_dir(FACEMESH / "tflite", tmp_path)
    assert len(written) == len(convert.MODELS)
    for path in written:
        bundled = FACEMESH / os.path.basename(path)
        assert Path(path).read_bytes() == bundled.read_bytes(), (
            f"{bundled.name} differs from a fresh conversion of the bundled .tflite; re-run "
            "python -m lipforce_sdk.facemesh.convert --tflite-dir lipforce_sdk/assets/facemesh/tflite "
            "--out lipforce_sdk/assets/facemesh"
        )


def test_converter_rejects_other_files(tmp_path):
    pytest.importorskip("onnx", reason="the converter needs onnx")
    with pytest.raises(ValueError, match="not a TFLite model"):
        convert.convert_tflite(b"\0" * 64)
    src = tmp_path / "src"
    src.mkdir()
    for spec in convert.MODELS:  # right names, wrong bytes: refused by hash
        (src / os.path.basename(spec.wheel_path)).write_bytes(
            (FACEMESH / "tflite" / os.path.basename(spec.wheel_path)).read_bytes()[:-1] + b"x"
        )
    with pytest.raises(ValueError, match="sha256"):
        convert.convert_dir(src, tmp_path / "out")


# --------------------------------------------------------------------------------------
# detector pieces
# --------------------------------------------------------------------------------------


def test_anchors_match_mediapipe_layout():
    a = detector.ssd_anchors(fm.SHORT_RANGE)
    assert a.shape == (896, 2)
    # 16x16 cells x 2 anchors, then 8x8 cells x 6 anchors; row-major, x fastest
    assert np.allclose(a[0], a[1]) and np.allclose(a[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(a[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(a[512:518], [0.5 / 8, 0.5 / 8]) and np.allclose(a[518], [1.5 / 8, 0.5 / 8])
    f = detector.ssd_anchors(fm.FULL_RANGE)
    assert f.shape == (2304, 2) and np.allclose(f[48], [0.5 / 48, 1.5 / 48])


def test_weighted_nms_merges_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float64)
    kps = np.stack([np.full((6, 2), 1.0), np.full((6, 2), 3.0), np.full((6, 2), 9.0)])
    scores = np.array([0.9, 0.3, 0.8])
    out = detector.weighted_nms(boxes, kps, scores, 0.3)
    assert [round(d.score, 2) for d in out] == [0.9, 0.8]
    w = 0.9 / 1.2
    assert np.allclose(out[0].box, [0.25, 0, 10.25, 10]) and np.allclose(
        out[0].keypoints, w * 1 + (1 - w) * 3
    )
    assert np.allclose(out[1].box, boxes[2])


@pytest.mark.parametrize("hw", [(1216, 704), (768, 576), (704, 1216)])
def test_tiles_cover_the_frame(models, hw):
    det = models[0]
    h, w = hw
    covered = np.zeros((h, w), bool)
    tiles = det.regions(h, w, tiles=True)
    for x0, y0, side in tiles:
        assert side == det.tile_side
        covered[max(y0, 0) : y0 + side, max(x0, 0) : x0 + side] = True
    assert covered.all(), f"tiles {tiles} leave part of a {w}x{h} frame uncovered"
    # any face up to half a tile wide lies wholly inside some tile
    half = det.tile_side // 2
    for cy in range(half // 2, h - half // 2, 37):
        for cx in range(half // 2, w - half // 2, 41):
            assert any(
                x0 <= cx - half // 2
                and cx + half // 2 <= x0 + side
                and y0 <= cy - half // 2
                and cy + half // 2 <= y0 + side
                for x0, y0, side in tiles
            ), (cx, cy)


def test_roi_warp_puts_points_where_the_matrix_says():
    """A blob at a sub-pixel frame position lands in the crop where ``Roi.to_frame`` maps it
    (pixel centres at i + 0.5 on both sides, rotation sign, scale)."""
    from lipforce_sdk.facemesh.roi import warp_roi

    for angle in (0.0, np.radians(30), np.radians(-75)):
        roi = fm.Roi(cx=150.3, cy=110.8, size=96.0, angle=angle)
        u = np.array([[70.0, 41.5]])  # crop coordinates of a 128-pixel crop
        x, y = roi.to_frame(u, 128)[0]
        yy, xx = np.mgrid[0:240, 0:320] + 0.5
        blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
        img = np.repeat((255 * blob).astype(np.uint8)[..., None], 3, 2)
        crop = warp_roi(img, roi, 128)[..., 0].astype(np.float64)
        cy_, cx_ = np.mgrid[0:128, 0:128] + 0.5
        w = crop / crop.sum()
        centre = np.array([(w * cx_).sum(), (w * cy_).sum()])
        assert np.abs(centre - u[0]).max() < 0.2, (np.degrees(angle), centre, u[0])


# --------------------------------------------------------------------------------------
# landmarks on real faces
# --------------------------------------------------------------------------------------


def test_landmarks_plausible_on_photo_clip(clip_landmarks, boxes):
    lms, detections = clip_landmarks
    assert all(lm is not None for lm in lms), "the face was lost in some frame of the photo clip"
    assert detections == 1, f"the detector ran {detections} times; tracking should need it once"
    worst = 0.0
    for i, lm in enumerate(lms):
        gt = boxes[i]
        eyes_gt = np.array(gt["eyes"])
        iod = float(np.hypot(*(eyes_gt[1] - eyes_gt[0])))
        eyes = lm.eye_centers()
        nose = lm.points[fm.NOSE_TIP, :2]
        mouth = lm.xy(fm.LIPS_OUTER).mean(0)
        chin = lm.points[fm.CHIN, :2]
        # order top to bottom (the clip tilts by at most 4 degrees)
        assert (
            eyes[:, 1].max() < nose[1] < mouth[1] < chin[1]
        ), f"frame {i}: eyes, nose, mouth, chin out of order"
        assert eyes[0, 0] < nose[0] < eyes[1, 0], f"frame {i}: the nose tip is not between the eyes"
        x0, y0, x1, y1 = gt["face_box"]
        m = 0.15 * (y1 - y0)  # the mesh's forehead runs under the bangs, above the hairline mark
        pts = lm.xy()
        assert (
            (pts[:, 0] > x0 - m).all()
            and (pts[:, 0] < x1 + m).all()
            and (pts[:, 1] > y0 - m).all()
            and (pts[:, 1] < y1 + m).all()
        ), f"frame {i}: landmarks leave the annotated face box {gt['face_box']} (+15 %)"
        err = (
            max(np.hypot(*(eyes - eyes_gt).T).max(), np.hypot(*(mouth - np.array(gt["mouth"]))))
            / iod
        )
        worst = max(worst, err)
        assert lm.score > 0.9
    print(f"photo clip: worst eye/mouth distance to the hand marks {worst:.3f} iod")
    assert worst < 0.06, f"eyes or mouth {worst:.3f} iod away from the hand marks"


def test_lip_opening_follows_the_mouth(clip, models):
    still = _track(models, clip[0])
    amounts = np.arange(0, 16, 2.0)  # jaw drop in pixels (the mouth is ~52 px wide)
    tr = _tracker(models)
    opening = []
    for a in amounts:
        tr.update(samples.open_mouth(clip[0], still, a))
        opening.append(tr.last_raw.lip_opening())
    opening = np.array(opening)
    r = np.corrcoef(amounts, opening)[0, 1]
    print(
        f"lip opening vs jaw drop {amounts.tolist()}: {np.round(opening, 3).tolist()} (r = {r:.3f})"
    )
    assert (
        0.05 < opening[0] < 0.3
    ), f"lip opening of the (smiling, teeth showing) photo: {opening[0]:.3f}"
    assert (
        r > 0.9 and opening[-1] - opening[0] > 0.08
    ), f"the lip opening {opening} does not follow the mouth"


@pytest.mark.parametrize("canvas", [(704, 1216), (576, 768)])
def test_small_face_matches_big_face(clip, models, canvas):
    """The photo frame at 1/5 of a kiosk canvas's width: a face ~45 px wide (iod ~20 px)."""
    errs = []
    for k in (0, 60, 120):
        big = _track(models, clip[k])
        image, scale, (x0, y0) = samples.on_canvas(
            clip[k], canvas, 0.2, center=(0.35 + 0.002 * k, 0.3 + 0.003 * k)
        )
        small = _track(models, image)
        assert small is not None, f"frame {k}: no face found on the {canvas[0]}x{canvas[1]} canvas"
        expected = big.points[:, :2] * scale + [x0, y0]
        iod = big.interocular() * scale
        err = np.hypot(*(small.points[:, :2] - expected).T) / iod
        eye_err = (
            np.hypot(*(small.eye_centers() - big.eye_centers() * scale - [x0, y0]).T).max() / iod
        )
        errs.append((err.mean(), np.percentile(err, 95), eye_err))
        print(
            f"{canvas}: frame {k}: iod {iod:.1f} px, landmark error mean {err.mean():.3f} p95 {np.percentile(err, 95):.3f} eyes {eye_err:.3f} iod"
        )
    errs = np.array(errs)
    assert errs[:, 0].max() < 0.04 and errs[:, 1].max() < 0.08 and errs[:, 2].max() < 0.05, errs


@pytest.mark.parametrize("canvas", [(704, 1216), (576, 768)])
def test_kiosk_face_found_in_one_pass(clip, models, canvas):
    """A face 1/5 of the frame's width (a kiosk avatar) needs no tile search."""
    big = _track(models, clip[0])
    frac = 0.2 * clip.shape[2] / 103.0  # the photo's face is ~103 px of its 320 px width
    image, scale, (x0, y0) = samples.on_canvas(clip[0], canvas, frac)
    faces = models[0].detect(image, tiling="off")
    assert len(faces) == 1 and faces[0].score > 0.7, faces
    assert 0.15 < faces[0].width / canvas[0] < 0.3
    lm = _track(models, image)
    err = np.hypot(*(lm.points[:, :2] - big.points[:, :2] * scale - [x0, y0]).T)
    assert err.mean() / (big.interocular() * scale) < 0.03


def test_rolled_face(clip, models):
    big = _track(models, clip[0])
    for deg in (-40, 30):
        m = cv2.getRotationMatrix2D((160, 160), deg, 1.0)
        img = cv2.warpAffine(clip[0], m, (320, 320), borderMode=cv2.BORDER_REPLICATE)
        lm = _track(models, img)
        expected = big.points[:, :2] @ m[:, :2].T + m[:, 2]
        err = np.hypot(*(lm.points[:, :2] - expected).T).mean() / big.interocular()
        assert err < 0.04, f"face rolled {deg} degrees: mean landmark error {err:.3f} iod"


def test_cartoonised_face(clip, models):
    """An illustrated face (the photo made flat-shaded with black edge lines): found, and the
    mesh is close to the photo's; the lip opening there is printed, not asserted (it is not
    reliable on cartoons: the drawn lines around the teeth read as an open mouth)."""
    errs = []
    for k in (0, 50, 100):
        big = _track(models, clip[k])
        toon = samples.cartoonise(clip[k])
        lm = _track(models, toon)
        assert lm is not None, f"cartoonised frame {k}: no face"
        err = np.hypot(*(lm.points[:, :2] - big.points[:, :2]).T) / big.interocular()
        lips = err[list(fm.LIPS_OUTER)].mean()
        errs.append((err.mean(), lips))
        print(
            f"cartoon frame {k}: mean error {err.mean():.3f} iod, outer lips {lips:.3f} iod, lip opening {lm.lip_opening():.3f} (photo {big.lip_opening():.3f})"
        )
    errs = np.array(errs)
    assert errs[:, 0].max() < 0.12 and errs[:, 1].max() < 0.2, errs


# --------------------------------------------------------------------------------------
# tracking and smoothing
# --------------------------------------------------------------------------------------


def test_no_face_gives_none_then_recovers(clip, models):
    tr = _tracker(models, smoothing=True)
    assert tr.update(clip[0]) is not None
    grey = np.full((320, 320, 3), 128, np.uint8)
    assert tr.update(grey) is None and tr.last_detected
    assert tr.update(np.zeros((480, 640, 3), np.uint8)) is None  # another size too
    assert models[0].detect(grey) == []
    lm = tr.update(clip[1])
    assert lm is not None and tr.last_detected


def test_small_face_appearing_in_an_empty_kiosk_frame(clip, models):
    """While nobody is there the costly tile search runs every ``tile_every`` frames only; a
    small face that then appears is found within that many frames."""
    tr = _tracker(models)
    empty = np.full((1216, 704, 3), 90, np.uint8)
    for _ in range(3):
        assert tr.update(empty) is None
    image, _, _ = samples.on_canvas(clip[0], (704, 1216), 0.2)
    found = [tr.update(image) is not None for _ in range(tr.tile_every)]
    assert any(found), f"no face found in {tr.tile_every} frames after it appeared"
    assert tr.update(image) is not None and not tr.last_detected  # then tracked


def _shift(img, dx, dy):
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def test_smoothing_cuts_jitter_without_lag(clip, models):
    rng = np.random.default_rng(0)
    f0 = clip[0]
    tr = _tracker(models, smoothing=True)
    raw, smooth = [], []
    for _ in range(30):  # a still face, fresh pixel noise every frame
        noisy = np.clip(f0 + rng.normal(0, 10, f0.shape), 0, 255).astype(np.uint8)
        smooth.append(tr.update(noisy).points[:, :2])
        raw.append(tr.last_raw.points[:, :2])
    iod = tr.last_raw.interocular()
    still = np.setdiff1d(np.arange(fm.NUM_LANDMARKS), fm.MOUTH_POINTS)  # what the filter smooths
    j_raw = np.array(raw)[5:, still].std(0).mean() / iod
    j_smooth = np.array(smooth)[5:, still].std(0).mean() / iod
    print(f"jitter on a still noisy face: raw {j_raw:.4f} iod, smoothed {j_smooth:.4f} iod")
    assert j_smooth < 0.6 * j_raw
    # the mouth and jaw come back as measured: a mask drawn from them does not trail the mouth
    mouth = list(fm.MOUTH_POINTS)
    assert np.array_equal(np.array(smooth)[:, mouth], np.array(raw)[:, mouth])
    assert not np.array_equal(np.array(smooth)[5:, still], np.array(raw)[5:, still])

    for speed in (0.5, 2.0):  # pixels per frame: 0.25 and 1 iod per second at 25 fps
        tr.reset()
        raw, smooth = [], []
        for i in range(30):
            smooth.append(tr.update(_shift(f0, speed * i, 0.5 * speed * i)).points[:, :2])
            raw.append(tr.last_raw.points[:, :2])
        d = np.array([1.0, 0.5]) / np.hypot(1.0, 0.5)
        v = speed * np.hypot(1.0, 0.5)
        lag = float(((np.array(raw)[12:] - np.array(smooth)[12:]) @ d).mean() / v)
        print(
            f"moving {speed} px/frame: the smoothed landmarks trail the raw ones by {lag:.2f} frames"
        )
        assert lag < 1.0


def test_unsmoothed_points_are_chosen(clip, models):
    """``unsmoothed=()`` smooths the mouth too; bad indices are refused with the fix named."""
    rng = np.random.default_rng(3)
    det, lmm = models
    every = fm.LandmarkTracker(det, lmm, smoothing=True, unsmoothed=())
    mouth = list(fm.MOUTH_POINTS)
    assert len(mouth) == 61 and fm.MOUTH_RIGHT in mouth and fm.LOWER_LIP_INNER in mouth and fm.CHIN in mouth
    assert not set(mouth) & set(fm.LEFT_EYE + fm.RIGHT_EYE)
    diff = []
    for _ in range(8):
        noisy = np.clip(clip[0] + rng.normal(0, 10, clip[0].shape), 0, 255).astype(np.uint8)
        diff.append(np.abs(every.update(noisy).points[mouth] - every.last_raw.points[mouth]).max())
    assert diff[0] == 0 and max(diff[1:]) > 0
    for bad in ((468,), (-1, 3)):
        with pytest.raises(ValueError, match="unsmoothed"):
            fm.LandmarkTracker(det, lmm, unsmoothed=bad)


def test_one_euro_filter():
    f = fm.OneEuroFilter(min_cutoff=1.0, beta=0.0)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (200, 4))
    y = np.array([f(v, i / 25) for i, v in enumerate(x)])
    assert np.allclose(y[0], x[0])  # the first value passes through
    assert y[50:].std() < 0.5 * x[50:].std()
    f = fm.OneEuroFilter(min_cutoff=1.0, beta=5.0)
    ramp = np.arange(100, dtype=np.float64)[:, None] * 2.0
    y = np.array([f(v, i / 25, scale=50.0) for i, v in enumerate(ramp)])
    assert (ramp[30:] - y[30:]).max() / 2.0 < 1.0  # less than a frame behind
    f.reset()
    assert np.allclose(f(np.array([7.0]), 0.0), 7.0)
    with pytest.raises(ValueError, match="min_cutoff"):
        fm.OneEuroFilter(min_cutoff=0)
    with pytest.raises(ValueError, match="beta"):
        fm.OneEuroFilter(beta=-1)


def test_landmarks_helpers(clip_landmarks):
    lm = clip_landmarks[0][0]
    assert lm.points.shape == (fm.NUM_LANDMARKS, 3) and lm.points.dtype == np.float32
    assert len(fm.LIPS_OUTER) == len(fm.LIPS_INNER) == 20 and len(fm.FACE_OVAL) == 36
    assert len(set(fm.LIPS_OUTER) | set(fm.LIPS_INNER)) == 40
    right, left = lm.eye_centers()
    assert right[0] < left[0]  # the subject's right eye is on the image left
    assert lm.LIPS_OUTER == fm.LIPS_OUTER
    gap = np.hypot(*(lm.points[13, :2] - lm.points[14, :2]))
    assert lm.lip_opening() == pytest.approx(gap / lm.mouth_width(), rel=1e-5)
    # the outer lip contour is a simple loop around the inner one
    outer = lm.xy(fm.LIPS_OUTER).astype(np.float32)
    inner_c = lm.xy(fm.LIPS_INNER).mean(0)
    assert cv2.pointPolygonTest(outer, (float(inner_c[0]), float(inner_c[1])), False) > 0
    assert cv2.contourArea(outer) > 0.9 * cv2.contourArea(cv2.convexHull(outer))


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


def test_bad_input_errors(clip, models):
    det, lmm = models
    tr = _tracker(models)
    f = clip[0]
    with pytest.raises(ValueError, match="uint8"):
        tr.update(f.astype(np.float32))
    with pytest.raises(ValueError, match=r"RGB \[H, W, 3\]"):
        det.detect(f[..., 0])
    with pytest.raises(ValueError, match=r"RGB \[H, W, 3\]"):
        tr.update(np.dstack([f, f[..., :1]]))
    with pytest.raises(ValueError, match="at least 16x16"):
        tr.update(f[:8, :8])
    with pytest.raises(TypeError, match="Roi"):
        lmm(f, (10, 10, 100, 100))
    with pytest.raises(ValueError, match="size"):
        fm.Roi(10, 10, 0)
    with pytest.raises(ValueError, match="model must be one of"):
        fm.FaceDetector("long_range")
    with pytest.raises(ValueError, match="tiling"):
        fm.FaceDetector(tiling="sometimes")
    with pytest.raises(ValueError, match="tiling"):
        det.detect(f, tiling="yes")
    with pytest.raises(ValueError, match="tile_every"):
        fm.LandmarkTracker(det, lmm, tile_every=0)
    with pytest.raises(ValueError, match="min_presence"):
        fm.LandmarkTracker(det, lmm, min_presence=1.5)
    with pytest.raises(TypeError, match="smoothing"):
        fm.LandmarkTracker(det, lmm, smoothing="yes")
    with pytest.raises(FileNotFoundError, match="facemesh.convert"):
        LandmarkModel(model_dir="/nonexistent")
    with pytest.raises(ValueError, match=r"\[468, 3\]"):
        fm.FaceLandmarks(np.zeros((10, 3)), 1.0, fm.Roi(1, 1, 1))
    assert tr.frame_index == 0  # rejected frames are not counted


def test_import_is_torch_free():
    code = "import sys, lipforce_sdk.facemesh; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_clip_takes_the_most_closed_mouth_as_reference(clip, models):
    """``lipforce run`` starts the model's mouth from the most closed mouth among the stream's first
    seconds, not from whatever the first frame shows."""
    from lipforce_sdk import Engine
    from lipforce_sdk.cli import closed_mouth_reference

    still = _track(models, clip[0])
    frames = [samples.open_mouth(clip[0], still, a) for a in (12.0, 6.0, 0.0, 9.0)]
    ref = closed_mouth_reference(Engine.load(), frames)
    assert ref is not None and len(ref) == 1 and ref[0] is frames[2]
    assert closed_mouth_reference(Engine.load(), frames[:2])[0] is frames[1]
    assert closed_mouth_reference(Engine.load(), frames, seconds=0.04)[0] is frames[0]  # one frame searched
