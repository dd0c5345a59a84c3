"""Every data source as the model sees it: eye-aligned mouth crops, masks and references.

The runtime (``lipforce_sdk.session.FramePreparer``) turns a frame and its face keypoints into
an aligned mouth crop and a mouth mask (``lipforce_sdk.geometry``). A ``CropClip`` is a training
or evaluation clip in exactly that form:

- ``source``: the crops of the input video (the mouth says something else, or, for a real clip
  trained self-supervised, the same frames);
- ``target``: the crops of the answer, cut with the *source's* crop geometry, and equal to the
  source outside the source's mask (what the model must leave as it was, it can see);
- ``hard``: the source's masks (what is hidden from the model);
- ``ref``: reference crops of the same person (the cache's sink at run time: the stream's first
  frames; here frames picked elsewhere in the clip) and their masks;
- ``audio``: the target speech, 640 samples per frame.

Sources: procedural faces (``distill.faces``, exact keypoints, rendered at ``render_size`` as
full frames, then cropped), real talking-head clips (``distill.realdata``, face-mesh keypoints;
source = target, the mask from the clip's most closed mouth so its shape says nothing about the
frame's speech) and real photos made to speak (``distill.photoreal``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lipforce_sdk.audio import log_mel_clip
from lipforce_sdk.config import ModelConfig
from lipforce_sdk.geometry import AlignedCrop, FaceKeypoints, MouthMask, mouth_mask_for
from lipforce_sdk.session import FramePreparer

__all__ = ["CropClip", "CropSet", "prepare", "procedural_clip", "real_clips", "to_unit", "from_unit"]


def to_unit(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[F, S, S, 3]`` -> float32 ``[3, F, S, S]`` in [-1, 1] (the SDK's scaling)."""
    return np.ascontiguousarray((frames.astype(np.float32) / 127.5 - 1.0).transpose(3, 0, 1, 2))


def from_unit(x) -> np.ndarray:
    """float ``[3, F, S, S]`` in [-1, 1] (array or tensor) -> uint8 ``[F, S, S, 3]`` (rounded)."""
    x = np.asarray(x).transpose(1, 2, 3, 0)
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


@dataclass(eq=False)
class CropClip:
    """One clip as model inputs; see the module docstring. uint8 crops ``[F, S, S, 3]``, masks
    ``[F, S, S]`` (0/1), ``audio`` float32 ``[F * 640]``."""

    name: str
    kind: str  # "procedural", "real", "photo"
    source: np.ndarray
    target: np.ndarray
    hard: np.ndarray
    ref: np.ndarray
    ref_hard: np.ndarray
    audio: np.ndarray
    extra: dict = field(default_factory=dict)  # evaluation only (exact geometry, frames, ...)

    @property
    def num_frames(self) -> int:
        return int(self.target.shape[0])

    def masked(self) -> np.ndarray:
        """The DiT's view of the source, float32 ``[3, F, S, S]``: hidden region set to 0."""
        return (to_unit(self.source) * (1.0 - self.hard[None].astype(np.float32))).astype(np.float32)

    def ref_masked(self) -> np.ndarray:
        return (to_unit(self.ref) * (1.0 - self.ref_hard[None].astype(np.float32))).astype(np.float32)

    def cut(self, n: int) -> "CropClip":
        return CropClip(self.name, self.kind, self.source[:n], self.target[:n], self.hard[:n], self.ref,
                        self.ref_hard, self.audio[: n * 640], self.extra)


def prepare(cfg: ModelConfig, frames: np.ndarray, kps: Sequence[FaceKeypoints], smooth: bool = True
            ) -> tuple[list[AlignedCrop], np.ndarray, list[MouthMask]]:
    """The runtime's view of a clip: aligned crops (``FramePreparer``: smoothed over the clip as a
    stream is; ``smooth=False``: each frame on its own), the crop images and the masks."""
    prep = FramePreparer(cfg)
    crops, imgs, masks = [], [], []
    for f, kp in zip(frames, kps):
        if not smooth:
            prep.reset()
        v = prep(f, kp)
        crops.append(v.crop)
        imgs.append(v.image)
        masks.append(v.mask)
    return crops, np.stack(imgs), masks


