"""Does enrollment pay? Enroll an avatar and score it against the base model, as issue 12 asks.

    # a talking clip: enrolled from its first 80 %, scored on the last 20 % with its own sound
    python samples/enroll_check.py talking CLIP.mp4 --work runs/enroll_talking
    # an idle loop or a photo: enrolled, then driven by new speech
    python samples/enroll_check.py idle LOOP.mp4 --speech SPEECH.wav --work runs/enroll_idle
    python samples/enroll_check.py photo FACE.png --speech SPEECH.wav --work runs/enroll_photo

Every score is ``lipforce_sdk.face_quality`` on full frames (the face mesh on input and output):

- talking: both models run the frame-pushing path (``lipforce run``: face mesh, crop, paste) on the
  held-out last 20 % of the clip with its own sound. Lip box PSNR / SSIM against the real frames,
  lower-face sharpness (Laplacian variance, nose tip to chin) over the real frames', landmark lip
  opening vs the speech envelope (r, and its shifted-speech null). With ``--speech`` also the kiosk's
  case, as for an idle loop below: the enrolled avatar's loop streamed from that new speech alone
  (a second table; ``--sheet`` then also writes ``*_new_speech.png`` at the speech's loudest frames).
- idle / photo: the enrolled model streams its prepared avatar from the new speech alone
  (``engine.session(avatar=...)``); the base model streams the same loop (prepared for it). The
  input is the loop as the avatar shows it (ping-pong). Sharpness over the input's, skin from the
  nose tip to the upper lip (PSNR against the input), lip opening vs speech (r, null).

Under each table, every model's lip r minus the base's with its spread: a paired moving-block
bootstrap of the frames (1 s blocks, ``--bootstrap`` resamples; ``sync_check.bootstrap_correlations``),
so that a difference of a few hundredths on 12 s of speech can be told from noise.

It writes ``WORK/report.md`` (the tables and the commands), ``WORK/report.json``, the videos and a
contact sheet per model (``WORK/sheet_*.png``; ``--sheet PATH`` also writes one picture of input,
base and enrolled mouths side by side, for the README). Enrollment time is that of this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _enroll_module():
    try:
        from lipforce_sdk.distill import enroll
    except ImportError:
        from distill import enroll
    return enroll


def _quality(inp, out, audio, own, sheet):
    from lipforce_sdk.face_quality import face_quality

    return face_quality(inp, out, audio, own_speech=own, sheet=sheet, sheet_frames=8)


def _row(name, q, own):
    p, s = q.pixels, q.sync
    r = {"model": name, "sharpness_ratio": p.sharpness_ratio, "skin_psnr_db": p.skin_psnr_db,
         "sync_r": None if s is None else s.r, "sync_null_p95": None if s is None else s.null_p95,
         "sync_null_max": None if s is None else s.null_max, "frames": q.frames}
    if own:
        r.update(lip_psnr_db=p.lip_psnr_db, lip_ssim=p.lip_ssim)
    return r


def _table(rows, own) -> str:
    def f(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    head = ["model"] + (["lip PSNR (dB)", "lip SSIM"] if own else []) + [
        "lower-face sharpness / input", "skin nose-upper lip PSNR (dB)", "lip opening vs speech r", "null p95 / max"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["model"]] + ([f(r["lip_psnr_db"], ".2f"), f(r["lip_ssim"], ".4f")] if own else []) + [
            f(r["sharpness_ratio"]), f(r["skin_psnr_db"], ".2f"), f(r["sync_r"]),
            f"{f(r['sync_null_p95'])} / {f(r['sync_null_max'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _r_spread(rows, scores, resamples: int) -> str:
    """One line per model: its lip r minus the base's over a paired moving-block bootstrap of the
    frames (``sync_check.bootstrap_correlations``: 1 s blocks), median, 95 % interval, and how often
    it falls below 0. Empty where r was not measured."""
    from lipforce_sdk.sync_check import bootstrap_correlations

    if resamples <= 0 or any(sc is None for sc in scores):
        return ""
    boot = bootstrap_correlations(scores, resamples=resamples)
    parts = []
    for j in range(1, len(rows)):
        d = boot[:, j] - boot[:, 0]
        lo, med, hi = np.percentile(d, [2.5, 50, 97.5])
        parts.append(f"{rows[j]['model']} {rows[j]['sync_r'] - rows[0]['sync_r']:+.3f} (resampled: median {med:+.3f}, "
                     f"95 % {lo:+.3f} .. {hi:+.3f}, below 0 in {100 * (d < 0).mean():.0f} %)")
    return (f"Lip r minus the base's, paired block bootstrap of the frames (1 s blocks, {resamples} resamples): "
            + "; ".join(parts))


def _mouth_sheet(path, inputs, outputs, labels, frames):
    """One PNG: per picked frame a column; rows = input, then each model's output, as eye-aligned
    mouth crops (the input's face mesh), 2x."""
    import cv2

    from lipforce_sdk.facemesh import LandmarkTracker
    from lipforce_sdk.geometry import AlignedCrop, FaceKeypoints

    tr = LandmarkTracker(smoothing=False)
    tiles = []
    for i in frames:
        lm = tr.update(inputs[i])
        if lm is None:
            continue
        kp = FaceKeypoints.from_mediapipe(lm.points)
        ac = AlignedCrop.from_keypoints(kp, 128)
        col = [ac.crop(inputs[i])] + [ac.crop(o[i]) for o in outputs]
        tiles.append(np.concatenate([cv2.resize(t, (256, 256), interpolation=cv2.INTER_NEAREST) for t in col]))
    sheet = np.concatenate(tiles, axis=1)
    pad = np.full((sheet.shape[0], 150, 3), 32, np.uint8)
    for k, lab in enumerate(["input"] + labels):
        cv2.putText(pad, lab, (6, k * 256 + 128), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), np.concatenate([pad, sheet], axis=1)[..., ::-1])


