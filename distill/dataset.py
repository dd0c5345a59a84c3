"""The training and evaluation sets of the recipe: source/target pairs as model inputs.

A ``PairSet`` holds, per clip, exactly what the SDK's ``ChunkRenderer`` gives the model at run
time: the *masked* source frames (the mouth region of ``mouth_mask_hard`` set to 0 in [-1, 1]),
the log-mel encoder windows of the new speech (``log_mel_clip``, the same arithmetic as the
stream), plus the training target (the target frames) and what evaluation needs (the pair).
Clips are cut to a whole number of chunks (``Tc`` video frames).

Built from ``data.make_sample_pair``: ``train`` and ``held_out`` never share sentences,
identities or motions. Rendering is ~3 ms per frame, so a set is rebuilt rather than stored in
the repository; ``load_or_build`` keeps a copy under a work directory between stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipforce_sdk.audio import log_mel_clip
from lipforce_sdk.config import ModelConfig
from lipforce_sdk.face import mouth_mask_hard

from .data import make_sample_pair
from .evaluate import cut_pair
from .faces import Pair

__all__ = ["PairSet", "build_pairset", "load_or_build", "to_unit", "from_unit", "masked_source", "latent_mask"]


def to_unit(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[F, S, S, 3]`` -> float32 ``[3, F, S, S]`` in [-1, 1] (the SDK's scaling)."""
    return np.ascontiguousarray((frames.astype(np.float32) / 127.5 - 1.0).transpose(3, 0, 1, 2))


def from_unit(x) -> np.ndarray:
    """float ``[3, F, S, S]`` in [-1, 1] (array or tensor) -> uint8 ``[F, S, S, 3]`` (rounded)."""
    x = np.asarray(x).transpose(1, 2, 3, 0)
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def masked_source(frames: np.ndarray, res: int) -> np.ndarray:
    """The DiT's view of the input clip, as ``ChunkRenderer`` builds it: ``to_unit(frames)`` with
    the ``mouth_mask_hard`` region set to 0, float32 ``[3, F, S, S]``."""
    keep = (1.0 - mouth_mask_hard(res))[None, None]
    return (to_unit(frames) * keep).astype(np.float32)


def latent_mask(cfg: ModelConfig) -> np.ndarray:
    """The DiT's mask input for one latent frame, ``[Tc, h, w]`` (as ``ChunkRenderer`` builds it)."""
    res = cfg.stream.resolution
    h, w = cfg.latent_hw
    sc = cfg.vae.spatial_compression
    m = mouth_mask_hard(res).reshape(h, sc, w, sc).max(axis=(1, 3)).astype(np.float32)
    return np.broadcast_to(m, (cfg.mask_channels, h, w)).copy()


@dataclass
class PairSet:
    """Per clip ``i``: ``target[i]``/``source[i]`` uint8 ``[F_i, S, S, 3]`` (F_i a multiple of Tc),
    ``masked[i]`` float32 ``[3, F_i, S, S]`` (model input), ``mel[i]`` ``[F_i, Wm, n_mels]``,
    ``audio[i]`` ``[F_i * 640]``; ``pairs`` the full ``Pair`` objects (evaluation only, may be empty)."""

    split: str
    target: list[np.ndarray]
    source: list[np.ndarray]
    masked: list[np.ndarray]
    mel: list[np.ndarray]
    audio: list[np.ndarray]
    pairs: list[Pair]

    def __len__(self) -> int:
        return len(self.target)

    @property
    def num_frames(self) -> int:
        return int(sum(t.shape[0] for t in self.target))


def build_pairset(cfg: ModelConfig, split: str, n: int, start: int = 0, max_frames: int | None = None,
                  keep_pairs: bool = False, progress: bool = True) -> PairSet:
    """Clips ``start .. start + n - 1`` of ``split`` as model inputs."""
    from tqdm import tqdm

    tc = cfg.vae.temporal_compression
    out = PairSet(split, [], [], [], [], [], [])
    for i in tqdm(range(start, start + n), desc=f"render {split}", unit="clip", disable=not progress):
        p = make_sample_pair(i, split, size=cfg.stream.resolution)
        f = p.target.shape[0] if max_frames is None else min(p.target.shape[0], max_frames)
        f = (f // tc) * tc
        p = cut_pair(p, f)
        out.target.append(p.target)
        out.source.append(p.source)
        out.masked.append(masked_source(p.source, cfg.stream.resolution))
        out.mel.append(log_mel_clip(p.audio, cfg.audio, cfg.stream.fps, f))
        out.audio.append(p.audio)
        if keep_pairs:
            out.pairs.append(p)
    return out


def load_or_build(path: Path, cfg: ModelConfig, split: str, n: int, **kw) -> PairSet:
    """``build_pairset`` cached as an ``.npz`` at ``path`` (rebuilt when the count differs)."""
    path = Path(path)
    if path.is_file() and not kw.get("keep_pairs"):
        z = np.load(path, allow_pickle=False)
        if int(z["n"]) == n:
            lens = z["lens"]
            cuts = np.cumsum(lens)[:-1]
            tgt = np.split(z["target"], cuts)
            src = np.split(z["source"], cuts)
            mel = np.split(z["mel"], cuts)
            aud = np.split(z["audio"], cuts * cfg.samples_per_video_frame)
            masked = [masked_source(s, cfg.stream.resolution) for s in src]
            return PairSet(split, tgt, src, masked, mel, aud, [])
    ps = build_pairset(cfg, split, n, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, n=n, lens=np.array([t.shape[0] for t in ps.target]), target=np.concatenate(ps.target),
             source=np.concatenate(ps.source), mel=np.concatenate(ps.mel), audio=np.concatenate(ps.audio))
    return ps
