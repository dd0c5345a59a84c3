"""A prepared avatar against the frame-pushing session: frames per second, side by side, one run.

    python samples/avatar_kiosk.py                                   # bundled model, bundled photo clip
    python samples/avatar_kiosk.py --model avatars/NAME --backend onnxruntime,torch

A kiosk that shows one face can push its idle loop frame by frame (``engine.session()``: per
frame the face mesh tracks the face, the crop is cut, and every chunk's masked crops are VAE-encoded)
or stream the prepared avatar (``engine.session(avatar=...)``: audio only; crops, masks and latents
were computed once). Both run here on the same loop and the same speech, through the same engine,
timed on the wall clock over every push (tracking included, not only the chunk compute), after a
warm-up on a throw-away session. A third row pushes the loop's frames with the avatar's own crops
and masks (no tracking): the avatar's output must equal it bit for bit, and the table says so.

``--model`` is a PyTorch model directory: an enrolled one (its ``avatar/`` is used) or any other (an
avatar is made from ``--video``'s first ``--loop-seconds`` with the face mesh). For ONNX Runtime the
model is exported to a temporary folder first (``--onnx DIR`` to use an exported one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def timed_stream(make_session, audio, spf, frames=None, repeats=1):
    """Best of ``repeats`` runs: (seconds, outputs) of pushing ``audio`` (and one frame per
    ``spf`` samples) through a new session, flush included."""
    best, outs = None, None
    for _ in range(repeats):
        s = make_session()
        n = -(-audio.size // spf)
        got = []
        t0 = time.perf_counter()
        for i in range(n):
            a = audio[i * spf:(i + 1) * spf]
            got += s.push(a) if frames is None else s.push(a, frames[i])
        if frames is not None:
            for f in frames[n:]:
                got += s.push(frame=f)
        got += s.flush()
        dt = time.perf_counter() - t0
        if best is None or dt < best:
            best, outs = dt, got
    return best, outs


def main(argv=None) -> int:
    from lipforce_sdk import Engine
    from lipforce_sdk.avatar import AVATAR_DIR, Avatar, frame_pushing_session
    from lipforce_sdk.cli import PHOTO_DIR
    from lipforce_sdk.media import read_audio, read_video
    from lipforce_sdk.session import default_model_dir
    from lipforce_sdk.tracking import MeshFaceSource

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="PyTorch model directory (default: bundled; an enrolled one "
                                                  "brings its avatar)")
    ap.add_argument("--onnx", default=None, help="its exported directory (default: export to a temporary folder)")
    ap.add_argument("--backend", default="onnxruntime", help="comma-separated: onnxruntime, torch")
    ap.add_argument("--video", default=str(PHOTO_DIR / "face.mp4"), help="the loop, where the model has no avatar")
    ap.add_argument("--loop-seconds", type=float, default=6.0)
    ap.add_argument("--audio", default=str(PHOTO_DIR / "speech.wav"))
    ap.add_argument("--seconds", type=float, default=None, help="stream this long (default: the audio's length)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime / torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs per row")
    a = ap.parse_args(argv)

    model_dir = Path(a.model) if a.model else default_model_dir()
    audio = read_audio(a.audio)
    if a.seconds:
        audio = np.resize(audio, int(a.seconds * 16000)).astype(np.float32)
    avatar = None
    if (model_dir / AVATAR_DIR / "avatar.json").is_file():
        avatar = Avatar.load(model_dir)
        src = f"{model_dir / AVATAR_DIR} ({avatar.num_frames} frames)"
    rows = []
    for backend in a.backend.split(","):
        if backend == "onnxruntime":
            onnx = a.onnx
            if onnx is None:
                from lipforce_sdk.export import export_model
                from lipforce_sdk.model import load_model

                onnx = tempfile.mkdtemp(prefix="lipforce_onnx_")
                export_model(load_model(model_dir), onnx, progress=False)
                from lipforce_sdk.exemplars import carry_exemplars

                carry_exemplars(model_dir, onnx)  # an enrolled model's mouth exemplars, as `lipforce export` does
            engine = Engine.load(onnx, backend="onnxruntime", threads=a.threads)
        else:
            if a.threads:
                import torch

                torch.set_num_threads(a.threads)
            engine = Engine.load(model_dir, backend=backend)
        cfg = engine.config
        spf, fv = cfg.samples_per_video_frame, cfg.video_frames_per_chunk
        if avatar is None:
            frames, _ = read_video(a.video)
            frames = frames[: max(1, int(a.loop_seconds * cfg.stream.fps))]
            mesh = MeshFaceSource()
            avatar = Avatar.from_frames(frames, [mesh.update(f) for f in frames], cfg.stream.resolution)
            src = f"{a.video} (first {len(frames)} frames, face mesh)"
        t_prep = time.perf_counter()
        avatar.latents_for(engine)  # encoded once per engine (or found in the avatar's folder)
        t_prep = time.perf_counter() - t_prep
        n = -(-audio.size // spf)
        loop = avatar.stream_frames(-(-n // fv) * fv)
        # warm-up
        timed_stream(lambda: engine.session(avatar=avatar), audio[: 4 * fv * spf], spf)
        timed_stream(lambda: engine.session(), audio[: 4 * fv * spf], spf, loop[: 4 * fv])
        t_av, out_av = timed_stream(lambda: engine.session(avatar=avatar), audio, spf, repeats=a.repeats)
        t_fp, out_fp = timed_stream(lambda: engine.session(), audio, spf, loop, repeats=a.repeats)
        t_fx, out_fx = timed_stream(lambda: frame_pushing_session(engine, avatar), audio, spf, loop, repeats=a.repeats)
        same = all(np.array_equal(o.image, out_fx[o.index].image) for o in out_av)
        diff = max(float(np.abs(o.image.astype(np.int16) - out_fp[o.index].image).max()) for o in out_av)
        rows.append((backend, n, t_fp, t_fx, t_av, same, diff, t_prep))

    print(f"\navatar: {src}; speech {audio.size / 16000:.1f} s ({rows[0][1]} frames); best of {a.repeats}\n")
    print("| backend | frame-pushing session (face mesh + VAE encode) | frame-pushing, avatar's crops (VAE encode) "
          "| prepared avatar, audio only | speed-up vs frame-pushing | outputs equal (avatar vs frame-pushing, "
          "same crops) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for backend, n, t_fp, t_fx, t_av, same, diff, _ in rows:
        print(f"| {backend} | {n / t_fp:.1f} FPS ({1000 * t_fp / n:.1f} ms/frame) | {n / t_fx:.1f} FPS | "
              f"{n / t_av:.1f} FPS ({1000 * t_av / n:.1f} ms/frame) | {t_fp / t_av:.2f}x | "
              f"{'yes, bit for bit' if same else 'NO'} ({n} frames) |")
    print("\n(one-time preparation per engine: " + ", ".join(f"{r[0]} {r[7]:.2f} s" for r in rows)
          + "; vs the tracked frame-pushing session the re-rendered pixels differ by up to "
          + ", ".join(f"{r[6]:.0f}" for r in rows) + " levels: its crops follow the per-frame tracking)")
    return 0 if all(r[5] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
