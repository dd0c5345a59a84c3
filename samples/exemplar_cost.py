"""What pasting through the stream's exemplars costs per frame, at the face's own size and at the model's.

    python samples/exemplar_cost.py                                  # bundled photo clip
    python samples/exemplar_cost.py --video kiosk_avatar.mp4 --repeats 5

Only the paste is timed (``ChunkRenderer.composite``; no model): the face mesh finds the face in
the first frames, the stream's exemplars take the first 2 s, then every later frame's own crop,
softened as the model's is, is pasted back: plainly (no exemplars; first without matching the seam
to the frame, ``geometry.match_edge``, then with it, as every later row), through exemplars kept at the
model's crop size (``max_size`` = the crop), and at the face's own size in the frame (the default,
up to ``STREAM_MAX_SIZE``; with ``STREAM_LARGE``'s settings where that is larger than the crop, and
again with the crop's settings, ``large=None``); the default again with the whole picture refined (the exemplars not told
the paste's weights, so not stopped at what the paste reads: the frames must come out the same).
Prints milliseconds per frame (best and median of the repeats, the settings alternated in each)
and each setting's lower-face detail against the input's. ``--preset 1.3b`` takes that preset's
crop (512 px) instead of a model directory's.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    import cv2

    from lipforce_sdk.cli import PHOTO_DIR
    from lipforce_sdk.exemplars import STREAM_MAX_SIZE, StreamExemplars
    from lipforce_sdk.manifest import read_manifest
    from lipforce_sdk.media import read_video
    from lipforce_sdk.session import ChunkRenderer, FramePreparer, default_model_dir
    from lipforce_sdk.tracking import MeshFaceSource

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--video", default=str(PHOTO_DIR / "face.mp4"))
    ap.add_argument("--model", default=None, help="model directory whose config sets the crop (default: bundled)")
    ap.add_argument("--preset", default=None, help="take the crop of this preset (e.g. 1.3b: 512 px) instead")
    ap.add_argument("--frames", type=int, default=100, help="frames pasted after the exemplars' 2 s")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)

    if a.preset:
        from lipforce_sdk.config import from_name

        cfg = from_name(a.preset)
    else:
        cfg = read_manifest(a.model or default_model_dir())[1]
    s = cfg.stream.resolution
    bank = StreamExemplars.for_fps(cfg.stream.fps).frames  # the stream's first STREAM_SECONDS
    frames = read_video(a.video)[0][:bank + a.frames]
    if len(frames) <= bank:
        print(f"error: {a.video} has {len(frames)} frames; needs more than {bank} (2 s) to time anything",
              file=sys.stderr)
        return 2
    src, prep = MeshFaceSource(), FramePreparer(cfg)
    views = []
    for f in frames:
        kp = src.update(f)
        if kp is None:
            print(f"error: no face in frame {len(views)} of {a.video}", file=sys.stderr)
            return 2
        views.append(prep(f, kp))
    soft = [cv2.GaussianBlur(v.image, (0, 0), 1.0) for v in views]  # a model's crop: softer than the frame's
    side = views[0].crop.side
    face, whole = f"exemplars at the face's size (<= {STREAM_MAX_SIZE} px)", "the same, the whole picture refined"
    raw = "plain paste, the seam as drawn (LIPFORCE_EDGE_MATCH=0)"
    base = "the same with the crop's settings (large=None)"
    settings = {raw: None, "plain paste (no exemplars)": None, f"exemplars at the crop ({s} px)": s,
                face: STREAM_MAX_SIZE, base: STREAM_MAX_SIZE, whole: STREAM_MAX_SIZE}
    outs: dict[str, list] = {}
    times: dict[str, list[float]] = {k: [] for k in settings}
    detail: dict[str, float] = {}
    sizes: dict[str, int] = {}

    def lap(img, view):
        g = cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)
        w = view.crop.frame_weight(view.mask.soft, img.shape[:2]) > 0.5
        return float(g[w].var())

    for _ in range(a.repeats):
        for name, max_size in settings.items():
            kw = {"large": None} if name == base else {}
            ex = None if max_size is None else StreamExemplars.for_fps(cfg.stream.fps, max_size=max_size, **kw)
            r = ChunkRenderer(None, cfg, 0, exemplars=WholePicture(ex) if name == whole else ex)
            r.edge_match = name != raw  # every other row matches the seam first (geometry.match_edge)
            for f, v, g in zip(frames[:bank], views[:bank], soft[:bank]):
                r.composite(f, v, g)
            t0 = time.perf_counter()
            out = [r.composite(f, v, g) for f, v, g in zip(frames[bank:], views[bank:], soft[bank:])]
            times[name].append((time.perf_counter() - t0) * 1000.0 / len(out))
            sizes[name] = s if ex is None else ex.size_for(views[0].crop)
            detail[name] = float(np.median([lap(o, v) / max(lap(f, v), 1e-6)
                                            for o, f, v in zip(out, frames[bank:], views[bank:])]))
            outs[name] = out
    print(f"# {a.video}: face {side:.0f} px across in the frame, model crop {s} px, "
          f"{len(frames) - bank} frames pasted after {bank}, {a.repeats} repeats")
    print("| paste | size (px) | ms / frame best | median | detail in the mask / input's |")
    print("| --- | --- | --- | --- | --- |")
    for name in settings:
        t = times[name]
        print(f"| {name} | {sizes[name]} | {min(t):.2f} | {float(np.median(t)):.2f} | {detail[name]:.2f} |")
    same = all(np.array_equal(x, y) for x, y in zip(outs[face], outs[whole]))
    print(f"frames pasted through the exemplars the same with and without the paste's footprint: {'yes' if same else 'NO'}")
    return 0 if same else 1


class WholePicture:
    """Stream exemplars that are not told the paste's weights: they refine the whole picture."""

    def __init__(self, ex):
        self.ex = ex

    def detail(self, gen, crop, weight=None):
        return self.ex.detail(gen, crop)

    def add(self, frame, crop):
        return self.ex.add(frame, crop)

    def reset(self):
        self.ex.reset()


if __name__ == "__main__":
    sys.exit(main())
