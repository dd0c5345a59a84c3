"""A prepared avatar: one face's idle loop made ready to stream, so that a kiosk pushes audio only.

A kiosk shows one face for months. Everything about its frames can be computed once: where the
face is (keypoints), the eye-aligned mouth crop and mask of every frame (``lipforce_sdk.geometry``)
and the VAE latents the model conditions on (the masked source of every chunk, the reference
frames of the cache's sink). ``engine.session(avatar=avatar)`` then streams the loop: ``push``
takes audio only, frames come from the loop played back and forth (ping-pong: no seam), and per
frame there is no face tracking and no VAE encoding; only the audio encoder, the two DiT steps, the
decoder and the paste run.

The outputs equal the frame-pushing ``Session`` given the same frames with the same views (crop
and mask per frame) bit for bit (``tests/test_avatar.py``, torch and ONNX Runtime): the avatar's
latents are the ones that session would compute. Because float results differ between backends
(and precisions and devices), latents are kept per *encoder*: a table is identified by the hash of
its first latents (the reference chunks and chunk 0) as that engine computes them, so a session
checks one chunk's encoding and either finds its table or encodes the loop once (and
``Avatar.save`` keeps it for the next time).

Stream clock: stream frame ``i`` shows loop frame ``pingpong(N, i)``: ``0, 1, ..., N-1, N-2, ...,
1, 0, 1, ...``. Chunks repeat with a period of ``Q = lcm(2 (N - 1), Fv) / Fv`` chunks (``Q = 1``
for a one-frame loop, a photo); a temporal VAE encoder (a cache across chunks) repeats after a few
chunks of warm-up, found by comparing the latents bit for bit (``LatentTable.warm``). The sink
holds the stream's first frames (models with ``stream.sink == "reference"``), as a frame-pushing
session's does by default.

On disk (``Avatar.save``; in an enrolled model directory under ``avatar/``): ``avatar.json``,
``frames/NNNNN.png`` (the loop, lossless), ``geometry.npz`` (crop parameters, keypoints, masks,
crops) and ``latents-*.npz`` (one per encoder). NumPy, OpenCV and JSON only: no torch, so ONNX
Runtime and TensorRT deployments load it as they are.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .backends.base import host_array
from .config import ModelConfig
from .geometry import AlignedCrop, CropAligner, FaceKeypoints, MouthMask, mouth_mask_for, soft_mask
from .session import (ChunkRenderer, Engine, FrameView, InputError, OutputFrame, Session,
                      reference_frames_needed)

__all__ = ["Avatar", "AvatarSession", "AvatarError", "LatentTable", "pingpong", "AVATAR_DIR", "FORMAT",
           "FORMAT_VERSION"]

AVATAR_DIR = "avatar"  # the avatar's folder inside a model directory
FORMAT = "lipforce-avatar"
FORMAT_VERSION = 1
_KP_FIELDS = ("eyes", "nose_tip", "mouth_corners", "lips_outer", "lips_inner", "jaw")
_MAX_WARM = 4  # chunks a temporal encoder may need before its latents repeat


class AvatarError(ValueError):
    """A prepared avatar is missing, malformed or does not fit the model; the message says what to do."""


def pingpong(n: int, index):
    """Loop frame of stream frame ``index`` (int or array) for a loop of ``n`` frames played back
    and forth: ``0 .. n-1 .. 1 0 1 ..``; always 0 for a one-frame loop."""
    i = np.asarray(index, np.int64)
    if n <= 1:
        out = np.zeros_like(i)
    else:
        p = i % (2 * (n - 1))
        out = np.where(p < n, p, 2 * (n - 1) - p)
    return int(out) if out.ndim == 0 else out


def _period_chunks(n: int, fv: int) -> int:
    """Chunks after which the ping-pong stream's chunks repeat."""
    p = 1 if n <= 1 else 2 * (n - 1)
    return p * fv // math.gcd(p, fv) // fv


