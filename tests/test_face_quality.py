"""The "keep the face" measures (lipforce_sdk.face_quality) on synthetic outputs of the bundled
real photo clip: identical, lower face blurred, noise inside the lips, a ping-pong loop; the
silence measure on arrays; the command line end to end; bad input.

The outputs are made from the first 60 frames of ``lipforce_sdk/assets/photo/face.mp4`` (2.4 s,
long enough for the 1 s-shift null) with the landmarks the measure itself finds (the same
unsmoothed face-mesh tracker on the same frames gives the same points).
"""

from __future__ import annotations

import json
import os
import math
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (a base dependency: pip install 'onnxruntime>=1.20')")

from lipforce_sdk import face_quality as fq  # noqa: E402
from lipforce_sdk.cli import PHOTO_DIR, _video_schedule  # noqa: E402
from lipforce_sdk.face import FaceNotFoundError  # noqa: E402
from lipforce_sdk.facemesh import LIPS_OUTER, FaceDetector, LandmarkModel, LandmarkTracker  # noqa: E402
from lipforce_sdk.facemesh.samples import photo_clip  # noqa: E402
from lipforce_sdk.media import read_audio, read_video, write_video, write_wav  # noqa: E402

N = 60  # frames of the photo clip used


@pytest.fixture(scope="module")
def models():
    return FaceDetector(), LandmarkModel()


@pytest.fixture(scope="module")
def clip():
    return photo_clip(N)


@pytest.fixture(scope="module")
def speech():
    return read_audio(PHOTO_DIR / "speech.wav")[: N * 640]


@pytest.fixture(scope="module")
def points(clip, models):
    tr = LandmarkTracker(*models, smoothing=False)
    lms = [tr.update(f) for f in clip]
    assert all(lm is not None for lm in lms), "the photo clip lost its face"
    return [lm.points.copy() for lm in lms]


def _measure(clip, out, speech, models, **kw):
    return fq.face_quality(clip, out, speech, own_speech=True, models=models, **kw)


def _blur_lower_face(clip, points, sigma=2.0):
    out = clip.copy()
    for f, p in zip(out, points):
        w = np.hypot(*(p[291, :2] - p[61, :2]))
        x0, x1 = int(min(p[61, 0], p[291, 0]) - w), int(math.ceil(max(p[61, 0], p[291, 0]) + w))
        y0, y1 = int(p[1, 1] - 4), int(math.ceil(p[152, 1] + 6))
        f[y0:y1, x0:x1] = cv2.GaussianBlur(f, (0, 0), sigma)[y0:y1, x0:x1]
    return out


def _noise_in_lips(clip, points, std=25.0, seed=0):
    rng = np.random.default_rng(seed)
    out = clip.copy()
    for f, p in zip(out, points):
        mask = np.zeros(f.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round((p[list(LIPS_OUTER), :2] - 0.5) * 16).astype(np.int32)], 1, shift=4)
        mask = cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)  # strictly inside the lips
        noisy = f.astype(np.float64) + rng.normal(0.0, std, f.shape)
        f[mask] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)[mask]
    return out


# --------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------


