"""lipforce run decodes the video as it goes, holding at most its frame budget, and writes the
output only once complete."""

import numpy as np
import pytest

from lipforce_sdk.cli import PHOTO_DIR, _video_schedule, run_clip
from lipforce_sdk.media import read_audio, read_video, write_wav
from lipforce_sdk.video_source import VideoFrames

CLIP = PHOTO_DIR / "face.mp4"  # 150 frames, 320 x 320 (307 kB a frame)


def test_bounded_frames_equal_the_whole_video_in_any_order():
    frames, fps = read_video(CLIP)
    order = _video_schedule(len(frames), fps, 25.0, 3 * len(frames) + 17)  # forward, back, forward, back
    src = VideoFrames(CLIP, budget_bytes=8 * 320 * 320 * 3)
    assert not src.in_memory and src.capacity == 8 and len(src) == len(frames)
    for k, (i, f) in enumerate(zip(order, src.frames_in_order(order))):
        assert np.array_equal(f, frames[i]), f"frame {i} (output {k}) differs"
    assert src.max_held <= 8
    assert src.decoded > len(frames)  # the backward passes decoded blocks again
    src.close()
    whole = VideoFrames(CLIP)  # 46 MB: fits the default budget, read at once
    assert whole.in_memory and whole.decoded == len(frames)


def test_frame_out_of_range_is_an_index_error():
    src = VideoFrames(CLIP, budget_bytes=1)
    with pytest.raises(IndexError, match="which has 150"):
        src.frame(150)


def test_run_with_a_small_frame_budget_renders_the_same_frames(tiny_engine, tmp_path, monkeypatch):
    """The same frames reach the session and the same frames come out (compared before the H.264
    encoder, which is not bit-reproducible run to run)."""
    from lipforce_sdk.session import Session

    from lipforce_sdk.media import write_video

    clip = tmp_path / "short.mp4"
    write_video(clip, read_video(CLIP)[0][:30], 25)  # 1.2 s of the photo clip
    wav = tmp_path / "speech.wav"
    write_wav(wav, read_audio(PHOTO_DIR / "speech.wav", 16000)[: 16000 * 2])  # 2 s: forward, then back
    seen, push, flush = [], Session.push, Session.flush

    def recording_push(self, audio=None, frame=None, sample_rate=None):
        out = push(self, audio, frame, sample_rate)
        seen[-1]["in"].append(frame.copy())
        seen[-1]["out"] += [o.image for o in out]
        return out

    def recording_flush(self):
        out = flush(self)
        seen[-1]["out"] += [o.image for o in out]
        return out

    monkeypatch.setattr(Session, "push", recording_push)
    monkeypatch.setattr(Session, "flush", recording_flush)
    for mb in (None, 1):  # the whole video in memory; 1 MB = 3 frames held
        seen.append({"in": [], "out": []})
        run_clip(tiny_engine, clip, wav, tmp_path / f"{mb}.mp4", progress=False, frame_memory_mb=mb)
    a, b = seen
    assert len(a["in"]) == len(b["in"]) == 50 and len(a["out"]) == len(b["out"]) == 50
    assert all(np.array_equal(x, y) for x, y in zip(a["in"], b["in"])), "different frames were pushed"
    assert all(np.array_equal(x, y) for x, y in zip(a["out"], b["out"])), "different frames came out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.mp4", "None.mp4", "short.mp4", "speech.wav"]


def test_failed_run_leaves_no_output_and_keeps_an_earlier_one(tiny_engine, tmp_path, monkeypatch):
    from lipforce_sdk.session import Session

    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier output")
    calls = {"n": 0}
    push = Session.push

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-run
        return push(self, *a, **k)

    monkeypatch.setattr(Session, "push", failing)
    with pytest.raises(KeyboardInterrupt):
        run_clip(tiny_engine, CLIP, PHOTO_DIR / "speech.wav", out, progress=False)
    assert out.read_bytes() == b"an earlier output"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"], "a partial file was left behind"


