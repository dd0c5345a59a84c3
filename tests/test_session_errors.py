"""Every bad input raises a clear error naming the value and the fix; the session stays usable and
nothing of the rejected push is consumed (the stream afterwards equals a clean one)."""

import numpy as np
import pytest

from conftest import BOX, make_clip
from lipforce_sdk import InputError
from lipforce_sdk.offline import render_offline

GOOD_FRAME = np.zeros((96, 80, 3), np.uint8)

BAD = [
    (dict(audio=np.zeros(640, np.int32)), r"dtype int32 .*float32 in \[-1, 1\] or int16"),
    (dict(audio=np.zeros((640, 2), np.float32)), r"shape \(640, 2\): stereo .*audio\.mean\(axis=1\)"),
    (dict(audio=np.zeros((2, 640), np.float32)), r"stereo .*audio\.mean\(axis=0\)"),
    (dict(audio=np.zeros((2, 3, 4), np.float32)), r"1-D array of mono samples, got shape \(2, 3, 4\)"),
    (dict(audio=np.array([0.0, np.nan, np.inf], np.float32)), r"2 NaN/Inf sample\(s\), first at index 1"),
    (dict(audio=np.full(10, 3000.0, np.float32)), r"peak of 3000; .*divide by 32768"),
    (dict(audio=np.zeros(640, np.float32), sample_rate=44100), r"sample_rate=44100 .*16000 Hz; resample"),
    (dict(frame=np.zeros((96, 80, 3), np.float32)), r"frame dtype float32 .*astype\(np\.uint8\)"),
    (dict(frame=np.zeros((96, 80), np.uint8)), r"rank 3 .*got shape \(96, 80\); grayscale"),
    (dict(frame=np.zeros((96, 80, 4), np.uint8)), r"3 channels .*got 4 .*drop alpha"),
    (dict(frame=[[1, 2, 3]]), r"numpy array .*got list"),
    (dict(frame=np.zeros((64, 64, 3), np.uint8)), r"frame size changed mid-stream from 80x96 to 64x64; .*reset\(\)"),
    (dict(), r"no audio samples and no frame"),
    (dict(audio=np.zeros(0, np.float32)), r"no audio samples and no frame"),
]


@pytest.mark.parametrize("kwargs,match", BAD, ids=[m[:24] for _, m in BAD])
def test_bad_input_is_rejected_and_session_stays_usable(tiny_engine, kwargs, match):
    frames, audio = make_clip(8, 11)
    ref = render_offline(tiny_engine, audio, frames, box=BOX)
    s = tiny_engine.session(box=BOX)
    outs = s.push(audio[:3000], frames[0])  # a stream in progress
    with pytest.raises(InputError, match=match):
        s.push(**kwargs)
    outs += s.push(audio[3000:], frames[1])
    for f in frames[2:]:
        outs += s.push(frame=f)
    outs += s.flush()
    assert [o.index for o in outs] == list(range(8))
    assert all(np.array_equal(o.image, ref[o.index]) for o in outs), "the rejected push changed the stream"


def test_int16_audio_equals_float(tiny_engine):
    frames, audio = make_clip(4, 12)
    a16 = np.round(audio * 32767).astype(np.int16)
    s1, s2 = tiny_engine.session(box=BOX), tiny_engine.session(box=BOX)
    o1 = s1.push(a16) + [o for f in frames for o in s1.push(frame=f)] + s1.flush()
    o2 = s2.push(a16.astype(np.float32) / 32768.0) + [o for f in frames for o in s2.push(frame=f)] + s2.flush()
    assert len(o1) == 4 and all(np.array_equal(a.image, b.image) for a, b in zip(o1, o2))


def test_push_after_flush_and_reset(tiny_engine):
    frames, audio = make_clip(4, 13)
    s = tiny_engine.session(box=BOX)
    s.push(audio, frames[0])
    s.flush()
    with pytest.raises(InputError, match=r"after flush\(\).*reset\(\)"):
        s.push(audio[:10])
    s.reset()
    assert s.push(audio[:640], frames[0]) == []


def test_frames_before_any_face_pass_through(tiny_engine):
    s = tiny_engine.session()  # detection on
    grey = np.full((120, 120, 3), 128, np.uint8)
    outs = []
    for _ in range(4):
        outs += s.push(np.zeros(640, np.float32), grey)
    outs += s.flush()
    assert len(outs) == 4 and all(o.box is None and np.array_equal(o.image, grey) for o in outs)
    assert s.stats.frames_without_face == 4 and s.stats.resumes == 0


def test_reference_frames_given_at_construction(tiny_engine):
    """``engine.session(reference=...)``: the sink is written from the given frames, not the
    stream's first ones; the stream is otherwise the same."""
    frames, audio = make_clip(4, 14)
    other, _ = make_clip(1, 15)

    def run(**kw):
        s = tiny_engine.session(box=BOX, **kw)
        return s.push(audio) + [o for f in frames for o in s.push(frame=f)] + s.flush()

    first, given, same = run(), run(reference=[other[0]]), run(reference=list(frames[:2]))
    assert len(given) == len(first) == 4
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first, given)), "the reference did not matter"
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, same)), \
        "the stream's own first frames as the reference should equal the default"
