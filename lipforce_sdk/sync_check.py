"""Does the mouth move with the speech? A pixel-level lip-sync measure (NumPy / OpenCV, no torch).

Three pieces, usable on any clip (e.g. the output of ``lipforce run``):

- ``speech_envelope``: per video frame, the level of the audio that frame owns in the band
  ``SPEECH_BAND`` (600-2500 Hz), in dB above a floor (0 in silence).
- ``mouth_opening``: per video frame, how open the mouth is: the soft fraction of a window
  around the mouth that is much darker than the surrounding skin (the gap between open lips).
  The window follows a given mouth centre and scales with a given face size, so head motion
  and zoom do not change it; darkness is relative to the skin brightness in the same
  neighbourhood, so a global change of exposure or white level does not either.
- ``lip_sync_correlation``: Pearson correlation of the two over the clip after removing
  their slow trends (a 1 s moving average), maximised over a small lag (default +-2 frames,
  80 ms at 25 fps), with the lag. ``null_correlations`` gives the same statistic against the
  clip's own envelope shifted in time by 1 s or more: what a mouth that does not follow this
  speech scores. ``score_series`` gives the same statistic for an opening measured another
  way (e.g. from face landmarks, ``lipforce_sdk.face_quality``).

Mouth positions come from the caller (``mouth_centres`` / ``face_sizes``), from a
``face_boxes.json`` annotation file (``read_face_boxes``; the bundled clips have one) or from
the Haar face detector (``track_mouth``).

Why the band: the loudness of the whole signal also rises for sounds made with closed or
nearly closed lips (the burst of p/b, the hiss of s/f, the murmur of m/n), while the energy
between about 600 and 2500 Hz (the first two vocal-tract resonances) is high in vowels, where
the mouth is open. On 30 procedural talking-face clips of the training split (two sentences
each, about 150 frames, mouth opening exactly known from the phoneme timing), the exact lip
opening against the envelope scored 0.58 on average (lowest 0.43) with the whole band and 0.69
(lowest 0.58) with this band; against the envelope shifted by 1 s or more, 0.10 on average
(95th percentile 0.31) either way.

A face that speaks in step with the audio scores high (a mouth drawn open in proportion to
the envelope scores about 0.98); a still mouth, or one that moves out of step with the
speech, scores about 0.1 +- 0.15. ``SYNC_THRESHOLD`` (0.5) is the score of a face that clearly
speaks with the audio; the bundled default model's output of the bundled sample scores 0.63 (silence held still, the default).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

__all__ = [
    "SYNC_THRESHOLD",
    "SPEECH_BAND",
    "SyncScore",
    "speech_envelope",
    "mouth_opening",
    "lip_sync_correlation",
    "score_series",
    "null_correlations",
    "bootstrap_correlations",
    "pearson",
    "read_face_boxes",
    "track_mouth",
]

SYNC_THRESHOLD = 0.5  # lip_sync_correlation of a face that clearly speaks with the audio
SPEECH_BAND = (600.0, 2500.0)  # Hz: speech_envelope measures this band (see the module docstring)

# Mouth window, in face sizes around the mouth centre (x right, y down). The reference patch
# spans the lower face from below the nostrils to above the chin; the dark pixels are
# counted in an ellipse inside it, centred a little below the mouth centre because the jaw,
# and so the lower lip, drops as the mouth opens.
PATCH_X = (-0.27, 0.27)
PATCH_Y = (-0.10, 0.26)
ELLIPSE_CENTRE = (0.0, 0.05)
ELLIPSE_AXES = (0.21, 0.14)
PATCH_RES = 128  # canonical patch pixels per face size
SKIN_PERCENTILE = 70.0  # skin brightness: this percentile of the patch's luminance
DARK_FULL, DARK_NONE = 0.30, 0.60  # luminance / skin: counted fully below, not at all above
ENVELOPE_FLOOR_DB = 60.0  # envelope = dBFS + floor, clipped at 0
DETREND_S = 1.0  # lip_sync_correlation subtracts a moving average this long from both series
_SMOOTH = np.array([0.25, 0.5, 0.25])
# Haar face box -> mouth centre and face size (face box height, hairline to chin), measured
# on the bundled sample's 150 annotated frames (mean; spread 0.01 - 0.03)
_HAAR_MOUTH_Y = 0.807  # mouth centre at y0 + this x Haar box height
_HAAR_MOUTH_X = -0.021  # ... and at centre x + this x Haar box width
_HAAR_FACE_SIZE = 1.025  # face size = this x Haar box height


@dataclass(frozen=True)
class SyncScore:
    """Result of ``lip_sync_correlation``.

    ``correlation`` is the best Pearson correlation over the lags tried and ``lag`` the lag
    it was found at, in frames: ``lag > 0`` means the mouth follows the sound by ``lag``
    frames (``opening[t]`` against ``envelope[t - lag]``). ``by_lag`` maps each lag tried to
    its correlation; ``opening`` and ``envelope`` are the two series ``[F]`` as measured
    (before the trend is removed).
    ``fps``, ``max_lag`` and ``detrend_s`` are the settings it was measured with
    (``null_correlations`` repeats them). ``float(score)`` is ``correlation``.
    """

    correlation: float
    lag: int
    by_lag: dict
    opening: np.ndarray
    envelope: np.ndarray
    fps: float = 25.0
    max_lag: int = 2
    detrend_s: float = DETREND_S

    def __float__(self) -> float:
        return float(self.correlation)


def _smooth(x: np.ndarray) -> np.ndarray:
    if x.size < 3:
        return x.copy()
    p = np.pad(x, 1, mode="edge")
    return np.convolve(p, _SMOOTH, mode="valid")


def speech_envelope(
    audio: np.ndarray,
    sample_rate: int,
    fps: float,
    num_frames: int,
    *,
    band: tuple[float, float] | None = SPEECH_BAND,
    floor_db: float = ENVELOPE_FLOOR_DB,
    smooth: bool = True,
) -> np.ndarray:
    """Level of the speech per video frame: ``float64 [num_frames]`` in dB above ``-floor_db`` dBFS.

    Frame ``i`` owns samples ``[round(i * sr / fps), round((i + 1) * sr / fps))``. Their mean
    square ``p`` within ``band`` (``(low, high)`` Hz: the share of the frame's power in the
    DFT bins of the frame's own samples with ``low <= f < high``, by Parseval; ``None``: the
    whole signal) gives ``max(10 log10(p) + floor_db, 0)``: 0 in silence (and below
    ``-floor_db`` dBFS), about ``floor_db - 3`` for a full-scale sine in the band. Frames past
    the end of the audio are silent. With ``smooth`` the series is filtered with
    ``[1/4, 1/2, 1/4]`` (edges repeated).

    Args:
        audio: mono ``[N]`` float in ``[-1, 1]`` (or int16).
    """
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono [N], got shape {a.shape}; average the channels first")
    if a.dtype == np.int16:
        a = a.astype(np.float64) / 32768.0
    a = a.astype(np.float64, copy=False)
    if not (sample_rate > 0 and fps > 0):
        raise ValueError(f"sample_rate and fps must be > 0, got {sample_rate} and {fps}")
    if not (isinstance(num_frames, (int, np.integer)) and num_frames >= 1):
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if not floor_db > 0:
        raise ValueError(f"floor_db must be > 0, got {floor_db}")
    if band is not None and not (0.0 <= band[0] < band[1]):
        raise ValueError(f"band must be (low, high) Hz with 0 <= low < high, or None, got {band!r}")
    edges = np.rint(np.arange(num_frames + 1) * (sample_rate / fps)).astype(np.int64)
    padded = np.zeros(max(int(edges[-1]), a.size))
    padded[: a.size] = a
    if band is None:
        csum = np.concatenate([[0.0], np.cumsum(padded * padded)])
        ms = np.maximum(csum[edges[1:]] - csum[edges[:-1]], 0.0) / np.maximum(edges[1:] - edges[:-1], 1)
    else:
        ms = np.zeros(num_frames)
        weights: dict[int, np.ndarray] = {}  # frame length -> per-bin weight (frames are 1-2 lengths)
        for i in range(num_frames):
            x = padded[edges[i]: edges[i + 1]]
            m = x.size
            if m == 0:
                continue
            if m not in weights:
                freq = np.fft.rfftfreq(m, 1.0 / sample_rate)
                twice = (freq > 0) & (2 * np.arange(freq.size) != m)  # bins that stand for +f and -f
                weights[m] = ((freq >= band[0]) & (freq < band[1])) * np.where(twice, 2.0, 1.0) / (m * m)
            ms[i] = float(np.abs(np.fft.rfft(x)) ** 2 @ weights[m])
    db = 10.0 * np.log10(np.maximum(ms, 10.0 ** (-floor_db / 10.0) * 1e-3))
    env = np.maximum(db + floor_db, 0.0)
    return _smooth(env) if smooth else env


def _detrend(x: np.ndarray, window: int) -> np.ndarray:
    """``x`` minus its centred moving average over ``window`` (odd) samples, edges repeated."""
    if window <= 1:
        return x.copy()
    h = window // 2
    p = np.pad(x, h, mode="edge")
    c = np.concatenate([[0.0], np.cumsum(p)])
    return x - (c[window:] - c[:-window]) / window


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _patch_shape() -> tuple[int, int]:
    return (
        int(round((PATCH_Y[1] - PATCH_Y[0]) * PATCH_RES)),
        int(round((PATCH_X[1] - PATCH_X[0]) * PATCH_RES)),
    )


def _ellipse_weights() -> np.ndarray:
    ph, pw = _patch_shape()
    u = PATCH_X[0] + (np.arange(pw) + 0.5) / PATCH_RES
    v = PATCH_Y[0] + (np.arange(ph) + 0.5) / PATCH_RES
    r = np.hypot((u[None, :] - ELLIPSE_CENTRE[0]) / ELLIPSE_AXES[0],
                 (v[:, None] - ELLIPSE_CENTRE[1]) / ELLIPSE_AXES[1])
    return np.clip((1.0 - r) * 10.0, 0.0, 1.0)  # soft edge 0.1 of the axes wide


def _mouth_patch(frame: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray:
    """Luminance of the mouth window, resampled to ``_patch_shape()`` (float32, 0-255)."""
    h, w = frame.shape[:2]
    step = size / PATCH_RES  # frame pixels per patch pixel
    fx0, fy0 = cx + PATCH_X[0] * size, cy + PATCH_Y[0] * size
    fx1, fy1 = cx + PATCH_X[1] * size, cy + PATCH_Y[1] * size
    pad = 2 + int(math.ceil(2 * step))
    rx0, ry0 = max(0, int(math.floor(fx0)) - pad), max(0, int(math.floor(fy0)) - pad)
    rx1, ry1 = min(w, int(math.ceil(fx1)) + pad), min(h, int(math.ceil(fy1)) + pad)
    if rx1 - rx0 < 2 or ry1 - ry0 < 2:
        raise ValueError(
            f"mouth window ({fx0:.1f}, {fy0:.1f}, {fx1:.1f}, {fy1:.1f}) lies outside the "
            f"{w}x{h} frame; check the mouth centres (frame pixels) and face sizes"
        )
    roi = _luma(frame[ry0:ry1, rx0:rx1].astype(np.float32))
    if step > 1.0:  # low-pass before shrinking so the patch does not alias
        sigma = 0.5 * step
        roi = cv2.GaussianBlur(roi, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
    # patch pixel j has its centre at frame coordinate fx0 + (j + 0.5) * step, i.e. at OpenCV
    # index (centre of pixel i at i) fx0 + (j + 0.5) * step - 0.5 - rx0
    m = np.array([[step, 0.0, fx0 + 0.5 * step - 0.5 - rx0],
                  [0.0, step, fy0 + 0.5 * step - 0.5 - ry0]])
    ph, pw = _patch_shape()
    return cv2.warpAffine(roi, m, (pw, ph), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def mouth_opening(frames, mouth_centres, face_sizes) -> np.ndarray:
    """How open the mouth is in each frame: ``float64 [F]`` in ``[0, 1]``.

    For frame ``i`` the lower face around ``mouth_centres[i]`` is resampled to a patch of
    fixed size in face units (``PATCH_X`` x ``PATCH_Y`` times ``face_sizes[i]``). The skin
    brightness is the ``SKIN_PERCENTILE`` percentile of the patch's luminance; a pixel
    counts as open mouth by how far its luminance lies below the skin's (fully below
    ``DARK_FULL`` x skin, not at all above ``DARK_NONE`` x skin, linear in between). The
    result is the weighted share of such pixels in an ellipse around the lips
    (``ELLIPSE_CENTRE`` / ``ELLIPSE_AXES``): 0 for closed lips on even skin, growing with the
    dark gap of an open mouth. Teeth are not counted (only the dark gap is).

    Args:
        frames: RGB ``uint8`` ``[F, H, W, 3]`` (or a sequence of ``[H, W, 3]`` frames).
        mouth_centres: ``[F, 2]`` ``(x, y)`` in frame pixels (pixel ``i`` covers ``[i, i + 1)``).
        face_sizes: ``[F]`` or one number: face height in pixels, hairline to chin (the
            height of the ``face_box`` in ``face_boxes.json``).
    """
    n = len(frames)
    centres = np.asarray(mouth_centres, np.float64)
    if centres.shape != (n, 2):
        raise ValueError(f"mouth_centres must be [F, 2] = [{n}, 2] like the frames, got shape {centres.shape}")
    sizes = np.broadcast_to(np.asarray(face_sizes, np.float64), (n,)) if np.ndim(face_sizes) == 0 \
        else np.asarray(face_sizes, np.float64)
    if sizes.shape != (n,):
        raise ValueError(f"face_sizes must be [F] = [{n}] or one number, got shape {sizes.shape}")
    if not (np.all(np.isfinite(centres)) and np.all(np.isfinite(sizes)) and np.all(sizes >= 8)):
        raise ValueError("mouth_centres must be finite and face_sizes finite and >= 8 pixels")
    wgt = _ellipse_weights()
    wsum = float(wgt.sum())
    out = np.zeros(n)
    for i in range(n):
        f = np.asarray(frames[i])
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"frame {i} must be RGB uint8 [H, W, 3], got {f.dtype} {f.shape}")
        p = _mouth_patch(f, centres[i, 0], centres[i, 1], sizes[i])
        skin = float(np.percentile(p, SKIN_PERCENTILE))
        if skin < 1.0:  # a black window: nothing to compare with
            continue
        dark = np.clip((DARK_NONE - p / skin) / (DARK_NONE - DARK_FULL), 0.0, 1.0)
        out[i] = float((dark * wgt).sum()) / wsum
    return out


def pearson(x: np.ndarray, y: np.ndarray, min_std: float = 1e-9) -> float:
    """Pearson correlation of two ``[N]`` series; 0.0 when either is constant (std < ``min_std``)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError(f"need two [N] series of the same length N >= 3, got {x.shape} and {y.shape}")
    x = x - x.mean()
    y = y - y.mean()
    sx, sy = float(np.sqrt((x * x).mean())), float(np.sqrt((y * y).mean()))
    if sx < min_std or sy < min_std:
        return 0.0
    return float(np.clip((x * y).mean() / (sx * sy), -1.0, 1.0))


