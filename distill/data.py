"""Seeded samples: talking-face clips and source/target pairs, split into train and held-out.

A sample is fully determined by ``(index, split)``: the sentence, voice and rate (from that
split's sentences), the silence around the speech, the identity and the motion. Held-out
samples use held-out sentences *and* identities/motions from a seed range that training never
draws (``HELD_OUT_SEED_BASE`` and up), so a held-out score measures generalisation to new
speech and new faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .faces import Identity, Motion, Pair, make_pair, render_clip
from .speech import Speech, SpeechSpec, sample_spec, synthesize
from .visemes import frame_params

__all__ = ["SPLITS", "HELD_OUT_SEED_BASE", "Clip", "clip_spec", "make_clip", "make_sample_pair"]

SPLITS = ("train", "held_out")
HELD_OUT_SEED_BASE = 1_000_000


def _rng(index: int, split: str, tag: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    return np.random.default_rng([int(index), SPLITS.index(split), tag])


@dataclass(frozen=True)
class ClipSpec:
    speech: SpeechSpec
    lead: float  # seconds of silence before the speech
    tail: float
    identity_seed: int
    motion_seed: int


def clip_spec(index: int, split: str = "train") -> ClipSpec:
    """What ``make_clip(index, split)`` will say and show (no synthesis, no rendering)."""
    r = _rng(index, split, 0xC1)
    spec = sample_spec(r, split)
    lead, tail = float(r.uniform(0.1, 0.5)), float(r.uniform(0.1, 0.4))
    base = 0 if split == "train" else HELD_OUT_SEED_BASE
    return ClipSpec(spec, lead, tail, base + int(index), base + int(index))


@dataclass(frozen=True, eq=False)
class Clip:
    """One in-sync talking-face clip: ``frames`` ``[F, S, S, 3]`` uint8, ``audio``
    ``[F * 640]`` float32 16 kHz, ``params`` ``[F, P]`` mouth parameters."""

    frames: np.ndarray
    audio: np.ndarray
    params: np.ndarray
    speech: Speech
    identity: Identity
    motion: Motion
    spec: ClipSpec


def make_clip(index: int, split: str = "train", size: int = 128, cache=True) -> Clip:
    """Clip ``index`` of ``split``; deterministic."""
    cs = clip_spec(index, split)
    sp = synthesize(cs.speech, cache=cache).padded(cs.lead, cs.tail)
    f = sp.num_frames()
    sp = sp.fit_frames(f)
    idt, mo = Identity.random(cs.identity_seed), Motion.random(cs.motion_seed)
    params = frame_params(sp, f)
    return Clip(render_clip(idt, mo, params, size), sp.audio, params, sp, idt, mo, cs)


def make_sample_pair(index: int, split: str = "train", size: int = 128, cache=True) -> Pair:
    """A source/target ``Pair``: identity, motion and target speech of clip ``index``; the
    source mouth says another sentence of the same split."""
    cs = clip_spec(index, split)
    r = _rng(index, split, 0x5A)
    other = sample_spec(r, split)
    tgt = synthesize(cs.speech, cache=cache).padded(cs.lead, cs.tail)
    src = synthesize(other, cache=cache).padded(float(r.uniform(0.1, 0.5)), 0.3)
    return make_pair(Identity.random(cs.identity_seed), Motion.random(cs.motion_seed), src, tgt, size)
