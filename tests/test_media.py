"""Video/audio file I/O (lipforce_sdk.media)."""

from __future__ import annotations

import os
import re
import wave

import numpy as np
import pytest

from lipforce_sdk import media
from lipforce_sdk.media import VideoWriter, read_audio, read_video, write_video

SR = 16000
AAC_FRAME = 1024  # samples per AAC frame: the allowed error on the audio length
ASSETS = os.path.join(os.path.dirname(media.__file__), "assets")


def moving_frames(n: int, h: int, w: int) -> np.ndarray:
    """Smooth frames with a pattern that moves, so frames differ. [n, h, w, 3] uint8"""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = 128 + 100 * np.sin(2 * np.pi * (x + 2 * i) / 40.0)
        out[i, ..., 1] = 128 + 100 * np.cos(2 * np.pi * (y - i) / 30.0)
        out[i, ..., 2] = (4 * i) % 256
    return out


def chirp(seconds: float, sr: int = SR) -> np.ndarray:
    """A 200 -> 2000 Hz sweep at amplitude 0.5 (no lag has a good match but zero)."""
    t = np.arange(int(seconds * sr)) / sr
    f0, f1 = 200.0, 2000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    return (0.5 * np.sin(phase)).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def check_audio(path: str, written: np.ndarray) -> None:
    got = read_audio(path, SR)
    assert got.dtype == np.float32 and got.ndim == 1
    assert abs(len(got) - len(written)) <= AAC_FRAME, f"{len(got)} vs {len(written)} samples"
    n = min(len(got), len(written))
    corr = np.corrcoef(got[:n], written[:n])[0, 1]
    assert corr > 0.95, f"read-back audio correlates {corr:.3f} with what was written"
    # starts at 0: the best alignment is lag 0 (AAC priming removed)
    lags = range(-64, 65)
    scores = [np.dot(got[max(0, k): n + min(0, k)], written[max(0, -k): n - max(0, k)])
              for k in lags]
    best = list(lags)[int(np.argmax(scores))]
    assert best == 0, f"audio is shifted by {best} samples"


def test_write_then_read_back(tmp_path):
    frames = moving_frames(40, 48, 64)
    audio = chirp(40 / 25)
    path = str(tmp_path / "clip.mp4")
    assert write_video(path, frames, 25, audio=audio, sample_rate=SR) == path
    got, fps = read_video(path)
    assert got.shape == frames.shape and got.dtype == np.uint8
    assert fps == 25.0
    assert psnr(got, frames) > 30, f"decoded frames differ: PSNR {psnr(got, frames):.1f} dB"
    info = media.probe(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (64, 48, 40, 25.0)
    assert info.has_audio and info.audio_sample_rate == SR and info.audio_channels == 1
    assert info.duration_s == pytest.approx(1.6, abs=AAC_FRAME / SR)
    check_audio(path, audio)
    streamed = list(media.iter_video_frames(path))
    assert np.array_equal(np.stack(streamed), got)


def test_streaming_writer_with_interleaved_audio(tmp_path):
    frames = moving_frames(30, 64, 80)
    audio = chirp(30 / 25)
    path = str(tmp_path / "stream.mp4")
    seen = []
    with VideoWriter(path, fps=25, with_audio=True, sample_rate=SR, progress=seen.append) as w:
        w.write_audio(audio[:100])  # audio before the first frame is held back
        pos = 100
        for i, f in enumerate(frames):
            w.write(f)
            step = 333 if i % 2 else 987  # chunks unrelated to frames or AAC frames
            w.write_audio(audio[pos : pos + step])
            pos += step
        w.write_audio(audio[pos:])
    assert seen == list(range(1, 31))
    assert w.frames_written == 30 and w.samples_written == len(audio)
    got, fps = read_video(path)
    assert got.shape == frames.shape and fps == 25.0
    check_audio(path, audio)


def test_int16_audio_and_non_integer_fps(tmp_path):
    frames = moving_frames(30, 32, 32)
    audio = (chirp(1.0) * 32767).astype(np.int16)
    path = str(tmp_path / "ntsc.mp4")
    write_video(path, frames, 30000 / 1001, audio=audio)
    got, fps = read_video(path)
    assert len(got) == 30 and fps == pytest.approx(29.97, abs=1e-3)
    check_audio(path, audio.astype(np.float32) / 32768)


def test_odd_frame_size_is_padded_to_even(tmp_path):
    frames = moving_frames(10, 47, 63)
    path = str(tmp_path / "odd.mp4")
    with VideoWriter(path, 25) as w:
        for f in frames:
            w.write(f)
    assert w.frame_size == (47, 63) and w.padded_size == (48, 64)
    got, _ = read_video(path)
    assert got.shape == (10, 48, 64, 3)
    assert psnr(got[:, :47, :63], frames) > 30
    # the added row/column repeats the edge
    assert psnr(got[:, 47:, :63], frames[:, 46:47]) > 28
    assert psnr(got[:, :47, 63:], frames[:, :, 62:63]) > 28


def test_mpeg4_fallback_codec(tmp_path):
    frames = moving_frames(12, 48, 64)
    path = str(tmp_path / "mpeg4.mp4")
    write_video(path, frames, 25, codec="mpeg4")
    got, fps = read_video(path)
    assert got.shape == frames.shape and fps == 25.0 and psnr(got, frames) > 25


def write_wav(path, data: np.ndarray, sr: int) -> None:
    """int16 WAV; data [N] or [N, C] float in [-1, 1]."""
    data = data if data.ndim == 2 else data[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[1])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())


