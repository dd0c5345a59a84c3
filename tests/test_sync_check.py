"""The lip-sync measure (lipforce_sdk.sync_check) and the check that `lipforce run` speaks."""

import cv2
import numpy as np
import pytest

from lipforce_sdk.cli import SAMPLE_DIR, run_clip
from lipforce_sdk.media import read_audio, read_video, write_video
from lipforce_sdk.sync_check import (
    SYNC_THRESHOLD,
    lip_sync_correlation,
    mouth_opening,
    pearson,
    read_face_boxes,
    speech_envelope,
    track_mouth,
)

SKIN = np.array([214, 162, 134], np.float64)
GAP = (70, 25, 30)


@pytest.fixture(scope="module")
def sample():
    frames, fps = read_video(SAMPLE_DIR / "face.mp4")
    audio = read_audio(SAMPLE_DIR / "speech.wav")
    centres, sizes = read_face_boxes(SAMPLE_DIR / "face_boxes.json")
    return frames, fps, audio, centres, sizes


def draw_gap(frame, centre, size, height):
    """Dark open-mouth ellipse 0.3 face sizes wide and ``height`` face sizes tall (1/4 px precision)."""
    if height <= 0:
        return frame
    img = frame.copy()
    x, y = centre
    cv2.ellipse(img, (int(round(x * 4)), int(round((y + 0.02 * size) * 4))),
                (int(round(0.15 * size * 4)), int(round(0.5 * height * size * 4))),
                0, 0, 360, GAP, -1, cv2.LINE_AA, shift=2)
    return img


def skin_clip(heights, rng, hw=(200, 240)):
    """Skin-coloured frames with a moving, zooming head and changing light, gap drawn per ``heights``."""
    n = len(heights)
    t = np.arange(n)
    centres = np.stack([120 + 15 * np.sin(t / 7.0), 110 + 8 * np.cos(t / 5.0)], axis=1)
    sizes = 100 * (1 + 0.1 * np.sin(t / 9.0))
    gains = 0.6 + 0.6 * rng.random(n)
    frames = []
    for i in range(n):
        base = np.empty((*hw, 3), np.uint8)
        base[:] = np.clip(SKIN * (1 + 0.03 * rng.standard_normal((*hw, 1))), 0, 255).astype(np.uint8)
        f = draw_gap(base, centres[i], sizes[i], heights[i]).astype(np.float64) * gains[i]
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(frames), centres, sizes


# ------------------------------------------------------------------------------- the measure


def test_opening_follows_the_drawn_gap_under_motion_zoom_and_light():
    rng = np.random.default_rng(0)
    heights = 0.12 * rng.random(60)
    heights[::5] = 0.0  # closed
    frames, centres, sizes = skin_clip(heights, rng)
    opening = mouth_opening(frames, centres, sizes)
    assert np.all(opening >= 0) and np.all(opening <= 1)
    r = pearson(opening, heights)
    assert r > 0.95, f"opening vs drawn height: r = {r:.3f}"
    closed = opening[heights == 0.0]
    assert closed.max() < 0.01, f"closed mouths read as open: {closed}"
    # the light alone does not move it: same frames twice as dark
    darker = (frames.astype(np.float64) * 0.5).astype(np.uint8)
    np.testing.assert_allclose(mouth_opening(darker, centres, sizes), opening, atol=0.02)


def test_a_still_mouth_has_no_variance_and_scores_zero_not_nan():
    rng = np.random.default_rng(1)
    frames, centres, sizes = skin_clip(np.full(40, 0.06), rng)
    frames = np.repeat(frames[:1], 40, axis=0)  # identical frames: nothing moves
    centres = np.repeat(centres[:1], 40, axis=0)
    opening = mouth_opening(frames, centres, sizes[0])
    assert opening[0] > 0.1 and np.ptp(opening) == 0.0
    audio = np.random.default_rng(2).standard_normal(40 * 640).astype(np.float32) * 0.1
    score = lip_sync_correlation(frames, audio, mouth_centres=centres, face_sizes=sizes[0])
    assert score.correlation == 0.0 and all(v == 0.0 for v in score.by_lag.values())
    assert pearson(np.ones(10), np.arange(10.0)) == 0.0


def test_envelope_is_zero_in_silence_and_high_in_speech(sample):
    frames, fps, audio, _, _ = sample
    env = speech_envelope(audio, 16000, fps, len(frames))
    assert env.shape == (150,) and np.all(np.isfinite(env))
    # speech.wav: digital silence before 0.25 s (frames 0-5) and after ~5.5 s
    assert np.all(env[:5] == 0.0) and np.all(env[140:] == 0.0), (env[:6], env[138:])
    speech = env[8:135]
    assert np.median(speech) > 30.0, f"median speech level {np.median(speech):.1f} dB above floor"
    assert np.percentile(speech, 90) < 60.0
    # frame i owns samples [640 i, 640 (i + 1)): a click in frame 3 shows in frame 3 only
    click = np.zeros(10 * 640, np.float32)
    click[3 * 640 + 100] = 0.5
    raw = speech_envelope(click, 16000, 25, 10, smooth=False)
    assert raw[3] > 0 and np.count_nonzero(raw) == 1


