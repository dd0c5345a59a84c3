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


def test_speech_level_is_the_loud_part_and_the_gain_raises_only_quiet_speech():
    from lipforce_sdk.audio import SPEECH_LEVEL, speech_gain, speech_level

    t = np.arange(16000 * 4) / 16000
    tone = np.sin(2 * np.pi * 220 * t).astype(np.float32)
    talk = tone * (t < 1.0)  # 1 s of "speech" in 4 s: the pauses do not pull the level down
    assert speech_level(0.2 * talk) == pytest.approx(0.2 / np.sqrt(2), rel=1e-2)  # a 40 ms piece: 8.8 periods
    assert speech_level(np.zeros(16000, np.float32)) == 0.0 and speech_gain(np.zeros(16000, np.float32)) == 1.0
    quiet = (0.05 * talk).astype(np.float32)  # level 0.035: raised to SPEECH_LEVEL
    assert speech_gain(quiet) == pytest.approx(SPEECH_LEVEL / speech_level(quiet), rel=1e-6)
    assert speech_gain(0.3 * talk) == 1.0  # louder than the model's speech: left as it is
    spiky = quiet.copy()
    spiky[100] = 0.5  # one loud sample: raised only as far as full scale
    assert speech_gain(spiky) == pytest.approx(2.0, rel=1e-6)
    assert speech_gain(0.001 * talk) == 8.0  # at most max_gain


def test_run_hears_the_gained_speech_and_writes_the_sound_as_given(tiny_engine, tmp_path, capsys):
    """``run_clip(speech_gain=4)`` on speech a quarter as loud renders the frames of the loud speech
    exactly; the written sound track is the quiet speech; a quiet one without a gain is named."""
    from conftest import BOX, make_clip

    from lipforce_sdk.audio import speech_level
    from lipforce_sdk.cli import run_clip
    from lipforce_sdk.media import VideoWriter, read_audio, read_video, write_wav

    frames, _ = make_clip(12, seed=3, hw=(96, 80))
    rng = np.random.default_rng(4)
    loud = (0.3 * np.sin(2 * np.pi * 300 * np.arange(12 * 640) / 16000)
            * (1 + 0.5 * rng.standard_normal(12 * 640))).clip(-0.9, 0.9).astype(np.float32)
    # written as 16-bit samples that are multiples of 4, so the quiet file is the loud one over 4 exactly
    # and 4x its samples read back are the loud file's, bit for bit
    loud_pcm = (np.rint(loud * 8191.0) * 4).astype(np.int16)
    quiet_pcm = (loud_pcm // 4).astype(np.int16)
    quiet = quiet_pcm.astype(np.float32) / np.float32(32768.0)
    video = tmp_path / "in.mp4"
    with VideoWriter(video, fps=25) as w:
        for f in frames:
            w.write(f)
    for name, x in (("loud", loud_pcm), ("quiet", quiet_pcm)):
        write_wav(tmp_path / f"{name}.wav", x)
    run_clip(tiny_engine, video, tmp_path / "loud.wav", tmp_path / "loud.mp4", box=BOX, progress=False)
    run_clip(tiny_engine, video, tmp_path / "quiet.wav", tmp_path / "gained.mp4", box=BOX, progress=False,
             speech_gain=4.0)
    a, _ = read_video(tmp_path / "loud.mp4")
    b, _ = read_video(tmp_path / "gained.mp4")
    assert a.shape == b.shape and np.array_equal(a, b)
    heard = read_audio(tmp_path / "gained.mp4")
    assert speech_level(heard) == pytest.approx(speech_level(quiet), rel=0.15)  # the sound track as given
    capsys.readouterr()
    run_clip(tiny_engine, video, tmp_path / "quiet.wav", tmp_path / "q.mp4", box=BOX, progress=True)
    assert "--speech-gain auto" in capsys.readouterr().err
    run_clip(tiny_engine, video, tmp_path / "loud.wav", tmp_path / "l.mp4", box=BOX, progress=True)
    assert "speech level" not in capsys.readouterr().err


def test_speech_gain_option_takes_auto_or_a_positive_number():
    from lipforce_sdk.cli import build_parser

    p = build_parser()
    assert p.parse_args(["run", "--speech-gain", "auto"]).speech_gain == "auto"
    assert p.parse_args(["run", "--speech-gain", "2.5"]).speech_gain == 2.5
    for bad in ("0", "-1", "loud", "nan"):
        with pytest.raises(SystemExit):
            p.parse_args(["run", "--speech-gain", bad])