@dataclass(eq=False)
class LatentTable:
    """The latents one encoder computes for an avatar's stream.

    ``ref`` ``[R, 2, ...]``: per reference chunk the latents of the clean and of the masked crops
    (``ChunkRenderer.reference_latents``); ``chunks`` ``[W + Q, ...]``: the masked-source latents
    of stream chunks ``0 .. W + Q - 1``; chunk ``k >= W`` repeats chunk ``W + (k - W) % Q``.
    ``probe``: sha256 of the reference latents and chunk 0 (identifies the encoder's numerics).
    """

    backend: str
    probe: str
    ref: np.ndarray
    chunks: np.ndarray
    warm: int
    period: int

    def chunk(self, k: int) -> np.ndarray:
        return self.chunks[k if k < self.warm else self.warm + (k - self.warm) % self.period]

    def references(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(r[0], r[1]) for r in self.ref]

    @property
    def nbytes(self) -> int:
        return int(self.ref.nbytes + self.chunks.nbytes)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, ref=self.ref, chunks=self.chunks, warm=np.int64(self.warm), period=np.int64(self.period),
                 backend=np.array(self.backend), probe=np.array(self.probe))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "LatentTable":
        z = np.load(path, allow_pickle=False)
        return cls(str(z["backend"]), str(z["probe"]), z["ref"], z["chunks"], int(z["warm"]), int(z["period"]))


