"""Kiosk sample: a live loop paced at real time, as an avatar kiosk runs it.

    python samples/kiosk.py                                  # bundled clip, bundled model, torch
    python samples/kiosk.py --model DIR --backend onnxruntime --out kiosk.mp4
    python samples/kiosk.py --exemplars on,off               # with and without mouth exemplars, one run
    python samples/kiosk.py --guidance 1,2                   # without and with audio guidance, one run
    python samples/kiosk.py --steps 2,1                      # both denoising steps, then step 2 alone

Every 40 ms one camera frame and 40 ms of microphone audio arrive (here read from files and
released on the wall clock); the session returns lip-synced frames as soon as their chunk can run.
Per output frame it measures the input-to-output latency: from the moment that frame was captured
to the moment its lip-synced version is ready (chunk fill + audio look-ahead + compute). That, not
compute alone, is what a person in front of the kiosk experiences. Frames that come out later than
the real-time deadline would be dropped by a display; they are counted.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    from lipforce_sdk import Engine
    from lipforce_sdk.cli import SAMPLE_DIR, _video_schedule
    from lipforce_sdk.config import SCHEDULE_STEPS
    from lipforce_sdk.media import read_audio, read_video

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=str(SAMPLE_DIR / "face.mp4"))
    ap.add_argument("--audio", default=str(SAMPLE_DIR / "speech.wav"))
    ap.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                    help="fixed face-crop box (default: the face mesh tracks the face)")
    ap.add_argument("--model", default=None, help="model directory (default: bundled)")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    ap.add_argument("--seconds", type=float, default=None, help="run this long (default: the audio's length)")
    ap.add_argument("--budget-ms", type=float, default=250.0, help="input-to-output latency a conversation tolerates")
    ap.add_argument("--out", default=None, help="also write what the kiosk shows to this MP4 (the first setting's)")
    ap.add_argument("--exemplars", default="on", help="on, off, or both in turn (on,off): paste through mouth "
                    "exemplars (an enrolled model's, else the stream's first 2 s; lipforce_sdk.exemplars)")
    ap.add_argument("--guidance", default=None, metavar="G[,G...]",
                    help="audio guidance of the model's second step, one stream per value in turn (1: off; each "
                         "other value costs one more DiT pass per chunk; default: the model's own)")
    ap.add_argument("--steps", default=None, metavar="S[,S...]",
                    help="denoising steps per chunk, one stream per value in turn: 2 both, 1 the second alone from "
                         "the filled condition (one DiT pass fewer; default: the model's own)")
    a = ap.parse_args(argv)
    settings = [x.strip() for x in a.exemplars.split(",")]
    if not settings or any(x not in ("on", "off") for x in settings):
        ap.error(f"--exemplars {a.exemplars!r}: expected on, off or on,off")
    try:
        guidance = [None] if a.guidance is None else [float(x) for x in a.guidance.split(",")]
    except ValueError:
        ap.error(f"--guidance {a.guidance!r}: expected numbers, e.g. 1,2")
    steps = [None] if a.steps is None else [x.strip() for x in a.steps.split(",")]
    if any(x is not None and x not in {str(k) for k in SCHEDULE_STEPS} for x in steps):
        ap.error(f"--steps {a.steps!r}: expected 1, 2 or both in turn (2,1)")

    engines = [Engine.load(a.model, backend=a.backend, guidance=g, steps=None if k is None else int(k))
               for g in guidance for k in steps]
    engine = engines[0]
    cfg = engine.config
    fps, sr, spf = cfg.stream.fps, cfg.audio.sample_rate, cfg.samples_per_video_frame
    audio = read_audio(a.audio, sample_rate=sr)
    frames, src_fps = read_video(a.video)
    n = int(round((a.seconds or audio.size / sr) * fps))
    audio = np.resize(audio, n * spf).astype(np.float32)
    order = _video_schedule(len(frames), src_fps, fps, n)
    box = a.box
    runs = [(e, setting) for e in engines for setting in settings]
    for k, (e, setting) in enumerate(runs):
        _paced(e, a, frames, order, audio, n, box, setting == "on", a.out if k == 0 else None)
    return 0


def _paced(engine, a, frames, order, audio, n, box, exemplars: bool, out) -> None:
    """One kiosk stream paced at real time; prints its latency figures."""
    from lipforce_sdk.media import VideoWriter

    cfg = engine.config
    fps, sr, spf = cfg.stream.fps, cfg.audio.sample_rate, cfg.samples_per_video_frame
    session = engine.session(box=box, exemplars=exemplars)
    # warm up (first-call allocations, kernel selection) on a throw-away session
    warm = engine.session(box=box, exemplars=exemplars)
    for i in range(2 * cfg.video_frames_per_chunk):
        warm.push(audio[i * spf:(i + 1) * spf], frames[order[i]])
    del warm

    writer = VideoWriter(out, fps=fps, with_audio=True, sample_rate=sr) if out else None
    if writer:
        writer.write_audio(audio)
    captured = np.zeros(n)
    latency = []
    t0 = time.perf_counter()
    for i in range(n):
        due = t0 + (i + 1) / fps  # frame i (and its 40 ms of audio) is complete at the end of its slot
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        captured[i] = time.perf_counter()
        for o in session.push(audio[i * spf:(i + 1) * spf], frames[order[i]]):
            latency.append((time.perf_counter() - captured[o.index]) * 1000.0)
            if writer:
                writer.write(o.image)
    tail = session.flush()
    for o in tail:
        latency.append((time.perf_counter() - captured[o.index]) * 1000.0)
        if writer:
            writer.write(o.image)
    if writer:
        writer.close()
    lat = np.array(latency)
    st = session.stats
    print(f"# kiosk: {engine!r}, {n} frames at {fps:g} fps paced in real time, mouth exemplars "
          f"{'on' if exemplars else 'off'}, audio guidance {cfg.schedule.guidance:g}, "
          f"denoising steps {cfg.schedule.steps}")
    print(f"  input-to-output latency  p50 {np.percentile(lat, 50):.0f} ms   p95 {np.percentile(lat, 95):.0f} ms   "
          f"max {lat.max():.0f} ms   (budget {a.budget_ms:.0f} ms)")
    print(f"  algorithmic latency      {cfg.algorithmic_latency_ms():.0f} ms from the start of a chunk's first frame "
          f"({cfg.video_frames_per_chunk} frames + {cfg.audio.lookahead_frames} look-ahead); from its capture, "
          f"frame j of a chunk waits {cfg.algorithmic_latency_ms() - 1000 / fps:.0f} - 40 j ms")
    print(f"  frames over budget       {int((lat > a.budget_ms).sum())} / {lat.size}")
    print(f"  compute per chunk        p50 {st.p50_ms:.1f} ms   p99 {st.p99_ms:.1f} ms   "
          f"(chunk = {cfg.video_frames_per_chunk * 1000 / fps:.0f} ms of video)")
    print(f"  compute FPS              {st.fps:.1f}   ({'keeps up with' if st.fps >= fps else 'FALLS BEHIND'} real time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