def _mask_in(crop: AlignedCrop, kp: FaceKeypoints, size: int) -> MouthMask:
    return mouth_mask_for(kp.map(crop.to_crop_affine()), size)


def _refs(cfg: ModelConfig, frames: np.ndarray, kps: Sequence[FaceKeypoints], picks: Sequence[int]):
    size = cfg.stream.resolution
    ref, rh = [], []
    for i in picks:
        ac = AlignedCrop.from_keypoints(kps[i], size)
        ref.append(ac.crop(frames[i]))
        rh.append(_mask_in(ac, kps[i], size).hard)
    return np.stack(ref), np.stack(rh).astype(np.uint8)


def _ref_count(cfg: ModelConfig) -> int:
    return cfg.stream.sink_frames * cfg.vae.temporal_compression if cfg.stream.sink == "reference" else 0


def procedural_clip(cfg: ModelConfig, index: int, split: str = "train", render_size: int = 256,
                    max_frames: int | None = None, keep_frames: bool = False) -> CropClip:
    """A procedural pair (``distill.data.make_sample_pair``) rendered as ``render_size`` frames and
    cut as the runtime would, from the source's exact keypoints."""
    from .data import make_sample_pair
    from .evaluate import cut_pair
    from .faces import clip_keypoints, mouth_geometry

    p = make_sample_pair(index, split, size=render_size)
    f = p.target.shape[0] if max_frames is None else min(p.target.shape[0], max_frames)
    p = cut_pair(p, f)
    kps = clip_keypoints(p.identity, p.motion, p.params_src, render_size)
    crops, src, masks = prepare(cfg, p.source, kps)
    tgt = np.stack([c.crop(t) for c, t in zip(crops, p.target)])
    hard = np.stack([m.hard for m in masks]).astype(np.uint8)
    tgt = np.where(hard[..., None] > 0, tgt, src)  # outside the source's mask the answer is the source
    rng = np.random.default_rng([index, 0x5EF])
    r = _ref_count(cfg)
    picks = rng.integers(0, f, r) if r else []
    ref, rh = _refs(cfg, p.source, kps, picks) if r else (np.zeros((0, *src.shape[1:]), np.uint8),
                                                          np.zeros((0, *hard.shape[1:]), np.uint8))
    extra = {"params": p.params, "gap_px": mouth_geometry(p.identity, p.motion, p.params, render_size).gap_px}
    if keep_frames:
        extra.update(pair=p, crops=crops, keypoints=kps, masks=masks)
    return CropClip(f"{split}-{index}", "procedural", src, tgt, hard, ref, rh, p.audio[: f * 640], extra)