def _probe_hash(ref: Sequence[tuple[np.ndarray, np.ndarray]], chunk0: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in [x for pair in ref for x in pair] + [chunk0]:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(eq=False)
class Avatar:
    """One face's idle loop with everything the model needs of it.

    ``frames`` ``uint8 [N, H, W, 3]`` (RGB, the loop; one frame for a photo); per loop frame the
    eye-aligned crop (``crop_params`` ``[N, 4]``: centre x, centre y, side in frame pixels, angle
    in radians), the crop image ``images`` ``[N, S, S, 3]``, the hard mouth mask ``hard``
    ``[N, S, S]`` (0/1; the paste weights are ``geometry.soft_mask`` of it), the mask polygon
    ``polygons`` ``[N, P, 2]`` (crop pixels, NaN-padded) and the face keypoints ``keypoints``
    (field name -> ``[N, ...]``, frame pixels). ``latents``: the encoded tables, by probe hash.
    ``info``: where it came from (free-form, JSON).
    """

    frames: np.ndarray
    crop_params: np.ndarray
    images: np.ndarray
    hard: np.ndarray
    polygons: np.ndarray
    keypoints: dict[str, np.ndarray]
    fps: float = 25.0
    info: dict = field(default_factory=dict)
    latents: dict[str, LatentTable] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self):
        n = len(self.frames)
        if n < 1 or self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise AvatarError(f"avatar frames must be uint8 [N >= 1, H, W, 3], got {self.frames.dtype} "
                              f"{self.frames.shape}")
        for name, a in (("crop_params", self.crop_params), ("images", self.images), ("hard", self.hard),
                        ("polygons", self.polygons), *self.keypoints.items()):
            if len(a) != n:
                raise AvatarError(f"avatar {name} has {len(a)} entries for {n} frames; re-prepare the avatar")
        self._views: list[FrameView] | None = None

    # ---------------- building ----------------
    @classmethod
    def from_frames(cls, frames: np.ndarray, keypoints: Sequence[FaceKeypoints], size: int, fps: float = 25.0,
                    info: dict | None = None, mask: str = "rest") -> "Avatar":
        """An avatar from loop frames and their keypoints (frame pixels): crops as a stream cuts
        them (``CropAligner`` over the loop, in order), the crop images, and masks: ``"rest"``
        (default) the mask of the loop's most closed mouth, the same in every crop (its shape
        then says nothing of what the loop's mouth does), or ``"own"`` each frame's own."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if len(keypoints) != len(frames):
            raise AvatarError(f"{len(keypoints)} keypoints for {len(frames)} frames; give one per frame")
        if mask not in ("rest", "own"):
            raise AvatarError(f"mask={mask!r} must be 'rest' or 'own'")
        aligner = CropAligner(size, fps=fps)
        crops = [aligner(kp) for kp in keypoints]
        images = np.stack([c.crop(f) for c, f in zip(crops, frames)])
        if mask == "rest":
            rest = int(np.argmin([kp.lip_opening() for kp in keypoints]))
            m = mouth_mask_for(keypoints[rest].map(crops[rest].to_crop_affine()), size)
            masks = [m] * len(frames)
        else:
            masks = [mouth_mask_for(kp.map(c.to_crop_affine()), size) for kp, c in zip(keypoints, crops)]
        pmax = max(len(m.polygon) for m in masks)
        polys = np.full((len(frames), pmax, 2), np.nan)
        for i, m in enumerate(masks):
            polys[i, :len(m.polygon)] = m.polygon
        kps = {f: np.stack([getattr(kp, f) for kp in keypoints]) for f in _KP_FIELDS}
        params = np.array([[c.centre[0], c.centre[1], c.side, c.angle] for c in crops], np.float64)
        return cls(np.ascontiguousarray(frames), params, images, np.stack([m.hard for m in masks]).astype(np.uint8),
                   polys, kps, float(fps), dict(info or {}))

    # ---------------- geometry ----------------
    @property
    def num_frames(self) -> int:
        return int(len(self.frames))

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def frame_hw(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def loop_index(self, i):
        """Loop frame of stream frame ``i``."""
        return pingpong(self.num_frames, i)

    def stream_frames(self, n: int) -> np.ndarray:
        """The first ``n`` frames of the avatar's stream ``[n, H, W, 3]`` (what it shows)."""
        return self.frames[self.loop_index(np.arange(n))]

    def crop(self, j: int) -> AlignedCrop:
        x, y, side, ang = (float(v) for v in self.crop_params[j])
        return AlignedCrop((x, y), side, ang, self.size)

    def face_keypoints(self, j: int) -> FaceKeypoints:
        return FaceKeypoints(**{f: self.keypoints[f][j] for f in _KP_FIELDS}, source="avatar")

    def views(self) -> list[FrameView]:
        """One ``FrameView`` per loop frame (what the model sees of it)."""
        if self._views is None:
            out = []
            for j in range(self.num_frames):
                hard = self.hard[j].astype(np.float32)
                poly = self.polygons[j]
                mask = MouthMask(hard=hard, soft=soft_mask(hard), polygon=poly[np.isfinite(poly[:, 0])])
                out.append(FrameView(crop=self.crop(j), image=self.images[j], mask=mask,
                                     keypoints=self.face_keypoints(j)))
            self._views = out
        return self._views

    def check_model(self, cfg: ModelConfig) -> None:
        """Raise ``AvatarError`` when this avatar does not fit the model ``cfg``."""
        if cfg.stream.resolution != self.size:
            raise AvatarError(f"the avatar's crops are {self.size} px but the model's are {cfg.stream.resolution} px; "
                              "prepare the avatar for this model (Avatar.from_frames(..., size="
                              f"{cfg.stream.resolution}) or `lipforce enroll` with it)")
        if abs(cfg.stream.fps - self.fps) > 1e-6:
            raise AvatarError(f"the avatar's loop is at {self.fps:g} fps but the model runs at {cfg.stream.fps:g}; "
                              "prepare the avatar from frames at the model's rate")

    # ---------------- latents ----------------
    def _stream_views(self, first: int, n: int) -> list[FrameView]:
        v = self.views()
        return [v[j] for j in self.loop_index(np.arange(first, first + n))]

    def reference_views(self, cfg: ModelConfig) -> list[FrameView]:
        """The sink's reference: the stream's first frames (as a frame-pushing session's default)."""
        return self._stream_views(0, reference_frames_needed(cfg))

    def chunk_views(self, cfg: ModelConfig, k: int) -> list[FrameView]:
        fv = cfg.video_frames_per_chunk
        return self._stream_views(k * fv, fv)

    def _probe(self, engine: Engine, progress=None):
        """(probe hash, reference latents, chunk-0 latents, renderer, state) as ``engine`` computes them."""
        cfg, be = engine.config, engine.backend
        renderer = ChunkRenderer(be, cfg, cfg.schedule.seed)
        state = be.new_state()
        ref = [(host_array(a), host_array(b)) for a, b in renderer.reference_latents(self.reference_views(cfg), state)]
        c0 = host_array(renderer.condition_latents(self.chunk_views(cfg, 0), state))
        return _probe_hash(ref, c0), ref, c0, renderer, state

    def encode(self, engine: Engine, progress: bool = False) -> LatentTable:
        """Encode the avatar's stream with ``engine``'s VAE encoder, exactly as a session would:
        the reference chunks, then the stream's chunks over one period (and a temporal encoder's
        warm-up). Cost: about ``Q`` (+ ``2 Q``, temporal) chunk encodings, once."""
        cfg = engine.config
        self.check_model(cfg)
        probe, ref, c0, renderer, state = self._probe(engine)
        q = _period_chunks(self.num_frames, cfg.video_frames_per_chunk)
        temporal = cfg.vae.temporal_compression > 1 or cfg.vae.kind != "frame"
        total = (_MAX_WARM + 2 * q) if temporal else q
        chunks = [c0]
        it = range(1, total)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="avatar latents", unit="chunk", initial=1, total=total)
        for k in it:
            chunks.append(host_array(renderer.condition_latents(self.chunk_views(cfg, k), state)))
        warm = 0
        if temporal:
            same = [np.array_equal(chunks[k], chunks[k + q]) for k in range(total - q)]
            warm = next((w for w in range(_MAX_WARM + 1) if all(same[w:w + q])), None)
            if warm is None:
                raise AvatarError("the VAE encoder's latents of the looped avatar do not repeat after "
                                  f"{_MAX_WARM} chunks; this encoder cannot stream a prepared avatar")
            chunks = chunks[:warm + q]
        ref_arr = np.stack([np.stack(p) for p in ref]) if ref else np.zeros((0, 2, *c0.shape), c0.dtype)
        table = LatentTable(engine.backend.name, probe, ref_arr, np.stack(chunks), warm, q)
        self.latents[probe] = table
        return table

    def latents_for(self, engine: Engine) -> LatentTable:
        """The table of ``engine``'s encoder: found by encoding the reference and chunk 0 once and
        comparing their hash with the tables kept; encoded (``encode``) where none matches."""
        self.check_model(engine.config)
        probe = self._probe(engine)[0]
        if probe in self.latents:
            return self.latents[probe]
        return self.encode(engine)

    # ---------------- files ----------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the avatar to folder ``path`` (created; files replaced one by one atomically)."""
        d = Path(path)
        (d / "frames").mkdir(parents=True, exist_ok=True)
        for j, f in enumerate(self.frames):
            p = d / "frames" / f"{j:05d}.png"
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(f[..., ::-1]))
            if not ok:
                raise AvatarError(f"could not encode loop frame {j} as PNG")
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, p)
        for old in (d / "frames").glob("*.png"):
            if not old.stem.isdigit() or int(old.stem) >= self.num_frames:
                old.unlink()
        tmp = d / "geometry.tmp.npz"
        np.savez_compressed(tmp, crop_params=self.crop_params, images=self.images, hard=self.hard,
                            polygons=self.polygons, **{f"kp_{k}": v for k, v in self.keypoints.items()})
        os.replace(tmp, d / "geometry.npz")
        tables = {}
        for probe, t in self.latents.items():
            name = f"latents-{t.backend}-{probe[:12]}.npz"
            t.save(d / name)
            tables[name] = {"backend": t.backend, "probe": probe, "warm": t.warm, "period": t.period,
                            "bytes": t.nbytes}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "frames": self.num_frames,
                "frame_size": [self.frame_hw[1], self.frame_hw[0]], "crop_size": self.size, "fps": self.fps,
                "schedule": "pingpong", "latents": tables, "info": self.info,
                "written": time.strftime("%Y-%m-%d %H:%M:%S")}
        tmp = d / "avatar.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, d / "avatar.json")
        self.path = d
        return d

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Avatar":
        """Read an avatar folder, or the ``avatar/`` folder of a model directory."""
        d = Path(path)
        if (d / AVATAR_DIR / "avatar.json").is_file() and not (d / "avatar.json").is_file():
            d = d / AVATAR_DIR
        meta_p = d / "avatar.json"
        if not meta_p.is_file():
            raise AvatarError(f"{str(d)!r} holds no prepared avatar (no avatar.json); enroll one with "
                              "`lipforce enroll SOURCE --out DIR`, or pass the avatar folder of an enrolled model")
        try:
            meta = json.loads(meta_p.read_text())
        except json.JSONDecodeError as e:
            raise AvatarError(f"{str(meta_p)!r} is not valid JSON ({e}); enroll the avatar again") from e
        if meta.get("format") != FORMAT:
            raise AvatarError(f"{str(meta_p)!r} has format={meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise AvatarError(f"{str(meta_p)!r} has format_version={meta.get('format_version')}, newer than this "
                              f"SDK reads ({FORMAT_VERSION}); upgrade lipforce")
        n = int(meta["frames"])
        frames = []
        for j in range(n):
            p = d / "frames" / f"{j:05d}.png"
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise AvatarError(f"loop frame {str(p)!r} is missing or unreadable; enroll the avatar again")
            frames.append(img[..., ::-1])
        g = np.load(d / "geometry.npz", allow_pickle=False)
        kps = {f: g[f"kp_{f}"] for f in _KP_FIELDS}
        av = cls(np.ascontiguousarray(np.stack(frames)), g["crop_params"], g["images"], g["hard"], g["polygons"], kps,
                 float(meta["fps"]), dict(meta.get("info", {})), path=d)
        for name, spec in meta.get("latents", {}).items():
            if (d / name).is_file():
                t = LatentTable.load(d / name)
                av.latents[t.probe] = t
        return av

    def copy_to(self, path: str | os.PathLike) -> Path:
        """Copy this avatar's folder (as saved) to ``path``."""
        if self.path is None:
            return self.save(path)
        shutil.copytree(self.path, path, dirs_exist_ok=True)
        return Path(path)

    def __repr__(self) -> str:
        h, w = self.frame_hw
        return (f"Avatar({self.num_frames} frames {w}x{h}, crop {self.size}, {len(self.latents)} latent table(s), "
                f"path={None if self.path is None else str(self.path)!r})")


