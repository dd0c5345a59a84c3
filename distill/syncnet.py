"""A small SyncNet-style audio-visual sync scorer for face crops (PyTorch, CPU-sized).

Inputs, on the SDK's clock (25 fps, 640 samples = 4 mel frames per video frame):

- video: for frame ``i``, the grey mouth crops of frames ``i-2 .. i+2`` (``mouth_crops``: the
  ``MOUTH_BOX`` of the eye-aligned mouth crop (``lipforce_sdk.geometry``), resized to 32 x 48),
  normalised per window;
- audio: for frame ``i``, the SDK's log-mel window of frames ``i-2 .. i+2``
  (``lipforce_sdk.audio.log_mel_clip`` with the default ``AudioConfig``: 20 mel frames x 80).

Both go to a 128-d unit vector; in-sync pairs are close. Trained contrastively (``train``):
each anchor video window must pick its own audio window among the same clip's audio shifted
by up to +-``MAX_OFFSET`` frames and the other clips' audio in the batch (InfoNCE).

Scores (``SyncScorer.score``), as in the SyncNet paper (Chung & Zisserman 2016): for each
offset ``k`` in ``[-15, 15]`` the mean distance ``dist[k]`` between video window ``i`` and
audio window ``i - k`` over the clip; ``offset = argmin dist`` (> 0: the video lags the
audio by that many frames), ``sync_d = min dist`` (Sync-D, lower is better),
``sync_c = median(dist) - min(dist)`` (Sync-C, confidence, higher is better). Distances are
between unit vectors (0..2), so the numbers are on this scorer's own scale, not the
original SyncNet's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lipforce_sdk.audio import log_mel_clip
from lipforce_sdk.config import AudioConfig
from lipforce_sdk.geometry import CropSpec

__all__ = [
    "VIDEO_HW",
    "MOUTH_BOX",
    "WINDOW",
    "MAX_OFFSET",
    "DEFAULT_WEIGHTS",
    "mouth_crops",
    "audio_features",
    "SyncNet",
    "SyncResult",
    "SyncScorer",
    "offset_distances",
    "train",
]

VIDEO_HW = (32, 48)  # mouth crop (height, width) the scorer sees
MOUTH_BOX = CropSpec().mouth_box()  # (y0, y1, x0, x1) of an aligned crop: where the lips move
WINDOW = 5  # video frames per window, centred on the frame
MAX_OFFSET = 15
FPS = 25.0
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "syncnet.safetensors"
_AUDIO_CFG = AudioConfig()  # context 2 + lookahead 2 = the same 5 frames as the video window


def mouth_crops(frames: np.ndarray) -> np.ndarray:
    """``[F, S, S, 3]`` uint8 aligned mouth crops -> ``[F, 32, 48]`` float32 grey crops in [0, 1]."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3 or f.shape[1] != f.shape[2] or f.dtype != np.uint8:
        raise ValueError(f"frames must be [F, S, S, 3] uint8 aligned mouth crops, got {f.shape} {f.dtype}")
    s = f.shape[1]
    y0, y1, x0, x1 = MOUTH_BOX
    r0, r1, c0, c1 = int(round(y0 * s)), int(round(y1 * s)), int(round(x0 * s)), int(round(x1 * s))
    out = np.empty((f.shape[0], *VIDEO_HW), np.float32)
    for i, img in enumerate(f):
        grey = cv2.cvtColor(np.ascontiguousarray(img[r0:r1, c0:c1]), cv2.COLOR_RGB2GRAY)
        out[i] = cv2.resize(grey, (VIDEO_HW[1], VIDEO_HW[0]), interpolation=cv2.INTER_AREA) / 255.0
    return out


