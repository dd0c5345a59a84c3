"""Avatar enrollment: adapt a model to one face and prepare that face's idle loop.

``lipforce enroll SOURCE --out avatars/NAME`` (or ``enroll(source, out)``) writes an ordinary model
directory (manifest, weights, ``MODEL_CARD.md``) that ``Engine.load``, ``lipforce run --model``,
``lipforce export`` and ``lipforce build`` take unchanged, plus ``avatar/``: the face's loop with
its crops, masks, landmarks and encoded latents (``lipforce_sdk.avatar``), so that a kiosk pushes
audio only (``engine.session(avatar=...)``, ``lipforce run --avatar``).

Sources (``kind``; ``"auto"`` decides from the file):

- ``talking``: a clip of the person speaking with its own sound (>= 30 s). Self-supervised, as
  lip-sync models are trained: the mouth masked (the clip's most closed mouth, the same mask in
  every crop), the clip's own audio as the condition, its real frames as the target
  (``distill.crops`` conventions); in half the DiT's windows the face around the mouth comes from up
  to ``context_shift`` frames away, so that the sound, not the jaw and cheeks of the same frame, has
  to tell the mouth. The avatar's loop is the calmest ``loop_seconds`` of the clip.
- ``idle``: a silent (or not speaking) loop of the person. The loop's own frames are the source;
  the targets are the same frames with the face's own lips warped to the viseme parameters of
  espeak-ng sentences (``distill.photoreal.talk`` from each frame's landmarks): exact targets.
- ``photo``: one image; the same as an idle loop of one frame (a still face).

Stages (each resumable; the work lives in ``OUT.partial/``, the model directory appears at ``OUT``
by one ``os.replace`` when everything is written): ``track`` (face mesh over the source, checks)
-> ``data`` (aligned crops, masks, targets, references) -> ``latents`` (the base model's frozen
VAE encoder) -> ``decoder`` (the VAE decoder fine-tuned on this face's crops: L1 + gradient L1,
mouth weighted) -> ``dit`` (the DiT and the audio encoder, supervised through the runtime's own
two-step cached rollout, ``distill.student.rollout``: weighted MSE to the true target latents)
-> ``eval`` (held-out windows, base vs enrolled) -> ``avatar`` (the loop prepared with the
enrolled model) -> the model directory. Training checkpoints (weights, optimizer, schedule and
random states) are written every ``checkpoint_seconds`` and on Ctrl-C, so an interrupted run
continues where it stopped and ends with the weights an uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["enroll", "EnrollConfig", "EnrollError", "EnrollResult", "SourceInfo", "inspect_source", "KINDS",
           "MIN_TALKING_SECONDS", "main"]

KINDS = ("talking", "idle", "photo")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXT = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
FPS = 25.0
SR = 16000
MIN_TALKING_SECONDS = 30.0  # a talking clip shorter than this is too little of the person's mouth
SPEECH_LEVEL_DB = 20.0  # speech_envelope level (dB above -60 dBFS in 600-2500 Hz) of a frame with speech
MIN_SPEECH_SHARE = 0.2  # a sound track "speaks" when at least this share of its frames has speech
MIN_FACE_SHARE = 0.5  # frames where the face mesh must find the face
MAX_UPSCALE = 2.0  # the model's crop may enlarge the face's crop at most this much (else: face too small)
SEVERAL_FACES_SHARE = 0.5  # sampled frames with a second face at least half the main face's width
MAX_OPENING = 0.30  # idle loop / photo: a mouth more open than this cannot be made to speak (photoreal)
FORMAT_VERSION = 1  # of the work folder; a change refuses to resume an older one


class EnrollError(ValueError):
    """The source cannot be enrolled as given; the message says what was wrong and what to do."""


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


# The DiT's steps and learning rate per source kind where EnrollConfig leaves them None
# (BENCHMARKS.md section 8). A talking clip: 1400 steps at 2e-3 keep a 60 s clip within 20 minutes on
# a 2-core CPU (14.0 min) and beat 1000 on the held-out lip box (25.2 vs 24.9 dB with the exemplars),
# as 1000 beat 700 at 1e-3 (24.8 vs 24.4 dB); one photo's made-up visemes need more steps to follow
# the speech (lip r 0.41 at 700, 0.53 at 1200); an idle loop passes at 700.
# A talking clip's DiT also sees the face around the mouth from up to 6 frames away in half its windows
# (context_shift): trained on its own frames alone, the edtalk clip's model streamed on its avatar loop
# with new speech moved the mouth with the loop, not the sound (lip r 0.05, null 0.12; 0.34 with the
# shift), for 0.5 dB of lip box on the clip's own held-out footage; on the second clip it cost (new
# speech r 0.24 -> 0.16, -0.3 dB): kept for the worst case and the mean of the two (section 8).
# A talking clip's DiT ends as the moving average of its weights (decay min(0.995, (1 + i) / (10 + i)) at
# step i; at 1400 steps the second term is the smaller throughout): held-out lip box +0.05 /
# +0.20 dB on the two clips, the rest within the runs' spread (section 8); idle and photo not measured.
KIND_DEFAULTS = {"talking": {"dit_steps": 1400, "dit_lr": 2e-3, "context_shift": 6, "dit_ema": 0.995},
                 "idle": {"dit_steps": 700, "dit_lr": 1e-3, "context_shift": 0, "dit_ema": 0.0},
                 "photo": {"dit_steps": 1200, "dit_lr": 1e-3, "context_shift": 0, "dit_ema": 0.0}}


@dataclass
class EnrollConfig:
    """Step counts and sizes. The defaults fit a 60 s talking clip into 20 minutes on a 2-core
    CPU (BENCHMARKS.md), data preparation included."""

    decoder_steps: int = 1200
    decoder_batch: int = 8
    decoder_lr: float = 3e-4
    decoder_window: int = 64  # crop windows the decoder trains on (it is convolutional)
    decoder_adv: float = 0.05  # weight of the patch discriminator's (hinge) loss; 0: off
    decoder_dit_share: float = 0.5  # share of windows decoded from the enrolled DiT's outputs
    dit_steps: int | None = None  # None: the source kind's default (KIND_DEFAULTS)
    dit_batch: int = 4
    dit_video_frames: int = 8  # video frames per training window (rounded to whole chunks)
    dit_lr: float | None = None  # None: the kind's; 1e-4 barely moved the loss in 700 steps (mouth +1.3 dB vs +3.5 at 1e-3)
    dit_ema: float | None = None  # None: the kind's; the DiT (and audio encoder) kept as an exponential moving
    # average of its weights with this decay per step (0: the last step's weights)
    tune_audio: bool = True  # also adapt the audio encoder
    context_shift: int | None = None  # None: the kind's; talking: half the DiT's windows see the face around
    # the mouth from up to this many latent frames earlier or later (_shift_condition)
    sync_weight: float = 0.0  # weight of the SyncNet reward (distill.student.SyncReward); 0: off
    exemplars: int = 600  # mouth exemplars kept for the runtime (lipforce_sdk.exemplars); 0: none
    mouth_weight: float = 4.0
    loop_seconds: float = 6.0  # the avatar's loop (the source's calmest stretch)
    max_seconds: float = 120.0  # a longer source is cut (more than the training steps can use)
    window_frames: int = 48  # talking: training clips are cut into windows of this many frames
    val_share: float = 0.1  # talking: the clip's last share, held out for the card's scores
    sentences: int = 32  # idle / photo: espeak-ng sentences made on the face
    val_sentences: int = 3  # idle / photo: held-out sentences for the card's scores
    eval_frames: int = 250  # the card's scores: at most this many held-out frames
    checkpoint_seconds: float = 60.0
    seed: int = 0

    def validate(self) -> "EnrollConfig":
        for name in ("decoder_steps", "dit_steps", "sentences", "val_sentences", "exemplars", "context_shift",
                     "mouth_weight"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise EnrollError(f"EnrollConfig.{name}={getattr(self, name)} must be >= 0")
        for name in ("decoder_batch", "dit_batch", "dit_video_frames", "window_frames"):
            if getattr(self, name) < 1:
                raise EnrollError(f"EnrollConfig.{name}={getattr(self, name)} must be >= 1")
        if not 0.04 <= self.loop_seconds <= 60:
            raise EnrollError(f"EnrollConfig.loop_seconds={self.loop_seconds} must be in [0.04, 60] s")
        if self.dit_ema is not None and not 0.0 <= self.dit_ema < 1.0:
            raise EnrollError(f"EnrollConfig.dit_ema={self.dit_ema} must be in [0, 1) (0: off)")
        if not 0.0 <= self.val_share < 0.5:
            raise EnrollError(f"EnrollConfig.val_share={self.val_share} must be in [0, 0.5)")
        return self

    @classmethod
    def from_options(cls, ns: argparse.Namespace) -> "EnrollConfig":
        """The config a parsed command line asks for: each field that ``ns`` holds and that was
        given (not ``None``) replaces the default."""
        return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)
                      if getattr(ns, f.name, None) is not None})

    def for_kind(self, kind: str) -> "EnrollConfig":
        """This config with the settings left to the source kind (``None``) filled in."""
        fill = {k: v for k, v in KIND_DEFAULTS[kind].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **fill) if fill else self


# --------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------


def _model_name(model_dir: Path) -> str:
    """How the card names the base model: the bundled one by that name, another by its path."""
    from lipforce_sdk.session import default_model_dir

    if Path(model_dir).resolve() == default_model_dir().resolve():
        return "lipforce_sdk/assets/default (bundled)"
    return str(model_dir)


@dataclass
class SourceInfo:
    """What ``inspect_source`` found: ``kind``, the span used (``start`` s, ``frames`` at 25 fps),
    the file's own frame rate and size, whether it has sound and how much of it is speech."""

    path: str
    kind: str
    start: float
    frames: int
    src_fps: float
    width: int
    height: int
    has_audio: bool
    speech_share: float | None
    size_bytes: int
    mtime_ns: int

    @property
    def seconds(self) -> float:
        return self.frames / FPS


