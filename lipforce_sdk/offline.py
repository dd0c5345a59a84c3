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
from .session import ChunkRenderer, Engine, FramePreparer, fill_lost, reference_frames_needed, session_exemplars
from .tracking import FaceSource, default_face_source

__all__ = ["render_offline"]


def render_offline(engine: Engine, audio: np.ndarray, frames: np.ndarray, box=None, seed: int | None = None,
                   keypoints: Sequence[FaceKeypoints] | None = None, silence: str | None = None,
                   face_source: FaceSource | None = None, exemplars: bool = True) -> np.ndarray:
    """audio: float32 mono at the model's rate; frames [F, H, W, 3] uint8 -> [F, H, W, 3] uint8.

    The face comes from ``face_source``, else ``keypoints`` (per frame), else a fixed ``box``,
    else the face mesh; the sink's reference (models with ``stream.sink == "reference"``) is the
    first frames of the first chunk with a face.
    ``silence``, ``exemplars``: as ``Engine.session``. Frames where the face is lost pass through unchanged, and
    lip sync starts afresh where it comes back, as in a ``Session``. ``FaceNotFoundError``: no
    frame has a face."""
    cfg, be = engine.config, engine.backend
    fv = cfg.video_frames_per_chunk
    n = len(frames)
    n_pad = -(-max(n, reference_frames_needed(cfg)) // fv) * fv
    idx = np.minimum(np.arange(n_pad), n - 1)  # the last partial chunk repeats the last frame
    source = face_source if face_source is not None else default_face_source(box=box, keypoints=keypoints)
    prep = FramePreparer(cfg)
    views = []
    for i in range(n):
        kp = source.update(frames[i])
        if kp is None:
            prep.reset()
        views.append(None if kp is None else prep(frames[i], kp))
    if all(v is None for v in views):
        raise FaceNotFoundError(f"no face found in any of the {n} frames; pass box= or keypoints=")
    mel = log_mel_clip(np.asarray(audio, np.float32), cfg.audio, cfg.stream.fps, n_pad)
    renderer = ChunkRenderer(be, cfg, cfg.schedule.seed if seed is None else seed, silence=silence,
                             exemplars=session_exemplars(engine, exemplars))
    planner = RingCachePlanner.for_stream(cfg.stream)
    state = be.new_state()
    n_ref = reference_frames_needed(cfg)
    ref = None  # the first frames of the first chunk with a face, as a Session takes them
    out = np.empty_like(frames)
    lost = False
    for k in range(n_pad // fv):
        sel = idx[k * fv:(k + 1) * fv]
        chunk = [views[i] for i in sel]
        real = range(k * fv, min((k + 1) * fv, n))
        if all(v is None for v in chunk):  # no face in the chunk: shown unchanged, the model does not run
            lost = True
            for i in real:
                out[i] = frames[i]
            continue
        if lost:
            renderer.restart(ref or [], planner, state)
            lost = False
        if n_ref and ref is None:
            first = np.minimum(np.arange(k * fv, k * fv + max(n_ref, fv)), n - 1)
            ref = fill_lost([views[i] for i in first])[:n_ref]
            renderer.write_reference(ref, planner, state)
        gen = renderer.render(fill_lost(chunk), mel[k * fv:(k + 1) * fv], k, planner, state)
        for i, image in zip(real, renderer.composite_many([frames[i] for i in real], [views[i] for i in real], gen)):
            out[i] = image
    return out