def audio_features(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """16 kHz mono float32 -> ``[F, 20, 80]`` log-mel windows of frames ``i-2 .. i+2``."""
    a = np.asarray(audio, np.float32)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono [N] float32 at 16 kHz, got shape {a.shape}")
    return log_mel_clip(a, _AUDIO_CFG, FPS, int(num_frames))


def video_windows(crops: np.ndarray) -> np.ndarray:
    """``[F, H, W]`` -> ``[F, 5, H, W]``: frames ``i-2 .. i+2``, the clip's ends repeated."""
    f = crops.shape[0]
    idx = np.clip(np.arange(f)[:, None] + np.arange(WINDOW)[None, :] - WINDOW // 2, 0, f - 1)
    return crops[idx]


def _conv(cin: int, cout: int, stride) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """Two small conv towers to a shared 128-d unit sphere."""

    def __init__(self, dim: int = 128, width: int = 24):
        super().__init__()
        w = width
        self.video = nn.Sequential(
            *_conv(WINDOW, w, 1), *_conv(w, 2 * w, 2), *_conv(2 * w, 2 * w, 1),  # 16 x 24
            *_conv(2 * w, 3 * w, 2), *_conv(3 * w, 4 * w, 2),  # 4 x 6
            nn.AdaptiveAvgPool2d((2, 3)), nn.Flatten(), nn.Linear(4 * w * 6, dim),
        )
        self.audio = nn.Sequential(
            *_conv(1, w, (1, 2)), *_conv(w, 2 * w, 2), *_conv(2 * w, 2 * w, 1),  # 10 x 20
            *_conv(2 * w, 3 * w, 2), *_conv(3 * w, 4 * w, (1, 2)),  # 5 x 5
            nn.AdaptiveAvgPool2d((5, 1)), nn.Flatten(), nn.Linear(4 * w * 5, dim),
        )
        self.register_buffer("mel_mean", torch.zeros(_AUDIO_CFG.n_mels))
        self.register_buffer("mel_std", torch.ones(_AUDIO_CFG.n_mels))

    def embed_video(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, 5, 32, 48]`` grey in [0, 1] -> ``[B, dim]`` unit vectors."""
        mu = x.mean(dim=(1, 2, 3), keepdim=True)
        sd = x.std(dim=(1, 2, 3), keepdim=True) + 0.02
        return F.normalize(self.video((x - mu) / sd), dim=-1)

    def embed_audio(self, m: torch.Tensor) -> torch.Tensor:
        """m: ``[B, 20, 80]`` log-mel -> ``[B, dim]`` unit vectors."""
        m = (m - self.mel_mean) / self.mel_std
        return F.normalize(self.audio(m[:, None]), dim=-1)


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


def offset_distances(v: np.ndarray, a: np.ndarray, max_offset: int = MAX_OFFSET,
                     anchors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean distance between video window ``i`` and audio window ``i - k`` for each offset ``k``.

    Args:
        v, a: ``[F, D]`` embeddings of one clip.
        anchors: the video frames ``i`` to average over, each with ``0 <= i - k < F`` for every
            offset (e.g. a 1 s window of a longer clip). Default: the frames ``[K, F-K)`` (the
            same set for every offset, so offsets compare fairly) when the clip has more than
            ``2K + 4`` frames; otherwise each offset averages over the pairs that exist.

    Returns:
        ``(offsets [2K+1], dists [2K+1])``.
    """
    f = v.shape[0]
    offs = np.arange(-max_offset, max_offset + 1)
    if anchors is not None:
        i = np.asarray(anchors, np.int64)
        if i.size == 0 or i.min() - max_offset < 0 or i.max() + max_offset >= f:
            raise ValueError(f"anchors must lie in [{max_offset}, {f - max_offset}) so that every offset "
                             f"up to +-{max_offset} has its audio window; got {i.min()}..{i.max()} for F={f}")
    d = np.linalg.norm(v[:, None, :] - a[None, :, :], axis=-1)  # [F(video), F(audio)]
    out = np.empty(offs.size)
    for n, k in enumerate(offs):
        if anchors is not None:
            ii = i
        elif f > 2 * max_offset + 4:
            ii = np.arange(max_offset, f - max_offset)
        else:
            ii = np.arange(max(0, k), min(f, f + k))
        out[n] = d[ii, ii - k].mean() if ii.size else np.nan
    return offs, out


@dataclass(frozen=True)
class SyncResult:
    """Sync of one clip: ``offset`` frames (> 0: video lags audio), Sync-D, Sync-C and the
    mean distance per offset."""

    offset: int
    sync_d: float
    sync_c: float
    offsets: np.ndarray
    dists: np.ndarray


class SyncScorer:
    """Loads a trained ``SyncNet`` and scores clips. Stateless between calls."""

    def __init__(self, net: SyncNet, meta: dict | None = None):
        self.net = net.eval()
        self.meta = dict(meta or {})

    @classmethod
    def load(cls, path: str | Path | None = None) -> "SyncScorer":
        """From a safetensors file written by ``save`` (default: the committed weights)."""
        from safetensors.torch import load_file, safe_open

        p = Path(path) if path is not None else DEFAULT_WEIGHTS
        if not p.exists():
            raise FileNotFoundError(f"sync scorer weights not found at {p}; train them with "
                                    "`python -m distill.make_scorer` (see distill/README.md)")
        with safe_open(str(p), "pt") as fh:
            meta = fh.metadata() or {}
        cfg = json.loads(meta.get("config", "{}"))
        net = SyncNet(dim=int(cfg.get("dim", 128)), width=int(cfg.get("width", 24)))
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(p)).items()}
        net.load_state_dict(state)
        return cls(net, meta)

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        from safetensors.torch import save_file

        net = self.net
        cfg = {"dim": net.video[-1].out_features, "width": net.video[0].out_channels}
        m = {"config": json.dumps(cfg), **{k: str(v) for k, v in (meta or {}).items()}}
        state = {k: v.detach().to(torch.float16 if v.is_floating_point() and "running" not in k
                                  and "mel_" not in k else v.dtype).contiguous()
                 for k, v in net.state_dict().items()}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata=m)

    @torch.no_grad()
    def embed(self, frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face crops ``[F, S, S, 3]`` uint8 and their 16 kHz audio -> ``(v, a)`` ``[F, 128]``."""
        crops = mouth_crops(frames)
        mels = audio_features(audio, crops.shape[0])
        return self.embed_features(crops, mels)

    @torch.no_grad()
    def embed_features(self, crops: np.ndarray, mels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = self.net.embed_video(torch.from_numpy(video_windows(np.asarray(crops, np.float32))))
        a = self.net.embed_audio(torch.from_numpy(np.asarray(mels, np.float32)))
        return v.numpy(), a.numpy()

    def score(self, frames: np.ndarray, audio: np.ndarray, max_offset: int = MAX_OFFSET) -> SyncResult:
        """Sync of face crops ``[F, S, S, 3]`` with 16 kHz ``audio`` (frame ``i`` = samples
        ``[640 i, 640 (i + 1))``)."""
        return self.score_embeddings(*self.embed(frames, audio), max_offset=max_offset)

    @staticmethod
    def score_embeddings(v: np.ndarray, a: np.ndarray, max_offset: int = MAX_OFFSET,
                         anchors: np.ndarray | None = None) -> SyncResult:
        """``score`` from embeddings ``[F, D]`` (see ``offset_distances`` for ``anchors``)."""
        offs, d = offset_distances(v, a, max_offset, anchors)
        n = int(np.nanargmin(d))
        return SyncResult(int(offs[n]), float(d[n]), float(np.nanmedian(d) - d[n]), offs, d)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    steps: int = 400
    clips_per_step: int = 12
    anchors_per_clip: int = 12
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07
    seed: int = 0
    width: int = 24
    dim: int = 128


def _augment_video(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast/gamma jitter, a small shift and noise on ``[L, H, W]`` crops of one clip."""
    g = float(rng.uniform(0.7, 1.4))
    x = np.clip(x, 0, 1) ** g * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.1, 0.1))
    dy, dx = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
    x = np.roll(x, (dy, dx), axis=(1, 2))
    if rng.random() < 0.5:
        x = cv2.GaussianBlur(x.transpose(1, 2, 0), (0, 0), float(rng.uniform(0.3, 1.0))).reshape(x.shape[1], x.shape[2], -1).transpose(2, 0, 1)
    return (x + rng.normal(0, 0.01, x.shape)).astype(np.float32)