def test_sigterm_mid_run_leaves_no_output(tmp_path):
    """``lipforce run`` stopped by SIGTERM (a service stopped) cleans up as Ctrl-C does."""
    import signal
    import subprocess
    import sys
    import time

    from lipforce_sdk.media import read_audio, write_wav

    wav = tmp_path / "long.wav"
    write_wav(wav, np.resize(read_audio(PHOTO_DIR / "speech.wav"), 16000 * 60))
    out = tmp_path / "out.mp4"
    p = subprocess.Popen([sys.executable, "-m", "lipforce_sdk.cli", "run", "--video", str(CLIP), "--audio", str(wav),
                          "--out", str(out), "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(q.name.startswith(".out.partial") for q in tmp_path.iterdir()):
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        time.sleep(1.0)  # frames are being written
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        p.kill()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["long.wav"], "a partial file was left behind"


def test_truncated_video_is_a_clear_error_and_leaves_no_output(tiny_engine, tmp_path):
    data = CLIP.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the header is at the front: half the frames decode
    with pytest.raises(ValueError, match="truncated or corrupt: its container declares 150 frames"):
        VideoFrames(cut)
    with pytest.raises(ValueError, match="truncated"):  # decoded as it goes: found when the decoder runs out
        list(VideoFrames(cut, budget_bytes=1).frames_in_order(range(150)))
    out = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match="truncated"):
        run_clip(tiny_engine, cut, PHOTO_DIR / "speech.wav", out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]


def test_container_without_a_frame_count_is_counted_by_one_decode(monkeypatch):
    """As a raw .h264 stream: no frame count and no packet timestamps (frames numbered as decoded)."""
    import dataclasses

    import lipforce_sdk.video_source as vs

    real = vs.probe
    monkeypatch.setattr(vs, "probe", lambda p: dataclasses.replace(real(p), num_frames=0))
    monkeypatch.setattr(vs, "_scan_video", lambda p: None)
    frames, _ = read_video(CLIP)
    whole = VideoFrames(CLIP)
    assert whole.in_memory and len(whole) == len(frames) and np.array_equal(whole.frame(149), frames[149])
    small = VideoFrames(CLIP, budget_bytes=8 * 320 * 320 * 3)
    assert not small.in_memory and len(small) == len(frames)
    assert all(np.array_equal(f, frames[i]) for i, f in zip((3, 140, 2), small.frames_in_order((3, 140, 2))))
    assert np.allclose(small.times, np.arange(150) / 25) and small.duration == 6.0


def test_backward_pass_seeks_to_the_keyframe_before_each_block(tmp_path):
    """A keyframe every 10 frames, 8 frames held: going back over 250 frames decodes each block of 8 again
    from the keyframe before it (at most 8 + 9 frames a block), not from the start of the file (~125 a
    block); the frames equal read_video's, in any order."""
    from test_media_inputs import coded, encode, index_of

    n, keyint, held = 250, 10, 8
    clip = encode(tmp_path / "gop10.mp4", coded(n), keyint=keyint)
    frames, _ = read_video(clip)
    src = VideoFrames(clip, budget_bytes=held * frames[0].nbytes)
    assert not src.in_memory and src.capacity == held
    assert all(index_of(f) == i for i, f in zip(range(n), src.frames_in_order(range(n))))
    assert src.decoded == n  # forward: one decode
    back = range(n - 2, 0, -1)
    for i, f in zip(back, src.frames_in_order(back)):
        assert np.array_equal(f, frames[i]), f"frame {i} differs going back"
    blocks = -(-len(back) // held)
    assert src.decoded - n <= blocks * (held + keyint - 1), f"{src.decoded - n} frames decoded for {blocks} blocks"
    order = np.random.default_rng(0).integers(0, n, 60)
    for i, f in zip(order, src.frames_in_order(order)):
        assert np.array_equal(f, frames[i]), f"frame {i} differs in a random order"
    assert src.max_held <= held
    src.close()
