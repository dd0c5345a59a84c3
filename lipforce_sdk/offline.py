"""Offline causal pass over a whole clip: the same chunk computation as a live ``Session``, with
the audio features of the whole clip computed at once and no input buffering. A stream pushed in
any pieces must give exactly these frames (tests/test_streaming.py)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .audio import log_mel_clip
from .cache_plan import RingCachePlanner
from .face import FaceNotFoundError
from .geometry import FaceKeypoints
from .session import ChunkRenderer, Engine, FramePreparer, reference_frames_needed
from .tracking import default_face_source

__all__ = ["render_offline"]


def render_offline(engine: Engine, audio: np.ndarray, frames: np.ndarray, box=None, seed: int | None = None,
                   keypoints: Sequence[FaceKeypoints] | None = None, silence: str | None = None) -> np.ndarray:
    """audio: float32 mono at the model's rate; frames [F, H, W, 3] uint8 -> [F, H, W, 3] uint8.

    The face comes from ``keypoints`` (per frame), else a fixed ``box``, else the face mesh; the
    sink's reference (models with ``stream.sink == "reference"``) is the clip's first frames.
    ``silence``: as ``Engine.session``."""
    cfg, be = engine.config, engine.backend
    fv = cfg.video_frames_per_chunk
    n = len(frames)
    n_pad = -(-max(n, reference_frames_needed(cfg)) // fv) * fv
    idx = np.minimum(np.arange(n_pad), n - 1)  # the last partial chunk repeats the last frame
    source = default_face_source(box=box, keypoints=keypoints)
    prep = FramePreparer(cfg)
    views, last = [], None
    for i in range(n):
        kp = source.update(frames[i])
        kp = last if kp is None else kp
        if kp is None:
            raise FaceNotFoundError(f"no face found in frame {i} nor before it; pass box= or keypoints=")
        last = kp
        views.append(prep(frames[i], kp))
    mel = log_mel_clip(np.asarray(audio, np.float32), cfg.audio, cfg.stream.fps, n_pad)
    renderer = ChunkRenderer(be, cfg, cfg.schedule.seed if seed is None else seed, silence=silence)
    planner = RingCachePlanner.for_stream(cfg.stream)
    state = be.new_state()
    n_ref = reference_frames_needed(cfg)
    if n_ref:
        renderer.write_reference([views[i] for i in idx[:n_ref]], planner, state)
    out = np.empty_like(frames)
    for k in range(n_pad // fv):
        sel = idx[k * fv:(k + 1) * fv]
        gen = renderer.render([views[i] for i in sel], mel[k * fv:(k + 1) * fv], k, planner, state)
        for j, i in enumerate(range(k * fv, min((k + 1) * fv, n))):
            out[i] = renderer.composite(frames[i], views[i], gen[j])
    return out