def train(clips: Sequence[tuple[np.ndarray, np.ndarray]], cfg: TrainConfig = TrainConfig(),
          log: Callable[[str], None] = print) -> SyncNet:
    """Train a ``SyncNet`` on ``[(crops [F, 32, 48], mels [F, 20, 80])]`` of in-sync clips.

    Each step takes ``clips_per_step`` clips; from each a run of ``anchors_per_clip`` video
    windows and the audio windows ``MAX_OFFSET`` frames either side of it. Every anchor's
    logits are its cosine similarity / temperature with every audio window of the step (its
    own clip shifted by up to +-(``MAX_OFFSET`` + run) frames, and the other clips); the
    target is the aligned one. Symmetric (audio -> video too).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    k, L = MAX_OFFSET, cfg.anchors_per_clip
    usable = [c for c in clips if c[0].shape[0] >= L + 2 * k + 2]
    if len(usable) < cfg.clips_per_step:
        raise ValueError(f"need at least {cfg.clips_per_step} clips of >= {L + 2 * k + 2} frames, got {len(usable)}")
    net = SyncNet(cfg.dim, cfg.width)
    allm = np.concatenate([m.reshape(-1, m.shape[-1]) for _, m in usable[:200]]).astype(np.float32)
    net.mel_mean.copy_(torch.from_numpy(allm.mean(0)))
    net.mel_std.copy_(torch.from_numpy(allm.std(0) + 1e-3))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    net.train()
    t0 = time.time()
    for step in range(cfg.steps):
        pick = rng.choice(len(usable), cfg.clips_per_step, replace=False)
        vids, auds, pos = [], [], []
        n_aud = 0
        for c in pick:
            crops, mels = usable[c]
            f = crops.shape[0]
            s = int(rng.integers(k, f - k - L + 1))  # anchors s .. s+L-1
            win = video_windows(crops)  # [F, 5, H, W]
            v = win[s: s + L].astype(np.float32)
            v = _augment_video(v.reshape(-1, *v.shape[2:]), rng).reshape(v.shape)
            vids.append(v)
            a = mels[s - k: s + L + k].astype(np.float32)  # [L + 2K, 20, 80]
            a = a + float(rng.normal(0, 0.3))  # gain jitter (log domain)
            auds.append(a)
            pos.append(n_aud + k + np.arange(L))
            n_aud += a.shape[0]
        ev = net.embed_video(torch.from_numpy(np.concatenate(vids)))
        ea = net.embed_audio(torch.from_numpy(np.concatenate(auds)))
        target = torch.from_numpy(np.concatenate(pos)).long()
        logits = ev @ ea.T / cfg.temperature  # [B_v, B_a]
        loss_v = F.cross_entropy(logits, target)
        # audio -> video: each aligned audio window against all anchors
        loss_a = F.cross_entropy(logits[:, target].T, torch.arange(target.numel()))
        loss = loss_v + 0.5 * loss_a
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            with torch.no_grad():
                acc = float((logits.argmax(1) == target).float().mean())
            log(f"step {step:4d}  loss {loss.item():.3f}  top-1 {acc:.2f}  {time.time() - t0:5.0f} s")
    return net.eval()