def test_regions_follow_their_definitions(clip, points):
    p = points[0].astype(np.float64)
    r = fq.Regions.from_points(p, clip.shape[1:3])
    w = np.hypot(*(p[291, :2] - p[61, :2]))
    x0, y0, x1, y1 = r.lower_face
    # pixel centres (i + 0.5) inside [nose tip, chin] x [corners -+ W/2]
    assert y0 + 0.5 >= p[1, 1] and y0 - 0.5 < p[1, 1], (y0, p[1, 1])
    assert y1 - 0.5 <= p[152, 1] and y1 + 0.5 > p[152, 1], (y1, p[152, 1])
    assert abs(x0 - (min(p[61, 0], p[291, 0]) - w / 2)) <= 1 and abs(x1 - (max(p[61, 0], p[291, 0]) + w / 2)) <= 1
    # skin: between the corners, below the nose tip, and every pixel >= ~2 px outside the lips
    sx0, sy0, sx1, sy1 = r.skin_box
    assert sx0 >= min(p[61, 0], p[291, 0]) - 0.5 and sx1 <= max(p[61, 0], p[291, 0]) + 0.5
    assert sy0 + 0.5 >= p[1, 1] and sy1 - 0.5 <= p[list(fq.UPPER_LIP_OUTER), 1].max()
    ys, xs = np.nonzero(r.skin_mask)
    assert ys.size > 0.3 * r.skin_mask.size, f"skin region nearly empty: {ys.size} of {r.skin_mask.size}"
    lips = p[list(LIPS_OUTER), :2].astype(np.float32)
    dist = [cv2.pointPolygonTest(lips, (float(x + sx0 + 0.5), float(y + sy0 + 0.5)), True) for y, x in zip(ys, xs)]
    assert max(dist) <= -1.5, f"a skin pixel lies {-max(dist):.2f} px from the lips (< 1.5)"
    # lip box: the outer lips' bounds widened by W/4
    lx0, ly0, lx1, ly1 = r.lip_box
    assert abs(lx0 - (lips[:, 0].min() - w / 4)) <= 1 and abs(ly1 - (lips[:, 1].max() + w / 4)) <= 1
    # below the lower lip: between the corners, from just under the lips halfway down to the chin
    cx0, cy0, cx1, cy1 = r.chin_box
    assert cx0 >= min(p[61, 0], p[291, 0]) - 0.5 and cx1 <= max(p[61, 0], p[291, 0]) + 0.5 and cx1 > cx0
    assert cy0 + 0.5 >= lips[:, 1].max() + fq.LIPS_DILATE_PX and cy0 - 0.5 < lips[:, 1].max() + fq.LIPS_DILATE_PX
    assert abs(cy1 - (lips[:, 1].max() + fq.LIPS_DILATE_PX + p[152, 1]) / 2) <= 1 and cy1 > cy0


# --------------------------------------------------------------------------------------
# Synthetic outputs
# --------------------------------------------------------------------------------------


def test_identical_output_scores_perfect(clip, speech, models):
    q = _measure(clip, clip.copy(), speech, models)
    p = q.pixels
    assert (q.frames, q.face_frames, q.skipped_frames, q.output_face_missing) == (N, N, 0, 0)
    assert p.sharpness_ratio == 1.0 and p.sharpness_frames == N
    assert p.skin_psnr_db == math.inf and p.skin_mse == 0.0 and p.skin_pixels > 100 * N
    assert p.lip_psnr_db == math.inf and p.lip_ssim == pytest.approx(1.0, abs=1e-9)
    assert p.shade_share == 0.0 and p.shade_mean == 0.0 and p.shade_frames == N
    assert p.green_share <= 1e-3 and p.green_frames == 0 and p.green_measured == N  # the input's own tail
    # the photo's mouth does not move: its opening does not follow the speech
    assert q.sync is not None and q.sync.null_p95 is not None and q.sync.null_count > 0
    assert q.sync.r < 0.5, q.sync
    sc = q.sync_score()  # the series behind q.sync, for the null or a bootstrap
    assert sc.correlation == pytest.approx(q.sync.r, abs=1e-12) and sc.lag == q.sync.lag
    assert sc.opening.size == N and np.all(np.isfinite(sc.opening))


def test_the_silence_reference_is_the_inputs_own_mouth(clip, speech, models):
    """With 0.8 s of the speech silenced: the input's own opening over the silent frames (read off an
    identical run, whose output is the input) over the output's speaking std; the output here is the
    clip played backwards, so the two series differ."""
    quiet = speech.copy()
    quiet[20 * 640:40 * 640] = 0
    same = _measure(clip, clip.copy(), quiet, models)
    (a, b), = same.silence.stretches  # the silenced 0.8 s, and any quiet frames next to it
    assert a <= 20 and b >= 40 and 0 < a and b < N, same.silence
    assert same.silence.input_still_ratio == pytest.approx(same.silence.still_ratio, rel=1e-9)
    q = _measure(clip, clip[::-1].copy(), quiet, models)
    assert q.silence.stretches == ((a, b),)
    core, speaking = np.r_[a + 2:b - 2], np.r_[0:a, b:N]
    want = np.nanstd(same.opening[core]) / np.nanstd(q.opening[speaking])
    assert q.silence.input_still_ratio == pytest.approx(want, rel=1e-9)
    assert q.silence.still_ratio != pytest.approx(q.silence.input_still_ratio, rel=1e-3)
    assert "the INPUT's own lip-opening std" in q.to_markdown()


