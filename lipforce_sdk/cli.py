"""``lipforce`` command line: run, enroll, export, build, serve, triton, doctor."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "run_clip", "run_avatar", "sample_sync_report", "SAMPLE_DIR", "PHOTO_DIR"]

SAMPLE_DIR = Path(__file__).parent / "assets" / "sample"  # procedural talking face: the default model's domain
PHOTO_DIR = Path(__file__).parent / "assets" / "photo"  # a real face photo under motion (face tracking)


def _is_sample(path: str | Path, name: str) -> bool:
    try:
        return Path(path).resolve() == (SAMPLE_DIR / name).resolve()
    except OSError:
        return False


def sample_sync_report(out: str | Path) -> str:
    """One line: how well ``out`` (a run of the bundled sample video with its speech) moves the
    mouth with the speech, against the input video (``lipforce_sdk.sync_check``)."""
    from .sync_check import SYNC_THRESHOLD, lip_sync_correlation, read_face_boxes

    centres, sizes = read_face_boxes(SAMPLE_DIR / "face_boxes.json")
    speech = SAMPLE_DIR / "speech.wav"
    got = lip_sync_correlation(out, speech, mouth_centres=centres, face_sizes=sizes)
    ref = lip_sync_correlation(SAMPLE_DIR / "face.mp4", speech, mouth_centres=centres, face_sizes=sizes)
    return (f"  lip sync (mouth opening vs speech envelope, r)  output {got.correlation:.2f} at lag {got.lag:+d}, "
            f"input video {ref.correlation:.2f}  (speaking: >= {SYNC_THRESHOLD})")


def _video_schedule(n_src: int, src_fps: float, fps: float, n_out: int, *, times=None, end: float | None = None
                    ) -> np.ndarray:
    """Source frame index for each output frame ``k`` (shown at ``k / fps``): the source frame on screen
    at that time, ping-pong looped when the video is shorter than the audio (the audio drives the length:
    forward, then back from the last-but-one frame to the second, each frame held as long as it lasts).

    ``times``: when each source frame is shown, seconds from the first (``VideoFrames.times``: variable
    frame rate kept), and ``end``: when the last one ends; default: frames ``1 / src_fps`` apart."""
    if n_src == 1:
        return np.zeros(n_out, np.int64)
    if times is None:
        t_src, end = np.arange(n_src) / src_fps, n_src / src_fps
    else:
        t_src = np.asarray(times, np.float64) - float(times[0])
        gaps = np.diff(t_src)
        end = t_src[-1] + float(np.median(gaps)) if end is None else end - float(times[0])
    forward = end  # one forward pass: every frame
    period = forward + (t_src[-1] - t_src[1])  # then back: frames n-2 .. 1
    u = np.mod(np.arange(n_out) / fps + 1e-6, period)  # 1 us: k / fps on a frame's start shows that frame
    idx = np.searchsorted(t_src, u, side="right") - 1
    back = u >= forward
    played = t_src[-1] - (u[back] - forward)  # the backward pass plays the video's time from t_src[-1] down
    idx[back] = np.searchsorted(t_src, played, side="left") - 1
    return np.clip(idx, 0, n_src - 1).astype(np.int64)


REFERENCE_SEARCH_S = 2.0  # run_clip: the reference is the most closed mouth among the stream's first seconds


def closed_mouth_reference(engine, frames, seconds: float = REFERENCE_SEARCH_S, face="largest") -> list | None:
    """The frame among the first ``seconds`` of ``frames`` (as streamed; any iterable) whose lips
    are the most closed (face mesh inner-lip opening), as the session's ``reference=``: the
    model's mouth starts from the reference, and an open one shows through. ``None`` where the
    model takes no reference frames or no face is found. ``face``: as ``Engine.session``."""
    import itertools

    from .session import reference_frames_needed
    from .tracking import default_face_source

    cfg = engine.config
    if not reference_frames_needed(cfg):
        return None
    src = default_face_source(select=face)
    best, best_open = None, np.inf
    for f in itertools.islice(frames, max(1, int(round(seconds * cfg.stream.fps)))):
        src.reset()  # each frame on its own: no smoothing across them
        kp = src.update(f)
        opening = np.inf if kp is None else kp.lip_opening()
        if opening < best_open:
            best, best_open = f, opening
    return None if best is None else [best]


def model_speech(samples: np.ndarray, speech_gain: float | str = 1.0, say=None) -> np.ndarray:
    """The speech as the model hears it: ``samples`` times ``speech_gain`` (a number, or ``"auto"``:
    quiet speech raised to the level of the model's training speech, ``audio.speech_gain``). Where
    the gain is 1 and the speech is quiet, ``say`` (a callable, e.g. ``print``) is told so and how
    to raise it; where a gain applies, what it is."""
    from .audio import QUIET_SPEECH, SPEECH_LEVEL, speech_gain as auto_gain, speech_level

    level = speech_level(samples)
    g = auto_gain(samples) if speech_gain == "auto" else float(speech_gain)
    if not (g > 0 and np.isfinite(g)):
        raise ValueError(f"speech gain {speech_gain!r}: use a positive number or auto")
    if say is not None:
        if g != 1.0:
            say(f"speech level {level:.3f} (the model's training speech: {SPEECH_LEVEL:g}): x{g:.2f} for the "
                "model; the sound track is as given")
        elif 0 < level < QUIET_SPEECH * SPEECH_LEVEL:
            say(f"speech level {level:.3f} is quiet (the model's training speech: {SPEECH_LEVEL:g}); the mouth "
                "opens less for quiet speech: --speech-gain auto raises it for the model (the sound track is "
                "as given)")
    return samples if g == 1.0 else np.clip(samples * np.float32(g), -1.0, 1.0).astype(np.float32)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_clip(engine, video: str | Path, audio: str | Path, out: str | Path, box=None, progress: bool = True,
             silence: str | None = None, frame_memory_mb: int | None = None, face="largest",
             exemplars: bool = True, speech_gain: float | str = 1.0):
    """Stream ``video`` + ``audio`` through a session as a live source would (one frame and its
    640 samples per push), write ``out`` (MP4, audio muxed; it appears only once complete) and
    return the session stats. The video is decoded as it goes (``video_source.VideoFrames``:
    at most ``frame_memory_mb`` of frames held; default 256); output frame ``k`` shows the source frame on
    screen at ``k / fps`` by the video's timestamps (any frame rate, variable included).
    ``speech_gain``: see ``model_speech`` (the written sound track is the audio as given)."""
    from .media import read_audio
    from .video_source import DEFAULT_BUDGET_MB, VideoFrames

    cfg = engine.config
    sr, fps = cfg.audio.sample_rate, cfg.stream.fps
    sound = read_audio(audio, sample_rate=sr)
    samples = model_speech(sound, speech_gain, say=_stderr if progress else None)
    src = VideoFrames(video, (frame_memory_mb or DEFAULT_BUDGET_MB) << 20)
    try:
        n_out = max(1, math.ceil(samples.size / sr * fps))
        order = _video_schedule(len(src), src.fps, fps, n_out, times=src.times, end=src.duration)
        spf = cfg.samples_per_video_frame
        ref = None if box is not None else closed_mouth_reference(engine, src.frames_in_order(order), face=face)
        session = engine.session(box=box, reference=ref, silence=silence, face=face, exemplars=exemplars)
        pushes = ((samples[i * spf:(i + 1) * spf], f) for i, f in enumerate(src.frames_in_order(order)))

        def face_seen(stats):
            if stats.frames_out and stats.frames_without_face == stats.frames_out:
                from .face import FaceNotFoundError

                raise FaceNotFoundError(
                    f"no face found in any of the {stats.frames_out} frames of {str(video)!r}; pass --box X0 Y0 X1 "
                    "Y1 (run_clip(box=...): the face-crop region in pixels), or a video that shows a face")

        return _write_stream(session, pushes, sound, out, fps, n_out, "lip sync", progress, check=face_seen)
    finally:
        src.close()


def run_avatar(engine, avatar, audio: str | Path, out: str | Path, progress: bool = True,
               silence: str | None = None, exemplars: bool = True, speech_gain: float | str = 1.0):
    """Stream a prepared avatar (``lipforce_sdk.avatar``) from ``audio`` alone as a kiosk would
    (640 samples per push), write ``out`` (MP4, audio muxed) and return the session stats.
    ``speech_gain``: see ``model_speech``."""
    from .media import read_audio

    cfg = engine.config
    spf = cfg.samples_per_video_frame
    sound = read_audio(audio, sample_rate=cfg.audio.sample_rate)
    samples = model_speech(sound, speech_gain, say=_stderr if progress else None)
    session = engine.session(avatar=avatar, silence=silence, exemplars=exemplars)
    n_out = max(1, math.ceil(samples.size / spf))
    pushes = ((samples[i:i + spf],) for i in range(0, samples.size, spf))
    return _write_stream(session, pushes, sound, out, cfg.stream.fps, n_out, "avatar", progress)


def _write_stream(session, pushes, samples, out, fps: float, n_out: int, desc: str, progress: bool, check=None):
    """Feed ``session.push(*args)`` for each of ``pushes``, then flush; write every frame out and
    ``samples`` as the sound track to ``out`` (MP4); the session's stats. The file is written
    beside ``out`` under a temporary name and renamed once complete: an error or an interrupt
    leaves no half-written ``out`` (and an earlier ``out`` as it was); so does ``check(stats)``
    raising before the file is put in place."""
    import os

    from tqdm import tqdm

    from .media import VideoWriter

    out = Path(out)
    tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}.mp4")
    sr = session.cfg.audio.sample_rate
    try:
        with VideoWriter(tmp, fps=fps, with_audio=True, sample_rate=sr) as w, \
                tqdm(total=n_out, unit="frame", desc=desc, disable=not progress) as bar:
            w.write_audio(samples)
            for args in pushes:
                for o in session.push(*args):
                    w.write(o.image)
                    bar.update(1)
            for o in session.flush():
                w.write(o.image)
                bar.update(1)
        if check is not None:
            check(session.stats)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return session.stats


def format_stats(stats, cfg) -> str:
    def f(x, unit=""):
        return "-" if x is None else f"{x:.1f}{unit}"

    rows = [
        ("frames in / out", f"{stats.frames_in} / {stats.frames_out}"),
        ("chunks", str(stats.chunks)),
        ("time to first frame", f(stats.time_to_first_frame_ms, " ms")),
        ("chunk latency p50 / p95 / p99", f"{f(stats.p50_ms)} / {f(stats.p95_ms)} / {f(stats.p99_ms)} ms"),
        ("throughput", f(stats.fps, " FPS") + f"  (real time = {cfg.stream.fps:g} FPS)"),
        ("algorithmic latency", f"{cfg.algorithmic_latency_ms():.0f} ms  ({cfg.video_frames_per_chunk} frames/chunk "
                                f"+ {cfg.audio.lookahead_frames} frames audio look-ahead)"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def _gain_choice(v: str):
    if v == "auto":
        return v
    try:
        g = float(v)
    except ValueError:
        g = float("nan")
    if not (g > 0 and math.isfinite(g)):
        raise argparse.ArgumentTypeError(f"{v!r}: use auto or a positive number (e.g. 2)")
    return g


def _face_choice(v: str):
    if v in ("largest", "center"):
        return v
    try:
        x, y = (float(t) for t in v.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r}: use largest, center, or X,Y (a pixel, e.g. 640,360)") from None
    return (x, y)


def _cmd_run(a) -> int:
    if a.server is not None:
        return _run_remote(a)
    from .session import Engine

    engine = Engine.load(a.model, backend=a.backend or "torch", **schedule_choice(a))
    if a.avatar is not None:
        return _run_avatar(a, engine)
    return _run_video(a, engine)


def _run_remote(a) -> int:
    """``lipforce run --server URL``: the same clip, streamed through a Triton server's model."""
    from .triton.client import RemoteEngine

    local = [f for f, v in (("--model", a.model), ("--backend", a.backend), ("--guidance", a.guidance),
                            ("--guidance-region", a.guidance_region), ("--steps", a.steps)) if v is not None]
    if local:
        raise ValueError(f"{'/'.join(local)} choose the model where the server runs (lipforce triton --model DIR "
                         f"--backend B); drop them with --server")
    if a.avatar is not None:
        raise ValueError("--avatar streams a prepared avatar with a local engine; drop --server")
    with RemoteEngine(a.server) as engine:
        code = _run_video(a, engine)
    print("  (through the server: a chunk's latency is from sending the push that completes it to its frames being "
          "back, queued behind the clip's earlier pushes: a file goes as fast as the server takes it)")
    return code


def _run_video(a, engine) -> int:
    a.video = a.video or str(SAMPLE_DIR / "face.mp4")
    stats = run_clip(engine, a.video, a.audio, a.out, box=a.box, progress=not a.no_progress, silence=a.silence,
                     frame_memory_mb=a.frame_memory, face=a.face, exemplars=not a.no_exemplars,
                     speech_gain=a.speech_gain)
    print(f"wrote {a.out}  ({engine!r})")
    print(format_stats(stats, engine.config))
    if _is_sample(a.video, "face.mp4") and _is_sample(a.audio, "speech.wav"):
        print(sample_sync_report(a.out))
    return 0


def _run_avatar(a, engine) -> int:
    from .avatar import Avatar

    where = a.avatar or a.model
    if not where:
        raise ValueError("--avatar without a folder streams the avatar of --model: pass --model avatars/NAME "
                         "(a directory written by `lipforce enroll`), or --avatar DIR")
    if a.video is not None or a.box is not None:
        raise ValueError("--avatar streams the avatar's own loop: drop --video/--box")
    stats = run_avatar(engine, Avatar.load(where), a.audio, a.out, progress=not a.no_progress, silence=a.silence,
                       exemplars=not a.no_exemplars, speech_gain=a.speech_gain)
    print(f"wrote {a.out}  ({engine!r}, avatar {where})")
    print(format_stats(stats, engine.config))
    return 0


def _enroll_module():
    """``distill.enroll``: installed as ``lipforce_sdk.distill``, or ``distill`` in a checkout."""
    try:
        from .distill import enroll
    except ImportError:  # pragma: no cover - a checkout without the installed sub-package
        from distill import enroll
    return enroll


def _cmd_enroll(a) -> int:
    try:
        r = _enroll_module().run_args(a)
    except KeyboardInterrupt:
        return 130
    if isinstance(r, int):  # --add-exemplars: the count written
        print(f"  next: lipforce run --model {a.out} --avatar --audio SPEECH.wav --out out.mp4")
        return 0
    sc = r.scores or {}
    if sc.get("enrolled"):
        b, e = sc["base"], sc["enrolled"]
        print(f"  held-out mouth PSNR {b['mouth_psnr_db']:.2f} -> {e['mouth_psnr_db']:.2f} dB, SSIM "
              f"{b['mouth_ssim']:.4f} -> {e['mouth_ssim']:.4f} (base -> enrolled; {sc['held_out_frames']} frames)")
    print(f"  next: lipforce run --model {a.out} --avatar --audio SPEECH.wav --out out.mp4")
    return 0


def _auto_attention(precision: str) -> str:
    """The attention flavour for the TensorRT on this machine (decomposed where there is none)."""
    from .engine import EngineError, detect_tensorrt

    try:
        fl = detect_tensorrt()
    except EngineError:
        print("no TensorRT here: exporting attention=decomposed (runs everywhere)")
        return "decomposed"
    choice = fl.recommended_attention(precision)
    print(f"{fl}: exporting attention={choice}")
    return choice


def _cmd_export(a) -> int:
    from .export import export_model
    from .model import LipSyncModel, load_model
    from .session import default_model_dir

    if a.preset and a.checkpoint:
        raise ValueError("give --preset or --checkpoint, not both")
    if a.preset:
        model = LipSyncModel.from_preset(a.preset, seed=a.seed)
    else:
        model = load_model(a.checkpoint or default_model_dir())
    over = {k: v for k, v in (("resolution", a.resolution), ("chunk_frames", a.chunk_frames)) if v is not None}
    if over:
        cfg = model.cfg.replace(stream=over)
        state = model.state_dict()
        model = LipSyncModel(cfg)
        model.load_state_dict(state)
    if a.attention == "auto":
        a.attention = _auto_attention(a.precision)
    man = export_model(model, a.out, precision=a.precision, attention=a.attention, progress=not a.no_progress,
                       max_batch=a.max_batch)
    if not a.preset:  # an enrolled avatar's mouth exemplars travel with its graphs
        from .exemplars import carry_exemplars

        carry_exemplars(a.checkpoint or default_model_dir(), a.out)
    print(f"exported {model.cfg.name} ({man['flavour']}, attention={a.attention}, opset {man['opset']}, "
          f"{a.precision}) to {a.out}")
    for g, spec in man["graphs"].items():
        print(f"  {g:<14} {spec['file']:<20} {spec['sha256'][:12]}  {len(spec['state'])} state tensors")
    return 0


def _cmd_build(a) -> int:
    from .engine import build_model

    man = build_model(a.model_dir, a.out, precision=a.precision, flavour=a.flavour, target=a.target,
                      timing_cache=a.timing_cache, plugin_libraries=a.plugin or None, progress=not a.no_progress)
    print(f"built {len(man['engines'])} engine(s) into {a.out}")
    for g, e in man["engines"].items():
        print(f"  {g:<14} {e['file']:<22} {e['tensorrt']['flavour']} {e['tensorrt']['version']}  {e['precision']}  "
              f"{e['bytes'] / 2**20:.1f} MiB  {e['build_seconds']:.1f}s")
    return 0


def _cmd_serve(a) -> int:
    from . import serve

    try:
        import aiohttp  # noqa: F401
        import aiortc  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"lipforce serve needs the serve extra ({e.name} is missing): "
                           "pip install 'lipforce[serve]'") from None
    return serve.run_args(a)