def _speech_share(audio: np.ndarray, frames: int) -> float:
    from lipforce_sdk.sync_check import speech_envelope

    env = speech_envelope(audio, SR, FPS, max(frames, 1))
    return float(np.mean(env >= SPEECH_LEVEL_DB))


def _read_span_audio(path: Path, start: float, frames: int) -> np.ndarray:
    from lipforce_sdk.media import read_audio

    a = read_audio(path, sample_rate=SR)
    s = int(round(start * SR))
    a = a[s:s + frames * 640]
    return np.pad(a, (0, frames * 640 - a.size)).astype(np.float32)


def inspect_source(source, kind: str = "auto", start: float | None = None, end: float | None = None,
                   min_talking_seconds: float = MIN_TALKING_SECONDS) -> SourceInfo:
    """Decide what ``source`` is and check what can be checked without the face: the file type,
    the span, the sound track (talking: long enough, speaking). Raises ``EnrollError``."""
    p = Path(source)
    if not p.is_file():
        raise EnrollError(f"source {str(p)!r} does not exist; pass a talking clip with its sound, an idle loop "
                          "video or a photo")
    if kind not in ("auto",) + KINDS:
        raise EnrollError(f"kind={kind!r} must be 'auto' or one of {KINDS}")
    ext = p.suffix.lower()
    st = p.stat()
    if ext in IMAGE_EXT:
        if kind not in ("auto", "photo"):
            raise EnrollError(f"{p.name!r} is an image: it can only be enrolled as a photo (--kind photo), not "
                              f"as {kind!r}")
        import cv2

        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise EnrollError(f"{str(p)!r} is not a readable image; give a PNG or JPEG photo of the face")
        return SourceInfo(str(p.resolve()), "photo", 0.0, 1, FPS, img.shape[1], img.shape[0], False, None,
                          st.st_size, st.st_mtime_ns)
    if ext not in VIDEO_EXT:
        raise EnrollError(f"{p.name!r}: unsupported file type {ext or '(none)'!r}; give a video "
                          f"({', '.join(VIDEO_EXT)}) or a photo ({', '.join(IMAGE_EXT)})")
    from lipforce_sdk.media import probe

    try:
        info = probe(p)
    except Exception as e:  # noqa: BLE001 - any decoder error means the same to the user
        raise EnrollError(f"{str(p)!r} cannot be read as a video ({e}); re-encode it, e.g. "
                          "ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4") from e
    if not info.has_video:
        raise EnrollError(f"{str(p)!r} has no video stream; give a video of the face or a photo")
    if kind == "photo":
        raise EnrollError(f"{p.name!r} is a video; enroll it as an idle loop (--kind idle) or give a photo")
    dur = info.duration_s
    s0 = float(start or 0.0)
    s1 = dur if end is None else min(float(end), dur)
    if s0 < 0 or s1 <= s0:
        raise EnrollError(f"the span start={s0:g} s, end={s1:g} s is empty (the clip is {dur:.2f} s long)")
    frames = int(math.floor((s1 - s0) * FPS + 1e-6))
    if frames < 1:
        raise EnrollError(f"the span of {s1 - s0:.3f} s holds no frame at {FPS:g} fps")
    share = None
    if info.has_audio:
        share = _speech_share(_read_span_audio(p, s0, frames), frames)
    speaks = share is not None and share >= MIN_SPEECH_SHARE
    if kind == "auto":
        kind = "talking" if speaks else "idle"
    if kind == "talking":
        if not info.has_audio:
            raise EnrollError(f"{p.name!r} has no sound track: a talking clip is enrolled with its own speech; give "
                              "the clip with its sound, or enroll it as an idle loop (--kind idle)")
        if not speaks:
            raise EnrollError(f"no speech in the sound track of {p.name!r}: {100 * share:.0f}% of its frames are "
                              f"above {SPEECH_LEVEL_DB:g} dB in the speech band (>= {100 * MIN_SPEECH_SHARE:.0f}% "
                              "needed); if the person does not speak in it, enroll it as an idle loop (--kind idle)")
        if frames / FPS < min_talking_seconds:
            raise EnrollError(f"the talking clip is too short: {frames / FPS:.1f} s (of {p.name!r}"
                              f"{'' if start is None and end is None else ', in the span given'}); enrollment from a "
                              f"talking clip needs >= {min_talking_seconds:g} s of the person speaking. Give a longer "
                              "clip, or enroll this one as an idle loop (--kind idle: speech is made on the face)")
    return SourceInfo(str(p.resolve()), kind, s0, frames, float(info.fps or FPS), info.width, info.height,
                      bool(info.has_audio), share, st.st_size, st.st_mtime_ns)


def _iter_frames(info: SourceInfo) -> Iterator[tuple[int, np.ndarray]]:
    """``(i, frame)`` of the span at 25 fps (the nearest earlier source frame), RGB uint8."""
    if info.kind == "photo":
        import cv2

        img = cv2.imread(info.path, cv2.IMREAD_COLOR)
        yield 0, np.ascontiguousarray(img[..., ::-1])
        return
    from lipforce_sdk.media import iter_video_frames

    want = np.floor((info.start + np.arange(info.frames) / FPS) * info.src_fps + 1e-6).astype(np.int64)
    k = 0
    it = iter_video_frames(info.path)
    try:
        for si, frame in enumerate(it):
            while k < info.frames and want[k] == si:
                yield k, frame
                k += 1
            if k >= info.frames:
                break
    finally:
        it.close()


# --------------------------------------------------------------------------------------
# Work folder, checkpoints, interrupts
# --------------------------------------------------------------------------------------


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # np.savez keeps a .npz name
    write(tmp)
    os.replace(tmp, path)


def _save_npz(path: Path, **arrays) -> None:
    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    _atomic(path, w)


def _save_torch(path: Path, obj) -> None:
    import torch

    def w(tmp):
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    _atomic(path, w)


def _on_step(stage: str, step: int) -> None:
    """Called after every training step (tests replace it to interrupt a run)."""


