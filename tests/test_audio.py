import numpy as np
import pytest

from lipforce_sdk.audio import LogMelStream, log_mel_clip, mel_filterbank
from lipforce_sdk.config import from_name


@pytest.mark.parametrize("seed", [0, 1])
def test_stream_in_pieces_equals_clip(seed):
    cfg = from_name("tiny")
    rng = np.random.default_rng(seed)
    audio = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    n = 20
    ref = log_mel_clip(audio, cfg.audio, 25.0, n)
    st = LogMelStream(cfg.audio, 25.0)
    i = 0
    while i < audio.size:
        k = int(rng.integers(1, 3000))
        st.push(audio[i:i + k])
        i += k
    got = st.window(0, n)
    assert got.shape == ref.shape == (n, cfg.audio.window_video_frames() * 4, cfg.audio.n_mels)
    assert np.array_equal(got, ref), f"seed={seed}: max diff {np.abs(got - ref).max()}"


def test_mel_of_sine_peaks_at_its_frequency():
    cfg = from_name("tiny").audio
    t = np.arange(16000) / 16000
    fb = mel_filterbank(16000, cfg.n_fft, cfg.n_mels)
    centers = (fb * np.linspace(0, 8000, fb.shape[1])).sum(1) / fb.sum(1)
    for f0 in (300.0, 1000.0, 3000.0):
        m = log_mel_clip((0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), cfg, 25.0, 10)
        band = int(np.argmax(m[5].mean(0)))
        assert abs(centers[band] - f0) < 0.15 * f0 + 60, f"f0={f0}: peak band centre {centers[band]:.0f} Hz"


def test_stream_memory_is_bounded():
    cfg = from_name("tiny")
    st = LogMelStream(cfg.audio, 25.0)
    for k in range(500):
        st.push(np.zeros(640, np.float32))
        st.release_before(st.frames_ready() - 5)
    assert st._buf.size < 2 * 640 and len(st._mels) <= 8
