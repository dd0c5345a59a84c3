"""``lipforce`` command line: run, export, build, doctor."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "run_clip", "resolve_box", "sample_box", "sample_sync_report", "SAMPLE_DIR", "PHOTO_DIR"]

SAMPLE_DIR = Path(__file__).parent / "assets" / "sample"  # procedural talking face: the default model's domain
PHOTO_DIR = Path(__file__).parent / "assets" / "photo"  # a real face photo under motion (face tracking)


def sample_box() -> tuple[float, float, float, float]:
    """The face box of the bundled sample clip (``crop_box`` of its ``face_boxes.json``).

    The sample is a procedural face framed as the face tracker crops a face; the Haar detector
    is made for photographs and does not find it reliably, so runs on it use this box.
    """
    import json

    with open(SAMPLE_DIR / "face_boxes.json") as f:
        return tuple(float(v) for v in json.load(f)["crop_box"])


def _is_sample(path: str | Path, name: str) -> bool:
    try:
        return Path(path).resolve() == (SAMPLE_DIR / name).resolve()
    except OSError:
        return False


def resolve_box(video: str | Path, box=None) -> tuple[float, float, float, float] | None:
    """The face box a run of ``video`` uses: ``box`` when given, the bundled sample's own box
    when ``video`` is the bundled sample, else ``None`` (face detection)."""
    if box is not None:
        return tuple(float(v) for v in box)
    return sample_box() if _is_sample(video, "face.mp4") else None


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


def _video_schedule(n_src: int, src_fps: float, fps: float, n_out: int) -> np.ndarray:
    """Source frame index for each output frame: time-matched, ping-pong looped when the video is
    shorter than the audio (the audio drives the length)."""
    t = np.arange(n_out) / fps
    idx = np.floor(t * src_fps + 1e-6).astype(np.int64)
    if n_src == 1:
        return np.zeros(n_out, np.int64)
    period = 2 * (n_src - 1)
    idx = idx % period
    return np.where(idx < n_src, idx, period - idx)


def run_clip(engine, video: str | Path, audio: str | Path, out: str | Path, box=None, progress: bool = True):
    """Stream ``video`` + ``audio`` through a session as a live source would (one frame and its
    640 samples per push), write ``out`` (MP4, audio muxed) and return the session stats."""
    from tqdm import tqdm

    from .media import VideoWriter, read_audio, read_video

    cfg = engine.config
    sr, fps = cfg.audio.sample_rate, cfg.stream.fps
    samples = read_audio(audio, sample_rate=sr)
    frames, src_fps = read_video(video)
    n_out = max(1, math.ceil(samples.size / sr * fps))
    order = _video_schedule(len(frames), src_fps, fps, n_out)
    spf = cfg.samples_per_video_frame
    session = engine.session(box=box)
    with VideoWriter(out, fps=fps, with_audio=True, sample_rate=sr) as w, \
            tqdm(total=n_out, unit="frame", desc="lip sync", disable=not progress) as bar:
        w.write_audio(samples)
        for i in range(n_out):
            for o in session.push(samples[i * spf:(i + 1) * spf], frames[order[i]]):
                w.write(o.image)
                bar.update(1)
        for o in session.flush():
            w.write(o.image)
            bar.update(1)
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


def _cmd_run(a) -> int:
    from .session import Engine

    engine = Engine.load(a.model, backend=a.backend)
    box = resolve_box(a.video, a.box)
    stats = run_clip(engine, a.video, a.audio, a.out, box=box, progress=not a.no_progress)
    print(f"wrote {a.out}  ({engine!r})")
    print(format_stats(stats, engine.config))
    if _is_sample(a.video, "face.mp4") and _is_sample(a.audio, "speech.wav") and box == sample_box():
        print(sample_sync_report(a.out))
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
    man = export_model(model, a.out, precision=a.precision, attention=a.attention, progress=not a.no_progress)
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


def _cmd_doctor(a) -> int:
    from .engine import format_doctor

    print(format_doctor())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lipforce", description="Real-time few-step diffusion lip sync.")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="lip-sync a video to an audio track, write an MP4 and print latency")
    r.add_argument("--video", default=str(SAMPLE_DIR / "face.mp4"), help="source face video (default: bundled sample)")
    r.add_argument("--audio", default=str(SAMPLE_DIR / "speech.wav"), help="driving speech (default: bundled sample)")
    r.add_argument("--out", default="out.mp4", help="output MP4 (video + audio)")
    r.add_argument("--model", default=None, help="model directory (default: the bundled tiny model)")
    r.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    r.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="fixed face box (skip detection; the bundled sample's is used for it)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(fn=_cmd_run)

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

    d = sub.add_parser("doctor", help="print Python, torch, ONNX Runtime, TensorRT, CUDA, GPU, plugin library")
    d.set_defaults(fn=_cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"lipforce {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
