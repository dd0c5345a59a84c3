"""Real talking-head clips (HDTF-style: one face, its own speech) for training and scoring.

A folder of clips (``--data DIR`` / ``--clips DIR``): every ``*.mp4``/``*.mov``/``*.mkv`` with an
audio track, or with a sound file of the same stem beside it (``NAME.wav``/``NAME_audio.wav``/
``.flac``/``.mp3``). Each clip is read at the model's 25 fps (nearest earlier frame for other
rates), its speech at 16 kHz mono, and its face tracked with the SDK's face mesh
(``lipforce_sdk.facemesh``): per frame the smoothed landmarks (geometry) and the raw inner-lip
opening (measures). Tracking is the slow part (~10-20 ms a frame), so a clip's track is cached
as ``.npz`` under ``$LIPFORCE_CACHE/tracks`` keyed by the file's size and mtime.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipforce_sdk.geometry import FaceKeypoints
from lipforce_sdk.media import probe, read_audio, read_video

__all__ = ["RealClip", "find_clips", "load_clip", "VIDEO_EXT", "AUDIO_EXT"]

VIDEO_EXT = (".mp4", ".mov", ".mkv", ".webm", ".avi")
AUDIO_EXT = (".wav", ".flac", ".mp3", ".m4a", ".ogg")
FPS = 25.0
SR = 16000


@dataclass(frozen=True, eq=False)
class RealClip:
    """``frames`` uint8 ``[F, H, W, 3]`` at 25 fps, ``audio`` float32 ``[F * 640]`` (16 kHz),
    ``points`` float32 ``[F, 468, 2]`` smoothed face-mesh landmarks (NaN where no face),
    ``opening`` ``[F]`` raw inner-lip opening / mouth width (NaN where no face)."""

    name: str
    path: str
    frames: np.ndarray
    audio: np.ndarray
    points: np.ndarray
    opening: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def found(self) -> np.ndarray:
        return np.isfinite(self.points[:, 0, 0])

    def keypoints(self, i: int) -> FaceKeypoints:
        return FaceKeypoints.from_mediapipe(self.points[i])


def _audio_for(video: Path) -> Path | None:
    for stem in (video.stem, video.stem + "_audio"):
        for ext in AUDIO_EXT:
            p = video.with_name(stem + ext)
            if p.is_file():
                return p
    return None


def find_clips(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(video, audio source)`` of every clip in ``folder`` that has speech (its own track or a
    sound file beside it), sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise FileNotFoundError(f"clip folder {str(d)!r} does not exist; pass a folder of talking-head videos "
                                "(each with its audio track or a NAME.wav beside it)")
    out = []
    for v in sorted(p for p in d.iterdir() if p.suffix.lower() in VIDEO_EXT):
        a = _audio_for(v)
        if a is None and probe(v).has_audio:
            a = v
        if a is not None:
            out.append((v, a))
    return out


def _resample_frames(frames: np.ndarray, src_fps: float, n_out: int) -> np.ndarray:
    idx = np.minimum(np.floor(np.arange(n_out) / FPS * src_fps + 1e-6).astype(np.int64), len(frames) - 1)
    return frames[idx]


def _cache_dir() -> Path:
    return Path(os.environ.get("LIPFORCE_CACHE", Path.home() / ".cache" / "lipforce")) / "tracks"


def track_points(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face-mesh landmarks of every frame: smoothed points ``[F, 468, 2]`` and the raw lip
    opening ``[F]`` (NaN where no face)."""
    from lipforce_sdk.facemesh import LandmarkTracker

    tr = LandmarkTracker()
    pts = np.full((len(frames), 468, 2), np.nan, np.float32)
    op = np.full(len(frames), np.nan, np.float32)
    for i, f in enumerate(frames):
        lm = tr.update(f)
        if lm is not None:
            pts[i] = lm.points[:, :2]
            op[i] = tr.last_raw.lip_opening()
    return pts, op


def load_clip(video: str | Path, audio: str | Path | None = None, max_seconds: float | None = None,
              cache: bool = True) -> RealClip:
    """Read a clip at 25 fps with its speech and face track (cached)."""
    video = Path(video)
    audio = Path(audio) if audio is not None else (_audio_for(video) or video)
    frames, fps = read_video(video)
    samples = read_audio(audio, sample_rate=SR)
    dur = min(len(frames) / fps, samples.size / SR)
    if max_seconds is not None:
        dur = min(dur, float(max_seconds))
    n = int(np.floor(dur * FPS + 1e-6))
    if n < 1:
        raise ValueError(f"{str(video)!r} has no frame with speech (video {len(frames) / fps:.2f} s, "
                         f"audio {samples.size / SR:.2f} s)")
    frames = _resample_frames(frames, fps, n)
    samples = np.pad(samples, (0, max(0, n * 640 - samples.size)))[: n * 640].astype(np.float32)
    st = video.stat()
    key = hashlib.sha1(f"{video.resolve()}|{st.st_size}|{st.st_mtime_ns}|{n}|v1".encode()).hexdigest()[:16]
    cpath = _cache_dir() / f"{video.stem}-{key}.npz"
    if cache and cpath.is_file():
        z = np.load(cpath)
        pts, op = z["points"], z["opening"]
    else:
        pts, op = track_points(frames)
        if cache:
            cpath.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cpath, points=pts, opening=op)
    return RealClip(video.stem, str(video), frames, samples, pts, op)