def test_resample_44k_stereo_to_16k_mono_keeps_the_frequency(tmp_path):
    sr_in, seconds, freq = 44100, 2.0, 440.0
    t = np.arange(int(sr_in * seconds)) / sr_in
    left = 0.6 * np.sin(2 * np.pi * freq * t)
    right = 0.2 * np.sin(2 * np.pi * freq * t)
    path = tmp_path / "stereo.wav"
    write_wav(path, np.stack([left, right], 1), sr_in)
    got = read_audio(path, sample_rate=16000)
    assert got.dtype == np.float32 and got.ndim == 1
    assert abs(len(got) - 32000) <= 32, f"{len(got)} samples for 2 s at 16 kHz"
    spectrum = np.abs(np.fft.rfft(got * np.hanning(len(got))))
    peak_hz = np.argmax(spectrum) * 16000 / len(got)
    assert abs(peak_hz - freq) <= 1.0, f"peak at {peak_hz:.1f} Hz, expected {freq}"
    # mono = mean of the channels: amplitude (0.6 + 0.2) / 2
    rms = np.sqrt(np.mean(got[1000:-1000] ** 2))
    assert rms == pytest.approx(0.4 / np.sqrt(2), rel=0.02)


def test_read_audio_keeps_16k_wav_unchanged(tmp_path):
    x = chirp(0.5)
    path = tmp_path / "mono16k.wav"
    write_wav(path, x, SR)
    got = read_audio(path)
    assert len(got) == len(x)
    assert np.abs(got - x).max() < 2 / 32768