class _StreamViews:
    """A ``FramePreparer`` stand-in that gives the avatar's view of each stream frame in turn
    (stream frame ``i`` -> loop frame ``pingpong(N, i)``): a frame-pushing ``Session`` built with
    it sees exactly the avatar's geometry (``Avatar.frame_pushing_session``)."""

    def __init__(self, avatar: Avatar, start: int = 0):
        self.avatar, self.start, self._i = avatar, start, start

    def reset(self) -> None:
        self._i = self.start

    def __call__(self, frame: np.ndarray, kp: FaceKeypoints) -> FrameView:
        v = self.avatar.views()[self.avatar.loop_index(self._i)]
        self._i += 1
        return v


def frame_pushing_session(engine: Engine, avatar: Avatar, seed: int | None = None,
                          silence: str | None = None, start: int = 0) -> Session:
    """A plain frame-pushing ``Session`` that uses the avatar's crops and masks for the frames
    pushed to it (push the avatar's ``stream_frames``, from loop position ``start``): the path an
    ``AvatarSession`` must equal."""
    from .tracking import KeypointsFaceSource

    kps = [avatar.face_keypoints(j) for j in range(avatar.num_frames)]
    n_ref = reference_frames_needed(engine.config)
    return _AvatarFramesSession(engine, avatar, face_source=KeypointsFaceSource(kps), seed=seed,
                                preparer=_StreamViews(avatar, start), silence=silence,
                                reference=avatar.stream_frames(n_ref) if n_ref else None)