class _Interrupt:
    """Ctrl-C during training: finish the step, write the checkpoint, then stop (a second Ctrl-C
    stops at once)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.requested:
                    raise KeyboardInterrupt
                self.requested = True

            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _job_key(info: SourceInfo, model_dir: Path, cfg: EnrollConfig, device: str) -> dict:
    from lipforce_sdk.manifest import sha256_file

    m = json.loads((model_dir / "manifest.json").read_text())
    weights = {k: sha256_file(model_dir / v)[:16] for k, v in sorted(m.get("weights", {}).items())}
    c = asdict(cfg)
    c.pop("checkpoint_seconds")
    return {"format_version": FORMAT_VERSION, "source": info.path, "source_bytes": info.size_bytes,
            "source_mtime_ns": info.mtime_ns, "kind": info.kind, "start": info.start, "frames": info.frames,
            "model": str(model_dir.resolve()), "weights": weights, "config": c, "device": device}


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class EnrollResult:
    """What ``enroll`` wrote: the model directory, the source's kind and span, the seconds per
    stage and the held-out scores (base model vs enrolled)."""

    out: Path
    kind: str
    source: str
    seconds: float
    stages: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    resumed: bool = False


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------


class _Enrollment:
    def __init__(self, info: SourceInfo, out: Path, model_dir: Path, cfg: EnrollConfig, device: str, progress: bool,
                 log: Callable[[str], None]):
        self.info, self.out, self.model_dir, self.cfg = info, out, model_dir, cfg
        self.device, self.progress, self.log = device, progress, log
        self.partial = out.with_name(out.name + ".partial")
        self.work = self.partial / "work"
        self.final = self.partial / "model"
        self.times: dict[str, float] = {}

    # ---- helpers ----
    def bar(self, total, desc, unit="it", initial=0):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not self.progress,
                    dynamic_ncols=True, leave=True)

    def base_model(self):
        from lipforce_sdk.model import load_model

        return load_model(self.model_dir)

    def stage(self, name: str, path: Path, fn: Callable[[], None]) -> None:
        if path.exists():
            self.log(f"[{name}] done before: {path.name}")
            return
        t0 = time.perf_counter()
        fn()
        self.times[name] = time.perf_counter() - t0
        times = self.work / "times.json"
        prev = json.loads(times.read_text()) if times.is_file() else {}
        prev[name] = prev.get(name, 0.0) + self.times[name]
        _atomic(times, lambda t: t.write_text(json.dumps(prev)))

    def run_stages(self) -> None:
        info = self.info
        self.log(f"enrolling {Path(info.path).name!r} as {info.kind} ({info.seconds:.1f} s, {info.frames} frames"
                 f"{'' if info.speech_share is None else f', speech in {100 * info.speech_share:.0f}% of them'}) "
                 f"from {self.model_dir} on {self.device}")
        w = self.work
        self.stage("track", w / "track.npz", self.track)
        self.stage("data", w / "data.npz", self.data)
        if self.cfg.exemplars > 0:
            self.stage("exemplars", w / "exemplars.npz", self.exemplars)
        self.stage("latents", w / "latents.pt", self.latents)
        self.stage("dit", w / "dit.pt", self.dit)
        self.stage("decoder", w / "decoder.pt", self.decoder)
        self.stage("eval", w / "scores.json", self.evaluate)
        self.stage("avatar", w / "avatar", self.avatar)

    # ---- stage 1: track ----
    def track(self) -> None:
        from lipforce_sdk.facemesh import LandmarkTracker

        info = self.info
        tr = LandmarkTracker(smoothing=info.kind != "photo")
        n = info.frames
        pts = np.full((n, 468, 2), np.nan, np.float32)
        opening = np.full(n, np.nan, np.float32)
        sample = set(np.unique(np.linspace(0, n - 1, min(n, 12)).round().astype(int)).tolist())
        faces_seen: list[int] = []
        got = 0
        with self.bar(n, "track face", "frame") as bar:
            for i, f in _iter_frames(info):
                lm = tr.update(f)
                if lm is not None:
                    pts[i] = lm.points[:, :2]
                    opening[i] = tr.last_raw.lip_opening()
                if i in sample:
                    det = tr.detector.detect(f)
                    if det:
                        wmax = max(d.width for d in det)
                        faces_seen.append(sum(d.width >= 0.5 * wmax for d in det))
                    else:
                        faces_seen.append(0)
                got = i + 1
                bar.update(1)
        if got < n:  # the container said more than it holds
            pts, opening, n = pts[:got], opening[:got], got
        found = np.isfinite(pts[:, 0, 0])
        self._check_faces(found, pts, faces_seen, n)
        _save_npz(self.work / "track.npz", points=pts, opening=opening, frames=np.int64(n))

    def _check_faces(self, found: np.ndarray, pts: np.ndarray, faces_seen: list[int], n: int) -> None:
        from lipforce_sdk.geometry import MEDIAPIPE

        name = Path(self.info.path).name
        if not found.any():
            raise EnrollError(f"no face found in {name!r} (none of its {n} frame(s)); the face mesh needs a frontal "
                              "to three-quarter face, at least ~40 px wide: give a video or photo where the face "
                              "is visible")
        if found.mean() < MIN_FACE_SHARE:
            raise EnrollError(f"a face is found in only {int(found.sum())} of {n} frames of {name!r} "
                              f"({100 * found.mean():.0f}%, >= {100 * MIN_FACE_SHARE:.0f}% needed); cut the clip "
                              "to where the face is visible (--start/--end)")
        several = [c for c in faces_seen if c >= 2]
        if faces_seen and len(several) / len(faces_seen) >= SEVERAL_FACES_SHARE and len(several) >= 1:
            raise EnrollError(f"several faces in {name!r}: {max(several)} faces of similar size in {len(several)} "
                              f"of {len(faces_seen)} sampled frames; enrollment learns one person: crop the video to "
                              "that person (e.g. ffmpeg -i IN -vf crop=W:H:X:Y OUT.mp4)")
        le, re_ = list(MEDIAPIPE["left_eye"]), list(MEDIAPIPE["right_eye"])
        p = pts[found]
        d = np.hypot(*(p[:, le].mean(1) - p[:, re_].mean(1)).T)
        med = float(np.median(d))
        res = self.cfg_model().stream.resolution
        need = res / (1.8 * MAX_UPSCALE)  # the crop spans 1.8 eye distances
        if med < need:
            raise EnrollError(f"the face is too small in {name!r}: its eyes are {med:.0f} px apart (median), this "
                              f"model's {res} px mouth crop needs >= {need:.0f} px (the crop would be enlarged "
                              f"{res / (1.8 * med):.1f}x and blur); use a higher-resolution source or one where the "
                              "face fills more of the frame")

    def cfg_model(self):
        from lipforce_sdk.manifest import read_manifest

        return read_manifest(self.model_dir)[1]

    def load_track(self):
        z = np.load(self.work / "track.npz")
        return z["points"], z["opening"], int(z["frames"])

    # ---- the loop ----
    def loop_span(self, points: np.ndarray, opening: np.ndarray) -> tuple[int, int]:
        """(first, count) of the avatar's loop in the span's frames: the calmest ``loop_seconds``
        (the smallest mean lip opening) among the stretches where the face is found (an idle
        loop: and its mouth is closed enough to be made to speak)."""
        n = len(points)
        found = np.isfinite(points[:, 0, 0])
        if self.info.kind == "photo" or n == 1:
            return int(np.flatnonzero(found)[0]), 1
        ok = found
        if self.info.kind == "idle":
            ok = found & (np.nan_to_num(opening, nan=1.0) <= MAX_OPENING)
            if not ok.any():
                raise EnrollError(f"the mouth is open in every frame of the idle loop {Path(self.info.path).name!r} "
                                  f"(lip opening > {MAX_OPENING}); an idle loop needs closed lips: give one where "
                                  "the person keeps the mouth closed, or enroll a talking clip with its sound")
        want = max(1, int(round(self.cfg.loop_seconds * FPS)))
        idx = np.flatnonzero(ok)
        runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
        best, best_score = None, np.inf
        for r in runs:
            m = min(len(r), want)
            c = np.concatenate([[0.0], np.cumsum(np.nan_to_num(opening[r], nan=1.0))])
            means = (c[m:] - c[:-m]) / m
            j = int(np.argmin(means))
            score = float(means[j]) + (want - m) / want  # a loop as long as asked first, then the calmest
            if score < best_score:
                best, best_score = (int(r[j]), m), score
        return best

    def loop_frames(self, first: int, count: int) -> np.ndarray:
        out = []
        for i, f in _iter_frames(self.info):
            if first <= i < first + count:
                out.append(f)
            if i >= first + count - 1:
                break
        return np.stack(out)

    # ---- stage 2: data ----
    def data(self) -> None:
        cfg = self.cfg_model()
        points, opening, n = self.load_track()
        first, count = self.loop_span(points, opening)
        if self.info.kind == "talking":
            train, val = self._talking_clips(cfg, points, opening)
        else:
            train, val = self._speaking_clips(cfg, points, first, count)
        from .crops import CropSet

        _atomic(self.work / "val.npz", lambda t: CropSet.build(cfg, val).save(t) if val else _save_npz(t, empty=1))
        _atomic(self.work / "data.npz", lambda t: CropSet.build(cfg, train).save(t))
        _save_npz(self.work / "loop.npz", first=np.int64(first), count=np.int64(count))

    def _rest(self, cfg, points, opening, frames_ok):
        """The most closed mouth's keypoints in its own crop: the mask of every crop."""
        from lipforce_sdk.geometry import AlignedCrop, FaceKeypoints, mouth_mask_for

        op = np.where(frames_ok, np.nan_to_num(opening, nan=np.inf), np.inf)
        rest = int(np.argmin(op))
        kp = FaceKeypoints.from_mediapipe(points[rest])
        ac = AlignedCrop.from_keypoints(kp, cfg.stream.resolution)
        return mouth_mask_for(kp.map(ac.to_crop_affine()), cfg.stream.resolution).hard.astype(np.uint8)

    def _talking_clips(self, cfg, points, opening):
        """Self-supervised windows of the real clip: source = target = the real crops."""
        from lipforce_sdk.session import reference_frames_needed

        from .crops import CropClip

        n = len(points)
        found = np.isfinite(points[:, 0, 0])
        hard = self._rest(cfg, points, opening, found)
        size = cfg.stream.resolution
        crops = np.zeros((n, size, size, 3), np.uint8)
        for i, _, view in self._views(cfg, points, n, "crop frames"):
            crops[i] = view.image
        audio = _read_span_audio(Path(self.info.path), self.info.start, n)
        n_val = self._val_frames(cfg, n)
        r = reference_frames_needed(cfg)
        rng = np.random.default_rng(self.cfg.seed)
        w = self.cfg.window_frames

        def clips(lo, hi, stride, tag):
            idx = np.flatnonzero(found[lo:hi]) + lo
            runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
            pool = np.flatnonzero(found[:n - n_val])  # references come from the training part
            out = []
            for run in runs:
                if len(run) < 2 * cfg.video_frames_per_chunk:
                    continue
                fv = cfg.video_frames_per_chunk
                m = min(w, len(run)) // fv * fv  # whole chunks (a temporal VAE packs Tc frames)
                for s in range(0, len(run) - m + 1, stride):
                    sl = run[s:s + m]
                    far = pool[(pool < sl[0] - 25) | (pool > sl[-1] + 25)]
                    far = far if len(far) >= max(r, 1) else pool
                    picks = rng.choice(far, r, replace=len(far) < r) if r else np.zeros(0, np.int64)
                    a0 = int(sl[0]) * 640
                    out.append(CropClip(f"{tag}@{int(sl[0])}", "real", crops[sl], crops[sl],
                                        np.repeat(hard[None], m, 0), crops[picks], np.repeat(hard[None], r, 0),
                                        audio[a0:a0 + m * 640]))
            return out

        train = clips(0, n - n_val, max(1, w // 2), "train")
        if not train:
            raise EnrollError("the clip has no stretch of consecutive frames with a face long enough to train on; "
                              "give a clip where the face stays visible")
        val = clips(n - n_val, n, w, "val") if n_val else []
        return train, val

    def _views(self, cfg, points, stop: int, what: str):
        """``(i, frame, FrameView)`` of the span's frames before ``stop`` where the face was
        tracked, as a session prepares them (the crop's smoothing restarts after a gap)."""
        from lipforce_sdk.geometry import FaceKeypoints
        from lipforce_sdk.session import FramePreparer

        found = np.isfinite(points[:, 0, 0])
        prep = FramePreparer(cfg)
        prev = False
        with self.bar(stop, what, "frame") as bar:
            for i, f in _iter_frames(self.info):
                if i >= stop:
                    break
                if found[i]:
                    if not prev:
                        prep.reset()
                    yield i, f, prep(f, FaceKeypoints.from_mediapipe(points[i]))
                prev = bool(found[i])
                bar.update(1)

    def _val_frames(self, cfg, n: int) -> int:
        """Talking: the frames at the span's end held out for the card's scores."""
        n_val = min(int(round(self.cfg.val_share * n)), int(10 * FPS))  # at most 10 s held out
        return n_val if n_val >= 2 * cfg.video_frames_per_chunk else 0

    def _photo_faces(self, frames, points):
        """A ``PhotoFace`` per loop frame, cut to a square around the face (its offset returned)."""
        from .photoreal import PhotoFace, face_box

        faces = []
        for f, p in zip(frames, points):
            x0, y0, side = face_box(p, 4.0)
            h, w = f.shape[:2]
            c0, r0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
            c1, r1 = min(w, int(math.ceil(x0 + side))), min(h, int(math.ceil(y0 + side)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    face = PhotoFace(np.ascontiguousarray(f[r0:r1, c0:c1]), p - np.array([c0, r0], np.float32),
                                     max_opening=MAX_OPENING)
                except ValueError as e:
                    what = "photo" if self.info.kind == "photo" else "idle loop"
                    raise EnrollError(f"the {what} cannot be made to speak: {e}. Give one where the lips are closed "
                                      "or nearly closed") from e
            faces.append((face, (c0, r0)))
        return faces

    def _speaking_clips(self, cfg, points, first, count):
        """Idle loop / photo: the loop's frames made to say espeak-ng sentences (exact targets)."""
        from lipforce_sdk.avatar import Avatar, pingpong
        from lipforce_sdk.geometry import AlignedCrop, FaceKeypoints
        from lipforce_sdk.session import reference_frames_needed

        from .crops import CropClip
        from .photoreal import talk
        from .speech import sample_spec, synthesize
        from .visemes import frame_params

        frames = self.loop_frames(first, count)
        pts = points[first:first + count]
        kps = [FaceKeypoints.from_mediapipe(p) for p in pts]
        av = Avatar.from_frames(frames, kps, cfg.stream.resolution, fps=FPS)
        faces = self._photo_faces(frames, pts)
        r = reference_frames_needed(cfg)
        rng = np.random.default_rng(self.cfg.seed)
        n_loop = len(frames)
        period = 1 if n_loop == 1 else 2 * (n_loop - 1)

        def one(split: str, k: int):
            spec = sample_spec(rng, split)
            sp = synthesize(spec).padded(float(rng.uniform(0.1, 0.6)), float(rng.uniform(0.2, 0.6)))
            fv = cfg.video_frames_per_chunk
            f = -(-sp.num_frames() // fv) * fv  # whole chunks (a temporal VAE packs Tc frames)
            sp = sp.fit_frames(f)
            params = frame_params(sp, f)
            loop = pingpong(n_loop, int(rng.integers(0, period)) + np.arange(f))
            src = av.images[loop]
            hard = av.hard[loop]
            tgt = np.empty_like(src)
            for t, j in enumerate(loop):
                face, (c0, r0) = faces[j]
                out = talk(face, params[t:t + 1], seed=int(rng.integers(1 << 30))).frames[0]
                ac = av.crop(int(j))
                tgt[t] = AlignedCrop((ac.centre[0] - c0, ac.centre[1] - r0), ac.side, ac.angle, ac.size).crop(out)
            tgt = np.where(hard[..., None] > 0, tgt, src)
            picks = rng.integers(0, n_loop, r) if r else np.zeros(0, np.int64)
            return CropClip(f"{split}-{k}", "photo", src, tgt, hard, av.images[picks], av.hard[picks],
                            sp.audio[:f * 640].astype(np.float32))

        total = self.cfg.sentences + self.cfg.val_sentences
        train, val = [], []
        with self.bar(total, "make speech", "clip") as bar:
            for k in range(self.cfg.sentences):
                train.append(one("train", k))
                bar.update(1)
            for k in range(self.cfg.val_sentences):
                val.append(one("held_out", k))
                bar.update(1)
        if not train:
            raise EnrollError("EnrollConfig.sentences=0: an idle loop or photo needs sentences to train on")
        return train, val

    # ---- stage 3: latents ----
    def latents(self) -> None:
        from .crops import CropSet
        from .teacher import LatentSet

        model = self.base_model()
        cs = CropSet.load(self.work / "data.npz")
        with self.bar(len(cs), "encode crops", "clip") as bar:
            parts = []
            for i in range(len(cs)):
                parts.append(LatentSet.encode(model.vae, CropSet(cs.clips[i:i + 1], cs.mel[i:i + 1]), model.cfg))
                bar.update(1)
        ls = parts[0]
        for p in parts[1:]:
            for f in ("z", "cond", "mask", "mel", "ref_z", "ref_cond", "ref_mask"):
                getattr(ls, f).extend(getattr(p, f))
        _save_torch(self.work / "latents.pt", {f.name: getattr(ls, f.name) for f in dataclasses.fields(ls)})

    def load_latents(self):
        import torch

        from .teacher import LatentSet

        return LatentSet(**torch.load(self.work / "latents.pt", weights_only=True))

    # ---- training (stages 4, 5) ----
    def _train(self, name: str, steps: int, modules: dict, params: list, lr: float, step_fn: Callable,
               extra: dict | None = None, ema: float = 0.0) -> dict:
        """A resumable training loop: ``step_fn(it, rng, gen) -> loss`` (a float); checkpoints of
        ``modules``, the optimizer, the schedule and both random states under ``work/NAME.pt``.
        ``ema`` > 0: an exponential moving average of ``params`` (decay ``min(ema, (1 + i) / (10 + i))``
        at step i) is kept beside them, checkpointed with them, and copied into them at the end."""
        import torch

        from .optim import adamw_cosine

        opt, sched = adamw_cosine(params, lr, max(steps, 1), warmup=20)
        rng = np.random.default_rng([self.cfg.seed, zlib_crc(name)])
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + zlib_crc(name) % 1000)
        ck = self.work / f"{name}.ckpt.pt"
        start, hist = 0, []
        avg = [p.detach().clone() for p in params] if ema else None
        if ck.is_file():
            d = torch.load(ck, weights_only=True)
            for k, m in modules.items():
                m.load_state_dict(d["modules"][k])
            if avg is not None:
                for a_, v in zip(avg, d["ema"]):
                    a_.copy_(v)
            opt.load_state_dict(d["opt"])
            sched.load_state_dict(d["sched"])
            for k, o in (extra or {}).items():
                o.load_state_dict(d["extra"][k])
            rng.bit_generator.state = json.loads(d["np_rng"])
            gen.set_state(d["torch_rng"])
            start, hist = int(d["step"]), list(d["hist"])
            self.log(f"[{name}] resuming at step {start} of {steps}")

        def save(step):
            _save_torch(ck, {"modules": {k: m.state_dict() for k, m in modules.items()}, "opt": opt.state_dict(),
                             "sched": sched.state_dict(), "np_rng": json.dumps(rng.bit_generator.state),
                             "extra": {k: o.state_dict() for k, o in (extra or {}).items()},
                             "torch_rng": gen.get_state(), "step": step, "hist": hist,
                             "ema": avg or []})

        for m in modules.values():
            m.train()
        t_last = time.monotonic()
        with _Interrupt() as intr, self.bar(steps, name, "step", initial=start) as bar:
            for it in range(start, steps):
                try:
                    loss = step_fn(it, rng, gen, opt, sched)
                    if avg is not None:
                        with torch.no_grad():
                            d_ = min(ema, (1 + it) / (10 + it))
                            torch._foreach_lerp_(avg, [p.detach() for p in params], 1.0 - d_)
                    hist.append(loss)
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(hist[-50:]):.4f}")
                    _on_step(name, it + 1)
                except KeyboardInterrupt:
                    if len(hist) > it:  # the step completed (else the last checkpoint stands)
                        save(it + 1)
                    raise
                if intr.requested:
                    save(it + 1)
                    raise KeyboardInterrupt
                if time.monotonic() - t_last > self.cfg.checkpoint_seconds:
                    save(it + 1)
                    t_last = time.monotonic()
        save(steps)
        if avg is not None:
            with torch.no_grad():
                for p, a_ in zip(params, avg):
                    p.copy_(a_)
        for m in modules.values():
            m.eval()
        return {"steps": steps, "final_loss": float(np.mean(hist[-50:])) if hist else None,
                "first_loss": float(np.mean(hist[:50])) if hist else None}

    def dit_outputs(self):
        """The enrolled DiT's outputs on every training clip, as the runtime makes them (two-step
        cached rollout from the clip's start, its references in the sink): ``[z, L, h, w]`` each.
        Cached in ``work/dit_latents.pt``: the decoder learns to decode these as well."""
        import torch

        from .student import renoiser, rollout

        path = self.work / "dit_latents.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        model = self.enrolled_model(decoder=False).to(self.device)
        cfg = model.cfg
        ls = self.load_latents()
        c = cfg.stream.chunk_frames
        out = []
        with torch.no_grad(), self.bar(len(ls), "student outputs", "clip") as bar:
            for i in range(len(ls)):
                n = ls.z[i].shape[1] // c * c
                z, cond, mel, mask, ref = (v.to(self.device) if torch.is_tensor(v) else v
                                           for v in ls.gather([(i, 0)], n))
                if ref is not None:
                    ref = type(ref)(ref.x0.to(self.device), ref.cond.to(self.device), ref.mask.to(self.device))
                g = torch.Generator().manual_seed(self.cfg.seed * 7919 + i)
                noise, eps2 = torch.randn(z.shape, generator=g), torch.randn(z.shape, generator=g)
                with _on_device(self.device):
                    x = rollout(model.dit, cfg, cond, mask, model.audio_encoder(mel), noise.to(self.device),
                                renoiser(eps2.to(self.device), cfg.schedule.t_land, c), cfg.schedule.t_land, ref=ref)
                out.append(x[0].cpu())
                bar.update(1)
        _save_torch(path, out)
        return out

    def decoder(self) -> None:
        """The VAE decoder on this face: windows of the crops (mostly around the mouth) decoded
        from the encoder's latents (with a little noise) and from the enrolled DiT's own outputs,
        against the real (or exact) target crops: L1 + gradient L1, mouth weighted, plus a small
        patch discriminator (hinge loss) that brings back the texture a regression blurs."""
        import torch
        import torch.nn.functional as F

        from .autoencoder import _grad_l1
        from .crops import CropSet, to_unit
        from .optim import optimizer_step

        model = self.base_model().to(self.device)
        mcfg = model.cfg
        vae = model.vae
        cs = CropSet.load(self.work / "data.npz")
        ls = self.load_latents()
        dit_lat = self.dit_outputs() if self.cfg.decoder_dit_share > 0 else None
        dec_params = [p for n, p in vae.named_parameters() if n.startswith("dec")]
        for n, p in vae.named_parameters():
            p.requires_grad_(n.startswith("dec"))
        with torch.random.fork_rng(devices=[]):  # its initial weights: the same on every run
            torch.manual_seed(self.cfg.seed)
            disc = _patch_discriminator().to(self.device)
        dopt = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.9))
        sc, tc = mcfg.vae.spatial_compression, mcfg.vae.temporal_compression
        size = mcfg.stream.resolution
        win = min(self.cfg.decoder_window, size) // sc * sc
        seg = 2  # latent frames: the decoder's temporal cache sees one step
        ok = [i for i in range(len(ls)) if ls.z[i].shape[1] >= seg]
        shapes = vae.cache_shapes(self.cfg.decoder_batch)["dec"]
        dev, mw = self.device, self.cfg.mouth_weight

        def batch(rng, gen):
            zs, xs, ws = [], [], []
            for _ in range(self.cfg.decoder_batch):
                i = ok[int(rng.integers(len(ok)))]
                s = int(rng.integers(0, ls.z[i].shape[1] - seg + 1))
                c = cs.clips[i]
                hard = c.hard[s * tc:(s + seg) * tc].astype(np.float32)
                if rng.random() < 0.75 and hard[0].any():
                    my, mx = np.nonzero(hard[0])
                    k = int(rng.integers(len(my)))
                    y0, x0 = my[k] - win // 2, mx[k] - win // 2
                else:
                    y0, x0 = rng.integers(0, size - win + 1, 2)
                y0, x0 = (int(np.clip(v, 0, size - win)) // sc * sc for v in (y0, x0))
                use_dit = dit_lat is not None and rng.random() < self.cfg.decoder_dit_share
                z = (dit_lat[i] if use_dit else ls.z[i])[:, s:s + seg, y0 // sc:(y0 + win) // sc,
                                                         x0 // sc:(x0 + win) // sc]
                if not use_dit:
                    z = z + 0.02 * z.std() * torch.randn(z.shape, generator=gen)
                zs.append(z)
                xs.append(torch.from_numpy(to_unit(c.target[s * tc:(s + seg) * tc, y0:y0 + win, x0:x0 + win])))
                ws.append(torch.from_numpy(1.0 + mw * hard[None, :, y0:y0 + win, x0:x0 + win]))
            return torch.stack(zs).to(dev), torch.stack(xs).to(dev), torch.stack(ws).to(dev)

        def flat(a):  # [B, 3, F, H, W] -> [B*F, 3, H, W]
            return a.transpose(1, 2).reshape(-1, a.shape[1], *a.shape[-2:])

        def step(it, rng, gen, opt, sched):
            z, x, w = batch(rng, gen)
            y, _ = vae.decode(z, [torch.zeros((*s_[:-2], *z.shape[-2:]), device=dev) for s_ in shapes])
            rec = ((y - x).abs() * w).mean() / w.mean()
            loss = rec + _grad_l1(y, x, w)
            adv = self.cfg.decoder_adv if it >= min(50, self.cfg.decoder_steps // 10) else 0.0  # after a warm-up
            if adv > 0:
                loss = loss - adv * disc(flat(y)).mean()
            optimizer_step(loss, opt, sched, dec_params)
            if self.cfg.decoder_adv > 0:
                ld = F.relu(1 - disc(flat(x))).mean() + F.relu(1 + disc(flat(y.detach()))).mean()
                dopt.zero_grad(set_to_none=True)
                ld.backward()
                dopt.step()
            return float(rec.detach())

        res = self._train("decoder", self.cfg.decoder_steps, {"vae": vae, "disc": disc}, dec_params,
                          self.cfg.decoder_lr, step, extra={"disc_opt": dopt})
        _save_torch(self.work / "decoder.pt", {"vae": {k: v.cpu() for k, v in vae.state_dict().items()}, "info": res})

    def dit(self) -> None:
        import torch

        from .optim import optimizer_step
        from .student import renoiser, rollout, weighted_mse
        from .teacher import loss_weight

        model = self.base_model().to(self.device)
        cfg = model.cfg
        ls = self.load_latents()
        tc, c = cfg.vae.temporal_compression, cfg.stream.chunk_frames
        frames = max(c, (max(1, self.cfg.dit_video_frames // tc) // c) * c)  # latent frames, whole chunks
        mods = {"dit": model.dit}
        params = list(model.dit.parameters())
        if self.cfg.tune_audio:
            mods["audio_encoder"] = model.audio_encoder
            params += list(model.audio_encoder.parameters())
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        t_land = cfg.schedule.t_land
        dev = self.device
        reward = crops = None
        if self.cfg.sync_weight > 0:
            import copy

            from .crops import CropSet
            from .student import SyncReward, reward_inputs
            from .syncnet import SyncScorer

            reward = SyncReward(copy.deepcopy(model.vae), SyncScorer.load().net.to(dev), cfg)
            crops = CropSet.load(self.work / "data.npz")

        shift = self.cfg.context_shift if self.info.kind == "talking" else 0

        def step(it, rng, gen, opt, sched):
            picks = ls.pick(rng, self.cfg.dit_batch, frames)
            z, cond, mel, mask, ref = ls.gather(picks, frames)
            if shift:
                _shift_condition(ls, picks, frames, shift, rng, cond)
            noise = torch.randn(z.shape, generator=gen)
            eps2 = torch.randn(z.shape, generator=gen)
            grad_step = int(torch.randint(0, 2, (1,), generator=gen))
            z, cond, mel, mask, noise, eps2 = (v.to(dev) for v in (z, cond, mel, mask, noise, eps2))
            if ref is not None:
                ref = type(ref)(ref.x0.to(dev), ref.cond.to(dev), ref.mask.to(dev))
            with _on_device(dev):
                tok = model.audio_encoder(mel)
                out = rollout(model.dit, cfg, cond, mask, tok, noise, renoiser(eps2, t_land, c), t_land,
                              grad_step=grad_step, ref=ref)
            w = loss_weight(mask, self.cfg.mouth_weight)
            loss = weighted_mse(out, z, w)
            if reward is not None:
                src, soft = reward_inputs(crops, picks, frames, tc)
                loss = loss + self.cfg.sync_weight * reward.loss(out, src.to(dev), soft.to(dev), mel)
            optimizer_step(loss, opt, sched, params)
            return float(loss.detach())

        res = self._train("dit", self.cfg.dit_steps, mods, params, self.cfg.dit_lr, step, ema=self.cfg.dit_ema)
        _save_torch(self.work / "dit.pt", {k: {n: v.cpu() for n, v in m.state_dict().items()} for k, m in mods.items()}
                    | {"info": res})

    def enrolled_model(self, decoder: bool = True):
        import torch

        model = self.base_model()
        if decoder:
            model.vae.load_state_dict(torch.load(self.work / "decoder.pt", weights_only=True)["vae"])
        d = torch.load(self.work / "dit.pt", weights_only=True)
        model.dit.load_state_dict(d["dit"])
        if "audio_encoder" in d:
            model.audio_encoder.load_state_dict(d["audio_encoder"])
        return model.eval()

    # ---- stage 6: eval ----
    def evaluate(self) -> None:
        from .crops import CropSet

        val_p = self.work / "val.npz"
        scores: dict = {}
        if "names" in np.load(val_p).files and self.cfg.eval_frames > 0:
            cs = CropSet.load(val_p)
            fv = self.cfg_model().video_frames_per_chunk
            keep, left = [], self.cfg.eval_frames
            for c, mel in zip(cs.clips, cs.mel):
                m = min(c.num_frames, left) // fv * fv
                if m > 0:
                    keep.append((c.cut(m), mel[:m]))
                    left -= m
            cs = CropSet([c for c, _ in keep], [m for _, m in keep])
            scores = {"held_out_frames": cs.num_frames,
                      "base": _crop_scores(self.base_model(), cs), "enrolled": _crop_scores(self.enrolled_model(), cs)}
        _atomic(self.work / "scores.json", lambda t: t.write_text(json.dumps(scores, indent=2)))

    # ---- stage 7: avatar ----
    def avatar(self) -> None:
        from lipforce_sdk.avatar import Avatar
        from lipforce_sdk.backends.torch_backend import TorchBackend
        from lipforce_sdk.geometry import FaceKeypoints
        from lipforce_sdk.session import Engine

        points, _, _ = self.load_track()
        z = np.load(self.work / "loop.npz")
        first, count = int(z["first"]), int(z["count"])
        frames = self.loop_frames(first, count)
        kps = [FaceKeypoints.from_mediapipe(p) for p in points[first:first + count]]
        model = self.enrolled_model()
        av = Avatar.from_frames(frames, kps, model.cfg.stream.resolution, fps=FPS,
                                info={"kind": self.info.kind, "source": Path(self.info.path).name,
                                      "loop_start_s": self.info.start + first / FPS, "loop_frames": count})
        engine = Engine(TorchBackend(model, device="cpu"))
        av.encode(engine, progress=self.progress)
        tmp = self.partial / "avatar.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        av.save(tmp)
        os.replace(tmp, self.work / "avatar")

    # ---- the mouth exemplars (after data; cheap) ----
    def exemplars(self) -> None:
        """The training frames' crops that the runtime takes fine mouth detail from
        (``lipforce_sdk.exemplars``); the held-out part is not among them."""
        import cv2

        from lipforce_sdk.exemplars import MouthExemplars

        if self.info.kind == "talking":  # the real frames, cut again with cubic interpolation: their detail
            cfg = self.cfg_model()
            points, _, n = self.load_track()
            stop = n - self._val_frames(cfg, n)
            crops = np.stack([v.crop.crop(f, interpolation=cv2.INTER_CUBIC)
                              for _, f, v in self._views(cfg, points, stop, "exemplar crops")])
        else:  # the made-up speaking frames on the face (its own lips, warped)
            crops = np.load(self.work / "data.npz", allow_pickle=False)["target"]
        ex = MouthExemplars.build(crops, max_items=self.cfg.exemplars)
        _atomic(self.work / "exemplars.npz", ex.save)

    # ---- stage 8: the model directory ----
    def write_model(self, key: dict, t_start: float) -> dict:
        from lipforce_sdk.avatar import AVATAR_DIR
        from lipforce_sdk.model import save_model

        if self.final.exists():
            shutil.rmtree(self.final)
        model = self.enrolled_model()
        if self.info.kind == "talking":  # its silences are the person's own pauses, learned (BENCHMARKS.md section 8)
            model.cfg = model.cfg.replace(stream={"silence": "model"})
        times = json.loads((self.work / "times.json").read_text()) if (self.work / "times.json").is_file() else {}
        scores = json.loads((self.work / "scores.json").read_text())
        dec = _torch_info(self.work / "decoder.pt")
        dit = _torch_info(self.work / "dit.pt")
        loop = np.load(self.work / "loop.npz")
        info = self.info
        enrollment = {
            "source": Path(info.path).name, "source_sha256": _sha256(info.path), "kind": info.kind,
            "span_s": [info.start, info.start + info.frames / FPS], "frames": info.frames,
            "speech_share": info.speech_share,
            "base_model": _model_name(self.model_dir), "base_weights": key["weights"], "config": key["config"],
            "decoder": dec, "dit": dit, "seconds": times, "scores": scores, "device": self.device,
            "loop": {"start_s": info.start + int(loop["first"]) / FPS, "frames": int(loop["count"])},
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        training = json.loads((self.model_dir / "manifest.json").read_text()).get("training")
        extra = {"training": training} if training else {}
        if self.cfg.exemplars > 0:
            from lipforce_sdk.exemplars import EXEMPLARS_FILE, manifest_entry

            extra["exemplars"] = manifest_entry(self.work / EXEMPLARS_FILE)
        save_model(model, self.final, enrollment=enrollment, avatar=AVATAR_DIR, **extra)
        if self.cfg.exemplars > 0:
            shutil.copyfile(self.work / "exemplars.npz", self.final / EXEMPLARS_FILE)
        shutil.copytree(self.work / "avatar", self.final / AVATAR_DIR)
        card = _card(enrollment, self.out.name, extra.get("exemplars", {}).get("count", 0), model.cfg.stream.silence)
        (self.final / "MODEL_CARD.md").write_text(card)
        return enrollment


def _shift_condition(ls, picks, frames: int, shift: int, rng: np.random.Generator, cond,
                     share: float = 0.5) -> list[int]:
    """A talking clip's training windows with the face around the mouth from another moment: each
    window of ``picks`` (``LatentSet.pick``) has, with probability ``share``, its condition (the masked
    crops) replaced in ``cond`` by the same clip's from 1 to ``shift`` latent frames earlier or later
    (kept inside the clip: where the drawn direction would leave it, the other one); the targets,
    sound and mask stay. On a clip's own frames the jaw, cheeks and chin outside the mask show what
    the mouth does, and a DiT trained on them alone reads the mouth from there: streamed on its avatar
    loop with new speech, its mouth followed the loop instead of the sound (BENCHMARKS.md section 8).
    Returns each window's shift (0: as it was)."""
    out = []
    for b, (i, s0) in enumerate(picks):
        d = 0
        if share >= 1.0 or rng.random() < share:  # (share 1 draws nothing for it)
            d = int(rng.integers(1, shift + 1)) * (1 if rng.random() < 0.5 else -1)
            last = ls.cond[i].shape[1] - frames
            s1 = int(np.clip(s0 + d, 0, last))
            if s1 == s0:
                s1 = int(np.clip(s0 - d, 0, last))
            d = s1 - s0
            cond[b] = ls.cond[i][:, s1:s1 + frames]
        out.append(d)
    return out


def _patch_discriminator(ch: int = 32):
    """The PatchGAN the recipe's decoder stage uses (``distill.decoder.patch_discriminator``)."""
    from .decoder import patch_discriminator

    return patch_discriminator(ch)


def zlib_crc(s: str) -> int:
    import zlib

    return zlib.crc32(s.encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def _on_device(device: str):
    """``distill.student.rollout`` makes its caches and timesteps with factory functions and its
    cache plan with ``torch.from_numpy``: on a GPU the former follow the default device and the
    latter are moved there."""
    if device == "cpu":
        yield
        return
    import torch

    from . import student

    orig = student._plan_tensors
    student._plan_tensors = lambda planner: [t.to(device) for t in orig(planner)]
    try:
        with torch.device(device):
            yield
    finally:
        student._plan_tensors = orig


def _torch_info(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True).get("info", {})


def _sha256(path: str) -> str:
    from lipforce_sdk.manifest import sha256_file

    return sha256_file(path)


def _crop_scores(model, cs) -> dict:
    """Held-out windows through the runtime's two-step cached rollout and the model's decoder,
    pasted as the runtime pastes: PSNR / SSIM of the mouth box (the mask's bounds) against the
    target crops, and the mouth box's sharpness (Laplacian variance) over the target's."""
    import cv2
    import torch

    from lipforce_sdk.geometry import soft_mask

    from .autoencoder import decode_latents
    from .crops import from_unit, to_unit
    from .metrics import psnr, ssim
    from .student import renoiser, rollout
    from .teacher import LatentSet

    cfg = model.cfg
    ls = LatentSet.encode(model.vae, cs, cfg)
    g = torch.Generator().manual_seed(0)
    preds, tgts, masks = [], [], []
    with torch.no_grad():
        for i, c in enumerate(cs.clips):
            tc = cfg.vae.temporal_compression
            n = (ls.z[i].shape[1] // cfg.stream.chunk_frames) * cfg.stream.chunk_frames
            if n == 0:
                continue
            z, cond, mel, mask, ref = ls.gather([(i, 0)], n)
            noise, eps2 = torch.randn(z.shape, generator=g), torch.randn(z.shape, generator=g)
            tok = model.audio_encoder(mel)
            x = rollout(model.dit, cfg, cond, mask, tok, noise,
                        renoiser(eps2, cfg.schedule.t_land, cfg.stream.chunk_frames), cfg.schedule.t_land, ref=ref)
            gen = decode_latents(model.vae, x)[0].numpy()  # [3, F, S, S]
            f = n * tc
            soft = np.stack([soft_mask(h) for h in c.hard[:f]])[None]
            src = to_unit(c.source[:f])
            preds.append(from_unit(src + (gen - src) * soft))
            tgts.append(c.target[:f])
            masks.append(c.hard[:f])
    if not preds:
        return {}
    p, t, m = np.concatenate(preds), np.concatenate(tgts), np.concatenate(masks)
    ys, xs = np.nonzero(m.max(0))
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    pb, tb = p[:, box[0], box[1]], t[:, box[0], box[1]]

    def lap(a):
        return float(np.median([cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for x in a]))

    return {"mouth_psnr_db": psnr(pb, tb), "mouth_ssim": ssim(pb, tb), "sharpness_ratio": lap(pb) / max(lap(tb), 1e-9)}


def _ema_text(cfg: dict) -> str:
    d = cfg.get("dit_ema") or 0.0
    return (f"; kept as the moving average of its weights, decay {d:g} per step at most "
            "(min(decay, (1 + i) / (10 + i)) at step i)") if d else ""


def _shift_text(cfg: dict) -> str:
    n = cfg.get("context_shift") or 0
    return f"; half its windows with the face around the mouth from up to {n} frames away" if n else ""


def _fmt(v, f=".2f"):
    return "-" if v is None else format(v, f)


def _exemplar_line(n: int) -> str:
    if not n:
        return ""
    return (f"\n- **Mouth exemplars:** {n} of its training crops (`exemplars.npz`): the runtime keeps the model's "
            "mouth below 1/16 of the crop and takes the finer detail from the median of the 5 exemplars nearest it "
            "(`lipforce_sdk.exemplars`; `--no-exemplars` turns it off). The scores below are the model's alone.")


def _card(e: dict, name: str, exemplars: int = 0, silence: str | None = None) -> str:
    s = e.get("scores") or {}
    b, a = s.get("base", {}), s.get("enrolled", {})
    kind_text = {"talking": "a talking clip with its own sound (self-supervised: mouth masked, own audio as the "
                            "condition, its real frames as the target)",
                 "idle": "an idle loop (its own lips warped to the viseme shapes of espeak-ng sentences: exact "
                         "targets)",
                 "photo": "one photo (its own lips warped to the viseme shapes of espeak-ng sentences: exact "
                          "targets)"}[e["kind"]]
    rows = ""
    if a:
        rows = ("\n| model | mouth PSNR (dB) | mouth SSIM | mouth sharpness / target |\n| --- | --- | --- | --- |\n"
                f"| base ({Path(e['base_model']).name}) | {_fmt(b.get('mouth_psnr_db'))} | "
                f"{_fmt(b.get('mouth_ssim'), '.4f')} | {_fmt(b.get('sharpness_ratio'), '.3f')} |\n"
                f"| enrolled | {_fmt(a.get('mouth_psnr_db'))} | {_fmt(a.get('mouth_ssim'), '.4f')} | "
                f"{_fmt(a.get('sharpness_ratio'), '.3f')} |\n\n"
                f"Held out: {s.get('held_out_frames')} frames "
                + ("(the clip's last part, not trained on)" if e["kind"] == "talking" else
                   "(held-out sentences made on the face)")
                + ", rendered by the runtime's two-step cached rollout in crop space and pasted as the runtime "
                  "pastes; the mouth box is the mask's bounds.\n")
    secs = e.get("seconds", {})
    total = sum(secs.values())
    cfg = e["config"]
    return f"""# Enrolled avatar `{name}`

A model adapted to one face by `lipforce enroll`, with the face's idle loop prepared in `avatar/`
(`engine.session(avatar=...)` / `lipforce run --model DIR --avatar` stream it from audio alone).

- **Enrolled from:** `{e['source']}` (sha256 `{e['source_sha256'][:16]}...`), {kind_text};
  {e['span_s'][1] - e['span_s'][0]:.1f} s ({e['frames']} frames at 25 fps) from {e['span_s'][0]:.1f} s.
- **Base model:** `{e['base_model']}`.
- **Adapted:** the VAE decoder ({cfg['decoder_steps']} steps; encoder frozen) and the DiT
  {'and the audio encoder ' if cfg['tune_audio'] else ''}({cfg['dit_steps']} steps, supervised through the
  runtime's two-step cached rollout{_shift_text(cfg)}{_ema_text(cfg)}).
- **Loop:** {e['loop']['frames']} frames from {e['loop']['start_s']:.2f} s, played back and forth.{_exemplar_line(exemplars)}{_silence_line(silence)}
- **Time:** {total / 60:.1f} min on `{e['device']}` ({', '.join(f'{k} {v:.0f} s' for k, v in secs.items())}).

## How it scored
{rows or 'No held-out part (the source is too short to hold some out).'}
Limits: a model for this face only; other faces get the base model's quality or worse.
"""


def _silence_line(silence: str | None) -> str:
    if silence != "model":
        return ""
    return ("\n- **Silence:** the model's own mouth in pauses (`stream.silence = \"model\"`: trained on this "
            "person's\n  pauses, it closes the mouth as they do); `--silence still` holds it instead.")


def _resolve_model(model) -> Path:
    from lipforce_sdk.session import default_model_dir

    d = Path(model) if model is not None else default_model_dir()
    if not (d / "manifest.json").is_file():
        raise EnrollError(f"--model {str(d)!r} is not a model directory (no manifest.json); pass a directory "
                          "written by save_model or `lipforce enroll`")
    if "weights" not in json.loads((d / "manifest.json").read_text()):
        raise EnrollError(f"--model {str(d)!r} holds no PyTorch weights (an exported or built directory); enroll "
                          "from the PyTorch model directory it was exported from")
    return d


def _check_device(device: str) -> str:
    import torch

    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EnrollError(f"--device {device}: no CUDA GPU is visible to PyTorch {torch.__version__} (cuda "
                              f"available: False, built for CUDA: {torch.version.cuda}); use --device cpu, or "
                              "install a CUDA build of torch on a machine with a GPU")
        return device
    raise EnrollError(f"--device {device!r} must be 'cpu' or 'cuda' (or 'cuda:N')")


def enroll(source, out, *, kind: str = "auto", model=None, device: str = "cpu", start: float | None = None,
           end: float | None = None, config: EnrollConfig | None = None, force: bool = False, restart: bool = False,
           min_talking_seconds: float = MIN_TALKING_SECONDS, threads: int | None = None, progress: bool = True,
           log: Callable[[str], None] = print) -> EnrollResult:
    """Enroll one avatar from ``source`` into the model directory ``out`` (see the module docstring).

    Args:
        source: a talking clip with its sound, an idle loop video, or a photo.
        out: the model directory to write (must not exist unless ``force``).
        kind: ``"auto"`` (an image: photo; a video whose sound track speaks: talking; else idle),
            or ``"talking"``, ``"idle"``, ``"photo"``.
        model: the model to start from (default: the bundled one).
        device: ``"cpu"`` or ``"cuda"``.
        start, end: use only this span of the video (seconds).
        config: step counts and sizes (``EnrollConfig``).
        force: replace an existing ``out``.
        restart: discard an unfinished enrollment of ``out`` instead of continuing it.
        min_talking_seconds: the shortest talking clip accepted.
        threads: PyTorch CPU threads while enrolling (default: PyTorch's own choice; 1 is faster
            where other processes keep the cores busy).
        progress: progress bars (tqdm, with ETA) on stderr.
        log: where stage messages go.

    Returns:
        ``EnrollResult``. Raises ``EnrollError`` (bad source or arguments, the message names the
        fix); ``KeyboardInterrupt`` after writing a checkpoint (run the same call to continue).
    """
    t0 = time.perf_counter()
    cfg = (config or EnrollConfig()).validate()
    out = Path(out)
    device = _check_device(device)
    model_dir = _resolve_model(model)
    if out.exists() and not force:
        raise EnrollError(f"{str(out)!r} already exists; choose another --out, or pass --force to replace it")
    info = inspect_source(source, kind, start, end, min_talking_seconds)
    cfg = cfg.for_kind(info.kind)
    if info.frames > cfg.max_seconds * FPS:
        log(f"using the first {cfg.max_seconds:g} s of the {info.seconds:.0f} s given (--start/--end choose others)")
        info = dataclasses.replace(info, frames=int(cfg.max_seconds * FPS))
    job = _Enrollment(info, out, model_dir, cfg, device, progress, log)
    key = _job_key(info, model_dir, cfg, device)
    job_p = job.work / "job.json"
    resumed = False
    if job.partial.exists():
        old = json.loads(job_p.read_text()) if job_p.is_file() else None
        if restart or old is None:
            shutil.rmtree(job.partial)
        elif old != key:
            diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            raise EnrollError(f"{str(job.partial)!r} holds an unfinished enrollment with other settings (they differ "
                              f"in: {', '.join(diff)}); run the command that started it to continue it, or pass "
                              "--restart to discard it and start over")
        else:
            resumed = True
            log(f"continuing the unfinished enrollment in {job.partial}")
    job.work.mkdir(parents=True, exist_ok=True)
    if not job_p.is_file():
        _atomic(job_p, lambda t: t.write_text(json.dumps(key, indent=2)))
    import torch

    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        job.run_stages()
    except EnrollError:  # the source cannot be enrolled: nothing of this work is of use
        shutil.rmtree(job.partial, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads_before)
    enrollment = job.write_model(key, t0)
    if out.exists():  # force: move the old one aside, put the new one in place, then delete the old
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
        os.replace(job.final, out)
        shutil.rmtree(old)
    else:
        os.replace(job.final, out)
    shutil.rmtree(job.partial)
    secs = time.perf_counter() - t0
    log(f"wrote {out} ({info.kind}, {secs / 60:.1f} min this run)")
    return EnrollResult(out, info.kind, info.path, secs, enrollment["seconds"], enrollment["scores"], resumed)


def add_exemplars(model_dir, source, *, max_items: int | None = None, progress: bool = True,
                  log: Callable[[str], None] = print) -> int:
    """Give a model enrolled before mouth exemplars existed (or with ``exemplars=0``) its exemplars
    (``lipforce_sdk.exemplars``): ``source`` (the file it was enrolled from: its sha256 is
    checked) tracked and cropped as its enrollment did, the crops' sample written into
    ``model_dir``. The weights are not touched. Returns the number of exemplars."""
    from lipforce_sdk.exemplars import EXEMPLARS_FILE, manifest_entry, name_exemplars

    d = Path(model_dir)
    mp = d / "manifest.json"
    if not mp.is_file():
        raise EnrollError(f"{str(d)!r} is not a model directory (no manifest.json)")
    m = json.loads(mp.read_text())
    e = m.get("enrollment")
    if not e:
        raise EnrollError(f"{str(d)!r} is not an enrolled model (its manifest has no enrollment); exemplars are of "
                          "one avatar: enroll it (lipforce enroll SOURCE --out DIR)")
    if not Path(source).is_file():
        raise EnrollError(f"{str(source)!r} does not exist; pass the file {str(d)!r} was enrolled from "
                          f"({e['source']!r})")
    if _sha256(source) != e["source_sha256"]:
        raise EnrollError(f"{str(source)!r} is not the file {str(d)!r} was enrolled from ({e['source']!r}, sha256 "
                          f"{e['source_sha256'][:16]}...): its exemplars must be that face's crops")
    names = {f.name for f in dataclasses.fields(EnrollConfig)}
    cfg = EnrollConfig(**{k: v for k, v in e["config"].items() if k in names})
    cfg = dataclasses.replace(cfg, exemplars=max_items or EnrollConfig.exemplars).for_kind(e["kind"]).validate()
    span = (None, None) if e["kind"] == "photo" else (e["span_s"][0], e["span_s"][1])
    info = inspect_source(source, e["kind"], *span, min_talking_seconds=0.0)
    job = _Enrollment(info, d.with_name(f".{d.name}.exemplars"), d, cfg, "cpu", progress, log)
    shutil.rmtree(job.partial, ignore_errors=True)
    job.work.mkdir(parents=True)
    try:
        job.track()
        if e["kind"] != "talking":  # a talking clip's exemplars are its frames cut again, not the training data
            job.data()
        job.exemplars()
        os.replace(job.work / "exemplars.npz", d / EXEMPLARS_FILE)
        spec = manifest_entry(d / EXEMPLARS_FILE)
        name_exemplars(d, spec)
    finally:
        shutil.rmtree(job.partial, ignore_errors=True)
    log(f"wrote {spec['count']} mouth exemplars into {d}")
    return spec["count"]


# --------------------------------------------------------------------------------------
# Command line (``lipforce enroll`` calls ``main``)
# --------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a talking clip with its sound (>= 30 s), an idle loop video, or a photo")
    p.add_argument("--out", required=True, help="the model directory to write, e.g. avatars/NAME")
    p.add_argument("--kind", default="auto", choices=("auto",) + KINDS,
                   help="what the source is (default: an image is a photo; a video whose sound speaks is a talking "
                        "clip; another video is an idle loop)")
    p.add_argument("--model", default=None, help="model directory to start from (default: the bundled model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--start", type=float, default=None, help="use the video from this second")
    p.add_argument("--end", type=float, default=None, help="use the video up to this second")
    p.add_argument("--loop-seconds", type=float, default=None, help="length of the avatar's loop (default 6)")
    p.add_argument("--decoder-steps", type=int, default=None)
    p.add_argument("--dit-steps", type=int, default=None,
                   help="DiT training steps (default: " + ", ".join(f"{k} {v['dit_steps']}" for k, v in
                                                                   KIND_DEFAULTS.items()) + ")")
    p.add_argument("--dit-lr", type=float, default=None,
                   help="DiT learning rate (default: " + ", ".join(f"{k} {v['dit_lr']:g}" for k, v in
                                                                  KIND_DEFAULTS.items()) + ")")
    p.add_argument("--context-shift", type=int, default=None, metavar="N",
                   help="talking: half the DiT's training windows see the face around the mouth from up to N frames "
                        "earlier or later, so that the sound has to carry the mouth (default 6; 0: off)")
    p.add_argument("--dit-ema", type=float, default=None, metavar="DECAY",
                   help="keep the DiT as a moving average of its weights with at most this decay per step "
                        "(default: " + ", ".join(f"{k} {v['dit_ema']:g}" for k, v in KIND_DEFAULTS.items()) +
                        "; 0: the last step's weights)")
    p.add_argument("--mouth-weight", type=float, default=None, metavar="W",
                   help=f"the DiT's loss weighs the re-rendered mouth 1 + W (default {EnrollConfig.mouth_weight:g})")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--restart", action="store_true", help="discard an unfinished enrollment of --out")
    p.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's choice)")
    p.add_argument("--add-exemplars", action="store_true",
                   help="--out is a model already enrolled from SOURCE: only add its mouth exemplars (the fine detail "
                        "of its own mouths the runtime pastes through; models enrolled before they existed lack "
                        "them); its weights are not touched")
    p.add_argument("--no-progress", action="store_true")


def run_args(a) -> EnrollResult | int:
    if a.add_exemplars:
        return add_exemplars(a.out, a.source, progress=not a.no_progress)
    try:
        return enroll(a.source, a.out, kind=a.kind, model=a.model, device=a.device, start=a.start, end=a.end,
                      config=EnrollConfig.from_options(a), force=a.force, restart=a.restart, threads=a.threads,
                      progress=not a.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the work so far is in {a.out}.partial/; run the same command to continue",
              file=sys.stderr)
        raise


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lipforce_sdk.distill.enroll", description=__doc__.split("\n")[0])
    add_arguments(p)
    a = p.parse_args(argv)
    try:
        run_args(a)
    except EnrollError as e:
        print(f"enroll: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