def read_face_boxes(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Mouth centres ``[F, 2]`` and face sizes ``[F]`` (face box heights) from a ``face_boxes.json``."""
    with open(path) as f:
        meta = json.load(f)
    frames = meta["frames"]
    centres = np.array([fr["mouth"] for fr in frames], np.float64)
    sizes = np.array([fr["face_box"][3] - fr["face_box"][1] for fr in frames], np.float64)
    return centres, sizes


def track_mouth(frames, detect_every: int = 5, detector=None) -> tuple[np.ndarray, np.ndarray]:
    """Mouth centres ``[F, 2]`` and face sizes ``[F]`` from a face detector, for clips without annotations.

    Runs ``detector`` (default ``HaarFaceDetector()``) on every ``detect_every``-th frame
    and the last one, maps each face box to a mouth centre and face size (ratios measured
    on the bundled sample's annotations) and interpolates linearly in between; frames
    before the first or after the last detection take its value.

    Raises:
        FaceNotFoundError: no face in any of the frames tried.
    """
    from .face import FaceNotFoundError, HaarFaceDetector

    n = len(frames)
    if n == 0:
        raise ValueError("no frames")
    if not (isinstance(detect_every, (int, np.integer)) and detect_every >= 1):
        raise ValueError(f"detect_every must be an int >= 1, got {detect_every!r}")
    det = detector if detector is not None else HaarFaceDetector()
    idx, rows = [], []
    for i in sorted(set(range(0, n, detect_every)) | {n - 1}):
        b = det.detect(np.asarray(frames[i]))
        if b is None:
            continue
        idx.append(i)
        rows.append((b.center[0] + _HAAR_MOUTH_X * b.width, b.y0 + _HAAR_MOUTH_Y * b.height,
                     _HAAR_FACE_SIZE * b.height))
    if not idx:
        raise FaceNotFoundError(
            f"no face found in any of the {n} frames tried; pass mouth_centres and face_sizes"
        )
    rows = np.array(rows)
    t = np.arange(n)
    cols = [np.interp(t, idx, rows[:, k]) for k in range(3)]
    return np.stack(cols[:2], axis=1), cols[2]


def lip_sync_correlation(
    video,
    audio,
    *,
    mouth_centres=None,
    face_sizes=None,
    fps: float | None = None,
    sample_rate: int = 16000,
    max_lag: int = 2,
    detrend_s: float = DETREND_S,
    band: tuple[float, float] | None = SPEECH_BAND,
) -> SyncScore:
    """Correlation between the mouth opening of a clip and its speech envelope.

    Both series first lose their slow trend: each has its centred moving average over
    ``detrend_s`` seconds subtracted (0 keeps them as they are). What is left is the
    syllable-rate movement, which a mouth that speaks shares with the sound; the slow part
    is dominated by things that are not speech (the mouth window drifting over the face
    as the head sways, a change of light), and on the bundled sample's still mouth it alone
    gives a correlation of 0.25 against 0.05 after the trend is removed.
    Then ``corr(opening[t], envelope[t - lag])`` for every ``lag`` in ``[-max_lag, max_lag]``,
    over the same frames ``[max_lag, F - max_lag)`` for every lag; the best (largest) one
    is returned with its lag. The lag search absorbs a fixed audio/video offset of up to
    ``max_lag`` frames (a mouth tends to open shortly before the sound, and models and
    encoders can shift the picture by a frame); with ``max_lag=0`` there is no search.

    Args:
        video: a video file, or RGB ``uint8`` frames ``[F, H, W, 3]``.
        audio: an audio file (or a video with a sound track), or mono samples ``[N]`` at
            ``sample_rate``, starting with frame 0.
        mouth_centres, face_sizes: see ``mouth_opening``; when not given, ``track_mouth``
            finds them with the Haar face detector.
        fps: the video's frame rate; read from the file when ``video`` is a path, else
            25 when not given.
        sample_rate: the rate ``audio`` samples are at (files are resampled to it).
        max_lag: largest lag tried, in frames.
        detrend_s: length of the moving average removed from both series, in seconds.
        band: the audio band of the envelope (see ``speech_envelope``).

    Returns:
        ``SyncScore`` (``float(score)`` is the correlation, in ``[-1, 1]``).
    """
    from .media import read_audio, read_video

    if isinstance(video, (str, os.PathLike)):
        frames, file_fps = read_video(video)
        fps = fps or file_fps
    else:
        frames = video
    fps = float(fps or 25.0)
    samples = read_audio(audio, sample_rate=sample_rate) if isinstance(audio, (str, os.PathLike)) else audio
    _check_lag_settings(len(frames), max_lag, detrend_s)
    n = len(frames)
    if mouth_centres is None or face_sizes is None:
        if mouth_centres is not None or face_sizes is not None:
            raise ValueError("give both mouth_centres and face_sizes, or neither")
        mouth_centres, face_sizes = track_mouth(frames)
    opening = mouth_opening(frames, mouth_centres, face_sizes)
    envelope = speech_envelope(samples, sample_rate, fps, n, band=band)
    return score_series(opening, envelope, fps=fps, max_lag=max_lag, detrend_s=detrend_s)


def _check_lag_settings(n: int, max_lag, detrend_s) -> None:
    if not detrend_s >= 0:
        raise ValueError(f"detrend_s must be >= 0 seconds, got {detrend_s}")
    if not (isinstance(max_lag, (int, np.integer)) and max_lag >= 0):
        raise ValueError(f"max_lag must be an int >= 0, got {max_lag!r}")
    if n - 2 * max_lag < 3:
        raise ValueError(f"{n} frames are too few for max_lag={max_lag} (need > 2 * max_lag + 2)")


def score_series(
    opening,
    envelope,
    *,
    fps: float = 25.0,
    max_lag: int = 2,
    detrend_s: float = DETREND_S,
) -> SyncScore:
    """``lip_sync_correlation``'s statistic for a mouth-opening series measured elsewhere.

    ``opening`` and ``envelope`` are ``[F]`` per-frame series (e.g. a lip opening from face
    landmarks and ``speech_envelope``); the trend removal, the lag search and the result are
    those of ``lip_sync_correlation``, so ``null_correlations`` applies to it as well.
    """
    op = np.asarray(opening, np.float64)
    ev = np.asarray(envelope, np.float64)
    if op.ndim != 1 or op.shape != ev.shape:
        raise ValueError(f"opening and envelope must be [F] series of the same length, got {op.shape} and {ev.shape}")
    if not (np.all(np.isfinite(op)) and np.all(np.isfinite(ev))):
        raise ValueError("opening and envelope must be finite (fill frames without a measurement first)")
    fps = float(fps)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    _check_lag_settings(op.size, max_lag, detrend_s)
    by_lag = _by_lag(*_detrended(op, ev, fps, detrend_s), max_lag)
    best = max(by_lag, key=lambda k: (by_lag[k], -abs(k)))
    return SyncScore(by_lag[best], best, by_lag, op, ev, fps, max_lag, detrend_s)


def _detrended(opening: np.ndarray, envelope: np.ndarray, fps: float, detrend_s: float):
    window = 2 * int(round(detrend_s * fps / 2.0)) + 1  # odd, ~detrend_s long
    return _detrend(opening, window), _detrend(envelope, window)


def _by_lag(op: np.ndarray, ev: np.ndarray, max_lag: int) -> dict:
    """``{lag: corr(op[t], ev[t - lag])}`` over the frames ``[max_lag, F - max_lag)`` for every lag."""
    n = op.size
    core = slice(max_lag, n - max_lag)
    return {lag: pearson(op[core], ev[max_lag - lag: n - max_lag - lag]) for lag in range(-max_lag, max_lag + 1)}


def null_correlations(score: SyncScore, min_shift_s: float = 1.0) -> np.ndarray:
    """What ``score``'s mouth scores against speech it does not follow: ``float64 [K]``.

    The same statistic as ``lip_sync_correlation`` (detrended, best over the same lags), with
    the clip's envelope circularly shifted by every whole number of frames from
    ``min_shift_s`` seconds to the clip length minus that: the envelope keeps its rhythm and
    level but no longer lines up with the mouth. A mouth that follows the speech scores well
    above these (e.g. above their 95th percentile); one that only moves at a speech-like rate
    scores among them.
    """
    n = score.opening.size
    k0 = int(math.ceil(min_shift_s * score.fps))
    if not (min_shift_s > 0 and n - 2 * k0 >= 1):
        raise ValueError(f"need min_shift_s > 0 and a clip longer than 2 x min_shift_s; got {min_shift_s} s "
                         f"for {n} frames at {score.fps} fps")
    op, ev = _detrended(score.opening, score.envelope, score.fps, score.detrend_s)
    return np.array([max(_by_lag(op, np.roll(ev, k), score.max_lag).values()) for k in range(k0, n - k0 + 1)])


def bootstrap_correlations(scores: Sequence[SyncScore], block_s: float = 1.0, resamples: int = 2000,
                           seed: int = 0) -> np.ndarray:
    """How much each score's statistic moves with the moments it happened to be measured on:
    ``float64 [resamples, len(scores)]``, a paired moving-block bootstrap.

    Each resample draws blocks of ``block_s`` seconds (whole frames, start anywhere a block and
    its lags fit) until it holds as many frames as the clip, and scores every series on the same
    frames: the trend removed over the whole clip as ``score_series`` does, then the best Pearson
    correlation over the same lags (``opening[t]`` against ``envelope[t - lag]``). Paired, so the
    differences of two columns (two models' outputs of one clip, one speech) give the spread of
    their difference, which is narrower than either's where both follow the same speech. Blocks
    keep a second of the series together (speech and mouth movement are correlated over tens of
    frames; frames drawn one by one would understate the spread)."""
    scores = list(scores)
    if not scores:
        raise ValueError("no scores to resample")
    n, fps, lag = scores[0].opening.size, scores[0].fps, scores[0].max_lag
    for sc in scores[1:]:
        if (sc.opening.size, sc.fps, sc.max_lag) != (n, fps, lag):
            raise ValueError("paired scores need the same frame count, fps and lags, got "
                             f"{(sc.opening.size, sc.fps, sc.max_lag)} and {(n, fps, lag)}")
    b = int(round(block_s * fps))
    if not (isinstance(resamples, (int, np.integer)) and resamples >= 1):
        raise ValueError(f"resamples must be an int >= 1, got {resamples!r}")
    if not (b >= 3 and n - 2 * lag >= b):
        raise ValueError(f"block_s={block_s} s is {b} frames: need >= 3 and at most the {n - 2 * lag} frames "
                         f"a {n}-frame clip has inside its lags")
    series = [_detrended(sc.opening, sc.envelope, sc.fps, sc.detrend_s) for sc in scores]
    rng = np.random.default_rng(seed)
    blocks = -(-(n - 2 * lag) // b)
    offs = np.arange(b)
    out = np.empty((resamples, len(scores)))
    for r in range(resamples):
        idx = (rng.integers(lag, n - lag - b + 1, blocks)[:, None] + offs).reshape(-1)
        for j, (op, ev) in enumerate(series):
            out[r, j] = max(pearson(op[idx], ev[idx - k]) for k in range(-lag, lag + 1))
    return out