def test_blurred_lower_face_loses_sharpness_and_skin_psnr(clip, speech, models, points):
    q = _measure(clip, _blur_lower_face(clip, points), speech, models)
    p = q.pixels
    print(f"blurred: sharpness {p.sharpness_ratio:.3f}, skin {p.skin_psnr_db:.2f} dB, lip {p.lip_psnr_db:.2f} dB "
          f"SSIM {p.lip_ssim:.4f}")
    assert p.sharpness_ratio < 0.35, p
    assert p.sharpness_out < p.sharpness_in
    assert math.isfinite(p.skin_psnr_db) and p.skin_psnr_db < 40.0, p
    assert p.lip_psnr_db < 40.0 and p.lip_ssim < 0.97, p
    mild = _measure(clip, _blur_lower_face(clip, points, sigma=0.8), speech, models).pixels
    assert p.sharpness_ratio < mild.sharpness_ratio < 1.0 and p.skin_psnr_db < mild.skin_psnr_db, (p, mild)


def test_noise_inside_the_lips_leaves_the_skin_alone(clip, speech, models, points):
    q = _measure(clip, _noise_in_lips(clip, points), speech, models)
    p = q.pixels
    print(f"lip noise: sharpness {p.sharpness_ratio:.3f}, skin {p.skin_psnr_db} dB, lip {p.lip_psnr_db:.2f} dB "
          f"SSIM {p.lip_ssim:.4f}")
    assert p.skin_psnr_db == math.inf, p  # the noise is inside the lips, the skin region outside them
    assert p.lip_psnr_db < 35.0 and p.lip_ssim < 0.97, p
    assert p.sharpness_ratio > 1.05, p  # noise adds high frequencies to the lower face


def test_a_grey_shade_under_the_lower_lip_is_counted(clip, speech, models, points):
    """Measure 7: the band under the lower lip darkened by 30 levels (a grey smudge) in every other
    frame: half the frames counted, the mean darkening about 15 levels; the skin above the lip and
    the lower face's edges barely change."""
    out = clip.copy()
    for i, (f, p) in enumerate(zip(out, points)):
        if i % 2:
            continue
        r = fq.Regions.from_points(p.astype(np.float64), clip.shape[1:3])
        x0, y0, x1, y1 = r.chin_box
        f[y0:y1, x0:x1] = np.clip(f[y0:y1, x0:x1].astype(int) - 30, 0, 255).astype(np.uint8)
    q = _measure(clip, out, speech, models)
    p = q.pixels
    assert p.shade_frames == N and p.shade_share == pytest.approx(0.5, abs=1.0 / N), p
    assert 12.0 < p.shade_mean < 16.0, p
    assert p.skin_psnr_db == math.inf, p
    assert "below the lower lip" in q.to_markdown()


def test_a_grey_green_band_in_the_mouth_is_counted(clip, speech, models, points):
    """Measure 8: a band across the middle third of the lip box in every other frame, greener than
    anything in the input's mouth (green 30 levels above red, or a neutral grey): those frames
    counted, the pooled share about a sixth of the box in half the frames; the same band in a red
    darker than the lips counts nothing."""
    def banded(colour):
        out = clip.copy()
        for i, (f, p) in enumerate(zip(out, points)):
            if i % 2 == 0:
                x0, y0, x1, y1 = fq.Regions.from_points(p.astype(np.float64), clip.shape[1:3]).lip_box
                h = (y1 - y0) // 3
                f[y0 + h:y0 + 2 * h, x0:x1] = colour
        return out

    for colour in ((90, 120, 100), (110, 110, 110)):
        p = _measure(clip, banded(colour), speech, models).pixels
        assert p.green_measured == N and p.green_frames == (N + 1) // 2, (colour, p)
        assert 0.5 / 6 < p.green_share < 0.5 / 3 + 0.01, (colour, p)
    red = _measure(clip, banded((120, 40, 40)), speech, models).pixels
    assert red.green_share <= 1e-3 and red.green_frames == 0, red  # the input's own tail, no more


def test_pingpong_input_order_matches_lipforce_run(speech, models, clip):
    short = clip[:20]
    order = _video_schedule(len(short), 25.0, 25.0, 45)
    out = short[order]
    q = fq.face_quality(short, out, speech[: 45 * 640], input_order="pingpong", models=models)
    assert q.frames == 45 and q.pixels.skin_psnr_db == math.inf and q.pixels.sharpness_ratio == 1.0
    with pytest.raises(ValueError, match=r"45 frames but input video .* has 20.*pingpong"):
        fq.face_quality(short, out, speech, models=models)


