"""Long and large clips through `lipforce run`: peak memory and throughput.

    python samples/long_media.py                                  # 10 min at 1080p and 2 min at 4K
    python samples/long_media.py --clips 1920x1080x60 --work runs/long_media

Each clip is generated here (not committed): the bundled photo clip's face, looped back and forth,
scaled to a quarter of the frame's width on a textured background, at 25 fps, encoded as it is
made (nothing is held); the bundled speech looped to the same length drives it. `lipforce run`
(bundled model, torch) then runs in a child process, and the table gives that process's peak RSS
(``getrusage`` in the child), what reading the whole video first would have taken (frames x H x W x 3), the
wall time and frames per second.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_clip(path: Path, width: int, height: int, seconds: float, fps: int = 25) -> int:
    import cv2

    from lipforce_sdk.cli import PHOTO_DIR
    from lipforce_sdk.media import read_video, write_video

    face, _ = read_video(PHOTO_DIR / "face.mp4")
    side = max(64, width // 4)
    faces = [cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC) for f in face]
    rng = np.random.default_rng(0)
    bg = cv2.resize(rng.integers(60, 200, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8),
                    (width, height), interpolation=cv2.INTER_LINEAR)
    y0, x0 = (height - side) // 2, (width - side) // 2
    n = int(round(seconds * fps))
    period = 2 * (len(faces) - 1)

    def frames():
        for i in range(n):
            k = i % period
            f = bg.copy()
            f[y0:y0 + side, x0:x0 + side] = faces[k if k < len(faces) else period - k]
            yield f

    write_video(path, frames(), fps, preset="ultrafast")  # the input only: made fast, read like any H.264
    return n


def make_speech(path: Path, seconds: float) -> None:
    from lipforce_sdk.cli import SAMPLE_DIR
    from lipforce_sdk.media import read_audio, write_wav

    s = read_audio(SAMPLE_DIR / "speech.wav", 16000)
    n = int(seconds * 16000)
    write_wav(path, np.resize(s, n))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", nargs="+", default=["1920x1080x600", "3840x2160x120"],
                    help="WIDTHxHEIGHTxSECONDS per clip")
    ap.add_argument("--work", default="runs/long_media")
    ap.add_argument("--frame-memory", type=int, default=None, help="passed to lipforce run (MB)")
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in a.clips:
        w, h, sec = (int(x) for x in spec.split("x"))
        clip, wav, out = work / f"clip_{spec}.mp4", work / f"speech_{sec}s.wav", work / f"out_{spec}.mp4"
        t0 = time.perf_counter()
        if not clip.exists():
            n = make_clip(clip, w, h, sec)
        else:
            n = int(round(sec * 25))
        make_speech(wav, sec)
        t_make = time.perf_counter() - t0
        args = ["run", "--video", str(clip), "--audio", str(wav), "--out", str(out), "--no-progress"]
        if a.frame_memory:
            args += ["--frame-memory", str(a.frame_memory)]
        child = ("import resource, sys\nfrom lipforce_sdk.cli import main\nrc = main(sys.argv[1:])\n"
                 "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
                 "sys.exit(rc)")
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", child, *args], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        peak = int(next(l.split()[1] for l in r.stderr.splitlines() if l.startswith("MAXRSS_KB")))
        rows.append((spec, n, peak / 1024, n * w * h * 3 / 2**20, wall, n / wall, t_make))
        print(f"{spec}: done in {wall:.0f} s, peak RSS {peak / 1024:.0f} MB", file=sys.stderr, flush=True)
    print("| clip (W x H x s) | frames | peak RSS (MB) | whole video decoded (MB) | wall (s) | FPS | clip made in (s) |")
    print("|---|---|---|---|---|---|---|")
    for spec, n, rss, whole, wall, fps, mk in rows:
        print(f"| {spec} | {n} | {rss:.0f} | {whole:.0f} | {wall:.0f} | {fps:.1f} | {mk:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
