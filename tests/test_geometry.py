"""Face geometry on a real face (the bundled photo clip): the eye-aligned mouth crop, the mouth
mask from the lips and the jaw, and a paste that leaves every pixel outside the mask as it was."""

import math

import cv2
import numpy as np
import pytest

from lipforce_sdk.cli import PHOTO_DIR
from lipforce_sdk.geometry import (EDGE_MATCH_RING, EDGE_MATCH_SIGMA, AlignedCrop, CropAligner, CropSpec,
                                   FaceKeypoints, GreenLimit, limit_green, lip_box, match_edge, mouth_mask_for,
                                   soft_mask)
from lipforce_sdk.media import read_video

S = 128


@pytest.fixture(scope="module")
def photo():
    from lipforce_sdk.facemesh import LandmarkTracker

    frames, _ = read_video(PHOTO_DIR / "face.mp4")
    frame = frames[0]
    lm = LandmarkTracker(smoothing=False).update(frame)
    assert lm is not None, "the face mesh finds no face in the bundled photo clip"
    return frame, FaceKeypoints.from_mediapipe(lm.points)


def _psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255**2 / mse) if mse else np.inf


def test_keypoints_from_mesh_are_ordered_and_plausible(photo):
    _, kp = photo
    (lx, ly), (rx, ry) = kp.eyes
    assert lx < rx, f"eyes not image-left first: {kp.eyes.tolist()}"
    eye_y = 0.5 * (ly + ry)
    assert eye_y < kp.nose_tip[1] < kp.mouth_corners[:, 1].mean() < kp.jaw[:, 1].max(), "eyes, nose, mouth, chin out of order"
    assert 0.6 < kp.mouth_width / kp.eye_distance < 1.2, f"mouth width {kp.mouth_width:.1f} vs eye distance {kp.eye_distance:.1f}"


def test_crop_puts_the_mouth_at_the_same_place_whatever_the_pose(photo):
    """Rotate and shrink the frame: the aligned crop is the same picture (up to resampling)."""
    frame, kp = photo
    ref = AlignedCrop.from_keypoints(kp, S).crop(frame)
    h, w = frame.shape[:2]
    for angle, scale in ((12.0, 1.0), (-8.0, 0.6), (0.0, 1.7)):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        big = (max(h, w) * 2, max(h, w) * 2)
        m[:, 2] += np.array(big) / 2 - np.array([w / 2, h / 2])
        moved = cv2.warpAffine(frame, m, big, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # continuous coordinates: pixel centres at +0.5, so shift, map, shift back
        aff = m.copy()
        aff[:, 2] += aff[:, :2] @ np.array([0.5, 0.5]) - 0.5
        got = AlignedCrop.from_keypoints(kp.map(aff), S).crop(moved)
        p = _psnr(got, ref)
        assert p > 27.0, f"angle={angle} scale={scale}: aligned crop PSNR {p:.1f} dB against the upright crop"


def test_mask_covers_the_lips_and_the_chin_and_spares_the_nose(photo):
    frame, kp = photo
    ac = AlignedCrop.from_keypoints(kp, S)
    kc = kp.map(ac.to_crop_affine())
    mm = mouth_mask_for(kc, S)
    lips = np.zeros((S, S), np.uint8)
    cv2.fillPoly(lips, [np.round(kc.lips_outer - 0.5).astype(np.int32)], 1)
    assert (mm.hard[lips > 0] == 1).all(), "some lip pixels are not masked"
    nx, ny = kc.nose_tip
    assert mm.hard[: int(ny) + 1].sum() == 0, "the mask reaches the nose tip"
    chin_y = int(kc.jaw[:, 1].max()) - 2
    assert mm.hard[min(chin_y, S - 1), int(kc.jaw[np.argmax(kc.jaw[:, 1]), 0])] == 1, "the chin is not masked"
    # soft paste weights: inside the hard mask only, 1 well inside it
    assert (mm.soft <= mm.hard).all() and mm.soft.max() == pytest.approx(1.0)
    assert np.array_equal(soft_mask(mm.hard), mm.soft)
    # margins in eye distances, not mouth widths: a rounded mouth still leaves room for a spread one
    d = kc.eye_distance
    row = int(round(kc.mouth_corners[:, 1].mean()))
    cols = np.flatnonzero(mm.hard[row])
    assert cols.max() - cols.min() >= 2 * 0.55 * d - 2, f"mask {cols.max() - cols.min()} px wide at the mouth line, eye distance {d:.1f}"


def test_paste_changes_nothing_outside_the_mask(photo):
    frame, kp = photo
    ac = AlignedCrop.from_keypoints(kp, S)
    mm = mouth_mask_for(kp.map(ac.to_crop_affine()), S)
    rng = np.random.default_rng(0)
    gen = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    out = ac.paste(frame, gen, mm.soft)
    changed = (out != frame).any(-1)
    footprint = ac.frame_weight(mm.hard, frame.shape[:2]) > 0
    assert changed.any(), "nothing was pasted"
    assert not (changed & ~footprint).any(), f"{int((changed & ~footprint).sum())} pixels changed outside the mask"
    # and the footprint is the mouth: below the eyes, a small part of the frame
    ys, _ = np.nonzero(footprint)
    assert ys.min() > kp.eyes[:, 1].max() and footprint.mean() < 0.2


def test_paste_of_the_crop_itself_is_close_to_identity(photo):
    frame, kp = photo
    ac = AlignedCrop.from_keypoints(kp, S)
    mm = mouth_mask_for(kp.map(ac.to_crop_affine()), S)
    out = ac.paste(frame, ac.crop(frame), mm.soft)
    fp = ac.frame_weight(mm.hard, frame.shape[:2]) > 0
    assert _psnr(out[fp], frame[fp]) > 28.0


def test_a_cubic_crop_keeps_more_detail_where_the_crop_enlarges_the_face(photo):
    """Exemplars are cut with cubic interpolation (the model's crops stay bilinear)."""
    frame, kp = photo
    ac = AlignedCrop.from_keypoints(kp, 2 * S)  # enlarges the face: the case of small faces
    assert ac.scale < 1.0
    lin, cub = ac.crop(frame), ac.crop(frame, interpolation=cv2.INTER_CUBIC)

    def lap(im):
        return cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F).var()

    assert lap(cub) > 1.1 * lap(lin)  # 1.15 on this photo at 2x
    assert _psnr(lin, cub) > 30.0  # the same picture
    assert np.array_equal(ac.crop(frame, interpolation=cv2.INTER_LINEAR), lin)


