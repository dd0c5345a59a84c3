"""Sound for the live avatar: text spoken by espeak-ng, WAV bodies checked and decoded (no torch, no scipy)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import wave
from fractions import Fraction

import numpy as np

__all__ = ["SpeechInputError", "speak", "decode_wav", "resample", "StreamResampler", "espeak_path"]


class SpeechInputError(ValueError):
    """Text or a WAV the server will not speak; the message says why and what is accepted."""


def espeak_path() -> str | None:
    return shutil.which("espeak-ng")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Mono float32 ``x`` from ``sr_in`` to ``sr_out`` Hz with FFmpeg's resampler."""
    return StreamResampler(sr_in, sr_out).push(x, end=True)


def decode_wav(data: bytes, sample_rate: int, max_seconds: float) -> np.ndarray:
    """A PCM WAV (8/16/24/32-bit integer, any rate, any channels) -> mono float32 at ``sample_rate``.

    Raises ``SpeechInputError`` for anything else, an empty one, or one longer than ``max_seconds``."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if ch < 1 or rate < 4000 or rate > 192000 or width not in (1, 2, 3, 4):
                raise SpeechInputError(f"unsupported WAV: {ch} channel(s), {rate} Hz, {8 * width}-bit; "
                                       "send PCM 8/16/24/32-bit at 4-192 kHz")
            if n / rate > max_seconds:
                raise SpeechInputError(f"the WAV is {n / rate:.1f} s long; the limit is {max_seconds:g} s")
            raw = w.readframes(n)
    except SpeechInputError:
        raise
    except (wave.Error, EOFError, ValueError, OSError) as e:
        raise SpeechInputError(f"not a readable PCM WAV ({e}); send a RIFF/WAVE file with PCM samples") from None
    frames = len(raw) // (width * ch)
    if frames == 0:
        raise SpeechInputError("the WAV has no samples")
    raw = raw[: frames * width * ch]
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    else:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    x = x.reshape(frames, ch).mean(axis=1)
    return np.clip(resample(x, rate, sample_rate), -1.0, 1.0)


def speak(text: str, sample_rate: int, voice: str = "en-us", rate: int = 160, max_seconds: float = 30.0) -> np.ndarray:
    """``text`` spoken by espeak-ng -> mono float32 at ``sample_rate``."""
    exe = espeak_path()
    if exe is None:
        raise RuntimeError("espeak-ng is not installed; `apt-get install espeak-ng` (Debian/Ubuntu), or post a WAV")
    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix="lipforce_tts_")
    os.close(fd)
    try:
        # the text goes in on stdin, never as an argument: nothing in it is read as an option
        r = subprocess.run([exe, "-v", voice, "-s", str(int(rate)), "-w", tmp], input=text.encode("utf-8"),
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"espeak-ng failed: {r.stderr.decode(errors='replace').strip()[-200:]}")
        with open(tmp, "rb") as f:
            return decode_wav(f.read(), sample_rate, max_seconds)
    finally:
        os.unlink(tmp)


class StreamResampler:
    """``resample`` for audio that arrives in pieces: FFmpeg's resampler kept across pieces (no
    seams); ``push(x, end=True)`` flushes its tail. The identity where the rates match."""

    def __init__(self, sr_in: int, sr_out: int):
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._r = None
        self._pts = 0

    def push(self, x: np.ndarray, end: bool = False) -> np.ndarray:
        x = np.asarray(x, np.float32).reshape(-1)
        if self.sr_in == self.sr_out:
            return x
        import av

        if self._r is None:
            self._r = av.AudioResampler(format="flt", layout="mono", rate=self.sr_out)
        parts = []
        if x.size:
            f = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
            f.sample_rate, f.pts, f.time_base = self.sr_in, self._pts, Fraction(1, self.sr_in)
            self._pts += x.size
            parts += [g.to_ndarray().reshape(-1) for g in self._r.resample(f)]
        if end:
            parts += [g.to_ndarray().reshape(-1) for g in self._r.resample(None)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