class _AvatarFramesSession(Session):
    """A frame-pushing ``Session`` whose sink holds the avatar's reference (its loop's first
    frames, as an ``AvatarSession``'s does, also where the stream starts mid-loop)."""

    def __init__(self, engine: Engine, avatar: Avatar, **kw):
        self.avatar = avatar
        super().__init__(engine, **kw)

    def _reference_views(self) -> list[FrameView]:
        return self.avatar.reference_views(self.cfg)


class _LoopFaces:
    """The face source of an ``AvatarSession``: never asked (its views are the avatar's)."""

    def update(self, frame: np.ndarray) -> FaceKeypoints | None:  # pragma: no cover - not called
        raise AvatarError("an avatar session takes no frames")

    def reset(self) -> None:
        pass


class AvatarSession(Session):
    """A stream of a prepared avatar: ``push(audio)`` in, frames of the avatar's loop with the
    mouth re-rendered out. Same clock, chunking, look-ahead and ``flush``/``reset``/``stats`` as
    ``Session``; frame ``i`` of the stream is the loop's ``pingpong(N, i)`` and exists once its
    audio has arrived (``flush`` ends the stream after the last frame that has audio)."""

    def __init__(self, engine: Engine, avatar, seed: int | None = None, silence: str | None = None,
                 start: int = 0, exemplars: bool = True):
        """``start``: the loop position of the stream's frame 0 (stream frame ``i`` is the loop's
        ``pingpong(N, start + i)``), a whole number of chunks, so that a stream can begin where a
        player showing the idle loop has got to (``lipforce_sdk.serve``)."""
        if not isinstance(avatar, Avatar):
            avatar = Avatar.load(avatar)
        fv = engine.config.video_frames_per_chunk
        if start < 0 or start % fv:
            raise AvatarError(f"start={start} must be a non-negative multiple of the chunk ({fv} frames)")
        self.avatar = avatar
        self.table = avatar.latents_for(engine)
        self.start = int(start)
        super().__init__(engine, face_source=_LoopFaces(), seed=seed, silence=silence, exemplars=exemplars)
        self._views = avatar.views()

    def push(self, audio=None, frame: np.ndarray | None = None, sample_rate: int | None = None) -> list[OutputFrame]:
        """Feed any number of audio samples (mono float32 in [-1, 1] or int16). Returns the frames
        whose chunk completed (maybe none)."""
        if frame is not None:
            raise InputError("this session streams a prepared avatar: push audio only (its frames come from the "
                             "avatar's loop); to push your own frames use engine.session() without avatar=")
        if self._ended:
            raise InputError("push() after flush(): the stream has ended; call reset() to start a new one")
        a = self._check_audio(audio, sample_rate)
        if a.size == 0:
            raise InputError("push() got no audio samples; pass audio=<mono samples at "
                             f"{self.sample_rate} Hz>")
        if self._t_first_push is None:
            self._t_first_push = time.perf_counter()
        self.mel.push(a)
        self.stats.audio_samples_in += a.size
        self._add_frames(self.stats.audio_samples_in // self.cfg.samples_per_video_frame)
        return self._drain()

    def flush(self) -> list[OutputFrame]:
        """End of stream: the frames up to the last one with audio (its chunk completed with the
        loop's next frames and silence)."""
        if self._ended:
            return []
        spf = self.cfg.samples_per_video_frame
        end = -(-self.stats.audio_samples_in // spf)
        out: list[OutputFrame] = []
        if end > self._next_frame:
            self._add_frames(end)
            self._stream_end = end
            fv = self._fv
            total = self._next_frame + len(self._pending)
            target = max(-(-total // fv) * fv, self._next_frame + self._first_need())
            self._add_frames(target)
            self._pad_audio(target)
            out = self._drain()
        self._ended = True
        return out

    def reset(self) -> None:
        """Forget the stream (caches, buffers, stats); keep the engine and the avatar."""
        self.backend.reset_state(self.state)
        self._reset_stream()

    # ---------------- internals ----------------
    def _add_frames(self, upto: int) -> None:
        """Queue the loop's frames up to stream frame ``upto`` (exclusive)."""
        av = self.avatar
        have = self._next_frame + len(self._pending)
        for i in range(have, upto):
            j = av.loop_index(self.start + i)
            self._pending.append((av.frames[j], self._views[j]))
            self.stats.frames_in += 1
        if self._frame_hw is None:
            self._frame_hw = av.frame_hw

    def _write_reference(self) -> None:
        self.renderer.write_reference(self.avatar.reference_views(self.cfg), self.planner, self.state,
                                      latents=self.table.references())
        self._reference_written = True

    def _condition(self, chunk_index: int) -> np.ndarray:
        return self.table.chunk(self.start // self._fv + chunk_index)
