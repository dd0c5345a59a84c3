"""Real faces that speak (distill/photoreal.py), on the bundled astronaut photo clip's first
frame and its landmarks from lipforce_sdk.facemesh: zero parameters give the input back, the
lip gap follows ``open``, the landmarks move as the parameters say and agree with the warp,
nothing above the nose or outside the lower face changes, determinism, input checks."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

import cv2  # noqa: E402

from distill import photoreal as pr  # noqa: E402
from distill.photoreal import PhotoFace, TalkingClip, talk  # noqa: E402

CLIP = ROOT / "lipforce_sdk" / "assets" / "photo" / "face.mp4"


@pytest.fixture(scope="module")
def astronaut():
    """(image, landmarks [468, 2]) of the photo clip's first frame."""
    try:
        from lipforce_sdk.facemesh import LandmarkTracker
    except Exception as e:  # the package is optional here (being written, or its deps missing)
        reason = f"lipforce_sdk.facemesh is not importable ({type(e).__name__}: {e}); no landmarks for the photo"
        print(reason)
        pytest.skip(reason)
    from lipforce_sdk.media import iter_video_frames

    frame = np.ascontiguousarray(next(iter(iter_video_frames(str(CLIP)))))
    lm = LandmarkTracker(smoothing=False).update(frame)
    if lm is None:
        pytest.fail("lipforce_sdk.facemesh found no face in the bundled photo clip")
    return frame, np.asarray(lm.points[:, :2], np.float32)


@pytest.fixture(scope="module")
def face(astronaut):
    img, lm = astronaut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the astronaut smiles: her lips are parted
        return PhotoFace(img, lm)


def _p(o=0.0, s=0.0, r=0.0, t=0.0, n=1):
    return np.tile(np.array([[o, s, r, t]], np.float32), (n, 1))


def test_smile_is_warned_not_refused(astronaut):
    img, lm = astronaut
    with pytest.warns(UserWarning, match="partly open"):
        f = PhotoFace(img, lm)
    assert 0.05 < f.opening < 0.3
    assert f.opening == pytest.approx(pr.lip_opening(lm))


def test_zero_params_give_the_input_back(face, astronaut):
    img, lm = astronaut
    clip = talk(face, _p(n=3))
    assert isinstance(clip, TalkingClip)
    assert clip.frames.shape == (3, *img.shape) and clip.frames.dtype == np.uint8
    for fr in clip.frames:
        assert np.array_equal(fr, img)  # bit for bit
    np.testing.assert_allclose(clip.landmarks[0], lm, atol=1e-4)
    assert clip.gap_px[0] == pytest.approx(float(np.hypot(*(lm[14] - lm[13]))), abs=1e-3)


def test_zero_params_with_crop_and_motion_are_only_a_resample(face):
    from distill.faces import Motion

    clip = talk(face, _p(n=4), motion=Motion.random(3), out_size=128)
    assert clip.frames.shape == (4, 128, 128, 3)
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float64) + 0.5
    for f in range(4):
        A = clip.transforms[f]
        mx = (A[0, 0] * xx + A[0, 1] * yy + A[0, 2] - 0.5).astype(np.float32)
        my = (A[1, 0] * xx + A[1, 1] * yy + A[1, 2] - 0.5).astype(np.float32)
        src = face._source(128 / pr.face_box(face.landmarks)[2] * 1.0)  # the same low-pass as talk's
        ref = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        diff = np.abs(clip.frames[f].astype(int) - ref.astype(int))
        # the scale of the motion changes the low-pass a little; a resample either way
        assert diff.mean() < 1.0, f
        # landmarks: the similarity applied to the input's
        Ai = np.linalg.inv(np.vstack([A, [0, 0, 1]]))
        exp = face.landmarks @ Ai[:2, :2].T + Ai[:2, 2]
        np.testing.assert_allclose(clip.landmarks[f], exp, atol=1e-3)


