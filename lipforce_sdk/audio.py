"""Log-mel front end in NumPy (the runtime needs no torch), streaming and offline.

Clock: sample 0 is time 0; video frame i at ``fps`` owns samples ``[i*spf, (i+1)*spf)`` with
``spf = sample_rate / fps`` (640 at 16 kHz / 25 fps). Mel frame m is the STFT window that *ends* at
the end of hop m (causal framing), i.e. samples ``[(m+1)*hop - n_fft, (m+1)*hop)``; video frame i
owns mel frames ``[i*mpf, (i+1)*mpf)`` (mpf = spf / hop = 4), so its features need no sample past
its own end and a live stream waits for no extra audio. Samples before 0 are silence.

Features are computed one video frame at a time with fixed-shape arithmetic, so a stream cut into
any pieces gives bit-identical features to the whole clip at once.
"""

from __future__ import annotations

import numpy as np

from .config import AudioConfig

__all__ = ["mel_filterbank", "LogMelFrontEnd", "LogMelStream", "log_mel_clip", "speech_level", "speech_gain",
           "SPEECH_LEVEL", "QUIET_SPEECH"]

_LOG_FLOOR = 1e-6

# How loud the bundled model's training speech is (``speech_level`` of espeak-ng's sentences: 0.15-0.19).
# The model's mouth follows the level as well as the words: the same speech half as loud opens it
# visibly less (BENCHMARKS.md section 6, "How loud the speech is").
SPEECH_LEVEL = 0.17
QUIET_SPEECH = 0.5  # speech under this share of SPEECH_LEVEL is quiet enough to say so


def speech_level(samples: np.ndarray, piece: int = 640) -> float:
    """How loud speech is: the 95th percentile of its RMS over consecutive ``piece``-sample pieces
    (40 ms at 16 kHz), i.e. the level of its loud part, whatever the share of pauses."""
    x = np.asarray(samples, np.float64).reshape(-1)
    n = x.size // piece
    if n == 0:
        return float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return float(np.percentile(np.sqrt((x[:n * piece].reshape(n, piece) ** 2).mean(1)), 95))


def speech_gain(samples: np.ndarray, target: float = SPEECH_LEVEL, max_gain: float = 8.0) -> float:
    """The gain that brings quiet speech up to ``target`` (as ``speech_level`` measures it): at most
    ``max_gain``, and never so much that a sample would pass full scale; 1 for speech at or above
    ``target`` (louder speech is left as it is) and for digital silence."""
    x = np.asarray(samples, np.float32).reshape(-1)
    level = speech_level(x)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if level <= 0.0 or level >= target:
        return 1.0
    return max(1.0, min(target / level, max_gain, 1.0 / peak))


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filterbank, ``[n_mels, n_fft // 2 + 1]`` float32, area-normalised."""
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, mid, hi = hz[i], hz[i + 1], hz[i + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[i] = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return fb.astype(np.float32)


class LogMelFrontEnd:
    """Fixed-shape log-mel of one video frame at a time."""

    def __init__(self, cfg: AudioConfig, fps: float):
        self.cfg = cfg
        self.spf = int(round(cfg.sample_rate / fps))  # samples per video frame
        self.mpf = self.spf // cfg.hop_length  # mel frames per video frame
        self.pad_left = cfg.n_fft - cfg.hop_length  # a window starts this far before its hop (ends with it)
        n = np.arange(cfg.n_fft)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.n_fft)).astype(np.float32)  # periodic Hann
        self.fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels)  # [n_mels, n_fft/2+1]
        idx = np.arange(self.mpf)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :]
        self.frame_idx = idx  # [mpf, n_fft] offsets into the frame's sample span
        self.span = self.spf + cfg.n_fft - cfg.hop_length  # samples a video frame's mels read

    def span_start(self, i: int) -> int:
        """First sample (may be negative) read by video frame i's mel frames."""
        return i * self.spf - self.pad_left

    def samples_needed(self, i: int) -> int:
        """Total samples that must have arrived before video frame i's mels can be computed."""
        return self.span_start(i) + self.span

    def frame_mels(self, span: np.ndarray) -> np.ndarray:
        """span: ``[span]`` float32 samples -> ``[mpf, n_mels]`` float32 log-mel."""
        frames = span[self.frame_idx] * self.window  # [mpf, n_fft]
        power = np.abs(np.fft.rfft(frames, axis=-1)).astype(np.float32) ** 2  # [mpf, n_fft/2+1]
        mel = power @ self.fb.T  # [mpf, n_mels]
        return np.log(mel + _LOG_FLOOR).astype(np.float32)

    def silence_mels(self) -> np.ndarray:
        return self.frame_mels(np.zeros(self.span, np.float32))


