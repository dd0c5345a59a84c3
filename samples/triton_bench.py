"""Many streams: local sessions vs the same sessions behind Triton Inference Server, side by side.

    python samples/triton_bench.py                          # 1, 2, 4, 8 streams, ONNX Runtime on the CPU
    python samples/triton_bench.py --streams 1,4,16 --frames 200 --threads 2 --window 1,16

For each number of streams N, the same N clips (the bundled photo clip, 320 x 320, a fixed face
box so no face tracking is timed, its speech; a different noise seed per stream) are streamed

* ``local``: one ``Engine`` (ONNX Runtime, ``--threads`` intra-op threads), one ``Session`` per
  stream, each in its own thread, pushing one frame and its 640 samples at a time, the next push
  as soon as the last returned;
* ``local batched``: the same, on the model exported with a batch axis (``--max-batch``) and
  ``Engine.load(..., max_batch=8)``: the streams' calls of one graph that are ready together run
  as one call (``lipforce_sdk.batching``);
* ``triton wW``: the same engine options in a ``tritonserver`` on loopback (``deploy/triton``:
  one instance, the sequence batcher handing it the ready pushes of up to 8 streams per call,
  run concurrently), one ``RemoteSession`` per stream in its own thread over one gRPC
  connection, at most W pushes of a stream unanswered (W = 1: as the local loop, each push
  waits for the one before it; more: the client keeps pushing while the server works);
* ``triton batched wW``: the server's engine batched as ``local batched`` (``engine_options``
  ``max_batch``), the streams of one execute() running concurrently so their calls batch.

Printed: aggregate output frames per second (all streams' frames over the wall time), and p95
chunk latency over every chunk of every stream: from the push that completes a chunk to its
frames being back (local: the push call; Triton: sending the request to its last frame
arriving, network and queueing included). Every stream runs unpaced (as fast as it can): this
measures capacity, not a live source's delay. Needs the ``triton`` extra and nvidia-pytriton
(see README, "Serving many streams").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BOX = (80.0, 70.0, 240.0, 230.0)  # the face of the bundled photo clip, in its 320 x 320 frames


def clip(frames: int):
    from lipforce_sdk.cli import PHOTO_DIR
    from lipforce_sdk.media import read_audio, read_video

    video = read_video(PHOTO_DIR / "face.mp4")[0]
    audio = read_audio(PHOTO_DIR / "speech.wav")
    idx = [i % len(video) for i in range(frames)]
    need = frames * 640
    audio = np.resize(audio, need) if audio.size < need else audio[:need]
    return [video[i] for i in idx], audio.astype(np.float32)


def run_streams(open_session, n: int, frames, audio, latency_of) -> tuple[float, list[float], int]:
    """``n`` threads, each streaming the clip through its own session; (wall s, chunk ms, frames)."""
    sys.path.insert(0, str(REPO / "samples"))
    from batch_bench import run_threads

    sessions = [open_session(k) for k in range(n)]
    lat: list[list[float]] = [[] for _ in range(n)]
    out = [0] * n

    def one(k):
        s = sessions[k]
        for i, f in enumerate(frames):
            t0 = time.perf_counter()
            got = s.push(audio[i * 640:(i + 1) * 640], f)
            if got:
                lat[k].append((time.perf_counter() - t0) * 1000.0)
            out[k] += len(got)
        out[k] += len(s.flush())
        latency_of(s, lat[k])

    wall = run_threads(one, n)
    return wall, [x for xs in lat for x in xs], sum(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="exported ONNX model directory (default: the bundled model, "
                                                 "exported once into the cache; needs torch)")
    p.add_argument("--streams", default="1,2,4,8", help="numbers of concurrent streams")
    p.add_argument("--frames", type=int, default=100, help="frames per stream (25 per second of video)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (local and server alike)")
    p.add_argument("--window", default="1,4", help="pushes of a stream unanswered before the client waits (Triton)")
    p.add_argument("--max-batch", type=int, default=8, help="the batched runs' max_batch (0: no batched runs)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="the batched runs' max_wait_ms")
    a = p.parse_args(argv)
    from lipforce_sdk import Engine, default_model_dir
    from lipforce_sdk.serve import exported_graphs
    from lipforce_sdk.triton.client import RemoteEngine
    from lipforce_sdk.triton.server import REPOSITORY, TritonServer, prepare_repository

    model = Path(a.model) if a.model else exported_graphs(default_model_dir())
    batched_model = exported_graphs(default_model_dir(), max_batch=a.max_batch) if a.max_batch > 1 else None
    streams = [int(x) for x in a.streams.split(",")]
    windows = [int(x) for x in a.window.split(",")]
    frames, audio = clip(a.frames)
    options = {"threads": a.threads}
    local = Engine.load(model, backend="onnxruntime", **options)

    def local_session(k):
        return local.session(box=BOX, seed=k)

    batch_opts = {"max_batch": a.max_batch, "max_wait_ms": a.max_wait_ms}
    batched = Engine.load(batched_model, backend="onnxruntime", **batch_opts, **options) if batched_model else None

    def batched_session(k):
        return batched.session(box=BOX, seed=k)

    results: dict[tuple[str, int], tuple[float, float]] = {}
    for n in [1] + streams:  # the first round warms up
        for name, open_session in (("local", local_session), ("local batched", batched_session)):
            if name == "local batched" and batched is None:
                continue
            wall, lat, total = run_streams(open_session, n, frames, audio, lambda s, xs: None)
            results[(name, n)] = (total / wall, float(np.percentile(lat, 95)))

    import tempfile

    def chunk_latency(s, xs):  # send -> last frame back, per request that completed a chunk
        xs[:] = list(s.stats.chunk_latency_ms)

    servers = [("triton", model, options)]
    if batched_model is not None:
        servers.append(("triton batched", batched_model, {**options, **batch_opts}))
    for label, served, opts in servers:
        with tempfile.TemporaryDirectory() as tmp:
            repo = prepare_repository(REPOSITORY, Path(tmp) / "repository", model_dir=served, backend="onnxruntime",
                                      engine_options=opts)
            with TritonServer(repo) as server:
                for w in windows:
                    with RemoteEngine(server.grpc_url, max_in_flight=w) as remote:
                        def remote_session(k):
                            return remote.session(box=BOX, seed=k)

                        for n in [1] + streams:
                            wall, lat, total = run_streams(remote_session, n, frames, audio, chunk_latency)
                            results[(f"{label} w{w}", n)] = (total / wall, float(np.percentile(lat, 95)))

    cols = [c for c in ["local", "local batched"] + [f"{label} w{w}" for label, _, _ in servers for w in windows]
            if any(k[0] == c for k in results)]
    print(f"\nlipforce on {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"load {os.getloadavg()[0]:.2f}; model {local.config.name!r} ({model}); ONNX Runtime, {a.threads} "
          f"intra-op thread(s); "
          f"{a.frames} frames of {frames[0].shape[1]} x {frames[0].shape[0]} per stream, unpaced; batched: "
          f"max_batch {a.max_batch}, max_wait_ms {a.max_wait_ms:g}\n")
    head = "| streams | " + " | ".join(f"{c} frames/s | {c} p95 chunk ms" for c in cols) + " |"
    print(head)
    print("|" + "---|" * (1 + 2 * len(cols)))
    for n in streams:
        cells = [f"{results[(c, n)][0]:.1f} | {results[(c, n)][1]:.1f}" for c in cols]
        print(f"| {n} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
