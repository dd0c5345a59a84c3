"""Phonemes -> per-frame mouth parameters (visemes) with smooth coarticulation.

Mouth parameters, ``P = 4`` per video frame, each in [0, 1] (``PARAMS`` names them):

- ``open``: gap between the lips (0 closed, 1 wide open as in "ah");
- ``spread``: corners pulled back (1 as in "ee");
- ``round``: lips rounded and pushed forward, mouth narrower (1 as in "oo", "w");
- ``teeth``: how much of the teeth shows in the gap (1 as in "f", "s", "ee").

Each espeak-ng phoneme has a target for the four parameters and a *dominance* per
parameter: how strongly it pulls that parameter towards its target (Cohen & Massaro's
coarticulation model). Bilabial closure (p, b, m) and lip rounding (w, oo) dominate; k, g, h
take the shape of their neighbours. The continuous track on a 1 ms grid is

    value(t) = sum_s D_s(t) T_s / sum_s D_s(t),   D_s(t) = a_s exp(-(dist(t, core_s) / tau)^2)

with ``core_s`` the middle of phoneme ``s`` (its whole span, less 25% at each end) and
``tau`` = 35 ms. Diphthongs ("aI", "oU", ...) are two targets, one per half. Frame ``i`` at
25 fps is the *mean* of the track over its own time ``[i/25, (i+1)/25)`` — the same samples
the SDK's audio front end assigns to frame ``i`` — so audio and mouth share one clock.
"""

from __future__ import annotations

import numpy as np

from .speech import FPS, Phoneme, Speech

__all__ = ["PARAMS", "P", "REST", "phoneme_targets", "mouth_track", "frame_params"]

PARAMS: tuple[str, ...] = ("open", "spread", "round", "teeth")
P = len(PARAMS)
REST = np.zeros(P, np.float32)  # closed, relaxed mouth

_TAU = 0.035  # s, spread of a phoneme's influence beyond its core
_GRID = 0.001  # s, resolution of the continuous track