# --------------------------------------------------------------------------------------
# Silence
# --------------------------------------------------------------------------------------


def _speech_and_silence(gap=30, seed=0):
    """Envelope: speech 50 frames, silence ``gap`` frames, speech 50 frames; a speaking opening."""
    rng = np.random.default_rng(seed)
    n = 100 + gap
    env = 30.0 + 15.0 * rng.random(n)
    env[50:50 + gap] = 0.0
    t = np.arange(n)
    opening = 0.2 + 0.15 * np.sin(2 * np.pi * t / 6.0)  # 0.07-0.33; changes of 0 or 0.13 a frame
    return env, opening


def test_silence_still_mouth_scores_near_zero():
    env, op = _speech_and_silence()
    op[50:80] = 0.02 + 1e-4 * np.random.default_rng(1).standard_normal(30)
    op[50:52] = op[79:77:-1] = (0.23, 0.125)  # shuts from 0.33 and opens again over 3 frames
    s = fq.silence_stillness(op, env)
    assert s.stretches == ((50, 80),) and s.boundaries == 2 and s.silent_frames == 26 and s.speaking_frames == 100
    assert s.still_ratio < 0.01, s
    assert s.jump_ratio is not None and s.jump_ratio <= 1.0, s


def test_silence_quivering_mouth_scores_high():
    env, op = _speech_and_silence()
    op[50:80] = 0.02 + 0.25 * np.random.default_rng(2).random(30)  # keeps moving as if speaking
    s = fq.silence_stillness(op, env)
    assert s.still_ratio > 0.5, s


def test_silence_snap_shut_is_a_jump():
    env, op = _speech_and_silence()
    op[44:50] = 0.45  # wide open until the last speaking frame, then shut at once
    op[50:80] = 0.0
    s = fq.silence_stillness(op, env)
    assert s.boundary_jump == pytest.approx(0.45) and s.jump_ratio > 2.0, s


def test_silence_mouth_motion_ratio_over_silent_and_speaking_pairs():
    env, op = _speech_and_silence()
    motion = np.full(op.size - 1, 4.0)  # pixels per frame while speaking
    motion[52:77] = 0.5  # pairs inside the silence, guard frames left out: (52, 53) ... (76, 77)
    motion[50:52] = motion[77:79] = 100.0  # the guard pairs: not counted
    motion[10] = np.nan  # not measured: left out
    s = fq.silence_stillness(op, env, motion=motion)
    assert s.motion_ratio == pytest.approx(0.5 / 4.0)
    assert fq.silence_stillness(op, env).motion_ratio is None
    with pytest.raises(ValueError, match="motion must be"):
        fq.silence_stillness(op, env, motion=motion[:-1])


def test_silence_input_own_stillness_over_the_same_frames():
    """``input_still_ratio``: the input's opening std over the silent frames the ratio counts (the
    guard frames and unmeasured frames left out) over the output's speaking std."""
    env, op = _speech_and_silence()
    op[50:80] = 0.02
    ref = np.full(op.size, 0.5)  # speaking frames of the input: not counted
    ref[52:78] = 0.1 + 0.01 * np.random.default_rng(5).standard_normal(26)
    ref[50:52] = ref[78:80] = 9.0  # the guard frames: not counted
    ref[60] = np.nan  # not measured: left out
    s = fq.silence_stillness(op, env, input_opening=ref)
    core = np.r_[52:60, 61:78]
    assert s.input_still_ratio == pytest.approx(ref[core].std() / op[np.r_[0:50, 80:130]].std(), rel=1e-12)
    assert fq.silence_stillness(op, env).input_still_ratio is None
    with pytest.raises(ValueError, match="input_opening must be"):
        fq.silence_stillness(op, env, input_opening=ref[:-1])


def _two_pauses():
    """Speech 40, silence 30, speech 40, silence 30, speech 40 frames; a speaking opening."""
    rng = np.random.default_rng(3)
    n = 180
    env = 30.0 + 15.0 * rng.random(n)
    env[40:70] = env[110:140] = 0.0
    op = 0.2 + 0.15 * np.sin(2 * np.pi * np.arange(n) / 6.0)
    return env, op


