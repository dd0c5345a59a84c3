"""Streaming semantics: any cut of the input gives the frames of one offline causal pass."""

import numpy as np
import pytest

from conftest import BOX, make_clip
from lipforce_sdk.offline import render_offline


def push_randomly(session, audio, frames, rng, max_piece=2000):
    outs, ai, fi = [], 0, 0
    while ai < audio.size or fi < len(frames):
        a = audio[ai: ai + int(rng.integers(0, max_piece))]
        ai += a.size
        f = None
        if fi < len(frames) and rng.random() < 0.6:
            f, fi = frames[fi], fi + 1
        if a.size == 0 and f is None:
            continue
        outs += session.push(a, f)
    return outs + session.flush()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_pieces_equal_offline_pass(tiny_engine, seed):
    n = 23 + 4 * seed  # partial last chunk for seed 0 and 2
    frames, audio = make_clip(n, seed)
    ref = render_offline(tiny_engine, audio, frames, box=BOX)
    rng = np.random.default_rng(100 + seed)
    outs = push_randomly(tiny_engine.session(box=BOX), audio, frames, rng)
    assert [o.index for o in outs] == list(range(n)), f"seed={seed}: frame indices {[o.index for o in outs]}"
    for o in outs:
        assert o.timestamp == pytest.approx(o.index / 25.0)
        assert np.array_equal(o.image, ref[o.index]), f"seed={seed}: frame {o.index} differs from the offline pass"


def test_audio_first_then_frames_and_frames_first_then_audio(tiny_engine):
    frames, audio = make_clip(12, 5)
    ref = render_offline(tiny_engine, audio, frames, box=BOX)
    s = tiny_engine.session(box=BOX)
    assert s.push(audio) == []  # no frames yet: nothing can run
    outs = [o for f in frames for o in s.push(frame=f)] + s.flush()
    s2 = tiny_engine.session(box=BOX)
    outs2 = [o for f in frames for o in s2.push(frame=f)]
    assert outs2 == []  # no audio yet
    outs2 += s2.push(audio) + s2.flush()
    for a, b in zip(outs, outs2):
        assert np.array_equal(a.image, ref[a.index]) and np.array_equal(b.image, ref[b.index])
    assert len(outs) == len(outs2) == 12


def test_chunk_runs_as_soon_as_inputs_and_lookahead_arrive(tiny_engine):
    cfg = tiny_engine.config
    fv, la = cfg.video_frames_per_chunk, cfg.audio.lookahead_frames
    frames, audio = make_clip(fv, 3)
    s = tiny_engine.session(box=BOX)
    for f in frames:
        assert s.push(frame=f) == []
    need = s.mel.fe.samples_needed(fv - 1 + la)
    assert s.push(np.zeros(need - 1, np.float32)) == [], "ran before the look-ahead audio arrived"
    out = s.push(np.zeros(1, np.float32))
    assert [o.index for o in out] == list(range(fv))


def test_sessions_on_one_engine_do_not_share_state(tiny_engine):
    fa, aa = make_clip(16, 7)
    fb, ab = make_clip(16, 8)
    alone_a = render_offline(tiny_engine, aa, fa, box=BOX)
    alone_b = render_offline(tiny_engine, ab, fb, box=BOX)
    sa, sb = tiny_engine.session(box=BOX), tiny_engine.session(box=BOX)
    outs_a, outs_b = [], []
    for i in range(16):  # interleaved
        outs_a += sa.push(aa[i * 640:(i + 1) * 640], fa[i])
        outs_b += sb.push(ab[i * 640:(i + 1) * 640], fb[i])
    outs_a += sa.push(aa[16 * 640:]) + sa.flush()
    outs_b += sb.push(ab[16 * 640:]) + sb.flush()
    assert len(outs_a) == len(outs_b) == 16
    assert all(np.array_equal(o.image, alone_a[o.index]) for o in outs_a)
    assert all(np.array_equal(o.image, alone_b[o.index]) for o in outs_b)


def test_reset_replays_identically(tiny_engine):
    frames, audio = make_clip(8, 9)
    s = tiny_engine.session(box=BOX)
    first = [o.image for i in range(8) for o in s.push(audio[i * 640:(i + 1) * 640], frames[i])] + [o.image for o in s.flush()]
    s.reset()
    again = [o.image for i in range(8) for o in s.push(audio[i * 640:(i + 1) * 640], frames[i])] + [o.image for o in s.flush()]
    assert len(first) == len(again) == 8
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert s.stats.frames_out == 8 and s.stats.chunks == -(-8 // tiny_engine.config.video_frames_per_chunk)


def test_stats_are_filled(tiny_engine):
    frames, audio = make_clip(9, 4)
    s = tiny_engine.session(box=BOX)
    for i in range(9):
        s.push(audio[i * 640:(i + 1) * 640], frames[i])
    s.flush()
    st = s.stats
    assert st.frames_in == 9 and st.frames_out == 9 and st.chunks == -(-9 // tiny_engine.config.video_frames_per_chunk)
    assert st.time_to_first_frame_ms > 0 and st.p50_ms > 0 and st.p99_ms >= st.p50_ms and st.fps > 0


def test_photo_clip_with_face_detection(tiny_engine):
    from lipforce_sdk.cli import PHOTO_DIR
    from lipforce_sdk.media import read_audio, read_video

    frames, _ = read_video(PHOTO_DIR / "face.mp4")
    frames = frames[:12]
    audio = read_audio(PHOTO_DIR / "speech.wav")[: 12 * 640]
    ref = render_offline(tiny_engine, audio, frames)
    outs = push_randomly(tiny_engine.session(), audio, frames, np.random.default_rng(1))
    assert len(outs) == 12 and all(np.array_equal(o.image, ref[o.index]) for o in outs)
    # only the mouth region is re-rendered: nothing outside the crop's footprint changes, and
    # inside it nothing in the crop's top fifth (the nose bridge: the mask starts at the nose tip),
    # and less than half of the crop is touched
    crop = outs[0].crop
    s = crop.size
    whole = crop.frame_weight(np.ones((s, s), np.float32), frames[0].shape[:2])
    upper = np.zeros((s, s), np.float32)
    upper[: int(0.2 * s)] = 1.0
    upper = crop.frame_weight(upper, frames[0].shape[:2])
    changed = np.any(outs[0].image != frames[0], axis=2)
    assert changed.any()
    assert not changed[whole == 0].any()
    assert not changed[upper >= 0.999].any()
    assert changed.sum() < 0.5 * (whole > 0.5).sum()
