"""Speech with exact phoneme timing: espeak-ng through its C library, 16 kHz mono float32.

Why the C library and not the command line: ``espeak-ng --pho`` writes phoneme durations
only for mbrola voices (none are installed by ``apt-get install espeak-ng``), and ``-x`` /
``-X`` give phonemes without times. The library (``libespeak-ng.so.1``, installed with the
``espeak-ng`` package) reports a *phoneme event* for every phoneme it synthesizes when it is
initialised with ``espeakINITIALIZE_PHONEME_EVENTS``; each event carries the index of the
output sample where that phoneme starts. So the timing comes from the synthesizer itself, on
the same sample clock as the audio: phoneme ``k`` spans ``[start_k, start_{k+1})``.

Determinism: inside one process espeak-ng carries state from one utterance to the next (the
same text comes out a few samples different the second time), so every utterance is
synthesized by a small ctypes script in a fresh Python process (``_CHILD``, ~50 ms); the
same (text, voice, rate) then gives the same samples every time, in any order, and the same
phoneme times. Except, once, for a variant with breath noise: a clean CI run saw ``en+f3`` (its
variant file has a ``breath`` line) come out with other samples, same length and timing; not
reproduced in about 50 tries here. espeak-ng 1.51 (Debian 12) makes that noise in code that upstream
reworked later for determinism (espeak-ng issue 1528, PR 1530), the likely source. The cache below
keeps what was made, so one machine's training data does not change between runs.

Clock: sample 0 is time 0. The synthesizer runs at its own rate (22050 Hz for the voices
used here); the audio is resampled to 16 kHz (polyphase, zero-phase, so no delay) and the
phoneme times, in seconds, stay as they are.

Cache: ``synthesize`` keeps every (text, voice, rate) it has made as a small ``.npz`` under
``cache_dir()`` (``$LIPFORCE_CACHE/speech`` or ``~/.cache/lipforce/speech``), keyed by a hash
of the text, voice, rate, format version and espeak-ng version.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .sentences import HELD_OUT, TRAIN

__all__ = [
    "SAMPLE_RATE",
    "FPS",
    "SAMPLES_PER_FRAME",
    "VOICES",
    "RATES",
    "SpeechUnavailableError",
    "Phoneme",
    "Speech",
    "SpeechSpec",
    "espeak_available",
    "espeak_version",
    "cache_dir",
    "synthesize",
    "silence",
    "sample_spec",
]

SAMPLE_RATE = 16000
FPS = 25.0
SAMPLES_PER_FRAME = 640  # SAMPLE_RATE / FPS
PAUSE = "_"  # phoneme name used for silence added around speech

# Voices (language + variant) that all exist in the Debian espeak-ng-data package.
VOICES: tuple[str, ...] = (
    "en-us", "en", "en+f3", "en+m3", "en-us+f2", "en-us+m7", "en+f4", "en-gb-x-rp+m1",
    "en-029+f1", "en-gb-scotland+m2", "en-us+f5", "en+m5",
)
RATES: tuple[int, int] = (130, 195)  # words per minute, inclusive range sampled by sample_spec

_FORMAT_VERSION = 2


class SpeechUnavailableError(RuntimeError):
    """espeak-ng's library cannot be loaded; install it with ``apt-get install espeak-ng``."""


@dataclass(frozen=True)
class Phoneme:
    """One phoneme: espeak-ng mnemonic (``"p"``, ``"aI"``, ``"_:"`` pause) and its span in seconds."""

    name: str
    start: float
    end: float


@dataclass(frozen=True)
class SpeechSpec:
    """What to say and how: the cache key of ``synthesize``."""

    text: str
    voice: str = "en-us"
    rate: int = 160


