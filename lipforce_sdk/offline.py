"""Offline causal pass over a whole clip: the same chunk computation as a live ``Session``, with
the audio features of the whole clip computed at once and no input buffering. A stream pushed in
any pieces must give exactly these frames (tests/test_streaming.py)."""

from __future__ import annotations

import numpy as np

from .audio import log_mel_clip
from .cache_plan import RingCachePlanner
from .face import FaceTracker
from .session import ChunkRenderer, Engine

__all__ = ["render_offline"]


def render_offline(engine: Engine, audio: np.ndarray, frames: np.ndarray, box=None, seed: int | None = None) -> np.ndarray:
    """audio: float32 mono at the model's rate; frames [F, H, W, 3] uint8 -> [F, H, W, 3] uint8."""
    cfg, be = engine.config, engine.backend
    fv = cfg.video_frames_per_chunk
    n = len(frames)
    n_pad = -(-n // fv) * fv
    idx = np.minimum(np.arange(n_pad), n - 1)  # the last partial chunk repeats the last frame
    tracker = FaceTracker(cfg.stream.resolution, box=box)
    crops = [tracker.crop(frames[i]) for i in range(n)]
    mel = log_mel_clip(np.asarray(audio, np.float32), cfg.audio, cfg.stream.fps, n_pad)
    renderer = ChunkRenderer(be, cfg, cfg.schedule.seed if seed is None else seed)
    planner = RingCachePlanner.for_stream(cfg.stream)
    state = be.new_state()
    out = np.empty_like(frames)
    for k in range(n_pad // fv):
        sel = idx[k * fv:(k + 1) * fv]
        gen = renderer.render([crops[i].image for i in sel], mel[k * fv:(k + 1) * fv], k, planner, state)
        for j, i in enumerate(range(k * fv, min((k + 1) * fv, n))):
            out[i] = renderer.composite(frames[i], crops[i].box, gen[j])
    return out