def test_silence_ratio_taken_apart_pauses_that_differ():
    env, op = _two_pauses()
    op[40:70], op[110:140] = 0.02, 0.12  # each pause still, the two hold different mouths
    s = fq.silence_stillness(op, env)
    assert s.stretches == ((40, 70), (110, 140)) and s.silent_frames == 52
    assert s.still_within == pytest.approx(0.0, abs=1e-9)
    assert s.still_between == pytest.approx(s.still_ratio) and s.still_ratio > 0.4, s


def test_silence_ratio_taken_apart_a_quiver_in_each_pause():
    env, op = _two_pauses()
    rng = np.random.default_rng(4)
    op[40:70] = 0.05 + 0.03 * rng.standard_normal(30)
    op[110:140] = 0.05 + 0.03 * rng.standard_normal(30)
    op[120:130] = np.nan  # not measured: left out of both parts as of the pooled std
    s = fq.silence_stillness(op, env)
    assert s.silent_frames == 42
    assert s.still_within ** 2 + s.still_between ** 2 == pytest.approx(s.still_ratio ** 2, rel=1e-9)
    assert s.still_between < 0.3 * s.still_within, s
    # one pause: nothing to compare between
    one_env, one_op = _speech_and_silence()
    one = fq.silence_stillness(one_op, one_env)
    assert one.still_between is None and one.still_within == pytest.approx(one.still_ratio)


def test_silence_needs_half_a_second():
    env, op = _speech_and_silence(gap=12)  # 0.48 s at 25 fps
    s = fq.silence_stillness(op, env)
    assert s.stretches == () and s.still_ratio is None and s.jump_ratio is None
    assert "no silent stretch of >= 0.5 s" in s.note
    env, op = _speech_and_silence(gap=13)  # 0.52 s
    assert fq.silence_stillness(op, env).stretches == ((50, 63),)
    # the threshold is 20 dB below the 95th percentile: 19 dB below is speech, 21 dB silence
    p95 = np.percentile(env, 95)
    for below, counted in ((19.0, False), (21.0, True)):
        e = env.copy()
        e[50:63] = p95 - below
        assert bool(fq.silence_stillness(op, e).stretches) == counted, below


def test_silence_skips_unmeasured_frames():
    env, op = _speech_and_silence()
    op[50:80] = 0.02
    op[60:65] = np.nan  # no face there
    s = fq.silence_stillness(op, env)
    assert s.silent_frames == 21 and s.still_ratio == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, clip, points, speech):
    d = tmp_path_factory.mktemp("fq")
    write_video(d / "in.mp4", clip, 25)
    write_video(d / "blur.mp4", _blur_lower_face(read_video(d / "in.mp4")[0], points), 25)
    write_video(d / "short.mp4", clip[:50], 25)
    write_video(d / "grey.mp4", np.full((8, 96, 96, 3), 128, np.uint8), 25)
    write_wav(d / "speech.wav", speech)
    return d


def test_cli_writes_table_json_and_sheet(files):
    d = files
    args = ["--input", str(d / "in.mp4"), "--output", str(d / "blur.mp4"), "--audio", str(d / "speech.wav"),
            "--own-speech", "--control", "--sheet", str(d / "sheet.png"), "--json", str(d / "q.json")]
    # `python -m lipforce_sdk.face_quality ...` with torch made unimportable: the tool needs no torch
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['face_quality'] + sys.argv[1:]; "
            "runpy.run_module('lipforce_sdk.face_quality', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "| lower-face sharpness" in r.stdout and "| skin above the upper lip" in r.stdout, r.stdout
    q = json.loads((d / "q.json").read_text())
    assert q["frames"] == N and q["face_frames"] == N and len(q["per_frame"]["opening"]) == N
    assert q["pixels"]["sharpness_ratio"] < 0.4 < 0.9 < q["control"]["sharpness_ratio"], (q["pixels"], q["control"])
    assert q["pixels"]["skin_psnr_db"] < q["control"]["skin_psnr_db"]
    assert isinstance(q["sync"]["r"], float) and q["sync"]["null_p95"] is not None
    assert len(q["sheet_frames"]) == 8
    # the sheet: input tiles above output tiles; the blurred output must look blurrier
    img = cv2.imread(str(d / "sheet.png"))
    tile, strip, gap, head = 256, 18, 8, 26
    assert img.shape == (head + 2 * (2 * (strip + tile) + gap), 4 * tile + 3 * 4, 3), img.shape
    sharp_in, sharp_out = [], []
    for k in range(8):
        row, col = divmod(k, 4)
        x, y = col * (tile + 4), head + row * (2 * (strip + tile) + gap) + strip
        for dst, yy in ((sharp_in, y), (sharp_out, y + strip + tile)):
            g = cv2.cvtColor(img[yy: yy + tile, x: x + tile], cv2.COLOR_BGR2GRAY)
            dst.append(cv2.Laplacian(g[::2, ::2], cv2.CV_64F).var())
    assert all(o < 0.7 * i for i, o in zip(sharp_in, sharp_out)), (sharp_in, sharp_out)