def real_clips(cfg: ModelConfig, clip, window: int | None = None, stride: int | None = None,
               keep_frames: bool = False) -> list[CropClip]:
    """A real talking clip (``distill.realdata.RealClip``) as self-supervised clips: source =
    target = the real frames; the mask of every frame is the one of the clip's most closed mouth
    (mapped into that frame's crop), so its shape carries nothing of the frame's speech; the
    references are two frames from elsewhere in the clip. Frames without a face are dropped
    (the clip is split there). ``window``: cut into pieces of that many frames."""
    found = clip.found()
    if found.sum() < 2:
        return []
    size = cfg.stream.resolution
    idx = np.flatnonzero(found)
    op = np.where(np.isfinite(clip.opening), clip.opening, np.inf)
    rest = int(np.argmin(op))  # the most closed mouth
    kp_rest = clip.keypoints(rest)
    ac_rest = AlignedCrop.from_keypoints(kp_rest, size)
    rest_crop_kp = kp_rest.map(ac_rest.to_crop_affine())  # keypoints in crop coordinates
    # runs of consecutive frames with a face
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    out = []
    r = _ref_count(cfg)
    rng = np.random.default_rng(zlib.crc32(clip.name.encode()))
    for run in runs:
        if len(run) < 2:
            continue
        kps = [clip.keypoints(i) for i in run]
        crops, imgs, _ = prepare(cfg, clip.frames[run], kps)
        hard = np.stack([mouth_mask_for(rest_crop_kp, size).hard] * len(run)).astype(np.uint8)
        w = len(run) if window is None else window
        st = w if stride is None else stride
        for s in range(0, max(1, len(run) - w + 1), st):
            sl = slice(s, s + w)
            far = np.concatenate([np.arange(0, max(0, s - 25)), np.arange(min(len(run), s + w + 25), len(run))])
            pool = far if len(far) >= r else np.arange(len(run))
            picks = rng.choice(pool, r, replace=len(pool) < r) if r else []
            ref, rh = _refs(cfg, clip.frames[run], kps, picks) if r else (imgs[:0], hard[:0])
            a0 = int(run[s]) * 640
            n = len(imgs[sl])
            extra = {"frames_index": run[sl], "opening": clip.opening[run[sl]]}
            if keep_frames:
                extra.update(crops=crops[sl], keypoints=kps[sl])
            out.append(CropClip(f"{clip.name}@{int(run[s])}", "real", imgs[sl], imgs[sl], hard[sl], ref, rh,
                                clip.audio[a0:a0 + n * 640], extra))
    return out


@dataclass
class CropSet:
    """Clips as model inputs, with the log-mel encoder windows of each clip's audio."""

    clips: list[CropClip]
    mel: list[np.ndarray]

    @classmethod
    def build(cls, cfg: ModelConfig, clips: list[CropClip]) -> "CropSet":
        mel = [log_mel_clip(c.audio, cfg.audio, cfg.stream.fps, c.num_frames) for c in clips]
        return cls(clips, mel)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def num_frames(self) -> int:
        return int(sum(c.num_frames for c in self.clips))

    def save(self, path: str | Path) -> None:
        cl = self.clips
        np.savez(path, names=np.array([c.name for c in cl]), kinds=np.array([c.kind for c in cl]),
                 lens=np.array([c.num_frames for c in cl]), rlens=np.array([len(c.ref) for c in cl]),
                 source=np.concatenate([c.source for c in cl]), target=np.concatenate([c.target for c in cl]),
                 hard=np.concatenate([c.hard for c in cl]), ref=np.concatenate([c.ref for c in cl]),
                 ref_hard=np.concatenate([c.ref_hard for c in cl]), audio=np.concatenate([c.audio for c in cl]),
                 mel=np.concatenate(self.mel))

    @staticmethod
    def load_kinds(path: str | Path) -> list[str]:
        """The clips' kinds in a file ``save`` wrote, without reading its crops."""
        with np.load(path, allow_pickle=False) as z:
            return [str(k) for k in z["kinds"]]

    @classmethod
    def load(cls, path: str | Path) -> "CropSet":
        z = np.load(path, allow_pickle=False)
        lens, rlens = z["lens"], z["rlens"]
        cut, rcut = np.cumsum(lens)[:-1], np.cumsum(rlens)[:-1]
        parts = {k: np.split(z[k], cut) for k in ("source", "target", "hard", "mel")}
        rparts = {k: np.split(z[k], rcut) for k in ("ref", "ref_hard")}
        audio = np.split(z["audio"], cut * 640)
        clips = [CropClip(str(n), str(k), parts["source"][i], parts["target"][i], parts["hard"][i],
                          rparts["ref"][i], rparts["ref_hard"][i], audio[i])
                 for i, (n, k) in enumerate(zip(z["names"], z["kinds"]))]
        return cls(clips, parts["mel"])