def _cmd_triton(a) -> int:
    from .triton import server

    return server.run_args(a)


def _cmd_doctor(a) -> int:
    from .engine import format_doctor

    print(format_doctor())
    return 0


def add_schedule_options(p: argparse.ArgumentParser) -> None:
    """``--guidance G``, ``--guidance-region lips|mouth|crop`` and ``--steps 1|2``
    (``ScheduleConfig.guidance`` / ``guidance_region`` / ``steps``; ``None`` = the model's own):
    ``Engine.load(..., **schedule_choice(a))`` takes them as parsed. ``lipforce run`` and the
    measuring tools (``distill.realeval``, ``distill.articulation``) share them."""
    from .config import GUIDANCE_REGIONS, SCHEDULE_STEPS

    p.add_argument("--guidance", type=float, default=None, metavar="G",
                   help="audio guidance of the model's second step: the mouth's motion G times what the model draws "
                        "against the same pass without sound (1: off; each other value costs one more DiT pass per "
                        "chunk; default: the model's own, schedule.guidance in its manifest)")
    p.add_argument("--guidance-region", choices=GUIDANCE_REGIONS, default=None,
                   help="where --guidance acts: lips (a soft box over the lips; the chin and cheeks as drawn), "
                        "mouth (the part of it between the mouth corners) or crop (the whole crop); default: the "
                        "model's own, schedule.guidance_region")
    p.add_argument("--steps", type=int, choices=SCHEDULE_STEPS, default=None,
                   help="denoising steps per chunk: 2 runs both; 1 runs the second alone, started from the frame "
                        "with its mouth filled from the reference (one DiT pass per chunk fewer; models with "
                        "stream.fill reference); default: the model's own, schedule.steps")


