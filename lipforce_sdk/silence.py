"""Silence stays still: a per-frame gate from the audio that holds the mouth closed between words.

A talking-head model driven by audio keeps moving the mouth a little in silence (its output is a
function of features that are never exactly "nothing"), and users of real-time lip sync see it
as lips that quiver while nobody speaks. The runtime holds the mouth instead: where the gate
``g`` (per latent frame, in [0, 1]) is below 1, the chunk's clean latents fade toward a target,

    x0 <- T + g * (x0 - T),    T = the held mouth inside the mask's hole, the frame's condition outside,

where the held mouth is the model's own x0 (inside the hole) at the first frame of the silence,
its mouth once the speech has ended, kept until the gate is back at 1. So ``g = 1`` is the
model's output (speech), ``g = 0`` one mouth that stays put in the eye-aligned crop however long
the silence, and the cache pass that follows writes what is shown (``ChunkRenderer._still``).
The person's own smile or resting mouth stays theirs: nothing is pasted from elsewhere.

The gate (``SilenceGate``), per video frame, from the log-mels the session computes anyway:

- **level**: band power of the frame's own mel frames in the speech band (600-2500 Hz, as
  ``sync_check``'s envelope), in dBFS (calibrated on a full-scale 1 kHz sine: -3.01 dBFS);
- **silent** when the level is below ``floor_dbfs`` or more than ``below_db`` under the running
  speech peak (the largest level so far, falling ``decay_db`` per frame, never below
  ``peak_floor_dbfs``): the level of a recording does not matter, only its dynamics;
- **distance** ``d`` of frame ``i`` to the nearest speaking frame, looking back through the
  stream (state kept across chunks) and forward through the audio look-ahead the encoder reads
  anyway (``audio.lookahead_frames``), so no latency is added;
- ``g = clip(1 - (d - hold) / ramp, 0, 1)``: 1 on speaking frames and the ``hold`` frames next to
  them, then a ``ramp``-frame fade to 0. Pauses shorter than ``2 (hold + ramp)`` frames between
  words never reach 0 (the model's own closing there); a stretch that starts the stream silent
  starts still.

Everything is computed in frame order from bit-identical mels, so a stream cut into any pieces
gates exactly as the whole clip (``Session``, ``render_offline`` and ``AvatarSession`` agree).
"""

from __future__ import annotations

import math

import numpy as np

from .audio import _LOG_FLOOR, LogMelFrontEnd, mel_filterbank
from .config import SILENCE_MODES, AudioConfig
from .sync_check import SPEECH_BAND

__all__ = ["SilenceGate", "SILENCE_MODES", "band_level_dbfs"]


def _band_rows(cfg: AudioConfig, band: tuple[float, float]) -> np.ndarray:
    """Mel rows whose centre frequency lies in ``band``."""
    fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels)
    freqs = np.linspace(0.0, cfg.sample_rate / 2, fb.shape[1])
    centre = freqs[np.argmax(fb, axis=1)]
    rows = np.flatnonzero((centre >= band[0]) & (centre < band[1]))
    if rows.size == 0:
        raise ValueError(f"no mel band has its centre in {band} Hz with n_mels={cfg.n_mels}")
    return rows


def band_level_dbfs(mels: np.ndarray, rows: np.ndarray, offset_db: float) -> float:
    """``mels`` ``[m, n_mels]`` log-mel of one video frame -> its speech-band level in dBFS."""
    p = np.exp(mels[:, rows].astype(np.float64)) - _LOG_FLOOR
    return 10.0 * math.log10(max(float(p.sum(axis=1).mean()), 1e-30)) + offset_db


class SilenceGate:
    """Per-frame gate ``g`` (1 speech, 0 silence) from the encoder's mel windows, in frame order.

    ``__call__(mel)`` takes the next chunk's windows ``[Fv, Wm, n_mels]`` (``LogMelStream.window``)
    and returns ``g`` ``[Fv]`` float32; ``reset()`` starts a new stream.
    """

    def __init__(self, cfg: AudioConfig, fps: float, *, below_db: float = 20.0, floor_dbfs: float = -60.0,
                 decay_db: float = 0.02, peak_floor_dbfs: float = -45.0, hold: int = 1, ramp: int = 2):
        if not (below_db > 0 and decay_db >= 0 and hold >= 0 and ramp >= 1):
            raise ValueError(f"need below_db > 0, decay_db >= 0, hold >= 0, ramp >= 1; got {below_db}, {decay_db}, "
                             f"{hold}, {ramp}")
        self.cfg, self.fps = cfg, fps
        self.below_db, self.floor_dbfs, self.decay_db = below_db, floor_dbfs, decay_db
        self.peak_floor_dbfs, self.hold, self.ramp = peak_floor_dbfs, int(hold), int(ramp)
        fe = LogMelFrontEnd(cfg, fps)
        self.mpf = fe.mpf
        self.rows = _band_rows(cfg, SPEECH_BAND)
        t = (np.arange(fe.span) + 1000) / cfg.sample_rate  # a full-scale 1 kHz sine: -3.01 dBFS
        sine = fe.frame_mels(np.sin(2 * np.pi * 1000.0 * t).astype(np.float32))
        self.offset_db = -10.0 * math.log10(2.0) - band_level_dbfs(sine, self.rows, 0.0)
        self.reset()

    def reset(self) -> None:
        self._next = 0  # next frame whose gate is asked for
        self._known = 0  # frames whose silent flag is known: [0, _known)
        self._speech: dict[int, bool] = {}
        self._peak = -math.inf
        self._last_speech = None  # index of the last speaking frame before _next

    def level(self, mels: np.ndarray) -> float:
        """Speech-band level in dBFS of one video frame's ``[mpf, n_mels]`` log-mels."""
        return band_level_dbfs(mels, self.rows, self.offset_db)

    def _classify(self, level: float) -> bool:
        self._peak = max(level, self._peak - self.decay_db, self.peak_floor_dbfs)
        return level >= self.floor_dbfs and level >= self._peak - self.below_db

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        ctx, la, m = self.cfg.context_frames, self.cfg.lookahead_frames, self.mpf
        fv = mel.shape[0]
        first = self._next
        for k in range(fv):  # frame first + k's window holds frames first + k - ctx ... first + k + la
            for j in range(la + 1):
                f = first + k + j
                if f == self._known:
                    row = (ctx + j) * m
                    self._speech[f] = self._classify(self.level(mel[k, row:row + m]))
                    self._known += 1
        g = np.empty(fv, np.float32)
        for k in range(fv):
            i = first + k
            if self._speech[i]:
                self._last_speech = i
            back = math.inf if self._last_speech is None else i - self._last_speech
            fwd = next((j for j in range(1, la + 1) if self._speech.get(i + j, False)), math.inf)
            d = min(back, fwd)
            g[k] = 1.0 if d <= self.hold else max(0.0, 1.0 - (d - self.hold) / self.ramp)
            self._speech.pop(i - 1, None)
        self._next = first + fv
        return g