@dataclass(frozen=True, eq=False)
class Speech:
    """Audio and its phonemes on one clock (sample 0 = time 0).

    Attributes:
        audio: ``[N]`` float32 mono in [-1, 1] at ``SAMPLE_RATE``.
        phonemes: contiguous phonemes covering ``[0, N / SAMPLE_RATE]``.
        spec: what was synthesized (``None`` for silence).
    """

    audio: np.ndarray
    phonemes: tuple[Phoneme, ...]
    spec: SpeechSpec | None = None
    sample_rate: int = field(default=SAMPLE_RATE)

    @property
    def duration(self) -> float:
        return self.audio.size / self.sample_rate

    def num_frames(self, fps: float = FPS) -> int:
        """Video frames needed to show all of the audio (the last one may be partial)."""
        return int(np.ceil(self.audio.size * fps / self.sample_rate - 1e-9))

    def padded(self, lead: float = 0.0, tail: float = 0.0) -> "Speech":
        """Silence of ``lead`` seconds before and ``tail`` seconds after (rounded to samples);
        the phoneme times move with the audio and the silences are pause phonemes."""
        if lead < 0 or tail < 0:
            raise ValueError(f"lead and tail must be >= 0 seconds, got lead={lead}, tail={tail}")
        nl, nt = int(round(lead * self.sample_rate)), int(round(tail * self.sample_rate))
        audio = np.concatenate([np.zeros(nl, np.float32), self.audio, np.zeros(nt, np.float32)])
        dt = nl / self.sample_rate
        ph = [Phoneme(p.name, p.start + dt, p.end + dt) for p in self.phonemes]
        if nl:
            ph.insert(0, Phoneme(PAUSE, 0.0, dt))
        if nt:
            ph.append(Phoneme(PAUSE, dt + self.duration, audio.size / self.sample_rate))
        return Speech(audio, tuple(ph), self.spec, self.sample_rate)

    def fit_frames(self, num_frames: int, fps: float = FPS) -> "Speech":
        """Exactly ``num_frames`` video frames long: trimmed, or padded with silence at the end."""
        n = int(round(num_frames * self.sample_rate / fps))
        if n >= self.audio.size:
            return self.padded(0.0, (n - self.audio.size) / self.sample_rate)
        t_end = n / self.sample_rate
        ph = tuple(Phoneme(p.name, p.start, min(p.end, t_end)) for p in self.phonemes if p.start < t_end)
        return Speech(self.audio[:n].copy(), ph, self.spec, self.sample_rate)

    def shifted(self, frames: int, fps: float = FPS) -> "Speech":
        """The same speech ``frames`` video frames *earlier* (``frames`` > 0) or later (< 0),
        same length: a video rendered from the original lags this audio by ``frames``."""
        k = int(round(frames * self.sample_rate / fps))
        n = self.audio.size
        audio = np.zeros(n, np.float32)
        if k >= 0:
            audio[: max(n - k, 0)] = self.audio[k:]
        else:
            audio[-k:] = self.audio[: n + k]
        dt = -k / self.sample_rate
        end = n / self.sample_rate
        ph = [Phoneme(p.name, max(p.start + dt, 0.0), min(p.end + dt, end)) for p in self.phonemes]
        ph = [p for p in ph if p.end > p.start]
        if ph and ph[0].start > 0:
            ph.insert(0, Phoneme(PAUSE, 0.0, ph[0].start))
        if ph and ph[-1].end < end:
            ph.append(Phoneme(PAUSE, ph[-1].end, end))
        return Speech(audio, tuple(ph), self.spec, self.sample_rate)


def silence(seconds: float) -> Speech:
    """Silent speech: zero audio and a single pause phoneme."""
    n = int(round(seconds * SAMPLE_RATE))
    return Speech(np.zeros(n, np.float32), (Phoneme(PAUSE, 0.0, n / SAMPLE_RATE),), None)


# --------------------------------------------------------------------------------------
# espeak-ng through ctypes, one fresh process per utterance
# --------------------------------------------------------------------------------------