def _edge_case(photo, offset):
    """The photo's crop and mask, and a 'generated' crop: the crop itself with a smooth colour shift
    (``offset``, as a model off in shading would be) and a different mouth deep inside the mask."""
    frame, kp = photo
    ac = AlignedCrop.from_keypoints(kp, S)
    mm = mouth_mask_for(kp.map(ac.to_crop_affine()), S)
    image = ac.crop(frame)
    rng = np.random.default_rng(1)
    mouth = rng.integers(0, 256, (S, S, 3)).astype(np.float32)
    gen = image.astype(np.float32) + np.asarray(offset, np.float32)
    gen = np.where((_dist_inside(mm.hard) > _reach() + 1)[..., None], mouth, gen)
    return image, mm, np.clip(np.rint(gen), 0, 255).astype(np.uint8)


def _reach():
    """How far inside the mask ``match_edge`` reaches at this crop size: the Gaussian's square kernel,
    cut at 2 sigma on each axis (its corner: sqrt(2) x that)."""
    return math.sqrt(2) * math.ceil(2 * EDGE_MATCH_SIGMA * S)


def _dist_inside(hard):
    return cv2.distanceTransform((hard > 0).astype(np.uint8), cv2.DIST_L2, 5)


def test_edge_match_takes_the_shading_off_at_the_seam_and_leaves_the_mouth(photo):
    image, mm, gen = _edge_case(photo, offset=(12.0, -10.0, 7.0))
    out = match_edge(gen, image, mm.hard)
    d = _dist_inside(mm.hard)
    seam = (d > 0) & (d <= 2)  # the mask's first pixels inside its edge: the model's shading there
    before = np.abs(gen[seam].astype(float) - image[seam].astype(float)).mean()
    after = np.abs(out[seam].astype(float) - image[seam].astype(float)).mean()
    assert after < 0.6 * before, (before, after)
    # the offset is taken off where the ring reaches: the mean error there falls to a few levels
    shift = (out.astype(float) - gen.astype(float))[seam].mean(axis=0)
    assert np.allclose(shift, [-12.0, 10.0, -7.0], atol=3.0), shift
    # the mouth deep inside the mask, past the Gaussian's reach, is left as drawn
    deep = d > _reach() + 1
    assert deep.any() and np.array_equal(out[deep], gen[deep])


def test_edge_match_changes_nothing_where_the_model_matches_the_frame(photo):
    image, mm, gen = _edge_case(photo, offset=(0.0, 0.0, 0.0))
    assert np.array_equal(match_edge(image, image, mm.hard), image)
    # the generated mouth alone differs (inside the mask): the ring outside sees no difference
    assert not np.array_equal(gen, image) and np.array_equal(match_edge(gen, image, mm.hard), gen)