def _loudest(audio, n: int, count: int = 6, apart: int = 60) -> np.ndarray:
    """``count`` frames where the speech is loudest, at least ``apart`` frames from each other."""
    from lipforce_sdk.sync_check import speech_envelope

    env = np.asarray(speech_envelope(audio, 16000, 25.0, n))
    picks: list[int] = []
    for i in np.argsort(-env):
        if 10 <= i < n - 10 and all(abs(int(i) - j) > apart for j in picks):
            picks.append(int(i))
        if len(picks) == count:
            break
    return np.array(sorted(picks), dtype=int)


def _new_speech(speech_path, out, runs, work, prefix):
    """Each model streams the enrolled avatar's loop from ``speech_path`` alone (the base model the
    same loop, prepared for it): rows, outputs, the loop as shown, and the speech's loudest frames."""
    from lipforce_sdk.avatar import Avatar
    from lipforce_sdk.cli import run_avatar
    from lipforce_sdk.media import read_audio, read_video, write_video, write_wav

    av = Avatar.load(out)
    speech = read_audio(speech_path)
    n = -(-speech.size // 640)
    inp, wav = work / f"{prefix}loop_input.mp4", work / "speech.wav"
    write_wav(wav, speech)
    write_video(inp, av.stream_frames(n), 25)
    rows, outs, scores = [], [], []
    for name, eng, ex in runs:
        tag = prefix + name.replace(", no ", "_no_")
        o = work / f"{tag}.mp4"
        run_avatar(eng, Avatar.load(out), wav, o, exemplars=ex)
        q = _quality(inp, o, wav, False, work / f"sheet_{tag}.png")
        rows.append(_row(name, q, False))
        scores.append(q.sync_score())
        outs.append(read_video(o)[0])
    return rows, outs, read_video(inp)[0], _loudest(speech, n), scores


def main(argv=None) -> int:
    from lipforce_sdk import Engine
    from lipforce_sdk.cli import run_clip
    from lipforce_sdk.media import probe, read_audio, read_video, write_video, write_wav

    enroll_mod = _enroll_module()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("talking", "idle", "photo"))
    ap.add_argument("source")
    ap.add_argument("--work", required=True, help="folder for everything this writes")
    ap.add_argument("--speech", default=None, help="the new speech that drives the avatar (idle / photo: needed; "
                    "talking: the enrolled avatar's loop is also streamed from it, the kiosk's case)")
    ap.add_argument("--base", default=None, help="the model to enroll from and compare with (default: bundled)")
    ap.add_argument("--share", type=float, default=0.8, help="talking: the share of the clip enrolled from")
    ap.add_argument("--decoder-steps", type=int, default=None)
    ap.add_argument("--dit-steps", type=int, default=None)
    ap.add_argument("--dit-lr", type=float, default=None)
    ap.add_argument("--sync-weight", type=float, default=None, help="weight of the SyncNet reward in the DiT's loss")
    ap.add_argument("--context-shift", type=int, default=None)
    ap.add_argument("--dit-ema", type=float, default=None, help="decay of the DiT's weight average (0: off)")
    ap.add_argument("--mouth-weight", type=float, default=None, help="the DiT loss's extra weight where the mouth is re-rendered")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reuse", action="store_true", help="keep an enrolled model found in WORK/avatar")
    ap.add_argument("--sheet", default=None, help="also write a side-by-side PNG of the mouths here")
    ap.add_argument("--bootstrap", type=int, default=2000,
                    help="resamples of the paired block bootstrap of lip r against the base's (0: none)")
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "avatar"
    base_dir = a.base
    cfg = enroll_mod.EnrollConfig.from_options(a)
    report = {"kind": a.kind, "source": a.source, "base": base_dir or "bundled default", "config": vars(a)}
    end = None
    if a.kind == "talking":
        dur = probe(a.source).duration_s
        end = round(a.share * dur, 2)
    if not (a.reuse and (out / "manifest.json").is_file()):
        t0 = time.perf_counter()
        enroll_mod.enroll(a.source, out, kind=a.kind, model=base_dir, end=end, config=cfg, force=True,
                          threads=a.threads)
        report["enroll_seconds"] = time.perf_counter() - t0
    report["enrollment"] = json.loads((out / "manifest.json").read_text())["enrollment"]
    base = Engine.load(base_dir)
    enrolled = Engine.load(out)
    # the enrolled model with and without its mouth exemplars (lipforce_sdk.exemplars), where it has them
    runs = [("base", base, True), ("enrolled", enrolled, True)]
    if enrolled.exemplars is not None:
        runs.append(("enrolled, no exemplars", enrolled, False))
    rows, outs, labels = [], [], [name.replace("enrolled, no exemplars", "no exemplars") for name, _, _ in runs]
    scores = []
    if a.kind == "talking":
        frames, fps = read_video(a.source)
        if abs(fps - 25.0) > 1e-3:
            idx = np.floor(np.arange(int(len(frames) / fps * 25)) / 25 * fps + 1e-6).astype(int)
            frames = frames[idx]
        k0 = int(round(end * 25))
        audio = read_audio(a.source)
        held, held_audio = frames[k0:], audio[k0 * 640:]
        n = min(len(held), held_audio.size // 640)
        held, held_audio = held[:n], held_audio[:n * 640]
        inp, wav = work / "held_out.mp4", work / "held_out.wav"
        write_video(inp, held, 25, audio=held_audio)
        write_wav(wav, held_audio)
        inputs = read_video(inp)[0]
        for name, eng, ex in runs:
            tag = name.replace(", no ", "_no_")
            o = work / f"{tag}.mp4"
            run_clip(eng, inp, wav, o, exemplars=ex)
            q = _quality(inp, o, wav, True, work / f"sheet_{tag}.png")
            rows.append(_row(name, q, True))
            scores.append(q.sync_score())
            outs.append(read_video(o)[0])
        ctl = _quality(inp, inp, wav, True, None)
        report["held_out"] = {"start_s": end, "frames": n}
    elif a.speech is None:
        ap.error("idle / photo need --speech (the new speech that drives the avatar)")
    if a.speech is not None:  # the kiosk's case: the prepared avatar streamed from new speech alone
        prefix = "speech_" if a.kind == "talking" else ""
        sp_rows, sp_outs, sp_inputs, peaks, sp_scores = _new_speech(a.speech, out, runs, work, prefix)
        if a.kind == "talking":
            report["new_speech_rows"] = sp_rows
        else:
            rows, outs, inputs, scores = sp_rows, sp_outs, sp_inputs, sp_scores
    own = a.kind == "talking"
    report["rows"] = rows
    text = [f"# Enrollment check: {a.kind} `{Path(a.source).name}`", "",
            f"base: `{base_dir or 'bundled default'}`; enrolled: `{out}` "
            f"({report['enrollment']['config']['decoder_steps']} decoder steps, "
            f"{report['enrollment']['config']['dit_steps']} DiT steps); enrollment "
            f"{sum(report['enrollment']['seconds'].values()) / 60:.1f} min on this machine", "",
            _table(rows, own), "", _r_spread(rows, scores, a.bootstrap), ""]
    if own:
        text.append(f"H.264 re-encode control of the held-out frames: lip {ctl.pixels.lip_psnr_db:.2f} dB / "
                    f"{ctl.pixels.lip_ssim:.4f}, sharpness {ctl.pixels.sharpness_ratio:.3f}")
        if a.speech is not None:
            text += ["", f"The avatar's loop streamed from new speech alone (`{Path(a.speech).name}`):", "",
                     _table(sp_rows, False), "", _r_spread(sp_rows, sp_scores, a.bootstrap)]
    text.append("\ncommand: python samples/enroll_check.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    (work / "report.md").write_text("\n".join(text) + "\n")
    (work / "report.json").write_text(json.dumps(report, indent=1, default=str))
    if a.sheet:
        m = min(len(inputs), *(len(o) for o in outs))
        _mouth_sheet(a.sheet, inputs[:m], [o[:m] for o in outs], labels, np.linspace(10, m - 10, 6).astype(int))
        if own and a.speech is not None:  # the new speech's loudest moments, where the mouth should open
            m = min(len(sp_inputs), *(len(o) for o in sp_outs))
            sheet2 = Path(a.sheet).with_name(Path(a.sheet).stem + "_new_speech.png")
            _mouth_sheet(sheet2, sp_inputs[:m], [o[:m] for o in sp_outs], labels, peaks[peaks < m])
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