def test_gap_grows_monotonically_with_open(face):
    opens = np.linspace(0.0, 1.0, 11)
    clip = talk(face, np.stack([opens, np.zeros(11), np.zeros(11), np.full(11, 0.5)], 1))
    assert np.all(np.diff(clip.gap_px) > 0.5), clip.gap_px
    W = face.mouth_width
    # at open = 1: about 0.35 + 0.06 mouth widths more than at rest
    assert clip.gap_px[-1] - clip.gap_px[0] == pytest.approx(0.41 * W, rel=0.15)
    assert np.all(np.diff(clip.mouth_area) > 0)


def test_landmarks_move_as_the_params_say(face, astronaut):
    _, lm = astronaut
    rest, opened, spread, rounded = talk(face, np.concatenate(
        [_p(), _p(o=0.8), _p(s=1.0), _p(r=1.0)])).landmarks
    W = face.mouth_width
    # open: the lower lip and the chin go down, the chin by about half the lower lip, the upper lip up a little
    low = opened[[14, 17]] - rest[[14, 17]]
    assert np.all(low[:, 1] > 0.2 * W)
    chin = opened[152, 1] - rest[152, 1]
    assert 0.3 * low[0, 1] < chin < 0.7 * low[0, 1]
    assert -0.1 * W < opened[13, 1] - rest[13, 1] < 0
    width = lambda p: float(np.hypot(*(p[291] - p[61])))  # noqa: E731
    assert width(spread) > width(rest) + 0.15 * W  # corners out
    assert width(rounded) < width(rest) - 0.2 * W  # corners in
    # lips thicken with round: the upper lip's outer edge moves away from its inner edge
    thick = lambda p: float(p[13, 1] - p[0, 1])  # noqa: E731
    assert thick(rounded) > thick(rest)
    # nothing above the nose tip moves
    above = lm[:, 1] < lm[1, 1]
    assert above.sum() > 150
    for p in (opened, spread, rounded):
        np.testing.assert_allclose(p[above], lm[above], atol=1e-4)


def test_pixels_above_the_nose_and_outside_the_lower_face_do_not_change(face, astronaut):
    img, lm = astronaut
    rng = np.random.default_rng(0)
    params = np.concatenate([rng.uniform(0, 1, (4, 4)), _p(1, 1, 0, 1), _p(1, 0, 1, 1)]).astype(np.float32)
    clip = talk(face, params)
    changed = np.zeros(img.shape[:2], bool)
    for fr in clip.frames:
        changed |= np.any(fr != img, axis=2)
    assert changed.sum() > 200  # the mouth did move
    h, w = img.shape[:2]
    # above the nose tip: nothing
    assert not changed[: int(np.floor(lm[1, 1])) + 1].any()
    # outside the lower face (the jaw line below the nose, widened by half a mouth width for
    # the chin moving over the neck): nothing
    W = face.mouth_width
    oval = lm[list(pr.LOWER_OVAL)]
    region = np.zeros((h, w), np.uint8)
    cv2.fillPoly(region, [np.round(oval).astype(np.int32)], 1)
    r = int(np.ceil(0.5 * W))
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    assert not (changed & (region == 0)).any()
    # and everything changed lies inside the documented support
    sup = np.zeros((h, w), np.uint8)
    cv2.fillPoly(sup, [np.round(face.support_polygon()).astype(np.int32)], 1)
    assert not (changed & (cv2.dilate(sup, np.ones((3, 3), np.uint8)) == 0)).any()


