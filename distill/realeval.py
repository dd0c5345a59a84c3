"""Keep the face: a model on real (and illustrated) clips it never saw, one command.

    python -m distill.realeval --clips DIR --speech SPEECH.wav --out runs/realeval [--model DIR]
        [--backend torch] [--seconds 10] [--no-own-speech] [--still-baseline]

For every video of ``--clips`` (with its speech where it has some, as
``distill.realdata.find_clips`` finds it):

- **new speech**: ``lipforce run`` (``cli.run_clip``: streamed frame by frame, the video looped
  back and forth when shorter than the speech) with the first ``--seconds`` of ``--speech``;
- **own speech** (unless ``--no-own-speech``; clips with speech only): the clip driven by its own
  speech (its frames are then the ground truth; the lip box is also given from the 2 s mark on,
  past the frames a general model takes its mouth exemplars from, ``lipforce_sdk.exemplars``; with
  ``--still-baseline`` also of the clip driven by silence as long as its speech: the model's still
  mouth, the score a speaking mouth must beat to move more like the person than not moving);

then ``lipforce_sdk.face_quality`` on each output against its input: lower-face sharpness
(Laplacian variance nose tip to chin, output / input), the skin between nose and upper lip
outside the lips (PSNR), the landmark lip opening against the speech envelope (r, and its
shifted-speech null), the lip box against the real frames (own speech), whether silence stays
still (beside it, the ratio the input's own mouth scores over the same silent frames), the lip
box's colour the person never shows (measure 8: share of pixels, and in
``results.json`` the frames over 1 %) and the frames shaded below the lower lip (measure 7); an
H.264 copy of the input is the control. Writes ``results.md`` (with how many runs pass each bar of
``CRITERIA``) / ``results.json`` and a contact sheet per run (input vs output mouth crops) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["CRITERIA", "criteria", "evaluate_clips", "main"]


def _row(name: str, mode: str, q) -> dict:
    p, s, sil = q.pixels, q.sync, q.silence
    return {"clip": name, "mode": mode, "sharpness": p.sharpness_ratio, "skin_db": p.skin_psnr_db,
            "lip_r": None if s is None else s.r, "lip_lag": None if s is None else s.lag,
            "null_p95": None if s is None else s.null_p95, "null_max": None if s is None else s.null_max,
            "lip_box_db": p.lip_psnr_db, "lip_box_ssim": p.lip_ssim, "lip_box_after_db": None,
            "lip_box_still_db": None,
            "silence_ratio": None if sil is None else sil.still_ratio, "jump_ratio": None if sil is None else sil.jump_ratio,
            "silence_within": None if sil is None else sil.still_within,
            "silence_between": None if sil is None else sil.still_between,
            "silence_input_ratio": None if sil is None else sil.input_still_ratio,
            "motion_ratio": None if sil is None else sil.motion_ratio, "green_share": p.green_share,
            "green_frames": p.green_frames, "shade_share": p.shade_share,
            "control_sharpness": None if q.control is None else q.control.sharpness_ratio,
            "control_skin_db": None if q.control is None else q.control.skin_psnr_db,
            "frames": q.frames, "face_frames": q.face_frames}


def _f(v, fmt=".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v == float("inf"):
        return "inf"
    return format(v, fmt)


def to_markdown(rows: list[dict]) -> str:
    head = "| clip | speech | sharpness (out/in) | skin dB | lip r (lag) | null p95 | lip box dB / SSIM | lip box from 2 s dB | lip box of a still mouth dB | silence std ratio (the input's own) | boundary jump | mouth motion silent / speaking | lip box green % | shaded below the lip % | control sharpness / skin dB |"
    lines = [head, "|" + " --- |" * 15]
    for r in rows:
        lines.append(
            f"| {r['clip']} | {r['mode']} | {_f(r['sharpness'])} | {_f(r['skin_db'], '.1f')} | "
            f"{_f(r['lip_r'])} ({_f(r['lip_lag'], '+d') if r['lip_lag'] is not None else '-'}) | {_f(r['null_p95'])} | "
            f"{_f(r['lip_box_db'], '.1f')} / {_f(r['lip_box_ssim'], '.3f')} | {_f(r.get('lip_box_after_db'), '.1f')} | "
            f"{_f(r.get('lip_box_still_db'), '.1f')} | "
            f"{_f(r['silence_ratio'])} ({_f(r.get('silence_input_ratio'))}) | "
            f"{_f(r['jump_ratio'])} | {_f(r.get('motion_ratio'))} | "
            f"{_f(None if r.get('green_share') is None else 100 * r['green_share'])} | "
            f"{_f(None if r.get('shade_share') is None else 100 * r['shade_share'], '.1f')} | "
            f"{_f(r['control_sharpness'])} / {_f(r['control_skin_db'], '.1f')} |")
    return "\n".join(lines) + "\n"


# The bars of a face that is kept (BENCHMARKS.md section 6), per run, and the speaking mouth against the
# still one (``--still-baseline``): (name, row key, test on the row); ``criteria`` counts them
CRITERIA = (
    ("sharpness >= 0.7", "sharpness", lambda r: r["sharpness"] >= 0.7),
    ("skin >= 30 dB", "skin_db", lambda r: r["skin_db"] >= 30.0),
    ("lip r >= 0.4, above its null", "lip_r", lambda r: r["lip_r"] >= 0.4 and r["lip_r"] > (r.get("null_p95") or 0.0)),
    ("silence std ratio <= 0.2", "silence_ratio", lambda r: r["silence_ratio"] <= 0.2),
    ("boundary jump <= 1", "jump_ratio", lambda r: r["jump_ratio"] <= 1.0),
    ("own-speech lip box >= 24 dB", "lip_box_db", lambda r: r["lip_box_db"] >= 24.0),
    ("own-speech lip box above the still mouth's", "lip_box_still_db",
     lambda r: r["lip_box_db"] is not None and r["lip_box_db"] > r["lip_box_still_db"]),
)


def criteria(rows: list[dict]) -> list[tuple[str, int, int]]:
    """``(criterion, runs passing, runs measured)`` for each of ``CRITERIA`` over ``rows``; a run
    counts where it has the measure (the lip box: own-speech runs; the still mouth's: with
    ``--still-baseline``)."""
    out = []
    for name, key, ok in CRITERIA:
        have = [r for r in rows if r.get(key) is not None and r[key] == r[key]]
        out.append((name, sum(bool(ok(r)) for r in have), len(have)))
    return out


def criteria_markdown(rows: list[dict]) -> str:
    lines = ["| criterion | runs passing |", "| --- | --- |"]
    lines += [f"| {name} | {k}/{n} |" for name, k, n in criteria(rows) if n]
    return "\n".join(lines) + "\n"


def evaluate_clips(engine, clips_dir: str | Path, speech: str | Path | None, out: str | Path, seconds: float = 10.0,
                   own_speech: bool = True, progress: bool = True, log=print, silence: str | None = None,
                   exemplars: bool = True, speech_gain: float | str = 1.0, still_baseline: bool = False) -> list[dict]:
    import numpy as np

    from lipforce_sdk.cli import run_clip
    from lipforce_sdk.face_quality import face_quality
    from lipforce_sdk.media import read_audio, write_wav

    from .realdata import VIDEO_EXT, find_clips

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    sp_path = None
    if speech is not None:
        sp = read_audio(speech, 16000)[: int(seconds * 16000)]
        sp_path = out / "speech.wav"
        write_wav(sp_path, sp)
    with_speech = dict(find_clips(clips_dir))
    videos = sorted(p for p in Path(clips_dir).iterdir() if p.suffix.lower() in VIDEO_EXT)
    for video in videos:
        audio = with_speech.get(video)
        name = video.stem
        runs = []
        if sp_path is not None:
            runs.append(("new speech", sp_path, False))
        if own_speech and audio is not None:
            own = out / f"{name}.own.wav"
            write_wav(own, read_audio(audio, 16000)[: int(seconds * 16000)])
            runs.append(("own speech", own, True))
        for mode, wav, is_own in runs:
            tag = "own" if is_own else "new"
            dst = out / f"{name}.{tag}.mp4"
            t0 = time.perf_counter()
            run_clip(engine, video, wav, dst, progress=False, silence=silence, exemplars=exemplars,
                     speech_gain=speech_gain)
            q = face_quality(video, dst, wav, own_speech=is_own, input_order="pingpong", control=True,
                             sheet=out / f"{name}.{tag}.png")
            rows.append(_row(name, mode, q))
            if is_own:
                rows[-1]["lip_box_after_db"] = _lip_box_after(engine, video, dst, wav)
                if still_baseline:
                    rows[-1]["lip_box_still_db"] = _lip_box_still(engine, video, wav, out / f"{name}.still.mp4",
                                                                  silence=silence, exemplars=exemplars)
            log(f"{name} ({mode}): {json.dumps({k: v for k, v in rows[-1].items() if k not in ('clip', 'mode')}, default=str)}"
                f"  [{time.perf_counter() - t0:.0f} s]")
    (out / "results.json").write_text(json.dumps(rows, indent=1, default=lambda v: None if v != v else str(v)))
    (out / "results.md").write_text(to_markdown(rows) + "\n" + criteria_markdown(rows))
    return rows


def _lip_box_still(engine, video, own_wav, dst, silence=None, exemplars: bool = True) -> float | None:
    """The own-speech lip box PSNR of the same clip driven by silence as long as its speech: the
    model's own still mouth against the real frames. A speaking mouth that scores under it moves
    less like the person than not moving at all."""
    import numpy as np

    from lipforce_sdk.cli import run_clip
    from lipforce_sdk.face_quality import face_quality
    from lipforce_sdk.media import read_audio, write_wav

    quiet = Path(dst).with_suffix(".wav")
    write_wav(quiet, np.zeros_like(read_audio(own_wav, 16000)))
    run_clip(engine, video, quiet, dst, progress=False, silence=silence, exemplars=exemplars)
    q = face_quality(video, dst, own_wav, own_speech=True, input_order="pingpong")
    return q.pixels.lip_psnr_db


def _lip_box_after(engine, video, out, wav) -> float | None:
    """The own-speech lip box PSNR from ``STREAM_SECONDS`` on: past the frames whose mouths a
    general model's stream exemplars hold (each of them the ground truth of its own frame)."""
    from lipforce_sdk.cli import _video_schedule
    from lipforce_sdk.exemplars import STREAM_SECONDS
    from lipforce_sdk.face_quality import face_quality
    from lipforce_sdk.media import read_audio, read_video

    fps, sr = engine.config.stream.fps, 16000
    k = int(round(STREAM_SECONDS * fps))
    fin, in_fps = read_video(video)
    fout, _ = read_video(out)
    if len(fout) <= k + 1:
        return None
    sched = _video_schedule(len(fin), in_fps or fps, fps, len(fout))
    q = face_quality(fin[sched][k:], fout[k:], read_audio(wav, sr)[int(k * sr / fps):], own_speech=True, fps=fps)
    return q.pixels.lip_psnr_db


