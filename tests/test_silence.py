"""The silence gate: silent audio holds one mouth, speech shows the model; the gate is a
pure function of the audio in frame order (any piece sizes, any recording level)."""

import numpy as np
import pytest

from conftest import BOX, make_clip
from lipforce_sdk.audio import log_mel_clip
from lipforce_sdk.config import AudioConfig
from lipforce_sdk.offline import render_offline
from lipforce_sdk.session import InputError
from lipforce_sdk.silence import SilenceGate

SR, FPS, SPF = 16000, 25.0, 640


def gates(audio, n, cfg=None, piece=None):
    cfg = cfg or AudioConfig()
    mel = log_mel_clip(np.asarray(audio, np.float32), cfg, FPS, n)
    g = SilenceGate(cfg, FPS)
    piece = piece or n
    return np.concatenate([g(mel[k:k + piece]) for k in range(0, n, piece)])


def babble(n_frames, seed=0, level=0.1):
    """Speech-band noise, ``n_frames`` video frames long."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n_frames * SPF)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1 / SR)
    spec[(f < 300) | (f > 3400)] = 0
    y = np.fft.irfft(spec, x.size)
    return (level * y / y.std()).astype(np.float32)


def test_sine_calibration_reads_dbfs():
    cfg = AudioConfig()
    g = SilenceGate(cfg, FPS)
    t = np.arange(10 * SPF) / SR
    for amp, want in ((1.0, -3.01), (0.1, -23.01), (0.01, -43.01)):
        mel = log_mel_clip((amp * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), cfg, FPS, 6)
        own = mel[5, cfg.context_frames * g.mpf:(cfg.context_frames + 1) * g.mpf]
        assert g.level(own) == pytest.approx(want, abs=0.5)


def test_silence_is_zero_speech_is_one_with_fades_at_both_ends():
    n_sp, n_si = 20, 20
    audio = np.concatenate([babble(n_sp), np.zeros(n_si * SPF, np.float32), babble(n_sp, 1)])
    g = gates(audio, 2 * n_sp + n_si)
    # speech frames and the one frame after: the model (a frame's mels read a little of the next frame)
    assert np.all(g[:n_sp] == 1.0)
    silent = g[n_sp:n_sp + n_si]
    assert silent.min() == 0.0 and np.all(silent[4:-4] == 0.0)
    assert np.all(np.diff(silent[:6]) <= 0) and np.all(np.diff(silent[-6:]) >= 0)  # fade out, then in
    assert 0 < silent[:6].max() and np.any((silent > 0) & (silent < 1)), "no fade into the silence"
    assert np.all(g[n_sp + n_si + 1:] == 1.0)
    # a digitally silent stream starts still
    assert np.all(gates(np.zeros(10 * SPF, np.float32), 10) == 0.0)


def test_gate_ignores_level_and_piece_sizes():
    audio = np.concatenate([babble(15), np.zeros(17 * SPF, np.float32), 0.3 * babble(12, 2)])
    n = 44
    whole = gates(audio, n)
    assert 0 < whole.mean() < 1
    for piece in (1, 2, 5):
        assert np.array_equal(gates(audio, n, piece=piece), whole)
    # 14 dB quieter (the quieter part then near -50 dBFS in the band, above the -60 dBFS floor)
    assert np.array_equal(gates(0.2 * audio, n), whole), "a quieter recording of the same speech gates differently"


def test_pause_between_words_reaches_a_closed_mouth_only_when_long():
    short = np.concatenate([babble(10), np.zeros(3 * SPF, np.float32), babble(10, 1)])
    assert gates(short, 23).min() > 0.0  # 3 frames: the model's own closing
    long = np.concatenate([babble(10), np.zeros(8 * SPF, np.float32), babble(10, 1)])
    assert gates(long, 28).min() == 0.0


def test_silent_audio_holds_one_mouth_and_model_mode_does_not(tiny_engine):
    frames, _ = make_clip(1, 3)
    frames = np.repeat(frames, 12, axis=0)  # one still frame
    audio = np.zeros(12 * SPF, np.float32)
    still = render_offline(tiny_engine, audio, frames, box=BOX)
    model = render_offline(tiny_engine, audio, frames, box=BOX, silence="model")
    # frame 0 is the decoder's first (its causal cache starts empty); from frame 1 on, one picture
    assert all(np.array_equal(still[1], f) for f in still[2:]), "silence='still' moved the mouth in silence"
    assert not all(np.array_equal(model[1], f) for f in model[2:]), "the model's output is already still"
    assert np.any(still[0] != frames[0]), "nothing was rendered"


def test_gated_stream_equals_offline_pass(tiny_engine):
    from test_streaming import push_randomly

    n = 30
    frames, _ = make_clip(n, 4)
    audio = np.concatenate([babble(9, 4), np.zeros(12 * SPF, np.float32), babble(9, 5)])
    ref = render_offline(tiny_engine, audio, frames, box=BOX)
    model = render_offline(tiny_engine, audio, frames, box=BOX, silence="model")
    diff = [not np.array_equal(a, b) for a, b in zip(ref, model)]
    assert not any(diff[:9]) and any(diff[9:21]), "the gate acted on speech, or not on silence"
    outs = push_randomly(tiny_engine.session(box=BOX), audio, frames, np.random.default_rng(7))
    assert [o.index for o in outs] == list(range(n))
    assert all(np.array_equal(o.image, ref[o.index]) for o in outs)
    s = tiny_engine.session(box=BOX)  # after reset() the gate starts over
    first = push_randomly(s, audio, frames, np.random.default_rng(8))
    s.reset()
    again = push_randomly(s, audio, frames, np.random.default_rng(9))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again))


def test_silence_option_errors(tiny_engine):
    with pytest.raises(InputError, match="choose one of"):
        tiny_engine.session(box=BOX, silence="quiet")


def test_default_follows_the_model_and_still_works_on_a_flow_model():
    from lipforce_sdk import Engine
    from lipforce_sdk.backends.torch_backend import TorchBackend
    from lipforce_sdk.model import LipSyncModel

    model = LipSyncModel.from_preset("tiny", seed=0, stream={"fill": "none"}, dit={"output": "flow"})
    eng = Engine(TorchBackend(model, device="cpu"))
    assert eng.session(box=BOX).renderer.silence == "model"  # not measured on such models: off by default
    frames, _ = make_clip(1, 3)
    frames = np.repeat(frames, 10, axis=0)
    still = render_offline(eng, np.zeros(10 * SPF, np.float32), frames, box=BOX, silence="still")
    assert all(np.array_equal(still[1], f) for f in still[2:])
    # a model's own setting (a talking enrollment's: "model") wins over the default; the caller's over both
    own = Engine(TorchBackend(LipSyncModel.from_preset("tiny", seed=0, stream={"fill": "none", "silence": "still"},
                                                       dit={"output": "flow"}), device="cpu"))
    assert own.session(box=BOX).renderer.silence == "still"
    assert own.session(box=BOX, silence="model").renderer.silence == "model"
