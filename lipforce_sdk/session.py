"""The streaming runtime: ``Engine`` (loaded once) creates ``Session``s (one per stream).

Clock: audio samples and video frames share one clock from 0; frame i covers
``[i / fps, (i + 1) / fps)``. A chunk (``chunk_frames`` latent frames = ``chunk_frames * Tc`` video
frames) runs as soon as all its frames and their audio, plus the encoder's look-ahead, have
arrived. Inputs are validated before anything is changed, so a rejected push leaves the session
exactly as it was.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .audio import LogMelStream
from .backends.base import Backend, BackendError, host_array
from .batching import stream_scope
from .cache_plan import RingCachePlanner
from .config import ConfigError, ModelConfig
from .exemplars import LayeredExemplars, StreamExemplars
from .face import FaceBox, FaceNotFoundError, FaceTracker
from .geometry import (AlignedCrop, CropAligner, FaceKeypoints, GreenLimit, MouthMask, limit_green,
                       match_edge, mouth_mask_for)
from .geometry import guidance_region as guidance_region_map
from .sampler import audio_guided, fill_hole, hole_of, two_step_sample
from .silence import SILENCE_MODES, SilenceGate
from .tracking import BoxFaceSource, FaceSource, HaarFaceSource, KeypointsFaceSource, default_face_source

__all__ = ["Engine", "Session", "ChunkRenderer", "FramePreparer", "FrameView", "OutputFrame", "SessionStats", "InputError",
           "BACKENDS", "default_model_dir", "reference_frames_needed"]

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def default_model_dir() -> Path:
    """The bundled default model (the ``tiny`` preset)."""
    return Path(__file__).parent / "assets" / "default"


class InputError(ValueError):
    """Bad input to ``Session.push``; the message names the value and the fix. Nothing was consumed."""


@dataclass(frozen=True)
class OutputFrame:
    index: int  # video frame index on the session clock
    timestamp: float  # seconds, = index / fps
    image: np.ndarray  # [H, W, 3] uint8 RGB, the full frame with the re-rendered mouth
    box: FaceBox | None  # the axis-aligned frame box around the mouth crop; None: no face (passed through)
    crop: AlignedCrop | None = None  # the eye-aligned mouth crop used for this frame


@dataclass
class SessionStats:
    """Counters and latency of one stream; memory stays bounded over hours (the percentiles are
    over the last ``LATENCY_WINDOW`` chunks, the totals over the whole stream)."""

    LATENCY_WINDOW = 4096
    frames_in: int = 0
    frames_out: int = 0
    audio_samples_in: int = 0
    chunks: int = 0
    frames_without_face: int = 0  # frames passed through unchanged: the face was lost
    resumes: int = 0  # times lip sync started afresh after the face came back
    time_to_first_frame_ms: float | None = None  # first push() -> first frame out (wall clock)
    chunk_latency_ms: deque = field(default_factory=lambda: deque(maxlen=SessionStats.LATENCY_WINDOW))
    compute_ms_total: float = 0.0

    def record_chunk(self, ms: float, frames: int) -> None:
        self.chunk_latency_ms.append(ms)
        self.compute_ms_total += ms
        self.chunks += 1
        self.frames_out += frames

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.chunk_latency_ms, q)) if self.chunk_latency_ms else None

    @property
    def p50_ms(self) -> float | None:
        return self.percentile(50)

    @property
    def p95_ms(self) -> float | None:
        return self.percentile(95)

    @property
    def p99_ms(self) -> float | None:
        return self.percentile(99)

    @property
    def fps(self) -> float | None:
        """Output frames per second of compute (chunk time only, not waiting for input)."""
        total = self.compute_ms_total / 1000.0
        return self.frames_out / total if total > 0 else None

    def summary(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in, "frames_out": self.frames_out, "chunks": self.chunks,
            "frames_without_face": self.frames_without_face, "resumes": self.resumes,
            "time_to_first_frame_ms": self.time_to_first_frame_ms,
            "chunk_ms_p50": self.p50_ms, "chunk_ms_p95": self.p95_ms, "chunk_ms_p99": self.p99_ms, "fps": self.fps,
        }


class Engine:
    """A loaded model shared by any number of sessions (it holds no per-stream state).

    With ``max_batch > 1`` the engine owns a ``lipforce_sdk.batching.BatchScheduler``
    (``engine.batching``; its ``stats`` count the calls per batch size): sessions pushed from
    different threads have their calls of the same graph run together, up to ``max_batch`` per
    call; a call waits at most ``max_wait_ms`` for others to join it (plus the time its thread
    takes to wake), and not at all where no other session could join."""

    def __init__(self, backend: Backend, model_dir: Path | None = None, max_batch: int = 1,
                 max_wait_ms: float = 2.0, guidance: float | None = None, guidance_region: str | None = None,
                 steps: int | None = None):
        self.backend = backend
        self.config: ModelConfig = backend.config
        given = {k: v for k, v in (("guidance", guidance), ("guidance_region", guidance_region), ("steps", steps))
                 if v is not None}
        if given:  # the model's schedule.guidance / guidance_region / steps, replaced for this engine's sessions
            config = dataclasses.replace(self.config, schedule=dataclasses.replace(self.config.schedule, **given))
            try:
                config.validate()
            except ConfigError as e:
                raise InputError(str(e)) from None
            self.config = config
        self.model_dir = model_dir
        self.batching = None
        from .exemplars import load_exemplars

        # an enrolled avatar's own mouths (lipforce_sdk.exemplars); None for a general model
        self.exemplars = load_exemplars(model_dir)
        if max_batch != 1:
            from .batching import BatchScheduler

            if getattr(backend, "batcher", None) is not None:
                raise BackendError("this backend already batches for another Engine; load the model again")
            self.batching = BatchScheduler(backend, max_batch, max_wait_ms)
            backend.batcher = self.batching

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "torch", max_batch: int = 1,
             max_wait_ms: float = 2.0, guidance: float | None = None, guidance_region: str | None = None,
             steps: int | None = None, **backend_options) -> "Engine":
        """Load a model directory (default: the bundled ``tiny`` model) with a backend:
        ``torch`` (weights), ``onnxruntime`` (exported graphs) or ``tensorrt`` (built engines).

        ``max_batch``: run the graph calls of up to this many concurrent sessions in one call
        (``lipforce_sdk.batching``; ONNX Runtime and TensorRT need a model exported with
        ``lipforce export --max-batch N``, N >= max_batch); ``max_wait_ms``: the longest a call
        waits for others to join it. ``guidance``: the audio guidance of the model's second step
        (``ScheduleConfig.guidance``; default the model's own; 1 = off, each other value costs one
        more DiT pass per chunk); ``guidance_region``: where it acts, ``"lips"`` or ``"crop"``
        (``ScheduleConfig.guidance_region``; default the model's own); ``steps``: 2 runs both
        denoising steps, 1 step 2 alone from the filled condition, one DiT pass per chunk fewer
        (``ScheduleConfig.steps``; default the model's own)."""
        model_dir = Path(path) if path is not None else default_model_dir()
        if backend not in BACKENDS:
            raise BackendError(f"backend={backend!r} is not one of {BACKENDS}")
        if backend == "torch":
            from .backends.torch_backend import TorchBackend

            be = TorchBackend.load(model_dir, **backend_options)
        elif backend == "onnxruntime":
            from .backends.onnxruntime_backend import OnnxRuntimeBackend

            be = OnnxRuntimeBackend.load(model_dir, **backend_options)
        else:
            from .backends.tensorrt_backend import TensorRTBackend

            be = TensorRTBackend.load(model_dir, **backend_options)
        return cls(be, model_dir, max_batch=max_batch, max_wait_ms=max_wait_ms, guidance=guidance,
                   guidance_region=guidance_region, steps=steps)

    def session(self, box: FaceBox | tuple[float, float, float, float] | None = None, seed: int | None = None,
                tracker: FaceTracker | None = None, face_source: FaceSource | None = None,
                keypoints: Sequence[FaceKeypoints] | None = None, reference: Sequence[np.ndarray] | None = None,
                avatar=None, silence: str | None = None, face: str | tuple[float, float] = "largest",
                exemplars: bool = True) -> "Session":
        """A new stream.

        ``avatar``: a prepared avatar (``lipforce_sdk.avatar.Avatar``, or its directory, or a model
        directory holding one): the session streams its idle loop and ``push`` takes audio only
        (``AvatarSession``); no face tracking, no encoding of the frames.

        Where the face comes from, first match wins: ``face_source`` (any ``FaceSource``),
        ``keypoints`` (per frame), ``tracker`` (a ``FaceTracker``: Haar detection or its fixed
        box), ``box`` (a fixed face-crop box (x0, y0, x1, y1) in frame pixels, with a mean-face
        template), else the face mesh (falling back to Haar detection). ``face``: which face the
        mesh follows where several are seen: ``"largest"``, ``"center"`` (nearest the frame's
        centre) or a point ``(x, y)`` in frame pixels (the face nearest it); it keeps that face
        until it is lost, then chooses again.

        ``reference``: full frames of the person whose clean mouth crops fill the cache's sink
        (models with ``stream.sink == "reference"``); default: the stream's first frames with a face.

        ``silence``: ``"still"`` holds the mouth still while the audio is silent (the model's
        mouth at the start of the silence, with a short fade at each end; ``lipforce_sdk.silence``),
        ``"model"`` shows the model's output throughout; default: the model's own
        ``stream.silence`` (``"model"`` for one enrolled from a talking clip, which learned its
        person's pauses), else ``"still"`` for the models the gate was measured on
        (``stream.fill == "reference"``, the bundled one), else ``"model"``.

        ``exemplars``: paste through mouth exemplars (``lipforce_sdk.exemplars``): an enrolled
        avatar's (the generated mouth's fine detail from the person's own frames), else, for a
        general model, the finest detail of the stream's own first 2 s of frames with a face
        (each frame's crop kept once that frame is shown); ``False`` pastes the model's crop as
        it is.
        """
        if avatar is not None:
            from .avatar import AvatarSession

            given = [n for n, v in (("box", box), ("tracker", tracker), ("face_source", face_source),
                                    ("keypoints", keypoints), ("reference", reference)) if v is not None]
            if given:
                raise InputError(f"avatar= streams the avatar's own frames; drop {', '.join(given)}=")
            return AvatarSession(self, avatar, seed=seed, silence=silence, exemplars=exemplars)
        if face_source is None:
            if keypoints is not None:
                face_source = KeypointsFaceSource(keypoints)
            elif tracker is not None:
                face_source = HaarFaceSource(tracker)
            else:
                face_source = default_face_source(box=box, select=face)
        return Session(self, face_source=face_source, seed=seed, reference=reference, silence=silence,
                       exemplars=exemplars)

    def __repr__(self) -> str:
        batch = f", max_batch={self.batching.max_batch}" if self.batching is not None else ""
        return f"Engine({self.config.name!r}, backend={self.backend.name!r}, dir={str(self.model_dir)!r}{batch})"


@dataclass(frozen=True)
class FrameView:
    """What the model sees of one frame: the aligned mouth crop, its mask, where it came from."""

    crop: AlignedCrop
    image: np.ndarray  # [S, S, 3] uint8
    mask: MouthMask
    keypoints: FaceKeypoints  # frame pixels


class FramePreparer:
    """Frame + keypoints -> ``FrameView``: the steady eye-aligned crop (``CropAligner``) and the
    mouth mask from the keypoints mapped into the crop. One per stream (the aligner smooths)."""

    def __init__(self, cfg: ModelConfig):
        self.size = cfg.stream.resolution
        self.aligner = CropAligner(self.size, fps=cfg.stream.fps)

    def reset(self) -> None:
        self.aligner.reset()

    def __call__(self, frame: np.ndarray, kp: FaceKeypoints) -> FrameView:
        ac = self.aligner(kp)
        kc = kp.map(ac.to_crop_affine())
        return FrameView(crop=ac, image=ac.crop(frame), mask=mouth_mask_for(kc, self.size), keypoints=kp)


def fill_lost(views: Sequence["FrameView | None"]) -> list["FrameView"]:
    """The model's input for a chunk where some frames have no face (``None``): each takes the
    nearest frame's view that has one (earlier first). Those frames are shown unchanged; the
    model only needs a full chunk."""
    have = [i for i, v in enumerate(views) if v is not None]
    if not have:
        raise ValueError("fill_lost: no frame of the chunk has a face")
    return [v if v is not None else views[min(have, key=lambda j: (abs(j - i), j > i))] for i, v in enumerate(views)]


class ChunkRenderer:
    """The computation of one chunk, shared by ``Session`` and the offline causal pass: mask the
    source mouth, encode audio and video, two-step sample with the cache, decode, composite."""

    def __init__(self, backend: Backend, cfg: ModelConfig, seed: int, silence: str | None = None,
                 exemplars=None):
        self.backend, self.cfg, self.seed = backend, cfg, seed
        self.exemplars = exemplars  # lipforce_sdk.exemplars: Mouth-, Stream- or LayeredExemplars, or None
        self.silence = silence_mode(cfg, silence)
        self.edge_match = edge_match_on()
        self.green_limit = green_limit_on()
        self.green = GreenLimit()  # the person's own G - R over the stream's input crops so far
        self.gate = SilenceGate(cfg.audio, cfg.stream.fps) if self.silence == "still" else None
        a = cfg.audio
        self._null_tokens = np.zeros((1, cfg.video_frames_per_chunk, a.tokens_per_frame, a.token_dim), np.float32)
        self._null_on_backend = None  # the same on the backend, converted at first use (``null_tokens``)
        self._region_on_backend = None  # where step 2's guidance acts, on the backend (``guidance_region``)
        self._fill = None  # stream.fill == "reference": the first reference frame's latents [1, z, 1, h, w]
        self.reset()

    @property
    def null_tokens(self):
        """The null (zero) audio tokens ``[1, Fv, tokens, dim]`` as the backend's array, converted once
        per renderer (the reference pass and the guided step's null pass read them every chunk)."""
        if self._null_on_backend is None:
            self._null_on_backend = self.backend.asarray(self._null_tokens)
        return self._null_on_backend

    @property
    def guidance_region(self):
        """Where step 2's audio guidance acts (``ScheduleConfig.guidance_region``): ``None`` for the
        whole crop, else ``geometry.guidance_region`` (the lips' or the mouth's box) as the backend's
        array ``[1, 1, 1, h, w]`` (made once)."""
        if self.cfg.schedule.guidance_region == "crop":
            return None
        if self._region_on_backend is None:
            cfg = self.cfg
            self._region_on_backend = self.backend.asarray(
                guidance_region_map(cfg.schedule.guidance_region, cfg.stream.resolution, cfg.latent_hw)[None, None, None])
        return self._region_on_backend

    def noise(self, chunk_index: int):
        cfg = self.cfg
        h, w = cfg.latent_hw
        rng = np.random.default_rng([self.seed, chunk_index])
        shape = (1, cfg.latent_channels, cfg.stream.chunk_frames, h, w)
        return (self.backend.asarray(rng.standard_normal(shape, dtype=np.float32)),
                self.backend.asarray(rng.standard_normal(shape, dtype=np.float32)))

    def _pixels(self, views: Sequence[FrameView]) -> tuple[np.ndarray, np.ndarray]:
        """(unmasked frames, masked frames) ``[1, 3, Fv, S, S]`` in [-1, 1]."""
        imgs = np.stack([v.image for v in views])  # [Fv, S, S, 3] uint8
        full = np.empty((1, 3) + imgs.shape[:3], np.float32)  # written in place: one pass per step
        np.divide(imgs.transpose(3, 0, 1, 2), np.float32(127.5), out=full[0], dtype=np.float32)
        full -= np.float32(1.0)
        keep = np.float32(1.0) - np.stack([v.mask.hard for v in views]).astype(np.float32)  # [Fv, S, S]
        return full, full * keep

    def _mask(self, views: Sequence[FrameView]) -> np.ndarray:
        """The DiT's mask ``[1, Tc, C, h, w]`` (video frame ``c * Tc + j`` -> channel ``j`` of latent frame ``c``)."""
        cfg = self.cfg
        tc, c = cfg.vae.temporal_compression, cfg.stream.chunk_frames
        lat = np.stack([v.mask.latent(cfg.vae.spatial_compression) for v in views])  # [Fv, h, w]
        return np.ascontiguousarray(lat.reshape(c, tc, *lat.shape[1:]).transpose(1, 0, 2, 3)[None])

    def _filled(self, cond: Any, mask: np.ndarray) -> Any:
        """The condition as the DiT takes it: with ``stream.fill == "reference"`` the hole holds the
        first reference frame's latents."""
        if self.cfg.stream.fill != "reference":
            return cond
        if self._fill is None:
            raise RuntimeError("stream.fill='reference' needs the reference written first (write_reference)")
        return fill_hole(cond, self.backend.asarray(np.ascontiguousarray(hole_of(mask))), self._fill)

    def reference_latents(self, views: Sequence[FrameView], state: Any) -> list[tuple[Any, Any]]:
        """Per chunk of reference frames: (latents of the unmasked crops, latents of the masked
        crops), encoded in that order (a temporal encoder's cache then holds the masked view)."""
        be, fv = self.backend, self.cfg.video_frames_per_chunk
        out = []
        for k in range(0, len(views), fv):
            full, src = self._pixels(views[k:k + fv])
            x0 = be.encode_video(full, state)
            out.append((x0, be.encode_video(src, state)))
        return out

    def condition_latents(self, views: Sequence[FrameView], state: Any) -> Any:
        """The masked-source latents of one chunk of frames (the DiT's condition)."""
        return self.backend.encode_video(self._pixels(views)[1], state)

    def write_reference(self, views: Sequence[FrameView], planner: RingCachePlanner, state: Any,
                        latents: Sequence[tuple[Any, Any]] | None = None) -> None:
        """The sink: clean reference crops written by a ``t = 0`` pass per chunk of frames (latents
        of the unmasked crop as the clean chunk, the masked crop as the condition, no audio).
        ``latents``: their ``reference_latents`` computed before (a prepared avatar's, host arrays)."""
        be, fv = self.backend, self.cfg.video_frames_per_chunk
        given = latents is not None
        if not given:
            latents = self.reference_latents(views, state)
        for k, (x0, cond) in zip(range(0, len(views), fv), latents):
            if given:
                x0, cond = be.asarray(x0), be.asarray(cond)
            if k == 0 and self.cfg.stream.fill == "reference":
                self._fill = x0[:, :, :1]
            mask = self._mask(views[k:k + fv])
            be.dit_step(x0, 0.0, self._filled(cond, mask), be.asarray(mask), self.null_tokens,
                        planner.plan(), state)
            planner.commit()

    def render(self, views: Sequence[FrameView], mel: np.ndarray, chunk_index: int, planner: RingCachePlanner,
               state: Any, cond: Any = None) -> np.ndarray:
        """views: Fv frames; mel [Fv, Wm, n_mels] -> generated crops [Fv, S, S, 3] uint8.
        ``cond``: the chunk's ``condition_latents`` computed before (a prepared avatar's, host array)."""
        be = self.backend
        mask_np = self._mask(views)
        mask = be.asarray(mask_np)
        audio_tokens = be.encode_audio(np.ascontiguousarray(mel[None]))
        cond = self.condition_latents(views, state) if cond is None else be.asarray(cond)
        cond = self._filled(cond, mask_np)
        noise, eps2 = self.noise(chunk_index)
        plan = planner.plan()

        sched = self.cfg.schedule

        def audio_step(x_t, t):
            return be.dit_step(x_t, t, cond, mask, audio_tokens, plan, state)

        def null_step(x_t, t):
            return be.dit_step(x_t, t, cond, mask, self.null_tokens, plan, state)

        region = self.guidance_region if sched.guidance != 1.0 else None
        step = audio_guided(audio_step, null_step, sched.guidance, sched.t_land, region)

        x0 = two_step_sample(step, noise, eps2, self.cfg.schedule, finish=self._still(mel, cond, mask_np),
                             condition=cond)
        planner.commit()
        gen = be.decode(x0, state)[0].transpose(1, 2, 3, 0)  # [Fv, S, S, 3] in [-1, 1]
        return np.clip((gen + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)

    def _still(self, mel: np.ndarray, cond: Any, mask: np.ndarray):
        """The silence gate of this chunk as a ``finish`` for ``two_step_sample``; ``None`` when the
        gate is off, or every frame speaks and no silence is being held (the model's x0 as it is).

        Where the gate is below 1, a latent frame fades toward the held mouth: the model's own x0
        inside the mask's hole from the first frame of the silence (its mouth after the speech
        ended), the frame's condition outside it; held until the gate is back at 1."""
        if self.gate is None:
            return None
        g = self.gate(mel)
        if np.all(g >= 1.0) and self._held is None:
            return None
        tc = self.cfg.vae.temporal_compression
        g_lat = g.reshape(-1, tc).mean(axis=1)  # per latent frame
        hole = hole_of(mask)  # [1, 1, C, h, w]
        be = self.backend

        def finish(x0):
            x, c = host_array(x0).astype(np.float32, copy=True), host_array(cond).astype(np.float32)
            for k, gk in enumerate(g_lat):
                if gk >= 1.0:
                    self._held = None
                    continue
                if self._held is None:
                    self._held = x[:, :, k].copy()
                target = c[:, :, k] + hole[:, :, k] * (self._held - c[:, :, k])
                x[:, :, k] = target + np.float32(gk) * (x[:, :, k] - target)
            return be.asarray(x)

        return finish

    def restart(self, reference: Sequence[FrameView], planner: RingCachePlanner, state: Any) -> None:
        """Lip sync starts afresh mid-stream (the face came back after it was lost): empty caches,
        the sink rewritten from ``reference`` (views), the gate's history forgotten. Nothing from
        before the gap carries over, as at the start of a stream."""
        self.backend.reset_state(state)
        planner.reset()
        self.reset()
        if reference:
            self.write_reference(reference, planner, state)

    def reset(self) -> None:
        """A new stream: the silence gate forgets its history (the fill is rewritten with the
        reference), exemplars gathered from the stream are dropped."""
        self._held = None  # the silence gate's held mouth latents [1, z, h, w]
        if self.gate is not None:
            self.gate.reset()
        if hasattr(self.exemplars, "reset"):  # gathered from the stream
            self.exemplars.reset()
        self.green.reset()

    def composite_many(self, frames: Sequence[np.ndarray], views: Sequence[FrameView | None],
                       gens: Sequence[np.ndarray] | None) -> list[np.ndarray]:
        """``composite`` of each (frame, view, generated crop), in order; a frame without a face
        (``view`` ``None``) comes back as it is (``gens`` may be ``None`` where no frame has one).
        The frames of a chunk are pasted on the process's composite threads (``composite_threads``;
        the same pixels as one after another) where the picture is large enough to pay
        (``COMPOSITE_THREADS_MIN_SIDE``). While the stream's exemplars still gather, a frame finds the
        ones pasted before it: the chunk's crops are then kept first (``add_many``) and each frame
        refined from what was held before its own."""
        out = list(frames)
        faced = [j for j, v in enumerate(views) if v is not None]
        fs, vs, gs = [frames[j] for j in faced], [views[j] for j in faced], [gens[j] for j in faced]
        ex = self.exemplars
        pool = _composite_pool()
        gathering = ex is not None and getattr(ex, "gathering", False)
        limits = [self.green_limit_for(v) for v in vs]  # in frame order, before any thread
        if (pool is None or len(fs) < 2 or self._picture_side(vs[0]) < COMPOSITE_THREADS_MIN_SIDE
                or (gathering and not hasattr(ex, "add_many"))):
            pasted = [self.composite(f, v, g, None, x) for f, v, g, x in zip(fs, vs, gs, limits)]
        elif gathering:  # the chunk's crops are kept first; each frame is then refined from what was held before it
            pasted = pool.map(self.composite, fs, vs, gs, ex.add_many(fs, [v.crop for v in vs], pool), limits)
        else:
            pasted = pool.map(self.composite, fs, vs, gs, [None] * len(fs), limits)
        for j, image in zip(faced, pasted):
            out[j] = image
        return out

    def _picture_side(self, view: FrameView) -> int:
        """The side of the picture a frame's paste works on: the exemplars' size (the face's own size
        in the frame where the stream's are kept at it), else the crop's."""
        ex = self.exemplars
        if ex is None:
            return view.crop.size
        return ex.size_for(view.crop) if hasattr(ex, "size_for") else ex.size

    def green_limit_for(self, view: FrameView) -> float | None:
        """The stream's next frame's mouth colour limit (``geometry.GreenLimit``: the person's own
        ``G - R`` over the input crops so far, this one included); ``None`` with the limit off."""
        if not self.green_limit:
            return None
        return self.green.see(view.image, view.keypoints.map(view.crop.to_crop_affine()))

    def composite(self, frame: np.ndarray, view: FrameView, gen: np.ndarray, held: int | None = None,
                  green: float | None = None) -> np.ndarray:
        """The generated crop pasted into the frame with the mouth mask's soft weights, matched to
        the frame at the mask's edge first (``geometry.match_edge``, unless ``LIPFORCE_EDGE_MATCH=0``),
        then through the mouth exemplars where the renderer has them. Exemplars gathered from the
        stream take this frame's crop after it is pasted: a frame never finds its own mouth
        (``held``: they hold it already, kept by ``add_many``; it is refined from the ``held`` crops
        kept before its own, what this paste one frame after another would use).
        Where they are kept at the face's own size in the frame (``StreamExemplars.size_for``), the
        generated crop is enlarged to it (bicubic) and pasted from there (``detail``). Its mouth is
        kept no greener than ``green`` (``green_limit_for``, taken here where not given)."""
        ex, soft = self.exemplars, view.mask.soft
        if green is None:
            green = self.green_limit_for(view)
        gen = fit_to_frame(gen, view.image, view.mask.hard, view.keypoints.map(view.crop.to_crop_affine()),
                           self.edge_match, green)
        if ex is None:
            return view.crop.paste(frame, gen, soft)
        if held is not None:
            return view.crop.paste(frame, ex.detail(gen, view.crop, soft, upto=held), soft)
        out = view.crop.paste(frame, ex.detail(gen, view.crop, soft), soft)
        if hasattr(ex, "add"):  # gathered from the stream
            ex.add(frame, view.crop)
        return out


def composite_threads() -> int:
    """Threads a process pastes a chunk's frames on (``ChunkRenderer.composite_many``): the
    ``LIPFORCE_COMPOSITE_THREADS`` environment variable, else up to 4 (a chunk's frames), at most the
    CPUs; 1 pastes one frame after another."""
    env = os.environ.get(COMPOSITE_THREADS_ENV)
    if env is not None and env.strip():
        try:
            n = int(env)
        except ValueError:
            raise InputError(f"{COMPOSITE_THREADS_ENV}={env!r}: give a whole number of threads (1: none)") from None
        if n < 1:
            raise InputError(f"{COMPOSITE_THREADS_ENV}={env!r}: give at least 1 (1: frames pasted one after another)")
        return n
    return max(1, min(4, os.cpu_count() or 1))


def _switch_on(name: str, on: str, off: str) -> bool:
    """An on/off environment variable ``name``: unset or empty is on; 1 on, 0 off; anything else is refused
    naming what each does (``on``, ``off``)."""
    env = os.environ.get(name)
    if env is None or not env.strip():
        return True
    if env.strip() not in ("0", "1"):
        raise InputError(f"{name}={env!r}: give 1 ({on}, the default) or 0 ({off})")
    return env.strip() == "1"


def edge_match_on() -> bool:
    """Whether generated crops are matched to the frame at the mask's edge before the paste
    (``geometry.match_edge``): the ``LIPFORCE_EDGE_MATCH`` environment variable, 1 (the default) or 0."""
    return _switch_on(EDGE_MATCH_ENV, "match the seam", "paste as drawn")


def green_limit_on() -> bool:
    """Whether a generated mouth is kept from turning greener than the person's own
    (``geometry.limit_green``): the ``LIPFORCE_GREEN_LIMIT`` environment variable, 1 (the default) or 0."""
    return _switch_on(GREEN_LIMIT_ENV, "limit the mouth's green", "as drawn")


def fit_to_frame(gen: np.ndarray, image: np.ndarray, hard: np.ndarray, kp_crop: FaceKeypoints, edge_match: bool = True,
                 green: float | None = None) -> np.ndarray:
    """A generated crop made ready for the paste: matched to the input crop ``image`` at the edge
    of the hard mask (``geometry.match_edge``) where asked (``edge_match_on``), then its mouth kept
    no greener than ``green`` (``geometry.limit_green``, the stream's ``GreenLimit``; ``None``: as
    drawn; ``kp_crop``: the frame's keypoints in crop pixels)."""
    if edge_match:
        gen = match_edge(gen, image, hard)
    return limit_green(gen, kp_crop, green)


EDGE_MATCH_ENV = "LIPFORCE_EDGE_MATCH"
GREEN_LIMIT_ENV = "LIPFORCE_GREEN_LIMIT"
COMPOSITE_THREADS_ENV = "LIPFORCE_COMPOSITE_THREADS"
# below this picture side (px) a frame's paste takes ~1 ms and threads cost more than they save
# (measured on 2 cores, 4 frames: 128 px 3.0 -> 3.3 ms on 2 threads; 224 px 11.7 -> 8.0; 512 px 61 -> 33)
COMPOSITE_THREADS_MIN_SIDE = 192
_POOL: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: it makes its own pool
    os.register_at_fork(after_in_child=_POOL.clear)


def _composite_pool() -> ThreadPoolExecutor | None:
    """The process's composite threads (one pool, shared by its sessions); ``None`` for 1 thread."""
    n = composite_threads()
    if n < 2:
        return None
    with _POOL_LOCK:
        pool = _POOL.get(n)
        if pool is None:
            pool = _POOL[n] = ThreadPoolExecutor(n, thread_name_prefix="lipforce-composite")
        return pool


def session_exemplars(engine, exemplars: bool = True):
    """The mouth exemplars a new stream of ``engine`` pastes through: the stream's own first seconds
    (``StreamExemplars``, one per stream), after the model's own where it has them (an enrolled
    avatar's, ``lipforce_sdk.exemplars``; ``LayeredExemplars``: the stream's then only add the
    detail of a face larger than the crop); ``None`` with ``exemplars=False``."""
    if not exemplars:
        return None
    own = getattr(engine, "exemplars", None)
    if own is None:
        return StreamExemplars.for_fps(engine.config.stream.fps)
    # after an enrolled avatar's own: the settings its figures were measured with (BENCHMARKS.md section 8)
    return LayeredExemplars(own, StreamExemplars.for_fps(engine.config.stream.fps, large=None))


def silence_mode(cfg: ModelConfig, silence: str | None) -> str:
    """``silence``: ``"still"`` (the gate holds the mouth while nobody speaks) or ``"model"`` (the
    model's output throughout); ``None``: the model's own ``stream.silence`` (``"model"`` for a model
    enrolled from a talking clip), where it has none ``"still"`` for models with ``stream.fill ==
    "reference"`` (where it was measured), else ``"model"``."""
    if silence is None:
        silence = cfg.stream.silence
    if silence is None:
        return "still" if cfg.stream.fill == "reference" else "model"
    if silence not in SILENCE_MODES:
        raise InputError(f"silence={silence!r}; choose one of {', '.join(map(repr, SILENCE_MODES))}")
    return silence


def reference_frames_needed(cfg: ModelConfig) -> int:
    """Video frames the sink's reference takes (0 where the sink holds the first chunk)."""
    return cfg.stream.sink_frames * cfg.vae.temporal_compression if cfg.stream.sink == "reference" else 0


class Session:
    """One stream: ``push(audio, frame)`` in, lip-synced ``OutputFrame``s out.

    Where the face source finds no face (turned away, occluded, out of frame), the frames come
    out unchanged (``OutputFrame.box`` is ``None``) and a chunk with no face does not run the
    model; where the face comes back, lip sync starts afresh (empty caches, the sink's reference
    rewritten: nothing stale from before the gap). Frames before the face first appears pass
    through the same way; the sink's reference then comes from the first frames with a face."""

    def __init__(self, engine: Engine, face_source: FaceSource | None = None, seed: int | None = None,
                 reference: Sequence[np.ndarray] | None = None, preparer: FramePreparer | None = None,
                 silence: str | None = None, exemplars: bool = True):
        cfg = engine.config
        self.engine, self.cfg, self.backend = engine, cfg, engine.backend
        self.sample_rate = cfg.audio.sample_rate
        self.fps = cfg.stream.fps
        self.seed = cfg.schedule.seed if seed is None else int(seed)
        composite_threads()  # a bad LIPFORCE_COMPOSITE_THREADS is refused here, before any frame
        self._fv = cfg.video_frames_per_chunk
        self._n_ref = reference_frames_needed(cfg)
        self.face_source = face_source if face_source is not None else default_face_source()
        self.preparer = preparer if preparer is not None else FramePreparer(cfg)  # frame + keypoints -> FrameView
        self.state = self.backend.new_state()
        self.planner = RingCachePlanner.for_stream(cfg.stream)
        self.mel = LogMelStream(cfg.audio, self.fps)
        self.renderer = ChunkRenderer(self.backend, cfg, self.seed, silence=silence,
                                      exemplars=session_exemplars(engine, exemplars))
        self._reset_stream()
        self._reference_frames = None if reference is None else self._check_reference(reference)

    # ---------------- public API ----------------
    def push(self, audio=None, frame: np.ndarray | None = None, sample_rate: int | None = None) -> list[OutputFrame]:
        """Feed any number of audio samples (mono float32 in [-1, 1] or int16) and/or one video
        frame (``[H, W, 3]`` uint8 RGB). Returns the frames whose chunk completed (maybe none)."""
        if self._ended:
            raise InputError("push() after flush(): the stream has ended; call reset() to start a new one")
        a = self._check_audio(audio, sample_rate)
        f = self._check_frame(frame) if frame is not None else None
        if a.size == 0 and f is None:
            raise InputError("push() got no audio samples and no frame; pass audio=<samples>, frame=<HxWx3 uint8>, or both")
        view = None
        if f is not None:
            view = self._view(f)
        if self._t_first_push is None:
            self._t_first_push = time.perf_counter()
        if a.size:
            self.mel.push(a)
            self.stats.audio_samples_in += a.size
        if f is not None:
            if self._frame_hw is None:
                self._frame_hw = f.shape[:2]
            self._pending.append((f, view))
            self.stats.frames_in += 1
        return self._drain()

    def flush(self) -> list[OutputFrame]:
        """End of stream: complete the last partial chunk (repeating the last frame, silence for
        missing audio) and return the remaining real frames."""
        if self._ended:
            return []
        out: list[OutputFrame] = []
        if self._pending:
            self._stream_end = self._next_frame + len(self._pending)  # padding frames are not returned
            while len(self._pending) % self._fv or len(self._pending) < self._first_need():
                self._pending.append(self._pending[-1])
            self._pad_audio(self._next_frame + len(self._pending))
            out = self._drain()
        self._ended = True
        return out

    def reset(self) -> None:
        """Forget the stream (caches, buffers, face track, stats); keep the engine."""
        self.backend.reset_state(self.state)
        self.face_source.reset()
        self.preparer.reset()
        self._reset_stream()

    # ---------------- internals ----------------
    def _pad_audio(self, frames: int) -> None:
        """Silence after the audio pushed so far, up to what the first ``frames`` frames need
        (their look-ahead included): the end of a stream."""
        need = self.mel.fe.samples_needed(frames - 1 + self.cfg.audio.lookahead_frames)
        missing = need - self.mel.samples_in
        if missing > 0:
            self.mel.push(np.zeros(missing, np.float32))

    def _reset_stream(self) -> None:
        self.planner.reset()
        self.renderer.reset()
        self.mel.reset()
        self._pending: list[tuple[np.ndarray, FrameView]] = []
        self._next_frame = 0  # index of the first pending frame
        self._chunk_index = 0
        self._frame_hw: tuple[int, int] | None = None
        self._ended = False
        self._stream_end: int | None = None
        self._t_first_push: float | None = None
        self._lost = False  # a chunk passed through (no face) since the model last ran
        self._started = False  # the model has run (a face was seen)
        self._ref_views: list[FrameView] | None = None  # the sink's reference, kept to restart after a gap
        self._reference_written = False
        self.stats = SessionStats()

    def _view(self, frame: np.ndarray) -> FrameView | None:
        """The frame's view, or ``None`` where there is no face (the frame passes through: a frame
        is never drawn on at an earlier frame's face position)."""
        kp = self.face_source.update(frame)
        if kp is None:
            self.preparer.reset()  # the crop's smoothing starts afresh where the face comes back
            return None
        return self.preparer(frame, kp)

    def _check_reference(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._n_ref == 0:
            raise InputError(f"reference= was given but this model's sink holds its first chunk "
                             f"(stream.sink={self.cfg.stream.sink!r}); drop reference=")
        frames = [self._check_frame(np.asarray(f)) for f in frames]
        if not frames:
            raise InputError(f"reference= is empty; pass {self._n_ref} frame(s) of the person, or None")
        return [frames[i % len(frames)] for i in range(self._n_ref)]

    def _first_need(self) -> int:
        return max(self._fv, self._n_ref) if not self._reference_written else self._fv

    def _ready(self) -> bool:
        return (len(self._pending) >= self._first_need()
                and self.mel.frames_ready() >= self._next_frame + self._fv + self.cfg.audio.lookahead_frames)

    def _drain(self) -> list[OutputFrame]:
        out: list[OutputFrame] = []
        if not self._ready():
            return out
        with stream_scope(self.backend):  # a batching engine may run these chunks' calls with other sessions'
            while self._ready():
                out += self._run_chunk()
        return out

    def _write_reference(self) -> None:
        """The sink: the given reference frames, else the first frames of the first chunk with a face."""
        if self._reference_frames is not None:
            self._ref_views = self._reference_views()
        else:
            self._ref_views = fill_lost([v for _, v in self._pending[:max(self._n_ref, self._fv)]])[:self._n_ref]
        self.renderer.write_reference(self._ref_views, self.planner, self.state)
        self._reference_written = True

    def _reference_views(self) -> list[FrameView]:
        """Views of the given reference frames, with a preparer (and, where the source tracks, a
        face source) of their own, so the stream's tracking and smoothing are untouched."""
        src = self.face_source
        if isinstance(src, KeypointsFaceSource):
            kps = [src.keypoints[0]] * len(self._reference_frames)
        else:
            one = src if isinstance(src, BoxFaceSource) else default_face_source(select=getattr(src, "select", "largest"))
            kps = [one.update(f) for f in self._reference_frames]
        if any(k is None for k in kps):
            raise FaceNotFoundError("no face found in a reference frame; pass reference frames with a visible face")
        return [FramePreparer(self.cfg)(f, k) for f, k in zip(self._reference_frames, kps)]

    def _condition(self, chunk_index: int) -> Any:
        """Precomputed condition latents of a chunk (``AvatarSession``); ``None``: encode its frames."""
        return None

    def _run_chunk(self) -> list[OutputFrame]:
        t0 = time.perf_counter()
        fv, first = self._fv, self._next_frame
        items = self._pending[:fv]
        views = [v for _, v in items]
        gen = None
        if any(v is not None for v in views):
            if self._lost:  # the face is back: start afresh, nothing from before the gap
                self.renderer.restart(self._ref_views or [], self.planner, self.state)
                self._lost = False
                self.stats.resumes += self._started
            if self._n_ref and not self._reference_written:
                self._write_reference()
            self._started = True
            gen = self.renderer.render(fill_lost(views), self.mel.window(first, fv), self._chunk_index,
                                       self.planner, self.state, cond=self._condition(self._chunk_index))
        else:
            self._lost = True
        if self._stream_end is not None:
            items = items[:max(0, self._stream_end - first)]
        images = self.renderer.composite_many([f for f, _ in items], [v for _, v in items], gen)
        out = []
        for j, ((frame, view), image) in enumerate(zip(items, images)):
            idx = first + j
            if view is None:
                self.stats.frames_without_face += 1
                out.append(OutputFrame(index=idx, timestamp=idx / self.fps, image=frame, box=None))
                continue
            out.append(OutputFrame(index=idx, timestamp=idx / self.fps, image=image, box=view.crop.bbox(),
                                   crop=view.crop))
        del self._pending[:fv]
        self._next_frame += fv
        self._chunk_index += 1
        self.mel.release_before(self._next_frame - self.cfg.audio.context_frames)
        now = time.perf_counter()
        self.stats.record_chunk((now - t0) * 1000.0, len(out))
        if self.stats.time_to_first_frame_ms is None:
            self.stats.time_to_first_frame_ms = (now - self._t_first_push) * 1000.0
        return out

    # ---------------- validation (no side effects) ----------------
    def _check_audio(self, audio, sample_rate) -> np.ndarray:
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise InputError(f"sample_rate={sample_rate} but this session runs at {self.sample_rate} Hz; resample first "
                             f"(e.g. lipforce_sdk.media.read_audio(path, sample_rate={self.sample_rate}))")
        if audio is None:
            return np.zeros(0, np.float32)
        a = np.asarray(audio)
        if a.ndim == 2 and 1 in a.shape and a.size:
            a = a.reshape(-1)
        if a.ndim != 1:
            if a.ndim == 2 and 2 in a.shape:
                raise InputError(f"audio has shape {a.shape}: stereo is not accepted; mix down to mono first, "
                                 f"e.g. audio.mean(axis={1 if a.shape[1] == 2 else 0})")
            raise InputError(f"audio must be a 1-D array of mono samples, got shape {a.shape}")
        if a.dtype == np.int16:
            return a.astype(np.float32) / 32768.0
        if a.dtype not in (np.float32, np.float64):
            raise InputError(f"audio dtype {a.dtype} is not supported; pass float32 in [-1, 1] or int16 PCM "
                             "(e.g. (x / 32768).astype(np.float32) for int32 holding 16-bit values)")
        bad = ~np.isfinite(a)
        if bad.any():
            raise InputError(f"audio contains {int(bad.sum())} NaN/Inf sample(s), first at index {int(np.argmax(bad))}; "
                             "replace them (e.g. np.nan_to_num(audio)) before pushing")
        peak = float(np.abs(a).max()) if a.size else 0.0
        if peak > 1.0 + 1e-6:
            raise InputError(f"float audio must lie in [-1, 1], got a peak of {peak:.4g}; if it holds int16 values "
                             "divide by 32768, otherwise normalise it")
        return a.astype(np.float32, copy=False)

    def _check_frame(self, frame) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            raise InputError(f"frame must be a numpy array [H, W, 3] uint8 RGB, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            hint = ("scale and cast: (img * 255).round().astype(np.uint8)" if frame.dtype.kind == "f"
                    else "convert to uint8 RGB")
            raise InputError(f"frame dtype {frame.dtype} is not supported (need uint8); {hint}")
        if frame.ndim != 3:
            hint = "grayscale: np.repeat(img[..., None], 3, axis=-1)" if frame.ndim == 2 else "pass one frame at a time"
            raise InputError(f"frame must have rank 3 [H, W, 3], got shape {frame.shape}; {hint}")
        if frame.shape[2] != 3:
            hint = "drop alpha with img[..., :3]" if frame.shape[2] == 4 else "convert to RGB"
            raise InputError(f"frame must have 3 channels (RGB), got {frame.shape[2]} (shape {frame.shape}); {hint}")
        if frame.shape[0] < 16 or frame.shape[1] < 16:
            raise InputError(f"frame of {frame.shape[1]}x{frame.shape[0]} is too small (min 16x16)")
        if self._frame_hw is not None and frame.shape[:2] != self._frame_hw:
            raise InputError(f"frame size changed mid-stream from {self._frame_hw[1]}x{self._frame_hw[0]} to "
                             f"{frame.shape[1]}x{frame.shape[0]}; resize frames to the stream's size, or call "
                             "reset() to start a new stream at the new size")
        return frame