# espeak-ng keeps state from one utterance to the next inside a process (the same text comes
# out a few samples longer or shorter the second time), and its library cannot be
# re-initialised in place. A fresh process per utterance gives the same samples every time,
# so each synthesis runs this self-contained script (ctypes only) in a new interpreter. It
# writes one JSON line (sample rate, version, phoneme events) and then the int16 samples.
_CHILD = r'''
import ctypes, json, sys
text, voice, rate = json.loads(sys.stdin.read())
lib = ctypes.CDLL(sys.argv[1])
class EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]
class Event(ctypes.Structure):  # espeak_EVENT (speak_lib.h)
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", EventId)]
CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))
chunks, events = [], []
def on_synth(wav, n, ev):
    if n > 0:
        chunks.append(ctypes.string_at(wav, 2 * n))
    i = 0
    while ev[i].type != 0:  # espeakEVENT_LIST_TERMINATED
        if ev[i].type == 7:  # espeakEVENT_PHONEME: id.string = mnemonic, sample = where it starts
            events.append([bytes(ev[i].id.string).split(b"\0")[0].decode("utf-8", "replace"), ev[i].sample])
        i += 1
    return 0
cb = CB(on_synth)
lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
lib.espeak_Info.restype = ctypes.c_char_p
lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                             ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
# AUDIO_OUTPUT_SYNCHRONOUS; espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_DONT_EXIT
sr = lib.espeak_Initialize(2, 0, None, 0x0001 | 0x8000)
if sr <= 0:
    sys.exit("espeak_Initialize failed (%d): is espeak-ng-data installed?" % sr)
lib.espeak_SetSynthCallback(cb)
if lib.espeak_SetVoiceByName(voice.encode()) != 0:
    sys.exit("espeak-ng has no voice %r; list them with `espeak-ng --voices=en`" % voice)
for p, v in ((1, rate), (2, 100), (3, 50), (4, 50), (7, 0)):  # rate, volume, pitch, range, word gap
    lib.espeak_SetParameter(p, int(v), 0)
buf = text.encode("utf-8") + b"\0"
err = lib.espeak_Synth(buf, len(buf), 0, 1, 0, 1, None, None)  # POS_CHARACTER, espeakCHARS_UTF8
if err != 0:
    sys.exit("espeak_Synth failed with code %d" % err)
lib.espeak_Synchronize()
out = sys.stdout.buffer
out.write((json.dumps({"rate": sr, "version": lib.espeak_Info(None).decode(), "events": events}) + "\n").encode())
out.write(b"".join(chunks))
out.flush()
'''

_LIB_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so", "libespeak-ng.1.dylib", "libespeak-ng.dylib")


@lru_cache(maxsize=1)
def _library() -> str | None:
    """Name of the espeak-ng shared library that loads here, or None."""
    names = list(_LIB_NAMES)
    found = ctypes.util.find_library("espeak-ng")
    if found:
        names.insert(0, found)
    for name in names:
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def _require_library() -> str:
    lib = _library()
    if lib is None:
        raise SpeechUnavailableError(
            "espeak-ng's library (libespeak-ng.so.1) was not found; install it with "
            "`apt-get install espeak-ng` (Debian/Ubuntu) to synthesize speech")
    return lib


def espeak_available() -> bool:
    """Whether espeak-ng's library loads here."""
    return _library() is not None


@lru_cache(maxsize=1)
def espeak_version() -> str:
    lib = ctypes.CDLL(_require_library())
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    return lib.espeak_Info(None).decode()


def _synth_raw(text: str, voice: str, rate: int) -> tuple[int, np.ndarray, list[tuple[str, int]]]:
    """(sample rate, int16 samples, [(phoneme, start sample)]) from a fresh process."""
    lib = _require_library()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    r = subprocess.run([sys.executable, "-I", "-c", _CHILD, lib], input=json.dumps([text, voice, int(rate)]).encode(),
                       capture_output=True, env=env, timeout=120)
    if r.returncode != 0:
        msg = r.stderr.decode(errors="replace").strip().splitlines()
        detail = msg[-1] if msg else f"exit code {r.returncode}"
        if "no voice" in detail:
            raise ValueError(detail)
        raise RuntimeError(f"espeak-ng failed for voice={voice!r} rate={rate} text={text!r}: {detail}")
    head, _, body = r.stdout.partition(b"\n")
    info = json.loads(head)
    audio = np.frombuffer(body, dtype="<i2").copy()
    return int(info["rate"]), audio, [(str(n), int(s)) for n, s in info["events"]]