def main(argv: list[str] | None = None) -> int:
    from lipforce_sdk.cli import _gain_choice, add_schedule_options, schedule_choice  # as `lipforce run`
    from lipforce_sdk.config import SILENCE_MODES

    ap = argparse.ArgumentParser(prog="python -m distill.realeval", description=__doc__.split("\n")[0])
    ap.add_argument("--clips", required=True, help="folder of talking-head clips (video + speech)")
    ap.add_argument("--speech", default=None, help="new speech to drive every clip with")
    ap.add_argument("--out", required=True, help="output folder (videos, sheets, results.md/json)")
    ap.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    add_schedule_options(ap)
    ap.add_argument("--seconds", type=float, default=10.0, help="speech length per run")
    ap.add_argument("--no-own-speech", action="store_true", help="skip the runs driven by each clip's own speech")
    ap.add_argument("--silence", default=None, choices=SILENCE_MODES, help="as `lipforce run --silence`")
    ap.add_argument("--no-exemplars", action="store_true", help="as `lipforce run --no-exemplars`")
    ap.add_argument("--speech-gain", type=_gain_choice, default=1.0, metavar="auto|G",
                    help="as `lipforce run --speech-gain`")
    ap.add_argument("--still-baseline", action="store_true",
                    help="own-speech clips also driven by silence: the lip box of the model's still mouth (a "
                         "baseline for the speaking one)")
    a = ap.parse_args(argv)
    from lipforce_sdk.session import Engine

    engine = Engine.load(a.model, backend=a.backend, **schedule_choice(a))
    rows = evaluate_clips(engine, a.clips, a.speech, a.out, a.seconds, own_speech=not a.no_own_speech,
                          silence=a.silence, exemplars=not a.no_exemplars,
                          speech_gain=a.speech_gain, still_baseline=a.still_baseline)
    print(to_markdown(rows))
    print(criteria_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