def test_warp_round_trip_and_landmarks_follow_the_pixels(face):
    """The returned landmarks are where the warp put them: the backward map at the warped
    landmarks leads back to the input landmarks."""
    g = face._g
    for prm in ([0.9, 0.2, 0.0, 0.7], [0.3, 1.0, 0.0, 0.8], [0.2, 0.0, 1.0, 0.0]):
        w = pr._Warp(g, np.array(prm))
        src = g.to_mouth(face.landmarks.astype(np.float64))
        side = np.zeros(len(src))
        side[list(pr.UPPER_INNER[1:-1]) + list(pr.UPPER_OUTER[1:-1])] = -1
        side[list(pr.LOWER_INNER[1:-1]) + list(pr.LOWER_OUTER[1:-1])] = 1
        out = w.forward(src, side)
        tab = w.table(g.x_range[0] - 2, g.x_range[1] + 2, 0.05)
        # the inner-lip points sit on the tear's edge; the rest must come back exactly
        keep = np.ones(len(src), bool)
        keep[list(pr.LIPS_INNER)] = False
        x, v, _, tear = w.backward(out[keep, 0], out[keep, 1], tab)
        assert not tear.any()
        err = np.hypot(x - src[keep, 0], v - src[keep, 1])
        assert err.max() < 0.05, (prm, err.max())


def test_fast_map_matches_the_exact_warp(face):
    """talk() samples the smooth part of the field on a 2-pixel grid and computes the lips
    exactly: everywhere within a quarter of an output pixel of the exact backward warp."""
    import math

    g = face._g
    A = pr._similarity(pr.face_box(face.landmarks), 256, None)
    Ai = np.linalg.inv(A)
    k = float(math.sqrt(abs(np.linalg.det(Ai[:2, :2]))))
    sup = face.support_polygon() @ Ai[:2, :2].T + Ai[:2, 2]
    r0, r1 = int(max(sup[:, 1].min() - 2, 0)), int(min(sup[:, 1].max() + 2, 256))
    c0, c1 = int(max(sup[:, 0].min() - 2, 0)), int(min(sup[:, 0].max() + 2, 256))
    rows, cols = np.mgrid[r0:r1, c0:c1] + 0.5
    P = np.stack([A[0, 0] * cols + A[0, 1] * rows + A[0, 2], A[1, 0] * cols + A[1, 1] * rows + A[1, 2]], -1)
    xv = g.to_mouth(P.reshape(-1, 2))
    for prm in np.random.default_rng(0).uniform(0, 1, (6, 4)):
        w = pr._Warp(g, prm)
        tab = w.table(g.x_range[0] - 2, g.x_range[1] + 2, 0.125 / k)
        q, _ = pr._roi_map(g, w, tab, A, r0, r1, c0, c1, k)
        x, v, _, _ = w.backward(xv[:, 0], xv[:, 1], tab)
        exact = g.to_image(np.stack([x, v], 1)) - 0.5
        assert np.abs(q.reshape(-1, 2) - exact).max() * k < 0.25, prm


def test_interior_is_painted_dark_with_teeth_and_lips_keep_their_texture(face, astronaut):
    img, lm = astronaut
    clip = talk(face, _p(o=0.9, s=0.2, t=0.7))
    fr, out = clip.frames[0], clip.landmarks[0]
    # in the middle of the new gap (between the input's teeth, which stay): dark
    mid = 0.5 * (out[13] + out[14])
    y0, x0 = int(mid[1]), int(mid[0])
    patch = fr[y0 - 1: y0 + 2, x0 - 1: x0 + 2].astype(float)
    assert patch.mean() < 0.45 * img[int(lm[17, 1]), int(lm[17, 0])].astype(float).mean()
    # the lower lip moved, its texture with it: the lip colour at the warped landmark 17
    a = cv2.getRectSubPix(fr, (3, 3), tuple(map(float, out[17] - 0.5))).astype(float).mean((0, 1))
    b = cv2.getRectSubPix(img, (3, 3), tuple(map(float, lm[17] - 0.5))).astype(float).mean((0, 1))
    assert np.abs(a - b).max() < 12


def test_mouth_without_visible_teeth_gets_upper_teeth(astronaut):
    """Where the input shows no teeth, teeth are painted under the upper lip. (The photo
    shows hers: here the teeth detection's answer is overridden, so her old interior is
    repainted like a closed mouth's lip line.)"""
    import dataclasses

    img, lm = astronaut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        f = PhotoFace(img, lm)
    f._look = dataclasses.replace(f._look, has_teeth=False, seam=0.5)
    f._g.seam_frac = 0.5
    clip = talk(f, _p(o=0.6, t=1.0))
    fr, out = clip.frames[0], clip.landmarks[0]
    top = out[13]
    W = f.mouth_width
    # just under the upper lip: bright (teeth); lower in the gap: dark
    t = fr[int(top[1] + 0.06 * W), int(top[0])].astype(float).mean()
    d = fr[int(out[14, 1] - 0.12 * W), int(out[14, 0])].astype(float).mean()
    assert t > d + 40