# name: (open, spread, round, teeth), dominance (open, spread, round, teeth)
_V = (1.0, 1.0, 1.0, 1.0)  # vowels: moderate dominance everywhere
_T: dict[str, tuple[tuple[float, float, float, float], tuple[float, float, float, float]]] = {
    # vowels (espeak-ng English mnemonics)
    "a": ((0.75, 0.35, 0.00, 0.50), _V),
    "a#": ((0.50, 0.15, 0.00, 0.35), _V),
    "aa": ((0.85, 0.20, 0.00, 0.40), _V),
    "A:": ((0.90, 0.10, 0.05, 0.35), _V),
    "A@": ((0.85, 0.10, 0.10, 0.35), _V),
    "@": ((0.35, 0.05, 0.05, 0.25), (0.6, 0.6, 0.6, 0.6)),
    "@-": ((0.30, 0.05, 0.05, 0.25), (0.5, 0.5, 0.5, 0.5)),
    "@2": ((0.35, 0.05, 0.05, 0.25), (0.6, 0.6, 0.6, 0.6)),
    "@5": ((0.30, 0.00, 0.25, 0.20), (0.6, 0.6, 0.6, 0.6)),
    "@L": ((0.35, 0.10, 0.00, 0.45), (0.8, 0.8, 0.8, 0.8)),
    "3": ((0.35, 0.05, 0.25, 0.25), (0.7, 0.7, 0.7, 0.7)),
    "3:": ((0.40, 0.05, 0.35, 0.25), _V),
    "e": ((0.55, 0.50, 0.00, 0.60), _V),
    "E": ((0.60, 0.45, 0.00, 0.60), _V),
    "i": ((0.25, 0.75, 0.00, 0.70), _V),
    "i:": ((0.22, 0.90, 0.00, 0.80), (1.2, 1.5, 1.2, 1.2)),
    "I": ((0.30, 0.60, 0.00, 0.65), _V),
    "I#": ((0.30, 0.50, 0.00, 0.60), _V),
    "I2": ((0.30, 0.55, 0.00, 0.60), _V),
    "0": ((0.70, 0.00, 0.45, 0.25), _V),
    "O": ((0.60, 0.00, 0.60, 0.20), _V),
    "O:": ((0.60, 0.00, 0.70, 0.15), (1.0, 1.0, 1.3, 1.0)),
    "O2": ((0.60, 0.00, 0.60, 0.20), _V),
    "O@": ((0.55, 0.00, 0.65, 0.15), _V),
    "o@": ((0.50, 0.00, 0.70, 0.15), _V),
    "o:": ((0.45, 0.00, 0.80, 0.10), (1.0, 1.0, 1.3, 1.0)),
    "U": ((0.30, 0.00, 0.70, 0.05), (1.0, 1.0, 1.3, 1.0)),
    "u:": ((0.20, 0.00, 1.00, 0.00), (1.0, 1.0, 2.0, 1.0)),
    "V": ((0.55, 0.15, 0.00, 0.35), _V),
    # consonants
    "p": ((0.00, 0.10, 0.00, 0.00), (8.0, 1.0, 0.5, 6.0)),
    "b": ((0.00, 0.10, 0.00, 0.00), (8.0, 1.0, 0.5, 6.0)),
    "m": ((0.00, 0.10, 0.00, 0.00), (8.0, 1.0, 0.5, 6.0)),
    "f": ((0.08, 0.25, 0.00, 0.95), (5.0, 1.0, 0.5, 5.0)),
    "v": ((0.08, 0.25, 0.00, 0.95), (5.0, 1.0, 0.5, 5.0)),
    "T": ((0.15, 0.25, 0.00, 0.90), (2.0, 0.6, 0.5, 3.0)),
    "D": ((0.15, 0.25, 0.00, 0.90), (1.5, 0.5, 0.4, 2.0)),
    "s": ((0.10, 0.55, 0.00, 0.90), (2.0, 1.0, 0.6, 3.0)),
    "z": ((0.10, 0.50, 0.00, 0.90), (1.5, 0.8, 0.5, 2.5)),
    "S": ((0.15, 0.00, 0.65, 0.75), (2.0, 1.5, 2.0, 2.0)),
    "Z": ((0.15, 0.00, 0.60, 0.75), (2.0, 1.5, 2.0, 2.0)),
    "tS": ((0.12, 0.00, 0.60, 0.75), (2.0, 1.5, 2.0, 2.0)),
    "dZ": ((0.12, 0.00, 0.60, 0.75), (2.0, 1.5, 2.0, 2.0)),
    "t": ((0.18, 0.30, 0.00, 0.65), (0.8, 0.4, 0.3, 0.8)),
    "t#": ((0.18, 0.30, 0.00, 0.65), (0.8, 0.4, 0.3, 0.8)),
    "t2": ((0.18, 0.30, 0.00, 0.65), (0.8, 0.4, 0.3, 0.8)),
    "d": ((0.18, 0.30, 0.00, 0.65), (0.8, 0.4, 0.3, 0.8)),
    "n": ((0.18, 0.25, 0.00, 0.55), (0.6, 0.3, 0.3, 0.6)),
    "l": ((0.25, 0.25, 0.00, 0.55), (0.6, 0.3, 0.3, 0.6)),
    "k": ((0.30, 0.20, 0.00, 0.40), (0.3, 0.2, 0.2, 0.3)),
    "g": ((0.30, 0.20, 0.00, 0.40), (0.3, 0.2, 0.2, 0.3)),
    "N": ((0.25, 0.20, 0.00, 0.35), (0.3, 0.2, 0.2, 0.3)),
    "h": ((0.35, 0.10, 0.00, 0.30), (0.2, 0.2, 0.2, 0.2)),
    "x": ((0.30, 0.10, 0.00, 0.30), (0.2, 0.2, 0.2, 0.2)),
    "?": ((0.20, 0.10, 0.00, 0.20), (0.2, 0.2, 0.2, 0.2)),
    "r": ((0.20, 0.00, 0.45, 0.30), (1.0, 1.0, 1.2, 1.0)),
    "r-": ((0.20, 0.00, 0.40, 0.30), (1.0, 1.0, 1.2, 1.0)),
    "w": ((0.08, 0.00, 0.95, 0.00), (2.5, 2.0, 4.0, 2.0)),
    "W": ((0.08, 0.00, 0.95, 0.00), (2.5, 2.0, 4.0, 2.0)),
    "j": ((0.20, 0.60, 0.00, 0.55), (1.0, 1.0, 1.0, 1.0)),
}
# diphthongs and triphthongs: their parts, in order, over equal shares of the span
_PARTS: dict[str, tuple[str, ...]] = {
    "aI": ("a", "I"), "aI3": ("a", "I"), "aI@": ("a", "I", "@"), "aU": ("a", "U"), "aU@": ("a", "U", "@"),
    "eI": ("e", "I"), "e@": ("E", "@"), "i@": ("I", "@"), "i@3": ("I", "@"), "oU": ("o:", "U"),
    "OI": ("O", "I"), "U@": ("U", "@"), "u@": ("U", "@"), "ju:": ("j", "u:"),
}
_PAUSE_TARGET = ((0.0, 0.0, 0.0, 0.0), (1.5, 1.0, 1.0, 1.5))
_MARKS = (";", "'", ",", "%", "=", ":")  # modifiers espeak-ng reports as phonemes: no mouth shape of their own
_VOWEL_START = "aAeEiIoOuUV03@"