def cache_dir() -> Path:
    """``$LIPFORCE_CACHE/speech``, else ``~/.cache/lipforce/speech``."""
    root = os.environ.get("LIPFORCE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lipforce")
    return Path(root) / "speech"


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(sr_in, sr_out)
    return resample_poly(x.astype(np.float64), sr_out // g, sr_in // g).astype(np.float32)


def _make(spec: SpeechSpec) -> Speech:
    sr, raw, events = _synth_raw(spec.text, spec.voice, spec.rate)
    audio = _resample(raw.astype(np.float32) / 32768.0, sr, SAMPLE_RATE)
    audio = np.clip(audio, -1.0, 1.0)
    end = audio.size / SAMPLE_RATE
    starts = [min(max(s / sr, 0.0), end) for _, s in events]
    names = [n for n, _ in events]
    phon: list[Phoneme] = []
    if not starts or starts[0] > 0:
        phon.append(Phoneme(PAUSE, 0.0, starts[0] if starts else end))
    for k, (name, t0) in enumerate(zip(names, starts)):
        t1 = starts[k + 1] if k + 1 < len(starts) else end
        if t1 > t0:
            phon.append(Phoneme(name, t0, t1))
    if phon[-1].end < end:
        phon.append(Phoneme(PAUSE, phon[-1].end, end))
    return Speech(audio, tuple(phon), spec)


def _cache_path(spec: SpeechSpec, root: Path) -> Path:
    key = json.dumps([_FORMAT_VERSION, espeak_version(), spec.text, spec.voice, int(spec.rate)])
    return root / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".npz")


def synthesize(text: str | SpeechSpec, voice: str = "en-us", rate: int = 160, *,
               cache: str | os.PathLike | None | bool = True) -> Speech:
    """Speak ``text`` with an espeak-ng ``voice`` at ``rate`` words per minute.

    Args:
        text: the sentence, or a ``SpeechSpec`` (then ``voice``/``rate`` are ignored).
        voice: espeak-ng voice name, optionally ``+variant`` (``"en-us"``, ``"en+f3"``).
        rate: words per minute, 80..450.
        cache: ``True`` for ``cache_dir()``, a directory, or ``False``/``None`` for no cache.

    Returns:
        ``Speech`` at 16 kHz with the phonemes the synthesizer reported.

    Raises:
        SpeechUnavailableError: espeak-ng is not installed.
    """
    spec = text if isinstance(text, SpeechSpec) else SpeechSpec(text, voice, int(rate))
    if not spec.text.strip():
        raise ValueError("text is empty; use distill.speech.silence(seconds) for silence")
    if not 80 <= spec.rate <= 450:
        raise ValueError(f"rate={spec.rate} words per minute is out of espeak-ng's range 80..450")
    root = None
    if cache is True:
        root = cache_dir()
    elif cache:
        root = Path(cache)
    path = _cache_path(spec, root) if root is not None else None
    if path is not None and path.exists():
        try:
            z = np.load(path, allow_pickle=False)
            names = [str(n) for n in z["names"]]
            phon = tuple(Phoneme(n, float(a), float(b)) for n, a, b in zip(names, z["starts"], z["ends"]))
            return Speech(z["audio"].astype(np.float32), phon, spec)
        except Exception:  # a corrupt entry (e.g. an interrupted write): make it again
            pass
    sp = _make(spec)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.npz")
        np.savez(tmp, audio=sp.audio, names=np.array([p.name for p in sp.phonemes]),
                 starts=np.array([p.start for p in sp.phonemes]), ends=np.array([p.end for p in sp.phonemes]))
        os.replace(tmp, path)
    return sp


def sample_spec(rng: np.random.Generator, split: str = "train") -> SpeechSpec:
    """A random sentence of ``split`` (``"train"`` or ``"held_out"``), voice and rate."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    pool = TRAIN if split == "train" else HELD_OUT
    text = pool[int(rng.integers(len(pool)))]
    voice = VOICES[int(rng.integers(len(VOICES)))]
    rate = int(rng.integers(RATES[0], RATES[1] + 1))
    return SpeechSpec(text, voice, rate)