def test_identical_files_read_inf_in_json(files, tmp_path):
    from lipforce_sdk.face_quality import main

    out = tmp_path / "q.json"
    d = files
    assert main(["--input", str(d / "in.mp4"), "--output", str(d / "in.mp4"), "--audio", str(d / "speech.wav"),
                 "--json", str(out)]) == 0
    q = json.loads(out.read_text())
    assert q["pixels"]["skin_psnr_db"] == "inf" and q["pixels"]["sharpness_ratio"] == 1.0
    assert q["pixels"]["lip_psnr_db"] is None  # not --own-speech


@pytest.mark.parametrize("case, pattern", [
    ("missing", r"output video .*nope\.mp4.* does not exist.*--output"),
    ("count", r"has 50 frames but input video .*in\.mp4.* has 60.*pingpong"),
    ("noface", r"no face in any of the 8 frames of input video .*grey\.mp4"),
])
def test_cli_bad_input_names_the_file_and_the_fix(files, capsys, case, pattern):
    d = files
    inp, out = {"missing": ("in.mp4", "nope.mp4"), "count": ("in.mp4", "short.mp4"),
                "noface": ("grey.mp4", "grey.mp4")}[case]
    assert fq.main(["--input", str(d / inp), "--output", str(d / out), "--audio", str(d / "speech.wav")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(pattern, err), err


def test_api_errors(clip, speech, models):
    with pytest.raises(FaceNotFoundError, match="no face in any of the 5 frames"):
        fq.face_quality(np.full((5, 64, 64, 3), 90, np.uint8), np.full((5, 64, 64, 3), 90, np.uint8), speech,
                        models=models)
    with pytest.raises(ValueError, match=r"has 40x40 frames but the input has 320x320"):
        fq.face_quality(clip[:3], np.zeros((3, 40, 40, 3), np.uint8), speech, models=models)
    with pytest.raises(ValueError, match="input_order must be 'same' or 'pingpong'"):
        fq.face_quality(clip[:3], clip[:3], speech, input_order="loop", models=models)


def test_compare_sheets_cuts_the_sheets_tiles(files, tmp_path):
    """samples/compare_sheets.py reads face_quality's sheet layout: its rows are the sheet's input
    tiles and each sheet's output tiles of the picks."""
    from lipforce_sdk.face_quality import main

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples"))
    from compare_sheets import TILE, compare, tile

    d = files
    for name in ("in", "blur"):
        assert main(["--input", str(d / "in.mp4"), "--output", str(d / f"{name}.mp4"), "--audio",
                     str(d / "speech.wav"), "--sheet", str(tmp_path / f"{name}.png")]) == 0
    same, blur = (cv2.imread(str(tmp_path / f"{n}.png")) for n in ("in", "blur"))
    np.testing.assert_array_equal(tile(same, 5, False), tile(same, 5, True))  # output == input
    assert not np.array_equal(tile(blur, 5, False), tile(blur, 5, True))
    img = compare([("same", same), ("blur", blur)], [1, 5], scale=0.5)
    size = TILE // 2
    assert img.shape == (3 * (size + 2), 96 + 2 * (size + 2), 3)
    x = 96 + size + 2  # second pick
    np.testing.assert_array_equal(img[:size, x:x + size], cv2.resize(tile(same, 5, False), (size, size),
                                                                      interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(img[2 * (size + 2):2 * (size + 2) + size, x:x + size],
                                  cv2.resize(tile(blur, 5, True), (size, size), interpolation=cv2.INTER_AREA))
    with pytest.raises(ValueError, match="outside the sheet"):
        tile(same, 8, False)