def schedule_choice(a: argparse.Namespace) -> dict:
    """The ``Engine.load`` keywords of ``add_schedule_options``' parsed options."""
    return {"guidance": a.guidance, "guidance_region": a.guidance_region, "steps": a.steps}


def build_parser() -> argparse.ArgumentParser:
    from .config import SILENCE_MODES

    p = argparse.ArgumentParser(prog="lipforce", description="Real-time few-step diffusion lip sync.")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="lip-sync a video to an audio track, write an MP4 and print latency")
    r.add_argument("--video", default=None, help="source face video (default: bundled sample)")
    r.add_argument("--audio", default=str(SAMPLE_DIR / "speech.wav"), help="driving speech (default: bundled sample)")
    r.add_argument("--out", default="out.mp4", help="output MP4 (video + audio)")
    r.add_argument("--model", default=None, help="model directory (default: the bundled tiny model)")
    r.add_argument("--backend", default=None, choices=["torch", "onnxruntime", "tensorrt"], help="default: torch")
    r.add_argument("--server", default=None, metavar="HOST:PORT",
                   help="stream through the lipforce model of a Triton server (lipforce triton) at this gRPC address, "
                        "e.g. localhost:8001, instead of a local engine; the output is the same")
    r.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                   help="fixed face-crop box (skip the face mesh; a mean face is placed in it)")
    r.add_argument("--avatar", nargs="?", const="", default=None, metavar="DIR",
                   help="stream a prepared avatar from the audio alone (no --video): the one in --model's directory "
                        "(written by `lipforce enroll`), or the avatar folder DIR")
    r.add_argument("--frame-memory", type=int, default=None, metavar="MB",
                   help="most memory for decoded video frames (default 256): a longer or larger video is "
                        "decoded as it goes instead of read at once")
    r.add_argument("--silence", default=None, choices=SILENCE_MODES,
                   help="still: hold the mouth still while the audio is silent (the model's own mouth at the start "
                        "of each silence); model: the model's output throughout (default: the model's own "
                        "setting: model for one enrolled from a talking clip, still for the bundled one)")
    r.add_argument("--no-exemplars", action="store_true",
                   help="paste the model's mouth as it is, not through mouth exemplars (fine detail from an "
                        "enrolled avatar's own frames, or for a general model from the video's first 2 s; "
                        "lipforce_sdk.exemplars)")
    r.add_argument("--speech-gain", type=_gain_choice, default=1.0, metavar="auto|G",
                   help="the speech as the model hears it: G times as loud, or auto: quiet speech raised to the level "
                        "of the model's training speech (never clipped); the mouth opens less for quiet speech. "
                        "The sound track is written as given (default: 1, as given; a quiet one is named)")
    add_schedule_options(r)
    r.add_argument("--face", type=_face_choice, default="largest", metavar="largest|center|X,Y",
                   help="where the video shows several faces: the one to lip-sync (default: the largest; "
                        "center: nearest the frame's centre; X,Y: nearest that pixel)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(fn=_cmd_run)

    n = sub.add_parser("enroll", help="adapt a model to one avatar (a talking clip, an idle loop or a photo) and "
                                      "prepare its loop for audio-only streaming")
    _enroll_module().add_arguments(n)
    n.set_defaults(fn=_cmd_enroll)

    e = sub.add_parser("export", help="export the four graphs to ONNX with a manifest")
    e.add_argument("--preset", default=None, help="export a preset with seeded weights (tiny, 1.3b, 14b)")
    e.add_argument("--checkpoint", default=None, help="model directory with weights (default: the bundled model)")
    e.add_argument("--seed", type=int, default=0, help="weights seed with --preset")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    e.add_argument("--attention", default="decomposed", choices=["decomposed", "onnx_attention", "plugin", "auto"],
                   help="decomposed (opset 18, runs everywhere), onnx_attention (opset 23 Attention op: TensorRT "
                        "10.14+/TensorRT-RTX fused attention, fp16/bf16), plugin (lipforce TensorRT plugin, for "
                        "TensorRT 10.3 / JetPack 6), or auto (chosen by the TensorRT found here)")
    e.add_argument("--resolution", type=int, default=None, help="face crop size (default: the model's)")
    e.add_argument("--chunk-frames", type=int, default=None, help="latent frames per chunk (default: the model's)")
    e.add_argument("--max-batch", type=int, default=1, help="streams one engine call may batch: a batch axis 1..N "
                   "on every tensor, for Engine.load(..., max_batch=N) (default 1: the batch-1 graphs; plugin: 1)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(fn=_cmd_export)

    b = sub.add_parser("build", help="build TensorRT / TensorRT-RTX engines from an exported directory")
    b.add_argument("model_dir", help="directory written by `lipforce export`")
    b.add_argument("--out", required=True, help="engine directory")
    b.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16", "fp8"],
                   help="must match the exported graphs (strongly typed); default: theirs")
    b.add_argument("--flavour", default=None, choices=["tensorrt_rtx", "tensorrt"], help="default: what imports")
    b.add_argument("--target", default=None, help="compute capability to build for, e.g. 8.6 (TensorRT-RTX)")
    b.add_argument("--timing-cache", default=None, help="timing cache file (full TensorRT)")
    b.add_argument("--plugin", action="append", default=[], help="plugin library to load (full TensorRT)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(fn=_cmd_build)

    v = sub.add_parser("serve", help="a live avatar in the browser over WebRTC: a page to type text into, and an "
                                     "HTTP endpoint for text or WAV (needs the serve extra)")
    from . import serve

    serve.add_arguments(v)
    v.set_defaults(fn=_cmd_serve)

    t = sub.add_parser("triton", help="serve many streams: start Triton Inference Server with the lipforce model "
                                      "repository (deploy/triton; needs nvidia-pytriton)")
    from .triton import server as triton_server

    triton_server.add_arguments(t)
    t.set_defaults(fn=_cmd_triton)

    d = sub.add_parser("doctor", help="print Python, torch, ONNX Runtime, TensorRT, CUDA, GPU, plugin library")
    d.set_defaults(fn=_cmd_doctor)
    return p


def _exit_on_sigterm() -> None:
    """SIGTERM (a service stopped, ``kill``) exits through Python's cleanup, as Ctrl-C does, so no
    half-written output is left behind."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _exit_on_sigterm()
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"lipforce {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