class LogMelStream:
    """Streaming log-mel: accepts samples in any pieces, yields per-video-frame mels in order.

    Keeps only the samples still needed (bounded memory) and the mels of frames not yet consumed.
    """

    def __init__(self, cfg: AudioConfig, fps: float):
        self.fe = LogMelFrontEnd(cfg, fps)
        self.cfg = cfg
        self._silence = self.fe.silence_mels()
        self.reset()

    def reset(self) -> None:
        self._buf_start = -self.fe.pad_left  # absolute index of _buf[0]; negatives are silence
        self._buf = np.zeros(self.fe.pad_left, np.float32)
        self.samples_in = 0
        self.next_frame = 0  # next video frame whose mels will be computed
        self._mels: dict[int, np.ndarray] = {}

    def push(self, samples: np.ndarray) -> None:
        """samples: float32 mono in [-1, 1] (already validated)."""
        if samples.size:
            self._buf = np.concatenate([self._buf, samples.astype(np.float32, copy=False)])
            self.samples_in += samples.size
        fe = self.fe
        while self.samples_in >= fe.samples_needed(self.next_frame):
            off = fe.span_start(self.next_frame) - self._buf_start
            self._mels[self.next_frame] = fe.frame_mels(self._buf[off: off + fe.span])
            self.next_frame += 1
        # drop samples no future frame reads
        drop = fe.span_start(self.next_frame) - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop

    def frames_ready(self) -> int:
        """Video frames whose mels are known (frame indices ``< frames_ready()``)."""
        return self.next_frame

    def window(self, first: int, count: int) -> np.ndarray:
        """Encoder input for video frames ``[first, first+count)``: ``[count, Wm, n_mels]`` with
        ``Wm = (context + 1 + lookahead) * mpf``; frames before 0 are silence."""
        ctx, la = self.cfg.context_frames, self.cfg.lookahead_frames
        rows = []
        for i in range(first, first + count):
            rows.append(np.concatenate([self._get(j) for j in range(i - ctx, i + la + 1)], axis=0))
        return np.stack(rows)

    def _get(self, j: int) -> np.ndarray:
        if j < 0:
            return self._silence
        try:
            return self._mels[j]
        except KeyError:
            raise RuntimeError(f"mels of video frame {j} are not available (computed up to {self.next_frame - 1}, "
                               f"dropped before {min(self._mels, default=self.next_frame)})") from None

    def release_before(self, frame: int) -> None:
        """Forget mels of frames ``< frame`` (no longer needed as context)."""
        for j in [j for j in self._mels if j < frame]:
            del self._mels[j]


def log_mel_clip(audio: np.ndarray, cfg: AudioConfig, fps: float, num_frames: int) -> np.ndarray:
    """Offline: encoder windows for video frames ``[0, num_frames)`` of a whole clip,
    ``[num_frames, Wm, n_mels]``; audio past the end is silence. Same arithmetic as the stream."""
    fe = LogMelFrontEnd(cfg, fps)
    la = cfg.lookahead_frames
    need = fe.samples_needed(num_frames + la)
    padded = np.zeros(fe.pad_left + max(need, audio.size), np.float32)
    padded[fe.pad_left: fe.pad_left + audio.size] = audio
    last = num_frames + la
    mels = {j: fe.frame_mels(padded[fe.span_start(j) + fe.pad_left: fe.span_start(j) + fe.pad_left + fe.span])
            for j in range(last)}
    silence = fe.silence_mels()
    out = np.empty((num_frames, cfg.window_video_frames() * fe.mpf, cfg.n_mels), np.float32)
    for i in range(num_frames):
        out[i] = np.concatenate([mels[j] if j >= 0 else silence for j in range(i - cfg.context_frames, i + la + 1)])
    return out