def test_edge_match_without_a_ring_returns_the_crop():
    rng = np.random.default_rng(2)
    gen, image = (rng.integers(0, 256, (S, S, 3), dtype=np.uint8) for _ in range(2))
    assert match_edge(gen, image, np.zeros((S, S), np.float32)) is gen  # no mask
    assert np.array_equal(match_edge(gen, image, np.ones((S, S), np.float32)), gen)  # the mask fills the crop


def test_edge_match_leaves_out_what_the_model_drew_a_pixel_off(photo):
    """A ring pixel off by more than the limit (an edge the model moved: hair, jaw line) is not carried
    into the mask: the same crop with and without such errors in the ring is matched the same."""
    image, mm, gen = _edge_case(photo, offset=(8.0, 8.0, 8.0))
    d = cv2.distanceTransform((mm.hard == 0).astype(np.uint8), cv2.DIST_L2, 5)  # outside: pixels to the mask
    ring = (d > 0) & (d <= 6)
    spots = ring & (np.random.default_rng(3).random(ring.shape) < 0.2)
    bad = gen.copy()
    bad[spots] = np.where(image[spots] > 127, 0, 255).astype(np.uint8)  # 128+ levels off
    a, b = match_edge(gen, image, mm.hard), match_edge(bad, image, mm.hard)
    inside = mm.hard > 0
    # nothing of the spots comes in: inside the mask no pixel moves by more than the shading's 8 levels,
    # and the two agree but where the ring thinned by the spots changes the weights a little
    assert np.abs(b[inside].astype(int) - gen[inside]).max() <= 9
    assert np.abs(a[inside].astype(int) - b[inside]).mean() < 0.5
    assert np.abs(a[inside].astype(int) - gen[inside]).mean() > 2  # and the shading is still matched


