"""Batched sessions against one-call-per-stream: aggregate frames/s and chunk latency, one run.

    python samples/batch_bench.py                                  # bundled model, ONNX Runtime CPU, 1,2,4,8 streams
    python samples/batch_bench.py --streams 1,4 --seconds 4 --max-wait-ms 2,20
    python samples/batch_bench.py --costs-only                     # the FLOPs/bytes tables only
    python samples/batch_bench.py --backend torch --device cuda    # on a GPU: torch backend, no export

Part 1 (measured): N sessions, each in its own thread, push their own clip (synthetic frames at
a fixed box, so face tracking is not timed; each its own seed) frame by frame as fast as they can,
all started together. Unbatched: the model exported as always (batch 1), one engine call per
stream and graph. Batched: the model exported with ``--max-batch 8``, loaded with
``Engine.load(..., max_batch=8, max_wait_ms=W)``. Aggregate FPS = frames out of all streams / wall
time; chunk latency = each chunk's compute time in its session (``SessionStats``, scheduler waits
included), p50/p95 over all chunks of all streams; "vs unbatched" = the largest difference of any
output pixel from the unbatched run of the same stream (uint8 levels).

Part 2 (computed from the config, nothing instantiated): per chunk and stream, the FLOPs of each
graph, the weight bytes (read once per call, so once per batch) and the per-stream bytes (the KV
cache the DiT attends over, and what a batched TensorRT call adds by gathering and scattering it),
for ``tiny`` and ``1.3b`` at fp16. From these, the arithmetic intensity at batch 1..8 against the
ridge point (peak FLOP/s / bandwidth) of two GPUs (datasheet figures, dense fp16 tensor math): a
graph below the ridge is bound by memory traffic, where reading the weights once for the batch
instead of once per stream pays.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Datasheet figures (dense fp16/bf16 tensor FLOP/s, memory bandwidth), used as assumptions only.
GPUS = {"H100 SXM": (989e12, 3.35e12), "RTX 4090": (165e12, 1.008e12)}


# ------------------------------------------------------------------------------------------------
# Part 2: analytic costs per graph call (one chunk of one stream)
# ------------------------------------------------------------------------------------------------
@dataclass
class GraphCost:
    graph: str
    params: int  # weights read once per call
    flops: float  # per stream (2 per multiply-add)
    stream_bytes: float  # per stream, besides the weights and activations: the KV cache the DiT reads
    gather_bytes: float = 0.0  # per stream, what a batched TensorRT call adds: state gathered in and scattered out


def _conv(cin: int, cout: int, k: int, positions: float) -> tuple[int, float]:
    """(params, flops) of a convolution with ``k`` kernel taps evaluated at ``positions`` outputs."""
    return cin * cout * k + cout, 2.0 * cin * cout * k * positions


def _sum(layers) -> tuple[int, float]:
    return sum(p for p, _ in layers), sum(f for _, f in layers)


def audio_encoder_cost(cfg) -> tuple[int, float]:
    a = cfg.audio
    win = a.window_video_frames() * a.mels_per_video_frame(cfg.stream.fps)
    h4, fv = a.hidden_dim // 4, cfg.video_frames_per_chunk
    return _sum([_conv(a.n_mels, h4, 3, win * fv), _conv(win * h4, a.hidden_dim, 1, fv),
                 _conv(a.hidden_dim, a.tokens_per_frame * a.token_dim, 1, fv), (2 * a.token_dim, 0.0)])


def vae_cost(cfg) -> dict[str, tuple[int, float]]:
    """(params, flops per chunk) of the VAE encoder and decoder (``lipforce_sdk.model.vae``)."""
    v, r = cfg.vae, cfg.stream.resolution
    c, fv, nc = v.base_channels, cfg.video_frames_per_chunk, cfg.stream.chunk_frames
    if v.kind == "frame":
        stages = int(round(math.log2(v.spatial_compression))) - 1
        enc, res, ch = [_conv(12, c, 9, (r // 2) ** 2 * fv)], r // 2, c
        for _ in range(stages):
            res //= 2
            enc.append(_conv(ch, 2 * ch, 9, res ** 2 * fv))
            ch *= 2
        enc += [_conv(ch, ch, 9, res ** 2 * fv)] * 2 + [_conv(ch, v.z_dim, 1, res ** 2 * fv)]
        dec = [_conv(v.z_dim, ch, 18, res ** 2 * fv)] + [_conv(ch, ch, 9, res ** 2 * fv)] * 2
        for _ in range(stages):
            res *= 2
            dec.append(_conv(ch, ch // 2, 9, res ** 2 * fv))
            ch //= 2
        dec += [_conv(ch, ch, 9, res ** 2 * fv), _conv(ch, 12, 9, res ** 2 * fv)]
    else:
        c4, tc, lat = 4 * c, v.temporal_compression, (r // 8) ** 2
        enc = [_conv(3, c, 9, r * r * fv), _conv(c, 2 * c, 9, (r // 2) ** 2 * fv),
               _conv(2 * c, c4, 9, (r // 4) ** 2 * fv), _conv(c4, c4, 9, lat * fv),
               _conv(c4, c4, 27, lat * fv), _conv(c4 * tc, 2 * v.z_dim, 1, lat * nc)]
        dec = [_conv(v.z_dim, c4, 18, lat * nc), _conv(c4, c4 * tc, 1, lat * nc), _conv(c4, c4, 27, lat * fv),
               _conv(c4, c4, 9, (r // 4) ** 2 * fv), _conv(c4, 2 * c, 9, (r // 2) ** 2 * fv),
               _conv(2 * c, c, 9, r * r * fv), _conv(c, 3, 9, r * r * fv)]
    return {"vae_encoder": _sum(enc), "vae_decoder": _sum(dec)}


def dit_cost(cfg, dtype_bytes: int) -> GraphCost:
    d, f, nl = cfg.dit.dim, cfg.dit.ffn_dim, cfg.dit.num_layers
    n, c = cfg.tokens_per_frame, cfg.stream.chunk_frames
    lq, t = c * n, cfg.num_slots * n  # query tokens of the chunk, tokens in the cache
    a = cfg.audio
    ta = cfg.vae.temporal_compression * a.tokens_per_frame  # audio tokens per latent frame
    patch = math.prod(cfg.dit.patch_size)
    lin = lambda i, o: i * o + o  # noqa: E731
    block = 8 * lin(d, d) + 4 * d + 2 * d + lin(d, f) + lin(f, d) + 6 * d  # self + cross attn, norms, ffn, mod
    params = (cfg.in_dim * d * patch + d + lin(a.token_dim, d) + lin(d, d) + lin(cfg.dit.freq_dim, d) + lin(d, d)
              + lin(d, 6 * d) + nl * block + lin(d, cfg.latent_channels * patch) + 2 * d)
    per_block = (2 * lq * (6 * d * d + 2 * d * f)  # q, k, v, o; cross q, o; ffn
                 + 2 * c * ta * 2 * d * d  # cross-attention k, v of the audio tokens
                 + 4 * lq * t * d + 4 * lq * ta * d)  # QK^T and PV over the cache; over the audio tokens
    flops = (nl * per_block + 2 * lq * cfg.in_dim * patch * d + 2 * c * ta * (a.token_dim * d + d * d)
             + 2 * lq * d * cfg.latent_channels * patch)
    kv = 2 * nl * t * d * dtype_bytes  # K and V of every layer, all slots: read by attention every call
    return GraphCost("dit_step", params, flops, stream_bytes=kv, gather_bytes=2 * 2 * kv)


def graph_costs(cfg, dtype_bytes: int) -> list[GraphCost]:
    ap, af = audio_encoder_cost(cfg)
    vae = vae_cost(cfg)
    return [GraphCost("audio_encoder", ap, af, 0.0), GraphCost("vae_encoder", *vae["vae_encoder"], 0.0),
            dit_cost(cfg, dtype_bytes), GraphCost("vae_decoder", *vae["vae_decoder"], 0.0)]


def _si(x: float, unit: str) -> str:
    for p, s in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= p:
            return f"{x / p:.3g} {s}{unit}"
    return f"{x:.3g} {unit}"


def print_costs(presets=("tiny", "1.3b"), dtype_bytes: int = 2, batches=(1, 2, 4, 8)) -> None:
    from lipforce_sdk.config import from_name

    print(f"\nPer chunk, per stream, fp{8 * dtype_bytes} (counted from the config; activations not counted):")
    rows = [("preset", "graph", "calls/chunk", "params", "weight bytes/call", "FLOPs/call/stream",
             "KV bytes/call/stream", "+gather/scatter (TRT batched)")]
    for name in presets:
        cfg = from_name(name)
        calls = {"audio_encoder": 1, "vae_encoder": 1, "vae_decoder": 1,
                 "dit_step": 2 + (cfg.schedule.cache_pass == "clean")}
        for g in graph_costs(cfg, dtype_bytes):
            rows.append((name, g.graph, calls[g.graph], _si(g.params, ""), _si(g.params * dtype_bytes, "B"),
                         _si(g.flops, "FLOP"), _si(g.stream_bytes, "B") if g.stream_bytes else "-",
                         _si(g.gather_bytes, "B") if g.gather_bytes else "-"))
    _table(rows)
    ridge = ", ".join(f"{k} {p / b:.0f}" for k, (p, b) in GPUS.items())
    print(f"\nArithmetic intensity (FLOP per byte moved: weights once per call + per-stream KV) at batch b; "
          f"ridge points: {ridge}. Below the ridge a call is memory-bound. Roofline time per stream at b "
          "relative to b=1 on the H100 figures (lower is better; gather/scatter copies not included):")
    rows = [("preset", "graph", *[f"AI b={b}" for b in batches], "H100 us/call b=1",
             *[f"t/stream b={b}" for b in batches[1:]], "TRT gather/scatter us/stream")]
    peak, bw = GPUS["H100 SXM"]
    for name in presets:
        cfg = from_name(name)
        for g in graph_costs(cfg, dtype_bytes):
            ai, ts = [], []
            for b in batches:
                byt = g.params * dtype_bytes + b * g.stream_bytes
                ai.append(f"{b * g.flops / byt:.0f}")
                ts.append(max(b * g.flops / peak, byt / bw) / b)
            rows.append((name, g.graph, *ai, f"{1e6 * ts[0]:.3g}", *[f"{t / ts[0]:.2f}" for t in ts[1:]],
                         f"{1e6 * g.gather_bytes / bw:.3g}" if g.gather_bytes else "-"))
    _table(rows)
    print("us/call = the roofline bound max(FLOPs / peak, bytes / bandwidth) of one stream's call; a GPU also "
          "spends a few us per kernel launch, and a graph call launches many kernels, so calls far below ~100 us "
          "are bound by launches and occupancy, which a batch shares among its streams.")


# ------------------------------------------------------------------------------------------------
# Part 1: measured on ONNX Runtime
# ------------------------------------------------------------------------------------------------
BOX = (16.0, 16.0, 144.0, 144.0)


def make_clip(n_frames: int, seed: int):
    """(frames, audio, the session's noise seed) of one stream."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (n_frames, 160, 160, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(n_frames * 640)).astype(np.float32)
    return frames, audio, seed


def run_threads(work, n: int, barrier_timeout: float = 120.0) -> float:
    """``work(i)`` for i < n, each in its own thread, all released together by a barrier; the
    wall seconds from the release to the last one's end. The first error raised is re-raised."""
    start = threading.Barrier(n + 1)
    errors = []

    def one(i):
        try:
            start.wait(barrier_timeout)
            work(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    try:
        start.wait(barrier_timeout)
    except threading.BrokenBarrierError:
        pass  # a worker failed before the release: its error is raised below
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall


def run_streams(engine, clips, barrier_timeout: float = 120.0):
    """Each clip pushed in its own thread, all released together. Returns (wall s, stats, frames)."""
    n = len(clips)
    stats, outs = [None] * n, [None] * n
    sessions = [engine.session(box=BOX, seed=seed) for _, _, seed in clips]

    def work(i):
        frames, audio, _ = clips[i]
        s, got = sessions[i], []
        for k, f in enumerate(frames):
            got += s.push(audio[k * 640:(k + 1) * 640], f)
        got += s.flush()
        stats[i], outs[i] = s.stats, np.stack([o.image for o in got])

    wall = run_threads(work, n, barrier_timeout)
    return wall, stats, outs


def export_both(workdir: Path, max_batch: int) -> tuple[Path, Path]:
    from lipforce_sdk import default_model_dir
    from lipforce_sdk.export import export_model
    from lipforce_sdk.manifest import read_manifest
    from lipforce_sdk.model import load_model

    model = None
    dirs = (workdir / "batch1", workdir / f"batch{max_batch}")
    for d, mb in zip(dirs, (1, max_batch)):
        if (d / "manifest.json").is_file() and read_manifest(d)[0].get("max_batch", 1) == mb:
            continue
        model = model or load_model(default_model_dir())
        print(f"exporting the bundled model with max_batch={mb} to {d} ...", flush=True)
        export_model(model, d, progress=False, max_batch=mb)
    return dirs


def measure(args) -> None:
    from lipforce_sdk import Engine
    from lipforce_sdk.batching import BatchStats

    if args.backend == "torch":  # the weights themselves: the torch backend batches without an export
        from lipforce_sdk import default_model_dir

        b1_dir = bb_dir = default_model_dir()
        opts = {"device": args.device}
    else:
        workdir = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lipforce_batch_bench_"))
        b1_dir, bb_dir = export_both(workdir, args.max_batch)
        opts = {}
    streams = [int(x) for x in args.streams.split(",")]
    waits = [float(x) for x in args.max_wait_ms.split(",")]
    n_frames = int(round(args.seconds * 25))
    clips = [make_clip(n_frames, seed=1000 + i) for i in range(max(streams))]
    unbatched = Engine.load(b1_dir, backend=args.backend, **opts)
    run_streams(unbatched, clips[:1])  # warm-up (first calls allocate)
    # each stream alone on the batched export, no scheduler: what a batched run must reproduce
    alone_engine = Engine.load(bb_dir, backend=args.backend, **opts)
    alone = [run_streams(alone_engine, [c])[2][0] for c in clips]
    rows = [("streams", "mode", "aggregate FPS", "x unbatched", "chunk p50 ms", "chunk p95 ms", "mean batch",
             "calls by batch size", "waited: calls, p99 ms", "diff vs alone", "diff vs batch-1 export")]
    for n in streams:
        wall, stats, ref = run_streams(unbatched, clips[:n])
        base_fps = sum(s.frames_out for s in stats) / wall
        lat = np.concatenate([np.asarray(s.chunk_latency_ms) for s in stats])
        rows.append((n, "unbatched", f"{base_fps:.1f}", "1.00", f"{np.percentile(lat, 50):.1f}",
                     f"{np.percentile(lat, 95):.1f}", "1.00", "-", "-", "-", "-"))
        for w in waits:
            eng = Engine.load(bb_dir, backend=args.backend, max_batch=args.max_batch, max_wait_ms=w, **opts)
            run_streams(eng, clips[:1])
            eng.batching.stats = BatchStats()  # count the measured run only
            wall, stats, outs = run_streams(eng, clips[:n])
            fps = sum(s.frames_out for s in stats) / wall
            lat = np.concatenate([np.asarray(s.chunk_latency_ms) for s in stats])
            st = eng.batching.stats
            sizes = " ".join(f"{k}:{v}" for k, v in st.by_size().items())
            waited = np.asarray(st.wait_ms)
            rows.append((n, f"batched, wait {w:g} ms", f"{fps:.1f}", f"{fps / base_fps:.2f}",
                         f"{np.percentile(lat, 50):.1f}", f"{np.percentile(lat, 95):.1f}", f"{st.mean_batch:.2f}",
                         sizes, f"{st.waited}, {np.percentile(waited, 99):.1f}", _diff(outs, alone[:n]),
                         _diff(outs, ref)))
    if args.backend == "torch":
        import torch

        where = (f"torch {torch.__version__} on {args.device}"
                 + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    else:
        import onnxruntime

        where = f"ONNX Runtime {onnxruntime.__version__} CPU"
    print(f"\n{where}, {platform.processor() or platform.machine()}, "
          f"{_cpus()} cores; bundled tiny model, fp32; {n_frames} frames per stream; max_batch={args.max_batch}")
    _table(rows)
    print("diff = the largest difference of any output pixel (uint8 levels) and the share of pixels that differ; "
          "alone = each stream on the batched export without the scheduler; waited = calls that did not start "
          "at once, p99 of every call's wait")


def _diff(outs, refs) -> str:
    d = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(outs, refs)]
    frac = sum(int((x > 0).sum()) for x in d) / sum(x.size for x in d)
    return f"{max(int(x.max()) for x in d)} ({frac:.1e})"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(rows[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows[1:]:
        print(line(r))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="1,2,4,8", help="numbers of concurrent streams (comma-separated)")
    ap.add_argument("--seconds", type=float, default=2.0, help="clip length per stream")
    ap.add_argument("--max-batch", type=int, default=8, help="the batched export's and engine's max_batch")
    ap.add_argument("--max-wait-ms", default="2", help="scheduler waits to compare (comma-separated)")
    ap.add_argument("--work", default=None, help="folder for the two exports (kept; reused when present)")
    ap.add_argument("--costs-only", action="store_true", help="print the computed FLOPs/bytes tables only")
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"],
                    help="onnxruntime (exported graphs, CPU) or torch (the weights, on --device)")
    ap.add_argument("--device", default="cpu", help="torch backend: cpu or cuda (a GPU: python samples/batch_bench.py "
                                                    "--backend torch --device cuda)")
    args = ap.parse_args(argv)
    if not args.costs_only:
        measure(args)
    print_costs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
