"""Train the sync scorer on talking faces, evaluate it on held-out clips, save it.

    python -m distill.make_scorer                  # data + training + evaluation, writes the weights
    python -m distill.make_scorer --eval-only      # evaluate distill/weights/syncnet.safetensors

Run from the repository root. Needs espeak-ng (``apt-get install espeak-ng``). Training
clips are ``make_clip(i, "train")`` for ``i < --train-clips`` (rendered at 256 and cut into
eye-aligned mouth crops from their exact keypoints, as the runtime cuts them) and, with
``--real DIR``, real talking-head clips (``distill.realdata``); evaluation clips are
``make_clip(i, "held_out")`` (held-out sentences, voices drawn afresh, unseen identities and
motions). The evaluation prints, per condition, how often the scorer finds the true offset:

- in sync: the clip as rendered (true offset 0);
- audio shifted by ``s`` frames (``Speech.shifted(s)``; the video then lags the audio by
  ``s``, true offset ``s``);
- other audio: a different held-out clip's audio (no true offset; Sync-C should be low);
- the same on 1 s and 0.4 s pieces (25 and 10 frames) of the clips scored alone, the harder case.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

from .data import make_clip
from .syncnet import DEFAULT_WEIGHTS, MAX_OFFSET, SyncScorer, TrainConfig, audio_features, mouth_crops, train

SHIFTS = (0, 1, 2, 5, -5, 10)
RENDER = 256  # procedural frames are rendered at this size, then cut into aligned crops


def _features(job: tuple[int, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops float16, mels float16, audio float32) of one clip."""
    import cv2

    from lipforce_sdk.config import from_name

    from .crops import prepare
    from .faces import clip_keypoints

    cv2.setNumThreads(1)
    index, split = job
    c = make_clip(index, split, size=RENDER)
    _, crops, _ = prepare(from_name("tiny"), c.frames, clip_keypoints(c.identity, c.motion, c.params, RENDER))
    return (mouth_crops(crops).astype(np.float16), audio_features(c.audio, c.frames.shape[0]).astype(np.float16),
            c.audio)