def test_edge_match_scales_with_the_crop():
    """The same mask and shift at 2x and 4x the crop's side (made at 128 px and enlarged,
    ``EDGE_MATCH_SIDE``): the correction reaches 2x and 4x as far."""
    reach = []
    for size in (S, 2 * S, 4 * S):
        hard = np.zeros((size, size), np.float32)
        hard[size // 2:, size // 4:3 * size // 4] = 1
        image = np.full((size, size, 3), 130, np.uint8)
        gen = np.full((size, size, 3), 140, np.uint8)
        out = match_edge(gen, image, hard)
        col = out[size // 2:, size // 2, 0].astype(int)  # down the mask's middle, from its top edge
        assert col[0] < 133  # matched at the edge
        reach.append(int(np.argmax(col == 140)))  # first pixel left as drawn
    assert reach[0] > 0 and abs(reach[1] - 2 * reach[0]) <= 2 and abs(reach[2] - 4 * reach[0]) <= 4, reach
    assert EDGE_MATCH_RING * S >= 1


def test_template_keypoints_from_a_box():
    kp = FaceKeypoints.template((10, 20, 110, 120))
    assert kp.source == "template" and kp.eye_distance == pytest.approx(23.6, abs=0.1)
    ac = AlignedCrop.from_keypoints(kp, S)
    assert ac.angle == 0.0 and ac.side == pytest.approx(CropSpec().side * kp.eye_distance)


def test_aligner_smooths_jitter_and_follows_motion(photo):
    _, kp = photo
    rng = np.random.default_rng(1)
    al = CropAligner(S)
    raw, smooth = [], []
    for i in range(50):  # still head, landmark noise of 1.5% of the eye distance
        j = kp.map(np.array([[1, 0, rng.normal(0, 0.015 * kp.eye_distance)], [0, 1, rng.normal(0, 0.015 * kp.eye_distance)]]))
        raw.append(AlignedCrop.from_keypoints(j, S).centre)
        smooth.append(al(j).centre)
    assert np.std(np.diff(np.array(smooth)[10:], axis=0)) < 0.5 * np.std(np.diff(np.array(raw)[10:], axis=0))
    al.reset()
    v = 0.04 * kp.eye_distance  # px per frame: a head moving at one eye distance per second
    lag = []
    for i in range(40):
        k = kp.map(np.array([[1, 0, v * i], [0, 1, 0]]))
        lag.append((AlignedCrop.from_keypoints(k, S).centre[0] - al(k).centre[0]) / v)
    assert max(lag[20:]) < 1.0, f"the crop trails a moving head by {max(lag[20:]):.2f} frames"
    # a cut (the face jumps) snaps instead of sliding
    far = kp.map(np.array([[1, 0, 5 * kp.eye_distance], [0, 1, 0]]))
    assert al(far).centre == pytest.approx(AlignedCrop.from_keypoints(far, S).centre)


@pytest.mark.parametrize("bad,match", [
    (dict(eyes=np.zeros((3, 2))), r"eyes must be \[2, 2\]"),
    (dict(eyes=np.array([[1.0, 1.0], [1.0, 1.0]])), r"eye centres coincide"),
    (dict(jaw=np.array([[np.nan, 1.0]])), r"jaw contains NaN"),
])
def test_bad_keypoints_are_rejected(bad, match):
    kw = dict(eyes=np.array([[0.0, 0.0], [10.0, 0.0]]), nose_tip=np.array([5.0, 5.0]),
              mouth_corners=np.array([[2.0, 10.0], [8.0, 10.0]]), lips_outer=np.ones((4, 2)),
              lips_inner=np.ones((4, 2)), jaw=np.ones((4, 2)))
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        FaceKeypoints(**kw)



def _green_case(photo):
    """The photo's crop, its keypoints in crop pixels, and a generated crop: the crop with a band
    between the lips painted grey-green (as the general model draws an open mouth), a dark red band
    below the lips and a green patch at the crop's corner, far outside the box round the lips."""
    frame, kp = photo
    ac = AlignedCrop.from_keypoints(kp, S)
    image, kc = ac.crop(frame), kp.map(ac.to_crop_affine())
    gen = image.copy()
    cx, cy = kc.mouth_corners.mean(0)
    hw = int(0.3 * kc.mouth_width)
    band = np.zeros((S, S), bool)
    band[int(cy) - 2:int(cy) + 2, int(cx) - hw:int(cx) + hw] = True
    gen[band] = (120, 180, 160)  # mint: G - R = 60
    red = np.zeros((S, S), bool)
    low = int(kc.lips_outer[:, 1].max()) + 1
    red[low:low + 2, int(cx) - hw:int(cx) + hw] = True
    gen[red] = (90, 30, 40)
    corner = np.zeros((S, S), bool)
    corner[:6, :6] = True
    gen[corner] = (60, 200, 60)
    return image, kc, gen, band, red, corner


def _luma(p):
    return p.astype(float) @ np.array([0.299, 0.587, 0.114])


def test_green_limit_is_the_persons_own_percentile_in_frame_order(photo):
    image, kc, *_ = _green_case(photo)
    x0, y0, x1, y1 = lip_box(kc, S)
    own = image[y0:y1, x0:x1].astype(int)
    d = own[..., 1] - own[..., 0]
    gl = GreenLimit()
    first = gl.see(image, kc)
    assert first == pytest.approx(np.percentile(d, 99.9, method="inverted_cdf") + 4, abs=1.0)
    assert first < 10, f"the photo's own lip box reaches G - R = {first - 4}: not a red-over-green face"
    # a later crop with greener pixels raises the pooled limit; a reset forgets it
    greener = image.copy()
    greener[y0:y1, x0:x1, 1] = np.clip(greener[y0:y1, x0:x1, 0].astype(int) + 30, 0, 255)
    assert gl.see(greener, kc) > first + 20
    gl.reset()
    assert gl.see(image, kc) == first


def test_limit_green_takes_a_grey_green_mouth_to_the_persons_own_warmth_and_nothing_else(photo):
    image, kc, gen, band, red, corner = _green_case(photo)
    limit = GreenLimit().see(image, kc)
    out = limit_green(gen, kc, limit)
    g = out[band].astype(float)
    # the band is at the limit (rounding: 1 level), its luma kept
    assert np.all(np.abs((g[:, 1] - g[:, 0]) - limit) <= 1.0), (g[:, 1] - g[:, 0]).max()
    assert np.all(np.abs(_luma(g) - _luma(gen[band])) <= 1.0)
    # the dark red band, the corner outside the box and every pixel at or under the limit: bit-identical
    assert np.array_equal(out[red], gen[red]) and np.array_equal(out[corner], gen[corner])
    d = gen.astype(int)[..., 1] - gen.astype(int)[..., 0]
    assert np.array_equal(out[d <= limit], gen[d <= limit])
    assert np.array_equal(limit_green(gen, kc, None), gen)  # no limit: as drawn


def test_limit_green_keeps_a_green_the_person_has(photo):
    """An illustrated avatar with green lips: its own lip box reaches the band's green, which stays."""
    image, kc, gen, band, *_ = _green_case(photo)
    painted = image.copy()
    painted[band] = (120, 180, 160)
    assert np.array_equal(limit_green(gen, kc, GreenLimit().see(painted, kc)), gen)