def test_deterministic(face):
    from distill.faces import Motion

    rng = np.random.default_rng(5)
    params = rng.uniform(0, 1, (5, 4)).astype(np.float32)
    a = talk(face, params, motion=Motion.random(1), out_size=160, seed=3)
    b = talk(face, params, motion=Motion.random(1), out_size=160, seed=3)
    assert np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.landmarks, b.landmarks)
    c = talk(face, params)
    d = talk(face, params)
    assert np.array_equal(c.frames, d.frames)


def test_out_size_crop_frames_the_face(face):
    clip = talk(face, _p(o=0.5), out_size=192)
    lm = clip.landmarks[0]
    assert clip.frames.shape == (1, 192, 192, 3)
    eyes = 0.5 * (lm[list(pr.RIGHT_EYE)].mean(0) + lm[list(pr.LEFT_EYE)].mean(0))
    mouth = lm[[61, 291]].mean(0)
    assert 0.25 < eyes[1] / 192 < 0.42
    assert 0.6 < mouth[1] / 192 < 0.75
    assert 0.4 < eyes[0] / 192 < 0.6
    assert clip.gap_px[0] > 0


def test_bad_inputs_name_the_value_and_the_fix(face, astronaut):
    img, lm = astronaut
    with pytest.raises(ValueError, match=r"uint8.*float32.*astype\(np.uint8\)"):
        PhotoFace(img.astype(np.float32) / 255, lm)
    with pytest.raises(ValueError, match=r"\[H, W, 3\].*4 channels.*image\[\.\.\., :3\]"):
        PhotoFace(np.dstack([img, img[..., :1]]), lm)
    with pytest.raises(ValueError, match=r"\[468, 2 or 3\].*\(400, 2\)"):
        PhotoFace(img, lm[:400])
    with pytest.raises(ValueError, match=r"one face.*2 faces.*landmarks\[0\]"):
        PhotoFace(img, np.stack([lm, lm]))
    bad = lm.copy()
    bad[14] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf.*\[14\]"):
        PhotoFace(img, bad)
    with pytest.raises(ValueError, match=r"outside.*normalised"):
        PhotoFace(img, lm / np.array(img.shape[1::-1], np.float32) * 5000)
    opened = lm.copy()
    opened[list(pr.LOWER_INNER[1:-1])] += np.array([0.0, 0.45 * face.mouth_width], np.float32)
    with pytest.raises(ValueError, match=r"already open.*0\.\d\d.*closed"):
        PhotoFace(img, opened)
    with pytest.raises(ValueError, match=r"in \[0, 1\].*frame 1 has open = 1\.5.*np\.clip"):
        talk(face, np.array([[0, 0, 0, 0], [1.5, 0, 0, 0]], np.float32))
    with pytest.raises(ValueError, match=r"in \[0, 1\].*spread = -0\.2"):
        talk(face, _p(s=-0.2))
    with pytest.raises(ValueError, match=r"\[F, 4\].*\(2, 3\).*frame_params"):
        talk(face, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"one row.*params\[None\]"):
        talk(face, np.zeros(4))
    with pytest.raises(ValueError, match=r"NaN/Inf.*frame 0, teeth"):
        talk(face, np.array([[0, 0, 0, np.nan]]))
    with pytest.raises(ValueError, match=r"motion.*\[F, 4\].*F = 2.*\(3, 4\)"):
        talk(face, _p(n=2), motion=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"out_size.*\[32, 4096\].*8"):
        talk(face, _p(), out_size=8)
    with pytest.raises(TypeError, match="PhotoFace"):
        talk(img, _p())