def test_missing_file_errors(tmp_path):
    missing = str(tmp_path / "nope.wav")
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        read_audio(missing)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(str(tmp_path / "nope.mp4"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_video(str(tmp_path / "no_dir" / "x.mp4"), moving_frames(2, 16, 16), 25)


def test_file_without_audio_errors(tmp_path):
    path = str(tmp_path / "silent.mp4")
    write_video(path, moving_frames(5, 32, 32), 25)
    assert not media.probe(path).has_audio
    with pytest.raises(ValueError, match=r"no audio stream.*video"):
        read_audio(path)


def test_not_a_media_file_errors(tmp_path):
    path = tmp_path / "text.wav"
    path.write_text("not audio")
    with pytest.raises(ValueError, match="could not open"):
        read_audio(path)


def test_writer_rejects_bad_input(tmp_path):
    with VideoWriter(str(tmp_path / "a.mp4"), 25) as w:
        with pytest.raises(ValueError, match="uint8"):
            w.write(np.zeros((16, 16, 3), np.float32))
        with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
            w.write(np.zeros((16, 16), np.uint8))
        w.write(np.zeros((16, 16, 3), np.uint8))
        with pytest.raises(ValueError, match="same size"):
            w.write(np.zeros((16, 32, 3), np.uint8))
        with pytest.raises(RuntimeError, match="with_audio=True"):
            w.write_audio(np.zeros(160, np.float32))
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(str(tmp_path / "b.mp4"), 0)
    with VideoWriter(str(tmp_path / "c.mp4"), 25, with_audio=True) as w:
        w.write(np.zeros((16, 16, 3), np.uint8))
        with pytest.raises(ValueError, match="NaN"):
            w.write_audio(np.array([0.0, np.nan], np.float32))
        with pytest.raises(ValueError, match="mono"):
            w.write_audio(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="no frame"):
        VideoWriter(str(tmp_path / "d.mp4"), 25).close()


@pytest.mark.parametrize("name, shape", [("sample", (171, 256, 256, 3)), ("photo", (150, 320, 320, 3))])
def test_bundled_clips(name, shape):
    frames, fps = read_video(os.path.join(ASSETS, name, "face.mp4"))
    speech = read_audio(os.path.join(ASSETS, name, "speech.wav"))
    assert fps == 25.0 and frames.shape == shape
    assert len(speech) == len(frames) * SR // 25, "speech and video should be equally long"
    assert np.abs(speech).max() > 0.3 and np.abs(speech[: SR // 10]).max() < 0.01


def test_write_wav_round_trips_through_read_audio(tmp_path):
    t = np.arange(SR) / SR
    x = (0.8 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    media.write_wav(tmp_path / "a.wav", x, SR)
    back = read_audio(tmp_path / "a.wav", sample_rate=SR)
    assert back.shape == x.shape
    # half a step of rounding, plus up to one step from writing x * 32767 and reading / 32768
    np.testing.assert_allclose(back, x, atol=1.5 / 32767)
    pcm = (x * 32767).astype(np.int16)
    media.write_wav(tmp_path / "b.wav", pcm, SR)
    np.testing.assert_array_equal(np.rint(read_audio(tmp_path / "b.wav", sample_rate=SR) * 32768), pcm)
    with pytest.raises(ValueError, match="mono"):
        media.write_wav(tmp_path / "c.wav", np.zeros((100, 2), np.float32), SR)
    with pytest.raises(ValueError, match="NaN"):
        media.write_wav(tmp_path / "d.wav", np.full(10, np.nan, np.float32), SR)
    assert not (tmp_path / "c.wav").exists() and not (tmp_path / "d.wav").exists()


def test_x264_runs_without_macroblock_tree(tmp_path):
    """x264 writes its settings into the stream: no macroblock tree (repeatable files), hence no
    rate-control look-ahead held (4K at medium with the tree took 1.18 GB of encoder, 0.32 GB without),
    at the crf asked for."""
    frame = np.zeros((64, 64, 3), np.uint8)
    for preset, crf in (("medium", 17), ("veryfast", 23)):
        with media.VideoWriter(tmp_path / f"{preset}.mp4", 25, preset=preset, crf=crf, codec="libx264") as w:
            w.write(frame)
        head = (tmp_path / f"{preset}.mp4").read_bytes()
        assert b"mbtree=0" in head and b"rc_lookahead" not in head, preset
        assert re.search(rb"crf=(\d+)\.0", head).group(1) == str(crf).encode(), preset


def test_written_file_is_repeatable(tmp_path):
    """The same frames give the same bytes every time, whatever else the process allocates in
    between (x264's macroblock tree with B-frames did not: the bundled photo clip's frames gave a
    different file on most encodes)."""
    frames, _ = read_video(os.path.join(ASSETS, "photo", "face.mp4"))
    rng = np.random.default_rng(0)
    files, junk = set(), []
    for k in range(4):
        with VideoWriter(tmp_path / f"{k}.mp4", 25, codec="libx264") as w:
            for f in frames:
                junk.append(rng.bytes(int(rng.integers(1000, 200_000))))  # the heap as a busy run leaves it
                if len(junk) > 50:
                    junk.pop(int(rng.integers(50)))
                w.write(f)
        files.add((tmp_path / f"{k}.mp4").read_bytes())
    assert len(files) == 1, f"{len(files)} different files from 4 writes of the same frames"