def photo_clip(cfg: ModelConfig, face, index: int, split: str = "train", out_size: int = 256,
               max_frames: int | None = None, name: str = "photo", keep_frames: bool = False) -> CropClip:
    """A real face photo (``distill.photoreal.PhotoFace``) made to speak: the source mouth says one
    sentence and the target another (sentences, voices and silences drawn as for procedural pair
    ``index`` of ``split``), with the same head motion; exact keypoints from the warp."""
    from .data import _rng, clip_spec
    from .faces import Motion
    from .photoreal import talk
    from .speech import sample_spec, synthesize
    from .visemes import frame_params

    cs = clip_spec(index, split)
    r = _rng(index, split, 0x5A)
    tgt_sp = synthesize(cs.speech).padded(cs.lead, cs.tail)
    src_sp = synthesize(sample_spec(r, split)).padded(float(r.uniform(0.1, 0.5)), 0.3)
    f = tgt_sp.num_frames() if max_frames is None else min(tgt_sp.num_frames(), max_frames)
    tgt_sp, src_sp = tgt_sp.fit_frames(f), src_sp.fit_frames(f)
    motion = Motion.random(cs.motion_seed, amount=0.6)
    src = talk(face, frame_params(src_sp, f), motion, out_size=out_size, seed=index)
    tgt = talk(face, frame_params(tgt_sp, f), motion, out_size=out_size, seed=index)
    kps = [FaceKeypoints.from_mediapipe(p) for p in src.landmarks]
    crops, src_img, masks = prepare(cfg, src.frames, kps)
    tgt_img = np.stack([c.crop(t) for c, t in zip(crops, tgt.frames)])
    hard = np.stack([m.hard for m in masks]).astype(np.uint8)
    tgt_img = np.where(hard[..., None] > 0, tgt_img, src_img)
    rng = np.random.default_rng([index, 0x9F0])
    nref = _ref_count(cfg)
    ref, rh = _refs(cfg, src.frames, kps, rng.integers(0, f, nref)) if nref else (src_img[:0], hard[:0])
    extra = {"gap_px": tgt.gap_px}
    if keep_frames:
        extra.update(source_frames=src.frames, target_frames=tgt.frames, crops=crops, keypoints=kps, masks=masks)
    return CropClip(f"{name}-{index}", "photo", src_img, tgt_img, hard, ref, rh, tgt_sp.audio[: f * 640], extra)


def photo_files(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` in name order: those ``load_photo_faces`` reads."""
    from .enroll import IMAGE_EXT

    return [p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in IMAGE_EXT]


def load_photo_faces(folder: str | Path, limit: int | None = None) -> list:
    """``PhotoFace``s of the images in ``folder`` (and of the first frame of its videos) where the
    face mesh finds a face with a closed or nearly closed mouth; the others are skipped."""
    import warnings

    import cv2

    from .photoreal import PhotoFace

    faces = []
    for p in photo_files(folder):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                faces.append(PhotoFace.detect(np.ascontiguousarray(img[..., ::-1])))
        except ValueError:
            continue
        if limit and len(faces) >= limit:
            break
    return faces


def photo_clips(cfg: ModelConfig, folder: str | Path, n: int, max_frames: int | None = None, seed: int = 0,
                out_size: int = 256, progress: bool = True, teeth_repeat: int = 1) -> list[CropClip]:
    """``n`` speaking clips made from the photos in ``folder`` (round robin over the faces); a face
    whose photo shows its teeth (``PhotoFace.has_teeth``) comes ``teeth_repeat`` times in a row in
    that round."""
    from tqdm import tqdm

    if teeth_repeat < 1:
        raise ValueError(f"teeth_repeat must be >= 1 (got {teeth_repeat})")
    faces = load_photo_faces(folder)
    if not faces:
        raise ValueError(f"no usable face photo in {str(folder)!r} (frontal faces with a closed mouth)")
    order = [j for j, f in enumerate(faces) for _ in range(teeth_repeat if f.has_teeth else 1)]
    return [photo_clip(cfg, faces[order[i % len(order)]], 10_000 + seed * 100_000 + i, max_frames=max_frames,
                       out_size=out_size, name=f"photo{order[i % len(order)]}")  # named after its face
            for i in tqdm(range(n), desc="photo clips", unit="clip", disable=not progress)]
