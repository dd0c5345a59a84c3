"""What a session costs outside the model: the host's work per chunk at a preset's crop.

    python samples/host_cost.py                        # 1.3b's 512 px crop, 10 s clip, 1 thread vs the default
    python samples/host_cost.py --preset tiny --threads 1,2,4 --seconds 6

The model is replaced by a null backend (each graph call returns zeros of its output's shape at
once), so what is timed is everything a ``Session`` does around it: crops and mouth masks, the
frames handed to the model, noise, the mel, the mouth exemplars and the paste. The clip is the
bundled speech with random frames at the crop's size and a fixed box (the clip of
``samples/latency.py`` and of ``samples/gpu_check.py``'s stream and profile parts): the face fills
the frame, so the stream's exemplars work at the crop's size. The paste's thread count is set per
row (``LIPFORCE_COMPOSITE_THREADS``); rows alternate within each repeat, and the frames of every
row must be the same (checked). ms per chunk: the stream's wall time over its chunks (all of the
host's work), and a chunk's own compute (``SessionStats.chunk_latency_ms``: the model's calls and
the paste, not the per-frame crops made as frames are pushed) over the chunks after the exemplars'
first 2 s, when the pastes may run on threads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def null_backend(cfg):
    from lipforce_sdk.backends.base import Backend

    class NullBackend(Backend):
        """Inputs of the graphs' shapes in, zeros of their outputs' shapes out, no compute."""

        name = "null"

        def __init__(self):
            self.config = cfg
            h, w = cfg.latent_hw
            s = cfg.stream.resolution
            self._lat = np.zeros((1, cfg.latent_channels, cfg.stream.chunk_frames, h, w), np.float32)
            self._img = np.zeros((1, 3, cfg.video_frames_per_chunk, s, s), np.float32)

        def new_state(self):
            return None

        def reset_state(self, state):
            pass

        def encode_audio(self, mel):
            return mel

        def encode_video(self, frames, state):
            return self._lat.copy()

        def dit_step(self, x_t, t, cond, mask, audio_tokens, plan, state):
            return x_t

        def decode(self, latents, state):
            return self._img

        def asarray(self, x):
            return x

    return NullBackend()


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import latency  # samples/latency.py: the clip and one stream of it, as the GPU check times them

    from lipforce_sdk import Engine
    from lipforce_sdk.cli import SAMPLE_DIR
    from lipforce_sdk.config import from_name
    from lipforce_sdk.exemplars import STREAM_SECONDS
    from lipforce_sdk.media import read_audio
    from lipforce_sdk.session import COMPOSITE_THREADS_ENV, composite_threads

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="1.3b", help="the preset whose crop and chunk are used (default 1.3b: 512 px)")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length (the exemplars gather over the first 2 s)")
    ap.add_argument("--threads", default=None, help="paste thread counts to compare, e.g. 1,2,4 (default: 1 and "
                                                    "this machine's default)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)

    cfg = from_name(a.preset)
    saved = os.environ.pop(COMPOSITE_THREADS_ENV, None)
    default = composite_threads()
    threads = sorted({1, default}) if a.threads is None else [int(t) for t in a.threads.split(",")]
    res, fps = cfg.stream.resolution, cfg.stream.fps
    speech = read_audio(str(SAMPLE_DIR / "speech.wav"), cfg.audio.sample_rate)
    n = int(round(a.seconds * fps))
    if n <= int(round(STREAM_SECONDS * fps)) + cfg.video_frames_per_chunk:
        print(f"error: --seconds {a.seconds:g} leaves no chunk after the exemplars' first {STREAM_SECONDS:g} s",
              file=sys.stderr)
        return 2
    frames, audio = latency.make_clip(speech, a.seconds, res, cfg.audio.sample_rate, fps)
    engine = Engine(null_backend(cfg))
    steady_from = int(np.ceil(STREAM_SECONDS * fps / cfg.video_frames_per_chunk))  # first chunk after gathering

    times = {t: [] for t in threads}
    steady = {t: [] for t in threads}
    images = {}
    try:
        for _ in range(a.repeats):
            for t in threads:
                os.environ[COMPOSITE_THREADS_ENV] = str(t)
                imgs = []
                stats, wall = latency.stream_once(engine, frames, audio, keep=imgs)
                times[t].append(wall * 1e3 / stats.chunks)
                lat = list(stats.chunk_latency_ms)
                steady[t].append(float(np.mean(lat[steady_from:])))
                images[t] = imgs
    finally:
        os.environ.pop(COMPOSITE_THREADS_ENV, None)
        if saved is not None:
            os.environ[COMPOSITE_THREADS_ENV] = saved
    print(f"# host work per chunk, model stubbed out: preset {a.preset}, {res} px crop, chunk "
          f"{cfg.video_frames_per_chunk} frames, clip {a.seconds:g} s ({n} frames), {os.cpu_count()} CPUs, "
          f"{a.repeats} repeats; this machine's default paste threads: {default}")
    print("| paste threads | ms per chunk, whole clip (wall / chunks): best | median | a chunk's compute after the "
          "first 2 s: best | median |")
    print("| --- | --- | --- | --- | --- |")
    for t in threads:
        print(f"| {t} | {min(times[t]):.1f} | {float(np.median(times[t])):.1f} | {min(steady[t]):.1f} | "
              f"{float(np.median(steady[t])):.1f} |")
    ref = images[threads[0]]
    same = all(len(images[t]) == len(ref) and all(np.array_equal(x, y) for x, y in zip(images[t], ref))
               for t in threads)
    print(f"frames the same with every thread count: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
