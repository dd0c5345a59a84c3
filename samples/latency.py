"""Latency sample: streaming two-step causal student vs the same-scale bidirectional model.

    python samples/latency.py --preset tiny --resolution 128 --backend torch
    python samples/latency.py --preset tiny --backend torch,onnxruntime   # side by side, with the ratio
    python samples/latency.py --preset 1.3b --resolution 512 --backend torch --precision bf16 --device cuda

Prints one table: for each chunk size, time to first frame, chunk latency percentiles, FPS,
algorithmic latency (chunk + audio look-ahead) and peak memory; then, over the same clip in the
same run, the bidirectional full-sequence model (all frames at once, full attention, ``--steps``
Euler steps with classifier-free guidance = 2 passes per step, as the teacher samples) and the
speed ratio. Weights are seeded (speed does not depend on their values). The clip is the bundled
speech with synthetic frames at the crop size (fixed box, so face detection is not timed).
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _gpu_peak_mb(torch, device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _reset_gpu_peak(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def make_engine(args, backend: str, chunk_frames: int, workdir: Path):
    """The same seeded model on ``backend``: torch directly; onnxruntime from a fresh export;
    tensorrt from a fresh export + engine build (needs a GPU to run)."""
    from lipforce_sdk import Engine
    from lipforce_sdk.config import from_name
    from lipforce_sdk.model import LipSyncModel

    stream = from_name(args.preset).stream
    over = {"stream": {"resolution": args.resolution, "chunk_frames": chunk_frames}}
    if stream.sink == "reference":  # the reference is written in whole chunks: the sink rounded up to them
        over["stream"]["sink_frames"] = chunk_frames * -(-stream.sink_frames // chunk_frames)
    model = LipSyncModel.from_preset(args.preset, seed=0, **over)
    if backend == "torch":
        from lipforce_sdk.backends.torch_backend import TorchBackend

        return Engine(TorchBackend(model, device=args.device, precision=args.precision))
    from lipforce_sdk.export import export_model

    onnx_dir = workdir / f"onnx_c{chunk_frames}"
    precision = "fp32" if backend == "onnxruntime" else args.precision
    export_model(model, onnx_dir, precision=precision, progress=False)
    if backend == "onnxruntime":
        return Engine.load(onnx_dir, backend="onnxruntime")
    from lipforce_sdk.engine import build_model

    build_model(onnx_dir, workdir / f"trt_c{chunk_frames}", progress=False)
    return Engine.load(workdir / f"trt_c{chunk_frames}", backend="tensorrt")


def make_clip(speech, seconds: float, resolution: int, sample_rate: int = 16000, fps: float = 25.0):
    """The timed clip: ``speech`` (float32 mono) repeated to ``seconds``, random frames at the crop size."""
    n_frames = int(round(seconds * fps))
    audio = np.resize(speech, int(seconds * sample_rate)).astype(np.float32)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (n_frames, resolution, resolution, 3), dtype=np.uint8)
    return frames, audio


def stream_once(engine, frames, audio, keep=None):
    """One stream of the whole clip (pushed at once); ``keep``, a list, collects the output images."""
    res = engine.config.stream.resolution
    s = engine.session(box=(0, 0, res, res))
    spf = engine.config.samples_per_video_frame
    outs = []
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        outs += s.push(audio[i * spf:(i + 1) * spf], f)
    rest = audio[len(frames) * spf:]
    if rest.size:
        outs += s.push(rest)
    outs += s.flush()
    wall = time.perf_counter() - t0
    assert len(outs) == len(frames), (len(outs), len(frames))
    if keep is not None:
        keep.extend(o.image for o in outs)
    return s.stats, wall


def bidirectional_baseline(args, frames, audio, backend=None):
    """The same-scale bidirectional model over the whole clip: encode all frames, ``steps`` Euler
    steps of full-sequence attention with CFG (audio dropped for the unconditional pass), decode.
    ``backend``: a TorchBackend to reuse (default: a fresh seeded model of ``args.preset``)."""
    import torch

    from lipforce_sdk.audio import log_mel_clip
    from lipforce_sdk.backends.torch_backend import TorchBackend
    from lipforce_sdk.model import LipSyncModel

    be = backend
    if be is None:
        model = LipSyncModel.from_preset(args.preset, seed=0, stream={"resolution": args.resolution})
        be = TorchBackend(model, device=args.device, precision=args.precision)
    cfg, m, dev, dt = be.config, be.model, be.device, be.dtype
    tc = cfg.vae.temporal_compression
    n = len(frames) - len(frames) % tc
    x = torch.from_numpy(frames[:n].astype(np.float32) / 127.5 - 1).permute(3, 0, 1, 2)[None].to(dev, dt)
    mel = torch.from_numpy(log_mel_clip(audio, cfg.audio, cfg.stream.fps, n))[None].to(dev, dt)
    _reset_gpu_peak(torch, dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        st = be.new_state()
        cond, _ = m.vae.encode(x, st["enc"])
        tokens = m.audio_encoder(mel)
        null = torch.zeros_like(tokens)
        f = cond.shape[2]
        mask = torch.ones(1, cfg.mask_channels, f, *cfg.latent_hw, device=dev, dtype=dt)
        xt = torch.randn(cond.shape, device=dev, dtype=dt)
        ts = torch.linspace(1.0, 0.0, args.steps + 1)
        for i in range(args.steps):
            t, t_next = float(ts[i]), float(ts[i + 1])
            tt = torch.full((1,), t, device=dev, dtype=dt)
            x0_c = m.dit.forward_full(xt, tt, cond, mask, tokens)
            x0_u = m.dit.forward_full(xt, tt, cond, mask, null)
            x0 = x0_u + args.cfg * (x0_c - x0_u)
            eps = (xt - (1 - t) * x0) / t
            xt = (1 - t_next) * x0 + t_next * eps
        out, _ = m.vae.decode(xt, st["dec"])
    sync()
    wall = time.perf_counter() - t0
    return {"frames": n, "seconds": wall, "fps": n / wall, "passes": 2 * args.steps,
            "tokens": f * cfg.tokens_per_frame, "gpu_peak_mb": _gpu_peak_mb(torch, dev)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--backend", default="torch",
                    help="one or more of torch, onnxruntime, tensorrt (comma-separated: measured side by side)")
    ap.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--chunks", default="1,2,3", help="chunk sizes in latent frames to measure, e.g. 1,2,3")
    ap.add_argument("--seconds", type=float, default=6.0, help="clip length")
    ap.add_argument("--steps", type=int, default=50, help="bidirectional baseline: denoising steps")
    ap.add_argument("--cfg", type=float, default=4.5, help="bidirectional baseline: guidance scale")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up streams per configuration")
    args = ap.parse_args(argv)

    import torch

    from lipforce_sdk.cli import SAMPLE_DIR
    from lipforce_sdk.media import read_audio

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    sr, fps = 16000, 25.0
    speech = read_audio(SAMPLE_DIR / "speech.wav", sample_rate=sr)
    frames, audio = make_clip(speech, args.seconds, args.resolution, sr, fps)
    n_frames = len(frames)

    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    print(f"# lipforce latency: preset={args.preset} resolution={args.resolution} backend={args.backend} "
          f"precision={args.precision} device={args.device} ({dev_name}, {torch.get_num_threads()} threads) "
          f"clip={args.seconds:g}s ({n_frames} frames)")
    backends = [b.strip() for b in args.backend.split(",")]
    for b in backends:
        if b not in ("torch", "onnxruntime", "tensorrt"):
            raise SystemExit(f"--backend {b!r}: expected torch, onnxruntime or tensorrt")
    hdr = ("mode", "backend", "chunk", "algo latency ms", "TTFF ms", "p50 ms", "p95 ms", "p99 ms", "FPS", "peak mem MB")
    rows = []
    stream_fps = {}
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="lipforce_latency_"))
    for c in [int(x) for x in args.chunks.split(",")]:
      for b in backends:
        engine = make_engine(args, b, c, workdir)
        for _ in range(args.warmup):
            stream_once(engine, frames[: 2 * engine.config.video_frames_per_chunk], audio)
        _reset_gpu_peak(torch, dev)
        stats, wall = stream_once(engine, frames, audio)
        mem = _gpu_peak_mb(torch, dev) or _peak_rss_mb()
        cfg = engine.config
        stream_fps[(b, c)] = stats.fps
        rows.append(("stream 2-step", b, f"{c} ({cfg.video_frames_per_chunk} fr)", f"{cfg.algorithmic_latency_ms():.0f}",
                     f"{stats.time_to_first_frame_ms:.1f}", f"{stats.p50_ms:.1f}", f"{stats.p95_ms:.1f}",
                     f"{stats.p99_ms:.1f}", f"{stats.fps:.1f}", f"{mem:.0f}"))
    base = None
    if not args.no_baseline:
        base = bidirectional_baseline(args, frames, audio)
        mem = base["gpu_peak_mb"] or _peak_rss_mb()
        rows.append((f"bidirectional {args.steps}-step CFG", "torch", "whole clip", f"{1000 * args.seconds:.0f}+",
                     f"{1000 * base['seconds']:.0f}", "-", "-", "-", f"{base['fps']:.2f}", f"{mem:.0f}"))
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"
    print(line(hdr))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    chunks = sorted({c for _, c in stream_fps})
    if "torch" in backends:
        for b in backends:
            if b != "torch":
                for c in chunks:
                    print(f"speed ratio ({b} / torch, chunk={c}): {stream_fps[(b, c)] / stream_fps[('torch', c)]:.2f}x")
    if base:
        for (b, c), f in stream_fps.items():
            print(f"speed ratio (stream {b} chunk={c} / bidirectional torch): {f / base['fps']:.1f}x")
    print("FPS = output frames per second of compute; TTFF includes the first chunk's algorithmic wait only "
          "as far as the clip is pushed at once (pushes are not paced to real time); "
          "algo latency = chunk length + audio look-ahead; peak mem = "
          + ("GPU max allocated" if dev.type == "cuda" else "process peak RSS (cumulative)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