def build_real(folder: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(crops, mels, audio) of the real clips in ``folder``, cut where the face is lost."""
    from lipforce_sdk.config import from_name

    from .crops import real_clips
    from .realdata import find_clips, load_clip

    out = []
    for v, a in find_clips(folder):
        for c in real_clips(from_name("tiny"), load_clip(v, a)):
            out.append((mouth_crops(c.target).astype(np.float16),
                        audio_features(c.audio, c.num_frames).astype(np.float16), c.audio))
    return out


def build(n: int, split: str, workers: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    jobs = [(i, split) for i in range(n)]
    if workers <= 1:
        return [_features(j) for j in jobs]
    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(_features, jobs, chunksize=4)


def _shift(audio: np.ndarray, s: int) -> np.ndarray:
    """As ``Speech.shifted(s)``: the audio ``s`` frames earlier (> 0) or later, same length."""
    k = int(round(s * 640))
    out = np.zeros_like(audio)
    if k >= 0:
        out[: audio.size - k] = audio[k:]
    else:
        out[-k:] = audio[: audio.size + k]
    return out


def evaluate(scorer: SyncScorer, clips, shifts=SHIFTS, windows=(25, 10)) -> list[dict]:
    """One row per condition: clips (or windows), exact offset rate, within +-1 rate, mean
    Sync-C / Sync-D. Whole clips, then pieces of ``windows`` frames (1 s, 0.4 s) scored alone
    (their audio context up to +-15 frames comes from the clip)."""
    rows = []
    emb = [scorer.embed_features(c.astype(np.float32), m.astype(np.float32)) for c, m, _ in clips]

    def row(name, true, res):
        off = np.array([r.offset for r in res])
        rows.append({
            "condition": name, "true": true, "clips": len(res),
            "exact": float(np.mean(off == true)) if true is not None else float("nan"),
            "within1": float(np.mean(np.abs(off - true) <= 1)) if true is not None else float("nan"),
            "sync_c": float(np.mean([r.sync_c for r in res])), "sync_d": float(np.mean([r.sync_d for r in res])),
        })

    shifted = {}
    for s in shifts:
        res = []
        for (crops, _, audio), (v, a0) in zip(clips, emb):
            a = a0 if s == 0 else scorer.embed_features(crops, audio_features(_shift(audio, s), crops.shape[0]))[1]
            shifted[s] = shifted.get(s, []) + [a]
            res.append(scorer.score_embeddings(v, a))
        row("in sync" if s == 0 else f"audio {s:+d} frames", s, res)
    res = []
    for j, ((crops, _, _), (v, _)) in enumerate(zip(clips, emb)):
        other = clips[(j + 1) % len(clips)][2]
        f = crops.shape[0]
        audio = np.zeros(f * 640, np.float32)
        audio[: min(other.size, audio.size)] = other[: audio.size]
        _, a = scorer.embed_features(crops, audio_features(audio, f))
        res.append(scorer.score_embeddings(v, a))
    row("other clip's audio", None, res)
    for window in windows:
        for s in (0, 5):
            res = []
            for (v, _), a in zip(emb, shifted[s]):
                f = v.shape[0]
                for start in range(MAX_OFFSET, f - MAX_OFFSET - window + 1, window):
                    res.append(scorer.score_embeddings(v, a, anchors=np.arange(start, start + window)))
            row(("in sync" if s == 0 else f"audio {s:+d} frames") + f", {window}-frame windows", s, res)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| condition | true offset | clips (windows) | offset found exactly | within +-1 | Sync-C (mean) | Sync-D (mean) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        t = "-" if r["true"] is None else f"{r['true']:+d}"
        ex = "-" if r["true"] is None else f"{100 * r['exact']:.0f}%"
        w1 = "-" if r["true"] is None else f"{100 * r['within1']:.0f}%"
        out.append(f"| {r['condition']} | {t} | {r['clips']} | {ex} | {w1} | {r['sync_c']:.3f} | {r['sync_d']:.3f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.make_scorer", description=__doc__.split("\n")[0])
    ap.add_argument("--train-clips", type=int, default=240)
    ap.add_argument("--eval-clips", type=int, default=40)
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=str(DEFAULT_WEIGHTS), help="weights file to write (default: %(default)s)")
    ap.add_argument("--eval-only", action="store_true", help="evaluate --out instead of training")
    ap.add_argument("--real", default=None, help="a folder of real talking-head clips to train on as well")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    print(f"held-out clips: {args.eval_clips} ...", flush=True)
    held = build(args.eval_clips, "held_out", args.workers)
    if args.eval_only:
        scorer = SyncScorer.load(args.out)
    else:
        print(f"training clips: {args.train_clips} ...", flush=True)
        tr = build(args.train_clips, "train", args.workers)
        if args.real:
            real = build_real(args.real)
            print(f"real clips: {len(real)} from {args.real}", flush=True)
            tr += real
        frames = sum(c.shape[0] for c, _, _ in tr)
        print(f"data: {frames} training frames in {time.time() - t0:.0f} s", flush=True)
        t1 = time.time()
        cfg = TrainConfig(steps=args.steps, seed=args.seed)
        net = train([(c, m) for c, m, _ in tr], cfg)
        train_s = time.time() - t1
        scorer = SyncScorer(net)
    rows = evaluate(scorer, held)
    print(table(rows))
    if not args.eval_only:
        cmd = "python -m distill.make_scorer " + " ".join(sys.argv[1:] if argv is None else argv)
        scorer.save(args.out, {
            "command": cmd.strip(),
            "train": json.dumps({"clips": args.train_clips, "frames": frames, "steps": args.steps, "seed": args.seed,
                                 "seconds": round(train_s)}),
            "held_out": json.dumps(rows),
        })
        print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB); training took {train_s:.0f} s, "
              f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