def phoneme_targets(name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(target [P], dominance [P])]`` for one phoneme (several parts for a diphthong).

    Unknown names fall back on their class: a pause (``_...``), a vowel (first character a
    vowel letter: schwa) or a consonant (alveolar, weak).
    """
    if name in _PARTS:
        return [phoneme_targets(p)[0] for p in _PARTS[name]]
    if name.startswith("_") or name == "":
        t = _PAUSE_TARGET
    elif name in _T:
        t = _T[name]
    elif name[0] in _VOWEL_START:
        t = _T["@"]
    else:
        t = _T["t"]
    return [(np.asarray(t[0], np.float64), np.asarray(t[1], np.float64))]


def _segments(phonemes: tuple[Phoneme, ...]) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    segs: list[tuple[float, float, np.ndarray, np.ndarray]] = []
    for ph in phonemes:
        if ph.end <= ph.start:
            continue
        if ph.name in _MARKS and segs:  # extend the previous phoneme over a modifier
            s0, _, t, d = segs[-1]
            segs[-1] = (s0, ph.end, t, d)
            continue
        parts = phoneme_targets(ph.name)
        step = (ph.end - ph.start) / len(parts)
        for k, (t, d) in enumerate(parts):
            segs.append((ph.start + k * step, ph.start + (k + 1) * step, t, d))
    return segs


def mouth_track(phonemes: tuple[Phoneme, ...], duration: float, grid: float = _GRID) -> np.ndarray:
    """Continuous mouth parameters on a ``grid``-second grid over ``[0, duration)``: ``[T, P]``.

    Time before the first and after the last phoneme is silence (rest pose).
    """
    n = max(int(np.ceil(duration / grid - 1e-9)), 1)
    t = (np.arange(n) + 0.5) * grid  # [T] grid cell centres
    segs = _segments(phonemes)
    # implicit rest before and after, so edges relax to the rest pose
    end = max([s[1] for s in segs], default=0.0)
    segs = ([(-1.0, 0.0, *map(np.asarray, _PAUSE_TARGET))] + segs
            + [(end, max(end, duration) + 1.0, *map(np.asarray, _PAUSE_TARGET))])
    num = np.zeros((n, P))
    den = np.full((n, P), 1e-12)
    for s0, s1, target, dom in segs:
        trim = 0.25 * (s1 - s0)
        c0, c1 = s0 + trim, s1 - trim
        lo = np.searchsorted(t, c0 - 4 * _TAU)
        hi = np.searchsorted(t, c1 + 4 * _TAU)
        if hi <= lo:
            continue
        tt = t[lo:hi]
        dist = np.maximum(0.0, np.maximum(c0 - tt, tt - c1))
        w = np.exp(-((dist / _TAU) ** 2))[:, None] * dom[None, :]  # [t, P]
        num[lo:hi] += w * target[None, :]
        den[lo:hi] += w
    return np.clip(num / den, 0.0, 1.0).astype(np.float32)


def frame_params(speech: Speech, num_frames: int | None = None, fps: float = FPS) -> np.ndarray:
    """Mouth parameters per video frame, ``[F, P]`` float32: frame ``i`` is the mean over
    ``[i/fps, (i+1)/fps)``. ``num_frames`` defaults to ``speech.num_frames(fps)``; frames past
    the end of the speech are at rest."""
    f = speech.num_frames(fps) if num_frames is None else int(num_frames)
    per = int(round(1.0 / (fps * _GRID)))
    if abs(per * _GRID * fps - 1.0) > 1e-9:
        raise ValueError(f"fps={fps} must divide {1 / _GRID:g} (the track is on a {_GRID * 1e3:g} ms grid)")
    track = mouth_track(speech.phonemes, f / fps)  # [f*per, P]
    return track[: f * per].reshape(f, per, P).mean(axis=1)
