"""Speech synthesis, phoneme timing and visemes of the procedural talking faces (distill/)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))

from distill.sentences import HELD_OUT, SENTENCES, TRAIN  # noqa: E402
from distill.speech import PAUSE, Phoneme, Speech, espeak_available, synthesize  # noqa: E402
from distill.visemes import PARAMS, _MARKS, _PARTS, _T, frame_params  # noqa: E402

needs_espeak = pytest.mark.skipif(
    not espeak_available(),
    reason="espeak-ng is not installed (libespeak-ng.so.1 not found): `apt-get install espeak-ng`")

SR = 16000


def _rms_per_frame(audio: np.ndarray, frames: int) -> np.ndarray:
    a = np.zeros(frames * 640, np.float32)
    a[: min(a.size, audio.size)] = audio[: a.size]
    return np.sqrt((a.reshape(frames, 640) ** 2).mean(axis=1))


def test_sentence_split():
    assert len(SENTENCES) == 200 and len(set(SENTENCES)) == 200
    assert len(TRAIN) == 160 and len(HELD_OUT) == 40
    assert not set(TRAIN) & set(HELD_OUT)


def test_silence_and_bilabials_close_the_mouth_without_espeak():
    """Visemes from a hand-made phoneme list: rest pose in silence, closed on "p"/"m",
    open on "A:", rounded on "u:"."""
    ph = (Phoneme(PAUSE, 0.0, 0.40), Phoneme("p", 0.40, 0.48), Phoneme("A:", 0.48, 0.72),
          Phoneme("m", 0.72, 0.80), Phoneme("u:", 0.80, 1.04), Phoneme(PAUSE, 1.04, 1.60))
    sp = Speech(np.zeros(int(1.6 * SR), np.float32), ph)
    p = frame_params(sp)
    assert p.shape == (40, len(PARAMS)) and p.dtype == np.float32
    o, rnd = p[:, 0], p[:, 2]
    assert np.all(p[:7] < 0.02), p[:7]  # 0 .. 0.28 s: silence
    assert np.all(p[31:] < 0.02), p[31:]  # after 1.24 s: silence again
    assert o[14:17].max() > 0.7, o  # "A:" centred at 0.6 s = frame 15
    assert o[18] < 0.2, o  # "m" centred at 0.76 s = frame 19: closing
    assert rnd[22:24].max() > 0.8, rnd  # "u:" centred at 0.92 s = frame 23


def test_shifted_moves_audio_and_phonemes():
    ph = (Phoneme(PAUSE, 0.0, 0.5), Phoneme("a", 0.5, 1.0))
    audio = np.arange(SR, dtype=np.float32) / SR
    sp = Speech(audio, ph)
    sh = sp.shifted(5)  # 5 frames = 3200 samples earlier
    assert sh.audio.size == audio.size
    np.testing.assert_array_equal(sh.audio[: SR - 3200], audio[3200:])
    assert np.all(sh.audio[SR - 3200:] == 0)
    a = [x for x in sh.phonemes if x.name == "a"][0]
    assert a.start == pytest.approx(0.3) and a.end == pytest.approx(0.8)
    back = sp.shifted(-5)
    np.testing.assert_array_equal(back.audio[3200:], audio[: SR - 3200])


@needs_espeak
def test_synthesis_deterministic_cached_and_timed(tmp_path):
    a = synthesize("Bob made a pie.", "en+f3", 150, cache=tmp_path)
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1, files
    b = synthesize("Bob made a pie.", "en+f3", 150, cache=tmp_path)  # from the cache: exactly what was made
    c = synthesize("Bob made a pie.", "en+f3", 150, cache=False)  # made again
    np.testing.assert_array_equal(a.audio, b.audio)
    for s in (b, c):  # the timing is the synthesizer's, whatever its breath noise (distill/speech.py)
        assert s.audio.size == a.audio.size
        assert [(p.name, p.start, p.end) for p in a.phonemes] == [(p.name, p.start, p.end) for p in s.phonemes]
    # a voice without breath noise comes out the same samples every time
    d, e = (synthesize("Bob made a pie.", "en-us", 150, cache=False) for _ in range(2))
    np.testing.assert_array_equal(d.audio, e.audio)
    assert a.audio.dtype == np.float32 and a.sample_rate == SR and np.abs(a.audio).max() <= 1.0
    assert 0.6 < a.duration < 3.0, a.duration
    # contiguous phonemes covering the audio exactly, on the sample clock
    assert a.phonemes[0].start == 0.0
    assert a.phonemes[-1].end == pytest.approx(a.duration, abs=1e-6)
    for p, q in zip(a.phonemes, a.phonemes[1:]):
        assert p.end == pytest.approx(q.start) and p.end > p.start
    names = [p.name for p in a.phonemes]
    assert "b" in names and "p" in names and "m" in names, names
    other = synthesize("Bob made a pie.", "en+f3", 190, cache=False)
    assert other.duration < a.duration  # the rate is applied


@needs_espeak
def test_phoneme_timing_matches_audio_energy():
    """The phoneme events are on the audio's clock: pauses are silent, vowels are loud."""
    sp = synthesize("Please bring me a bowl of warm soup. We moved the piano before the party.", "en-us", 160,
                    cache=False)
    vowels = {"i:", "I", "oU", "O:", "u:", "V", "a", "A:", "aI", "eI", "O@", "u:", "@", "3:", "E", "0"}
    e_pause, e_vowel = [], []
    for p in sp.phonemes:
        s0, s1 = int(p.start * SR), int(p.end * SR)
        if s1 - s0 < 160:
            continue
        seg = sp.audio[s0:s1]
        (e_pause if p.name.startswith("_") else e_vowel if p.name in vowels else []).append(np.mean(seg**2))
    assert e_pause and e_vowel
    assert max(e_pause) < 0.01 * np.median(e_vowel), (max(e_pause), np.median(e_vowel))


@needs_espeak
def test_visemes_follow_the_speech_envelope():
    sp = synthesize("The blue boat floated past the old mill.", "en-us", 150, cache=False).padded(0.5, 0.5)
    p = frame_params(sp)
    env = _rms_per_frame(sp.audio, p.shape[0])
    r = np.corrcoef(env, p[:, 0])[0, 1]
    assert r > 0.6, f"mouth opening vs speech envelope correlation {r:.2f}"
    lead = int(0.5 * 25)
    assert np.all(p[: lead - 3, 0] < 0.02), p[:lead, 0]  # silence -> closed
    assert np.all(p[-(lead - 3):, 0] < 0.02), p[-lead:, 0]
    assert p[:, 0].max() > 0.5


@needs_espeak
def test_phoneme_table_covers_what_espeak_says():
    """Every phoneme espeak-ng emits for the sentences has its own viseme (no class fallback)."""
    known = set(_T) | set(_PARTS) | set(_MARKS)
    seen = set()
    for voice in ("en-us", "en", "en-gb-x-rp+m1"):
        for text in SENTENCES[::5]:
            seen |= {p.name for p in synthesize(text, voice, 170, cache=False).phonemes}
    unknown = sorted(n for n in seen if n not in known and not n.startswith("_"))
    assert not unknown, f"phonemes without a viseme entry: {unknown}"