def test_lag_is_found_and_signed(sample):
    _, _, audio, _, _ = sample
    env = speech_envelope(audio, 16000, 25, 60)
    heights = 0.1 * np.clip(env / 45.0, 0, 1)
    delayed = np.concatenate([[0.0], heights[:-1]])  # the mouth opens one frame after the sound
    frames, centres, sizes = skin_clip(delayed, np.random.default_rng(3))
    score = lip_sync_correlation(frames, audio[: 60 * 640], mouth_centres=centres, face_sizes=sizes)
    assert score.lag == 1 and score.correlation > 0.9, score.by_lag
    none = lip_sync_correlation(frames, audio[: 60 * 640], mouth_centres=centres, face_sizes=sizes, max_lag=0)
    assert none.lag == 0 and none.correlation < score.correlation - 0.05


def test_track_mouth_matches_the_sample_annotations(sample):
    frames, _, _, centres, sizes = sample
    c, s = track_mouth(frames[:60], detect_every=6)
    err = np.hypot(*(c - centres[:60]).T) / sizes[:60]
    assert err.max() < 0.06, f"mouth off by up to {err.max():.3f} face sizes"
    np.testing.assert_allclose(s, sizes[:60], rtol=0.12)


# ------------------------------------------------------------------ speaking vs not speaking


def test_a_mouth_drawn_with_the_speech_on_the_sample_passes_and_out_of_step_fails(sample, tmp_path):
    frames, fps, audio, centres, sizes = sample
    env = speech_envelope(audio, 16000, fps, len(frames))
    heights = 0.08 * np.clip((env - 15.0) / 30.0, 0, 1)
    speaking = [draw_gap(f, c, s, h) for f, c, s, h in zip(frames, centres, sizes, heights)]
    late = [draw_gap(f, c, s, h) for f, c, s, h in zip(frames, centres, sizes, np.roll(heights, 25))]
    write_video(tmp_path / "speaking.mp4", speaking, fps)  # through the codec, as `lipforce run` writes
    write_video(tmp_path / "late.mp4", late, fps)
    good = lip_sync_correlation(tmp_path / "speaking.mp4", audio, mouth_centres=centres, face_sizes=sizes)
    bad = lip_sync_correlation(tmp_path / "late.mp4", audio, mouth_centres=centres, face_sizes=sizes)
    assert good.correlation > 0.9 and good.lag == 0, good.by_lag
    assert bad.correlation < SYNC_THRESHOLD, f"a mouth 1 s out of step scored {bad.correlation:.3f}"


def test_the_still_input_video_does_not_speak(sample):
    frames, _, audio, centres, sizes = sample
    score = lip_sync_correlation(SAMPLE_DIR / "face.mp4", SAMPLE_DIR / "speech.wav",
                                 mouth_centres=centres, face_sizes=sizes)
    assert np.isfinite(score.correlation)
    assert score.correlation < SYNC_THRESHOLD, (
        f"the input's still mouth scored {score.correlation:.3f} (lag {score.lag}) >= {SYNC_THRESHOLD}"
    )


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="not reached yet: the default model, trained only on procedural faces, paints a "
                          "small procedural mouth on the sample's real photo; measured 0.26 at lag 1, "
                          "below this output's own shifted-audio null (p95 0.29) and the 0.5 threshold")
def test_lipforce_run_output_moves_the_mouth_with_the_speech(tiny_engine, sample, tmp_path):
    _, _, _, centres, sizes = sample
    out = tmp_path / "out.mp4"
    run_clip(tiny_engine, SAMPLE_DIR / "face.mp4", SAMPLE_DIR / "speech.wav", out, progress=False)
    frames, fps = read_video(out)
    assert len(frames) == len(centres) and fps == 25
    score = lip_sync_correlation(frames, SAMPLE_DIR / "speech.wav", mouth_centres=centres,
                                 face_sizes=sizes, fps=fps)
    assert score.correlation >= SYNC_THRESHOLD, (
        f"lipforce run output: lip-sync correlation {score.correlation:.3f} at lag {score.lag} "
        f"(by lag {score.by_lag}) < {SYNC_THRESHOLD}; mouth opening range "
        f"{score.opening.min():.4f}-{score.opening.max():.4f}"
    )
