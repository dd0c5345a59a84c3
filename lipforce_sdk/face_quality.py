"""Does a lip-sync output keep the face? One command that compares an output video with its input.

    python -m lipforce_sdk.face_quality --input IN.mp4 --output OUT.mp4 --audio SPEECH.wav \\
        [--own-speech] [--control] [--sheet sheet.png] [--json out.json]

``--input`` is the video the lip-sync run was given, ``--output`` what it wrote, ``--audio`` the
speech that drove it. NumPy, OpenCV and the SDK's torch-free face mesh (``lipforce_sdk.facemesh``)
only: no model, no torch.

Frames. Output frame ``i`` is compared with the input frame the run fed in its place:

- ``input_order="same"`` (default, ``--input-order same``): input frame ``i``; both videos must
  have the same number of frames. Pass the input at the length of the output: when a run looped a
  shorter input, either write that looped input or use
- ``input_order="pingpong"``: input frame ``_video_schedule(...)[i]``, exactly the ping-pong loop
  ``lipforce run`` uses (``lipforce_sdk.cli._video_schedule``, imported, not copied: time-matched
  at the input's own frame rate, back and forth when the input is shorter).

The output must have the input's frame size (an output one pixel larger, from the writer's
padding of odd sizes to even, is cut back to the input's size).

Landmarks. Every input frame and every output frame goes through its own face-mesh tracker
(``LandmarkTracker``, smoothing off: the unsmoothed points, i.e. ``last_raw``). A frame where the
mesh finds no face in the INPUT is skipped by every measure and counted (``skipped_frames``);
the regions below come from the INPUT frame's landmarks, so input and output are compared on the
same pixels whatever the output's mouth does. Only the lip opening (3) uses the OUTPUT
landmarks. Points are frame pixels with pixel ``i`` covering ``[i, i + 1)``; a box
``[x_lo, x_hi] x [y_lo, y_hi]`` holds the pixels whose centres ``(i + 0.5, j + 0.5)`` lie in it,
clipped to the frame. ``W`` is the mouth width ``|p61 - p291|``.

Regions (``Regions.from_points``) and measures:

1. **Lower-face sharpness** (``PixelMeasures.sharpness_ratio``). Box: rows from the nose tip
   (``y`` of landmark 1) to the chin (``y`` of 152); columns from the image-left mouth corner
   minus ``W / 2`` to the image-right corner plus ``W / 2`` (``min/max x`` of 61 and 291). Per
   frame the variance of ``cv2.Laplacian(grey, CV_64F, ksize=3)`` over the box (grey =
   ``cv2.COLOR_RGB2GRAY``, the Laplacian computed with the pixels around the box), output over
   input; the median over frames. 1 = as sharp as the input; a blurry mouth scores well below.
   It counts edges, not faithfulness: hard-edged artifacts (a pasted patch's border, spots) add
   to it, so read it beside 2 and the contact sheet (on the bundled photo clip a model output
   whose lower face was a grey patch with dark spots scored 0.58, its skin 31.7 dB against the
   control's 41.4).
   With ``control=True`` the same (and 2, 4) for the input re-encoded as H.264 by
   ``lipforce_sdk.media.write_video`` (the writer and settings ``lipforce run`` uses) and read
   back: what the encoding alone costs.
2. **Skin that speaking barely moves** (``skin_psnr_db``). Box: rows from the nose tip (``y`` of
   1) down to the lowest point of the outer upper-lip contour without the corners
   (``UPPER_LIP_OUTER`` = 185, 40, 39, 37, 0, 267, 269, 270, 409; for a level mouth that is
   near the corners); columns between the mouth corners (61, 291). Of it, the pixels outside
   the outer-lip polygon (``LIPS_OUTER``, filled) dilated by 2 pixels (a 5x5 elliptic kernel):
   the philtrum and the skin beside the upper lip, and the nostrils. PSNR of the RGB values
   (peak 255) from the squared error pooled over every such pixel of every frame; ``inf`` when
   they are identical.
3. **Lip opening vs speech** (``LipSync``). The output's inner-lip opening per frame,
   ``|p13 - p14| / |p61 - p291|`` (``FaceLandmarks.lip_opening`` on the output's own
   landmarks), against ``sync_check.speech_envelope`` (600-2500 Hz) with ``sync_check``'s trend
   removal and lag search over +-2 frames (``sync_check.score_series``), and its null
   (``null_correlations``: the envelope circularly shifted by 1 s or more; needs a clip longer
   than 2 s). Frames without a measurement (no face in the input or the output) are filled by
   linear interpolation and counted; under half the frames measured: not reported.
4. **Lip box, own speech** (``lip_psnr_db``, ``lip_ssim``; only with ``own_speech=True``, when
   the input video's own speech drove the run and its frames are the ground truth). Box: the
   bounds of the input's outer-lip contour (``LIPS_OUTER``) widened by ``W / 4`` on all four
   sides. PSNR as in 2 (RGB, pooled); SSIM (Wang et al. 2004: Gaussian window sigma 1.5,
   ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``) on the luma (BT.601) of the box, the SSIM
   map averaged over every box pixel of every frame.
5. **Silence stays still** (``silence_stillness``, on arrays). From the speech envelope (dB above
   -60 dBFS, 0 in digital silence): a frame is silent when its envelope is more than 20 dB below
   the clip's 95th percentile (1 % of the loud-speech band power) or 0; a silent stretch is a
   run of at least 0.5 s of silent frames (13 frames at 25 fps); every frame outside the
   stretches is a speaking frame (short pauses between words included). Reported: the std of
   the output's lip opening over the silent frames (each stretch minus 2 frames at an end that
   borders speech, where the mouth is still closing or opening) over its std over the speaking
   frames (goal <= 0.2), and the largest frame-to-frame change of the opening at a
   speech/silence boundary (the pair of frames across it and the 2 pairs next to it inside the
   silence: where the mouth shuts or opens) over the 95th percentile of the changes between two
   speaking frames (goal <= 1: no jump larger than between two speaking frames). No stretch of 0.5 s: both ``None``, and the note says so.
   Beside them, in pixels (``motion_ratio``, no goal): the mean frame-to-frame change of the
   output's lip box (the input's box of the later frame cut from both frames) over pairs of
   silent frames, over the same over pairs of speaking frames: what a viewer sees as a mouth
   that quivers, where the opening reads only two landmarks.
   And the silent std taken apart (``still_within`` / ``still_between``, no goal): around each
   stretch's own mean (the mouth moving inside a pause) and between the stretches' means (pauses
   that hold different mouths), each over the speaking std; their squares add up to the ratio's.
   And the reference (``input_still_ratio``, no goal): the INPUT's own lip opening (the face mesh
   runs on the input frames anyway) over the same silent frames, its std over the output's speaking
   std: what a mouth exactly as still as the person's own would score. On an idle avatar it is the
   loop's own small motion and the mesh's jitter; where it is near or above 0.2, the ratio's goal
   asks the output to speak with more motion, not to hold the pauses stiller.
6. **Contact sheet** (``sheet=``, ``--sheet``): input and output mouth crops side by side (input
   above output), eye-aligned 128-pixel crops (``geometry.AlignedCrop`` from the INPUT landmarks,
   the same crop cut from both frames) enlarged 2x with nearest-neighbour pixels, so blur and
   blockiness show as they are. ``sheet_frames`` frames: the loudest frame of each of
   ``sheet_frames - 1`` equal stretches of the clip and the middle frame of the longest silent
   stretch (the quietest frame when there is none), labelled with the frame index, ``in`` /
   ``out`` and the speech level; a header line carries the numbers.

7. **A shade below the lower lip** (``shade_share``, ``shade_mean``; no goal). Box: columns
   between the mouth corners (61, 291); rows from the lowest point of the outer-lip contour plus 2
   pixels down to halfway to the chin (152). Per frame the mean HSV value (the largest of R, G, B)
   of the box, input minus output: ``shade_mean`` its mean over frames, ``shade_share`` the share of
   frames where the output is darker by more than ``SHADE_LEVELS`` (10) levels: the grey a model
   leaves on the chin under a mouth it opens without moving the lower lip. On talking heads the
   input's own jaw moves there too; it reads best on an idle avatar.
8. **Colour the person's mouth never shows** (``green_share``, ``green_frames``; no goal). Box: the
   lip box of 4 (measured with any speech). Per pixel the green-minus-red difference ``G - R``;
   the threshold is the input's own 99.9th percentile of it over every frame's box plus
   ``GREEN_LEVELS`` (4); ``green_share`` is the share of the output's box pixels above it, pooled
   over frames, ``green_frames`` the frames with more than 1 % of their box above it. Lips, skin and
   the inside of a mouth are red over green; what this counts is a mouth greener or greyer than
   any of the person's own (the grey-green band a model draws where it cannot resolve teeth),
   which PSNR, dominated by luma, barely sees. About 0 for the input itself. The runtime limits the
   same colour before the paste (``geometry.GreenLimit``, in frame order and in the crop); on its
   output this counts what is left: pixels at the limit that the paste's resampling, the stream's
   exemplars and the video codec move a level or two over it.

``FaceQuality`` holds the numbers, the frame counts and the per-frame series; ``to_markdown()``
and ``to_dict()`` (JSON-safe: ``inf``/``nan`` written as the strings ``"inf"``/``"nan"``). Cost:
two face-mesh passes per frame (about 9-12 ms each on one CPU core at 320x320) plus about 2 ms
of regions and pixel work; 25-40 ms per frame in all on a busy 2-core machine, a little more
with the control (an encode and a decode) and the sheet (one more decode).
``FaceQuality.ms_per_frame`` reports it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from .facemesh.landmarks import CHIN, LIPS_OUTER, MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP
from .geometry import AlignedCrop, FaceKeypoints, green_minus_red_histogram
from .sync_check import null_correlations, score_series, speech_envelope

__all__ = [
    "FaceQuality",
    "PixelMeasures",
    "LipSync",
    "Silence",
    "Regions",
    "face_quality",
    "silence_stillness",
    "main",
]

SAMPLE_RATE = 16000  # audio is read at this rate for the envelope
LOWER_FACE_WIDEN = 0.5  # sharpness box: mouth corners widened by this x mouth width each side
LIP_BOX_WIDEN = 0.25  # lip box: outer-lip bounds widened by this x mouth width on every side
LIPS_DILATE_PX = 2  # skin region: the outer-lip polygon grown by this many pixels is left out
UPPER_LIP_OUTER = (185, 40, 39, 37, 0, 267, 269, 270, 409)  # outer upper lip, corners excluded
SHADE_LEVELS = 10.0  # measure 7: a frame whose box below the lower lip is this much darker (HSV value) is shaded
GREEN_LEVELS = 4  # measure 8: G - R this far above the input's own 99.9th percentile in the lip box
GREEN_PERCENTILE = 99.9
GREEN_FRAME_SHARE = 0.01  # ... and a frame with more than this share of its lip box so coloured counts
SILENCE_BELOW_DB = 20.0  # silent: envelope this far below its 95th percentile
MIN_SILENCE_S = 0.5  # shortest silent stretch measured
GUARD_FRAMES = 2  # frames at a speech/silence boundary left out of the silent std
STILL_GOAL = 0.2  # opening std silent / speaking at or below this: silence stays still
JUMP_GOAL = 1.0  # largest boundary jump / p95 within speech at or below this
MAX_LAG = 2  # lag search of the lip opening vs the envelope, frames
NULL_SHIFT_S = 1.0  # the null shifts the envelope by at least this
CROP_SIZE = 128  # contact-sheet crop, pixels (shown 2x)
SHEET_SCALE = 2
SHEET_COLUMNS = 4  # frames per row of the sheet
_SSIM_C1, _SSIM_C2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
_LUMA = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelMeasures:
    """Measures 1, 2 and 4 of the module docstring for one video against the input.

    ``sharpness_ratio``: median over frames of the lower-face Laplacian variance, this video over
    the input (``sharpness_in`` / ``sharpness_out``: the medians of each). ``skin_psnr_db`` /
    ``lip_psnr_db``: pooled PSNR in dB (``inf`` when identical), from ``*_mse`` (mean squared
    error per RGB value). ``lip_ssim``: pooled SSIM of the lip box. ``shade_share`` /
    ``shade_mean``: measure 7 (the share of frames darker below the lower lip by more than
    ``SHADE_LEVELS``; the mean darkening in levels). ``green_share`` / ``green_frames``: measure 8
    (the lip box's pixels greener than the input's own, pooled; frames with more than 1 % of them,
    of ``green_measured``).
    ``*_pixels``: pixels pooled (over all frames);
    ``*_frames``: frames that had the region. ``None``: not measured.
    """

    sharpness_ratio: float | None
    sharpness_in: float | None
    sharpness_out: float | None
    sharpness_frames: int
    skin_psnr_db: float | None
    skin_mse: float | None
    skin_pixels: int
    skin_frames: int
    lip_psnr_db: float | None = None
    lip_mse: float | None = None
    lip_ssim: float | None = None
    lip_pixels: int = 0
    lip_frames: int = 0
    shade_share: float | None = None
    shade_mean: float | None = None
    shade_frames: int = 0
    green_share: float | None = None
    green_frames: int = 0
    green_measured: int = 0


@dataclass(frozen=True)
class LipSync:
    """Measure 3: the output's landmark lip opening against the speech envelope.

    ``r`` at ``lag`` frames (``lag > 0``: the mouth follows the sound) as
    ``sync_check.score_series``; ``null_p95`` / ``null_max`` over ``null_count`` shifts of the
    envelope by >= 1 s (``None`` for clips of 2 s or less). ``frames_measured``: frames with an
    opening; ``frames_filled``: frames interpolated.
    """

    r: float
    lag: int
    null_p95: float | None
    null_max: float | None
    null_count: int
    frames_measured: int
    frames_filled: int


@dataclass(frozen=True)
class Silence:
    """Measure 5 (``silence_stillness``).

    ``threshold_db``: envelope level (dB above -60 dBFS) below which a frame is silent;
    ``stretches``: silent stretches ``(start, stop)`` (frames, stop excluded) of >= 0.5 s;
    ``silent_frames`` / ``speaking_frames``: frames the two stds were taken over;
    ``still_ratio``: std silent / std speaking of the lip opening (goal <= 0.2);
    ``boundary_jump``: largest frame-to-frame change of the opening at a speech/silence boundary;
    ``speech_jump_p95``: 95th percentile of the changes within speech; ``jump_ratio``: the first
    over the second (goal <= 1); ``boundaries``: speech/silence boundaries (a stretch at the
    start or end of the clip has one); ``motion_ratio``: mean frame-to-frame pixel change of the
    output's lip box over pairs of silent frames (the stretches minus the guard frames) over pairs
    of speaking frames: the mouth's quiver in pixels, where the lip opening sees two landmarks
    (no goal set; an unchanged input scores its own ratio). ``still_within`` / ``still_between``:
    ``still_ratio`` taken apart (``still_within ** 2 + still_between ** 2 == still_ratio ** 2``):
    the opening's std around each stretch's own mean (a mouth that quivers inside a pause), and the
    std of the stretches' means weighted by their frames (pauses that hold different mouths), each
    over the speaking std; ``still_between`` needs two stretches. ``input_still_ratio``: the
    INPUT's own lip opening std over the same silent frames, over the output's speaking std: the
    ratio a mouth exactly as still as the person's own in those frames would score (on an idle
    avatar its loop's own small motion and the face mesh's jitter; no goal). ``None`` where it cannot
    be measured; ``note`` says why.
    """

    threshold_db: float | None
    stretches: tuple[tuple[int, int], ...]
    silent_frames: int
    speaking_frames: int
    still_ratio: float | None
    boundary_jump: float | None
    speech_jump_p95: float | None
    jump_ratio: float | None
    boundaries: int = 0
    note: str = ""
    motion_ratio: float | None = None
    still_within: float | None = None
    still_between: float | None = None
    input_still_ratio: float | None = None


@dataclass(frozen=True)
class FaceQuality:
    """What ``face_quality`` measured. See the module docstring for each measure.

    ``frames``: output frames; ``face_frames``: those whose input frame has a face (measured);
    ``skipped_frames``: those without (skipped); ``output_face_missing``: measured frames where
    the mesh found no face in the output. ``opening`` ``[F]``: the output's lip opening (NaN where
    not measured); ``envelope`` ``[F]``: the speech envelope (dB). ``control``: the H.264
    re-encode control (``control=True``), else ``None``. ``ms_per_frame``: wall time per frame.
    """

    input: str
    output: str
    audio: str
    fps: float
    input_order: str
    own_speech: bool
    frames: int
    face_frames: int
    skipped_frames: int
    output_face_missing: int
    pixels: PixelMeasures
    control: PixelMeasures | None
    sync: LipSync | None
    silence: Silence
    opening: np.ndarray
    envelope: np.ndarray
    seconds: float
    sheet: str | None = None
    sheet_frames: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.seconds / max(self.frames, 1)

    def sync_score(self):
        """The lip opening against the speech as ``sync_check.score_series`` scores it (frames
        without an opening filled from their neighbours, as ``sync`` was measured), for
        ``null_correlations`` or ``bootstrap_correlations``; ``None`` where ``sync`` is."""
        if self.sync is None:
            return None
        return score_series(_filled(self.opening), self.envelope, fps=self.fps, max_lag=MAX_LAG)

    def to_dict(self) -> dict:
        """Plain JSON-ready values (non-finite numbers as the strings ``"inf"``, ``"nan"``)."""
        from dataclasses import asdict

        def pm(p):
            return None if p is None else asdict(p)

        d = {
            "input": self.input, "output": self.output, "audio": self.audio, "fps": self.fps,
            "input_order": self.input_order, "own_speech": self.own_speech,
            "frames": self.frames, "face_frames": self.face_frames, "skipped_frames": self.skipped_frames,
            "output_face_missing": self.output_face_missing,
            "pixels": pm(self.pixels), "control": pm(self.control),
            "sync": None if self.sync is None else asdict(self.sync),
            "silence": asdict(self.silence),
            "seconds": self.seconds, "ms_per_frame": self.ms_per_frame,
            "sheet": self.sheet, "sheet_frames": list(self.sheet_frames), "notes": list(self.notes),
            "per_frame": {"opening": self.opening.tolist(), "envelope_db": self.envelope.tolist()},
        }
        return _json_safe(d)

    def to_markdown(self) -> str:
        """The numbers as a Markdown table, with the frame counts and the goal of each."""
        p, c, s, sil = self.pixels, self.control, self.sync, self.silence

        def ctl(attr: str, fmt: str) -> str:
            return f"; H.264 re-encode control: {_fmt(getattr(c, attr), fmt)}" if c is not None else ""

        rows = [
            ("lower-face sharpness, output / input (median Laplacian variance ratio)",
             f"{_fmt(p.sharpness_ratio, '.3f')} (in {_fmt(p.sharpness_in, '.0f')}, out {_fmt(p.sharpness_out, '.0f')})",
             str(p.sharpness_frames),
             "1 = as sharp as the input" + ctl("sharpness_ratio", ".3f")),
            ("skin above the upper lip, PSNR output vs input",
             f"{_fmt(p.skin_psnr_db, '.2f')} dB", f"{p.skin_frames} ({p.skin_pixels} px)",
             "high; inf = unchanged" + ctl("skin_psnr_db", ".2f")),
        ]
        if self.own_speech:
            rows.append(("lip box, PSNR / SSIM output vs input (own speech)",
                         f"{_fmt(p.lip_psnr_db, '.2f')} dB / {_fmt(p.lip_ssim, '.4f')}",
                         f"{p.lip_frames} ({p.lip_pixels} px)",
                         "inf / 1 = the input's own mouth"
                         + (f"; control {_fmt(c.lip_psnr_db, '.2f')} dB / {_fmt(c.lip_ssim, '.4f')}" if c else "")))
        if s is not None:
            rows.append(("lip opening (output landmarks) vs speech 600-2500 Hz, r",
                         f"{s.r:.3f} at lag {s.lag:+d}",
                         f"{s.frames_measured} (+{s.frames_filled} filled)",
                         f"above the null (speech shifted >= 1 s): p95 {_fmt(s.null_p95, '.3f')}, "
                         f"max {_fmt(s.null_max, '.3f')}"))
        else:
            rows.append(("lip opening vs speech, r", "-", "-", "not measured (see notes)"))
        rows.append(("below the lower lip: frames darker than the input by > "
                     f"{SHADE_LEVELS:g} levels (HSV value) / mean darkening",
                     f"{_fmt(p.shade_share, '.3f')} / {_fmt(p.shade_mean, '.2f')}", str(p.shade_frames),
                     "no goal (a grey shade under the mouth; the input's jaw moves there too)"
                     + (f"; control {_fmt(c.shade_share, '.3f')} / {_fmt(c.shade_mean, '.2f')}" if c else "")))
        rows.append(("lip box: pixels greener (G - R) than the input's 99.9th percentile + "
                     f"{GREEN_LEVELS} levels / frames with > 1 %",
                     f"{_fmt(p.green_share, '.4f')} / {p.green_frames}", str(p.green_measured),
                     "no goal (a grey-green mouth; about 0 for the input itself)"
                     + (f"; control {_fmt(c.green_share, '.4f')} / {c.green_frames}" if c else "")))
        rows.append(("silence: lip-opening std, silent / speaking frames", _fmt(sil.still_ratio, '.3f'),
                     f"{sil.silent_frames} / {sil.speaking_frames}", f"<= {STILL_GOAL}"))
        rows.append(("silence: the same within a pause / between the pauses' mouths",
                     f"{_fmt(sil.still_within, '.3f')} / {_fmt(sil.still_between, '.3f')}",
                     f"{len(sil.stretches)} pauses", "no goal (which of the two makes the ratio)"))
        rows.append(("silence: the INPUT's own lip-opening std over the same silent frames / the output's "
                     "speaking std", _fmt(sil.input_still_ratio, '.3f'), f"{sil.silent_frames} / {sil.speaking_frames}",
                     "no goal (what a mouth as still as the person's own in those frames would score)"))
        rows.append(("silence: largest jump at a speech/silence boundary / p95 jump within speech",
                     _fmt(sil.jump_ratio, '.2f')
                     + (f" ({sil.boundary_jump:.3f} / {sil.speech_jump_p95:.3f})" if sil.jump_ratio is not None else ""),
                     f"{sil.boundaries} boundaries", f"<= {JUMP_GOAL:g}"))
        rows.append(("silence: mouth pixel change frame to frame (lip box), silent / speaking pairs",
                     _fmt(sil.motion_ratio, '.3f'), f"{sil.silent_frames} / {sil.speaking_frames}",
                     "no goal (how much the mouth quivers in silence)"))
        lines = [
            f"face quality: {self.output} vs {self.input} (speech {self.audio}; input order {self.input_order})",
            "",
            f"frames {self.frames}: measured {self.face_frames}, skipped (no face in the input) {self.skipped_frames}, "
            f"output face not found {self.output_face_missing}; {self.ms_per_frame:.1f} ms per frame",
            "",
            "| measure | value | frames | reading |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {a} | {b} | {cnt} | {d} |" for a, b, cnt, d in rows]
        notes = list(self.notes) + ([f"silence: {sil.note}"] if sil.note else [])
        if self.sheet:
            notes.append(f"contact sheet: {self.sheet} (frames {', '.join(map(str, self.sheet_frames))})")
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        return "\n".join(lines)


def _fmt(v, fmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v, fmt)


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(x, np.integer):
        return int(x)
    return x


# --------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------


def _pixel_range(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Pixels ``[i0, i1)`` whose centres ``i + 0.5`` lie in ``[lo, hi]``, clipped to ``[0, n)``."""
    i0 = max(0, int(math.ceil(lo - 0.5)))
    i1 = min(n, int(math.floor(hi - 0.5)) + 1)
    return i0, max(i0, i1)


def _box(x_lo, x_hi, y_lo, y_hi, hw) -> tuple[int, int, int, int]:
    x0, x1 = _pixel_range(x_lo, x_hi, hw[1])
    y0, y1 = _pixel_range(y_lo, y_hi, hw[0])
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Regions:
    """The measured regions of one frame, from its input landmarks (see the module docstring).

    Boxes are pixel index ranges ``(x0, y0, x1, y1)``, ``x0 <= x < x1`` (empty when ``x1 == x0``).
    ``skin_mask`` ``bool [y1 - y0, x1 - x0]`` marks the pixels of ``skin_box`` outside the
    dilated outer-lip polygon. ``crop``: the contact sheet's eye-aligned mouth crop.
    """

    lower_face: tuple[int, int, int, int]
    skin_box: tuple[int, int, int, int]
    skin_mask: np.ndarray
    lip_box: tuple[int, int, int, int]
    crop: AlignedCrop
    chin_box: tuple[int, int, int, int] = (0, 0, 0, 0)  # measure 7: below the lower lip

    @classmethod
    def from_points(cls, points: np.ndarray, frame_hw: tuple[int, int]) -> "Regions":
        """From face-mesh landmarks ``[468, 2 or 3]`` (frame pixels) of a frame ``frame_hw = (H, W)``."""
        p = np.asarray(points, np.float64)[:, :2]
        corners = p[[MOUTH_RIGHT, MOUTH_LEFT]]
        w = float(np.hypot(*(corners[1] - corners[0])))
        cx_lo, cx_hi = float(corners[:, 0].min()), float(corners[:, 0].max())
        nose_y, chin_y = float(p[NOSE_TIP, 1]), float(p[CHIN, 1])
        lower = _box(cx_lo - LOWER_FACE_WIDEN * w, cx_hi + LOWER_FACE_WIDEN * w, nose_y, chin_y, frame_hw)

        lips = p[list(LIPS_OUTER)]
        skin = _box(cx_lo, cx_hi, nose_y, float(p[list(UPPER_LIP_OUTER), 1].max()), frame_hw)
        x0, y0, x1, y1 = skin
        pad = LIPS_DILATE_PX + 1
        canvas = np.zeros((y1 - y0 + 2 * pad, x1 - x0 + 2 * pad), np.uint8)
        if canvas.size:
            # pixel index space: the centre of pixel i is at continuous coordinate i + 0.5
            poly = np.round((lips - 0.5 - np.array([x0 - pad, y0 - pad])) * 16).astype(np.int32)
            cv2.fillPoly(canvas, [poly], 1, lineType=cv2.LINE_8, shift=4)
            k = 2 * LIPS_DILATE_PX + 1
            canvas = cv2.dilate(canvas, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        mask = canvas[pad:pad + y1 - y0, pad:pad + x1 - x0] == 0

        m = LIP_BOX_WIDEN * w
        lip = _box(lips[:, 0].min() - m, lips[:, 0].max() + m, lips[:, 1].min() - m, lips[:, 1].max() + m, frame_hw)
        crop = AlignedCrop.from_keypoints(FaceKeypoints.from_mediapipe(p), CROP_SIZE)
        lip_bottom = float(lips[:, 1].max()) + LIPS_DILATE_PX
        chin = _box(cx_lo, cx_hi, lip_bottom, (lip_bottom + chin_y) / 2.0, frame_hw)
        return cls(lower, skin, mask, lip, crop, chin)


def _laplacian_var(frame: np.ndarray, box) -> float | None:
    x0, y0, x1, y1 = box
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    h, w = frame.shape[:2]
    rx0, ry0, rx1, ry1 = max(0, x0 - 1), max(0, y0 - 1), min(w, x1 + 1), min(h, y1 + 1)
    grey = cv2.cvtColor(np.ascontiguousarray(frame[ry0:ry1, rx0:rx1]), cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_64F, ksize=3)
    return float(lap[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0].var())


def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map of two luma images (float64, 0-255), Gaussian window sigma 1.5 (11x11)."""
    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a * mu_a
    sbb = blur(b * b) - mu_b * mu_b
    sab = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + _SSIM_C1) * (2 * sab + _SSIM_C2)) / \
        ((mu_a * mu_a + mu_b * mu_b + _SSIM_C1) * (saa + sbb + _SSIM_C2))


class _PixelAccumulator:
    """Sums of measures 1, 2 and 4 over frames for one video against the input."""

    def __init__(self, lip: bool):
        self.lip = lip
        self.ratios: list[float] = []
        self.var_in: list[float] = []
        self.var_out: list[float] = []
        self.skin_sse, self.skin_n, self.skin_frames = 0.0, 0, 0
        self.lip_sse, self.lip_n, self.lip_frames = 0.0, 0, 0
        self.ssim_sum, self.ssim_n = 0.0, 0
        self.shade: list[float] = []  # per frame: input minus output HSV value, mean over the box below the lower lip
        self.green_in = np.zeros(511, np.int64)  # lip box G - R (+ 255) of the input, all frames
        self.green_out: list[np.ndarray] = []  # ... of the other video, per frame

    def add(self, reg: Regions, a: np.ndarray, b: np.ndarray) -> float | None:
        """Add frame pair (input ``a``, other ``b``); returns this frame's sharpness ratio."""
        ratio = None
        va, vb = _laplacian_var(a, reg.lower_face), _laplacian_var(b, reg.lower_face)
        if va is not None and vb is not None:
            self.var_in.append(va)
            self.var_out.append(vb)
            if va > 1e-9:
                ratio = vb / va
                self.ratios.append(ratio)
        x0, y0, x1, y1 = reg.skin_box
        if reg.skin_mask.any():
            d = a[y0:y1, x0:x1][reg.skin_mask].astype(np.float64) - b[y0:y1, x0:x1][reg.skin_mask]
            self.skin_sse += float((d * d).sum())
            self.skin_n += d.size
            self.skin_frames += 1
        x0, y0, x1, y1 = reg.chin_box
        if x1 > x0 and y1 > y0:
            self.shade.append(float(a[y0:y1, x0:x1].max(axis=2).mean()) - float(b[y0:y1, x0:x1].max(axis=2).mean()))
        x0, y0, x1, y1 = reg.lip_box
        if x1 > x0 and y1 > y0:
            self.green_in += green_minus_red_histogram(a[y0:y1, x0:x1])
            self.green_out.append(green_minus_red_histogram(b[y0:y1, x0:x1]))
            if self.lip:
                pa = a[y0:y1, x0:x1].astype(np.float64)
                pb = b[y0:y1, x0:x1].astype(np.float64)
                d = pa - pb
                self.lip_sse += float((d * d).sum())
                self.lip_n += d.size
                self.lip_frames += 1
                s = _ssim_map(pa @ _LUMA, pb @ _LUMA)
                self.ssim_sum += float(s.sum())
                self.ssim_n += s.size
        return ratio

    def result(self) -> PixelMeasures:
        def psnr(sse, n):
            if n == 0:
                return None, None
            mse = sse / n
            return (math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)), mse

        skin_psnr, skin_mse = psnr(self.skin_sse, self.skin_n)
        lip_psnr, lip_mse = psnr(self.lip_sse, self.lip_n)
        med = (lambda xs: float(np.median(xs)) if xs else None)
        return PixelMeasures(
            sharpness_ratio=med(self.ratios), sharpness_in=med(self.var_in), sharpness_out=med(self.var_out),
            sharpness_frames=len(self.ratios),
            skin_psnr_db=skin_psnr, skin_mse=skin_mse, skin_pixels=self.skin_n // 3, skin_frames=self.skin_frames,
            lip_psnr_db=lip_psnr if self.lip else None, lip_mse=lip_mse if self.lip else None,
            lip_ssim=(self.ssim_sum / self.ssim_n if self.ssim_n else None) if self.lip else None,
            lip_pixels=self.lip_n // 3, lip_frames=self.lip_frames,
            shade_share=float(np.mean(np.asarray(self.shade) > SHADE_LEVELS)) if self.shade else None,
            shade_mean=float(np.mean(self.shade)) if self.shade else None, shade_frames=len(self.shade),
            **self._green(),
        )

    def _green(self) -> dict:
        """Measure 8 from the histograms."""
        if not self.green_out:
            return {}
        c = np.cumsum(self.green_in) / self.green_in.sum()
        above = int(np.searchsorted(c, GREEN_PERCENTILE / 100.0)) + GREEN_LEVELS + 1  # first bin counted
        h = np.stack(self.green_out)
        over, n = h[:, above:].sum(axis=1), h.sum(axis=1)
        return {"green_share": float(over.sum() / n.sum()), "green_frames": int((over > GREEN_FRAME_SHARE * n).sum()),
                "green_measured": len(n)}


# --------------------------------------------------------------------------------------
# Silence
# --------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``(start, stop)`` of True in a bool ``[N]``."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2])]


def silence_stillness(
    opening,
    envelope,
    fps: float = 25.0,
    *,
    min_silence_s: float = MIN_SILENCE_S,
    below_db: float = SILENCE_BELOW_DB,
    guard: int = GUARD_FRAMES,
    motion=None,
    input_opening=None,
) -> Silence:
    """Measure 5 on per-frame series: does the mouth stay still while the speech is silent?

    Args:
        opening: ``[F]`` lip opening per frame (NaN where not measured: left out).
        envelope: ``[F]`` speech envelope in dB above a floor, 0 in silence
            (``sync_check.speech_envelope``).
        fps: frames per second (sets how many frames ``min_silence_s`` is).
        min_silence_s: shortest silent stretch, seconds.
        below_db: a frame is silent when its envelope is more than this below the clip's 95th
            percentile (20 dB: 1 % of the loud-speech power), or 0.
        guard: frames at each end of a stretch that borders speech left out of the silent std;
            the boundary jump looks at the pair across each boundary and the ``guard`` pairs
            next to it inside the stretch.
        motion: ``[F - 1]`` pixel change of the mouth from frame ``t`` to ``t + 1`` (NaN where
            not measured), for ``motion_ratio``; ``None``: not measured.
        input_opening: ``[F]`` the input's own lip opening (NaN where not measured), for
            ``input_still_ratio``; ``None``: not measured.

    Returns:
        ``Silence`` (see there); with no stretch of ``min_silence_s`` its ratios are ``None``.
    """
    op = np.asarray(opening, np.float64)
    env = np.asarray(envelope, np.float64)
    if op.ndim != 1 or op.shape != env.shape:
        raise ValueError(f"opening and envelope must be [F] series of the same length, got {op.shape} and {env.shape}")
    if not (fps > 0 and min_silence_s > 0 and below_db > 0 and isinstance(guard, (int, np.integer)) and guard >= 0):
        raise ValueError(f"need fps > 0, min_silence_s > 0, below_db > 0 and an int guard >= 0; got {fps}, "
                         f"{min_silence_s}, {below_db}, {guard!r}")
    n = op.size
    if n < 2 or not np.any(env > 0):
        return Silence(None, (), 0, 0, None, None, None, None, 0, "no speech in the audio (the envelope is 0 throughout)")
    thr = float(np.percentile(env, 95)) - below_db
    silent = (env < thr) | (env <= 0)
    min_len = int(math.ceil(min_silence_s * fps - 1e-9))
    stretches = [(s, e) for s, e in _runs(silent) if e - s >= min_len]
    in_stretch = np.zeros(n, bool)
    core = np.zeros(n, bool)
    cores = [slice(s + (guard if s > 0 else 0), e - (guard if e < n else 0)) for s, e in stretches]
    for (s, e), c in zip(stretches, cores):
        in_stretch[s:e] = True
        core[c] = True
    ok = np.isfinite(op)
    speaking = ~in_stretch
    if not stretches:
        return Silence(thr, (), 0, int((speaking & ok).sum()), None, None, None, None, 0,
                       f"no silent stretch of >= {min_silence_s:g} s (envelope below {thr:.1f} dB) in this clip")
    notes = []
    so, sp = op[core & ok], op[speaking & ok]
    still = still_within = still_between = None
    if so.size < 2 or sp.size < 2:
        notes.append(f"too few measured frames for the stds ({so.size} silent, {sp.size} speaking)")
    elif sp.std() < 1e-12:
        notes.append("the lip opening does not change over the speaking frames: no scale to compare the silence with")
    else:
        still = float(so.std() / sp.std())
        within, between = _within_between(op, ok, cores)
        still_within = float(within / sp.std())
        still_between = None if between is None else float(between / sp.std())
    d = np.abs(np.diff(op))  # d[t]: frame t -> t + 1; NaN where either is missing
    near = np.zeros(n - 1, bool)  # pairs at a boundary: across it and `guard` into the silence
    n_bound = sum((s > 0) + (e < n) for s, e in stretches)
    for s, e in stretches:
        if s > 0:
            near[s - 1: min(e, s + guard)] = True  # pairs (s-1, s) ... (s-1+guard, s+guard)
        if e < n:
            near[max(s, e - 1 - guard): e] = True  # pairs (e-1-guard, e-guard) ... (e-1, e)
    fin = np.isfinite(d)
    bj = d[near & fin]
    within = d[speaking[:-1] & speaking[1:] & fin]
    boundary = float(bj.max()) if bj.size else None
    p95 = float(np.percentile(within, 95)) if within.size >= 2 else None
    jump = None
    if boundary is None:
        notes.append("no speech/silence boundary with a measured opening")
    elif p95 is None or p95 < 1e-12:
        notes.append("no frame-to-frame change within speech to compare the boundary jump with")
    else:
        jump = boundary / p95
    motion_ratio = None
    if motion is not None:
        mo = np.asarray(motion, np.float64)
        if mo.shape != (n - 1,):
            raise ValueError(f"motion must be [F - 1] = [{n - 1}] frame-to-frame changes, got {mo.shape}")
        ms, mp = mo[core[:-1] & core[1:] & np.isfinite(mo)], mo[speaking[:-1] & speaking[1:] & np.isfinite(mo)]
        if ms.size and mp.size and mp.mean() > 1e-12:
            motion_ratio = float(ms.mean() / mp.mean())
        else:
            notes.append("mouth motion: no measured pair of silent or of speaking frames, or no motion in speech")
    input_still = None
    if input_opening is not None:
        io = np.asarray(input_opening, np.float64)
        if io.shape != (n,):
            raise ValueError(f"input_opening must be [F] = [{n}] like opening, got {io.shape}")
        si = io[core & np.isfinite(io)]
        if still is not None and si.size >= 2:
            input_still = float(si.std() / sp.std())
    return Silence(thr, tuple(stretches), int(so.size), int(sp.size), still, boundary, p95, jump, n_bound,
                   "; ".join(notes), motion_ratio, still_within, still_between, input_still)


def _within_between(op: np.ndarray, ok: np.ndarray, cores: list[slice]) -> tuple[float, float | None]:
    """The silent frames' std (as ``silence_stillness`` pools them: ``cores``, each stretch less its
    guard frames) split into the std around each stretch's own mean and the frame-weighted std of the
    stretches' means (``None`` with fewer than two stretches measured); their squares add up to the
    pooled variance."""
    parts = [op[c][ok[c]] for c in cores]
    parts = [x for x in parts if x.size]
    total = sum(x.size for x in parts)
    mean = sum(float(x.sum()) for x in parts) / total
    within = math.sqrt(sum(float(((x - x.mean()) ** 2).sum()) for x in parts) / total)
    between = (math.sqrt(sum(x.size * (float(x.mean()) - mean) ** 2 for x in parts) / total)
               if len(parts) >= 2 else None)
    return within, between


# --------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------


def _name(x) -> str:
    return os.fspath(x) if isinstance(x, (str, os.PathLike)) else f"<array {tuple(np.shape(x))}>"


def _check_file(path, role: str, fix: str) -> None:
    if isinstance(path, (str, os.PathLike)) and not os.path.isfile(path):
        raise FileNotFoundError(f"{role} {os.fspath(path)!r} does not exist (cwd {os.getcwd()!r}); {fix}")


def _iter_frames(src) -> Iterator[np.ndarray]:
    if isinstance(src, (str, os.PathLike)):
        from .media import iter_video_frames

        yield from iter_video_frames(src)
    else:
        for f in src:
            yield np.asarray(f)


def _count(src) -> int:
    """Frames of a video file (declared by the container, else decoded and counted) or an array."""
    if not isinstance(src, (str, os.PathLike)):
        return len(src)
    from .media import probe

    n = probe(src).num_frames
    return n if n > 0 else sum(1 for _ in _iter_frames(src))


def _fps(src, given: float | None) -> float:
    if given is not None:
        return float(given)
    if isinstance(src, (str, os.PathLike)):
        from .media import probe

        return probe(src).fps or 25.0
    return 25.0


class _Pairs:
    """(i, input frame, output frame) in output order, re-iterable (each pass decodes again)."""

    def __init__(self, inp, out, input_order: str, fps: float, input_fps: float | None):
        self.inp, self.out, self.order = inp, out, input_order
        n_out = _count(out)
        if n_out == 0:
            raise ValueError(f"output video {_name(out)!r} has no frames; pass the video the lip-sync run wrote")
        self.n = n_out
        if input_order == "same":
            n_in = _count(inp)
            if n_in != n_out:
                raise ValueError(
                    f"output video {_name(out)!r} has {n_out} frames but input video {_name(inp)!r} has {n_in}; "
                    "pass the input at the output's length (the video the run was given, as it was fed), or "
                    "input_order='pingpong' (--input-order pingpong) when the run looped a shorter input back "
                    "and forth as `lipforce run` does")
            self.schedule = None
            self.frames_in = None
        elif input_order == "pingpong":
            from .cli import _video_schedule

            if isinstance(inp, (str, os.PathLike)):
                from .media import read_video

                self.frames_in, file_fps = read_video(inp)
                in_fps = float(input_fps or file_fps)
            else:
                self.frames_in = inp
                in_fps = float(input_fps or 25.0)
            if len(self.frames_in) == 0:
                raise ValueError(f"input video {_name(inp)!r} has no frames")
            self.schedule = _video_schedule(len(self.frames_in), in_fps, fps, n_out)
        else:
            raise ValueError(f"input_order must be 'same' or 'pingpong', got {input_order!r}")

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        return self.with_other(self.out)

    def with_other(self, other) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Pairs of the input (in output order) with the frames of ``other`` (the output, a control)."""
        ins = _iter_frames(self.inp) if self.schedule is None else None
        i = -1
        for i, b in enumerate(_iter_frames(other)):
            if i >= self.n:
                raise ValueError(f"{_name(other)!r} has more than the {self.n} frames it declared")
            a = next(ins, None) if ins is not None else np.asarray(self.frames_in[self.schedule[i]])
            if a is None:
                raise ValueError(f"input video {_name(self.inp)!r} ran out of frames at frame {i} of {_name(other)!r}; "
                                 "pass the input at the output's length or input_order='pingpong'")
            yield i, _check_frame(a, "input", self.inp, i), _match_size(_check_frame(b, "output", other, i), a, other)
        if i + 1 != self.n:
            raise ValueError(f"{_name(other)!r} gave {i + 1} frames, expected {self.n}; re-encode it")


def _check_frame(f: np.ndarray, role: str, src, i: int) -> np.ndarray:
    if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
        raise ValueError(f"{role} frame {i} of {_name(src)!r} must be RGB uint8 [H, W, 3], got {f.dtype} {f.shape}")
    return f


def _match_size(b: np.ndarray, a: np.ndarray, src) -> np.ndarray:
    if b.shape == a.shape:
        return b
    (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
    if 0 <= hb - ha <= 1 and 0 <= wb - wa <= 1:  # the writer pads odd sizes to even
        return b[:ha, :wa]
    raise ValueError(f"{_name(src)!r} has {wb}x{hb} frames but the input has {wa}x{ha}; compare the output "
                     "with the video the run was given, at its own size (no rescaling)")


def _box_change(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Mean absolute change (0-255, all channels) of ``box`` from frame ``a`` to frame ``b``."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return math.nan
    return float(np.abs(b[y0:y1, x0:x1].astype(np.int16) - a[y0:y1, x0:x1].astype(np.int16)).mean())


# --------------------------------------------------------------------------------------
# The measure
# --------------------------------------------------------------------------------------


def face_quality(
    input,
    output,
    audio,
    *,
    own_speech: bool = False,
    input_order: str = "same",
    control: bool = False,
    sheet: str | os.PathLike | None = None,
    sheet_frames: int = 8,
    fps: float | None = None,
    input_fps: float | None = None,
    sample_rate: int = SAMPLE_RATE,
    models=None,
) -> FaceQuality:
    """Measure how well ``output`` keeps the face of ``input`` (module docstring: the measures).

    Args:
        input: the video the lip-sync run was given: a file, or RGB ``uint8 [F, H, W, 3]``.
        output: what the run wrote: a file, or frames as above.
        audio: the driving speech: a file (or a video with sound), or mono samples at
            ``sample_rate`` starting with frame 0.
        own_speech: the input video's own speech drove the run: also measure the lip box (4).
        input_order: ``"same"`` (input frame ``i`` for output frame ``i``; same frame counts) or
            ``"pingpong"`` (``lipforce run``'s loop of a shorter input).
        control: also measure the input re-encoded as H.264 (``PixelMeasures`` in ``control``).
        sheet: write the contact sheet PNG here.
        sheet_frames: frames on the sheet.
        fps: the output's frame rate (default: from the file, else 25).
        input_fps: the input's frame rate for ``"pingpong"`` (default: from the file, else 25).
        sample_rate: rate of ``audio`` samples when given as an array.
        models: ``(FaceDetector, LandmarkModel)`` to share (default: the bundled face mesh).

    Raises:
        FileNotFoundError: a file does not exist. ValueError: frame counts or sizes differ, bad
        frames or arguments. ``lipforce_sdk.face.FaceNotFoundError``: no face in any input frame.
    """
    from .face import FaceNotFoundError
    from .facemesh import FaceDetector, LandmarkModel, LandmarkTracker

    t0 = time.perf_counter()
    _check_file(input, "input video", "pass the video the lip-sync run was given (--input)")
    _check_file(output, "output video", "pass the video the lip-sync run wrote (--output)")
    _check_file(audio, "audio", "pass the speech that drove the run (--audio; a .wav or a video with sound)")
    if not (isinstance(sheet_frames, (int, np.integer)) and sheet_frames >= 1):
        raise ValueError(f"sheet_frames must be an int >= 1, got {sheet_frames!r}")
    if sheet is not None and not os.path.isdir(os.path.dirname(os.path.abspath(sheet))):
        raise FileNotFoundError(f"the folder of sheet {os.fspath(sheet)!r} does not exist; create it first")
    fps = _fps(output, fps)
    if isinstance(audio, (str, os.PathLike)):
        from .media import read_audio

        samples, sr = read_audio(audio, sample_rate=SAMPLE_RATE), SAMPLE_RATE
    else:
        samples, sr = np.asarray(audio), int(sample_rate)
    pairs = _Pairs(input, output, input_order, fps, input_fps)
    det, lmm = models if models is not None else (FaceDetector(), LandmarkModel())
    in_tr = LandmarkTracker(det, lmm, smoothing=False, fps=fps)
    out_tr = LandmarkTracker(det, lmm, smoothing=False, fps=fps)

    regions: list[Regions | None] = []
    opening: list[float] = []
    opening_in: list[float] = []  # the input's own, for the silence measure's reference
    motion: list[float] = []  # output lip box, frame t-1 -> t (the input's box of frame t)
    prev_b = None
    acc = _PixelAccumulator(own_speech)
    out_missing = 0
    with tempfile.TemporaryDirectory(prefix="lipforce_fq_") as tmp:
        writer = None
        if control:
            from .media import VideoWriter

            ctl_path = os.path.join(tmp, "control.mp4")
            writer = VideoWriter(ctl_path, fps)
        try:
            for _, a, b in pairs:
                lm_in = in_tr.update(a)
                lm_out = out_tr.update(b)  # every frame, so the output's tracking stays continuous
                reg = Regions.from_points(lm_in.points, a.shape[:2]) if lm_in is not None else None
                regions.append(reg)
                if reg is not None:
                    acc.add(reg, a, b)
                    out_missing += lm_out is None
                opening.append(lm_out.lip_opening() if (reg is not None and lm_out is not None) else math.nan)
                opening_in.append(lm_in.lip_opening() if lm_in is not None else math.nan)
                if prev_b is not None:
                    motion.append(_box_change(prev_b, b, reg.lip_box) if reg is not None else math.nan)
                prev_b = b
                if writer is not None:
                    writer.write(a)
        finally:
            if writer is not None:
                writer.close()
        n = len(regions)
        face = np.array([r is not None for r in regions])
        if not face.any():
            raise FaceNotFoundError(
                f"the face mesh found no face in any of the {n} frames of input video {_name(input)!r}; the measures "
                "need a frontal to three-quarter face at least ~40 px wide: check that this is the video the run "
                "was given")
        ctl = None
        if control:
            cacc = _PixelAccumulator(own_speech)
            for i, a, c in pairs.with_other(ctl_path):
                if regions[i] is not None:
                    cacc.add(regions[i], a, c)
            ctl = cacc.result()

    op = np.array(opening)
    env = speech_envelope(samples, sr, fps, n)
    notes: list[str] = []
    sync = _lip_sync(op, env, fps, notes)
    silence = silence_stillness(op, env, fps, motion=np.array(motion, np.float64),
                                input_opening=np.array(opening_in, np.float64))
    pixels = acc.result()
    picks: tuple[int, ...] = ()
    if sheet is not None:
        picks = _pick_frames(face, env, silence, sheet_frames)
        _write_sheet(sheet, pairs, regions, picks, env, silence, pixels, sync)
    return FaceQuality(
        input=_name(input), output=_name(output), audio=_name(audio), fps=fps, input_order=input_order, own_speech=own_speech,
        frames=n, face_frames=int(face.sum()), skipped_frames=int(n - face.sum()), output_face_missing=int(out_missing),
        pixels=pixels, control=ctl, sync=sync, silence=silence, opening=op, envelope=env,
        seconds=time.perf_counter() - t0, sheet=None if sheet is None else os.fspath(sheet), sheet_frames=picks,
        notes=tuple(notes))


def _filled(op: np.ndarray) -> np.ndarray:
    """``op`` with its NaNs (frames without a measurement) interpolated from their neighbours."""
    ok = np.isfinite(op)
    t = np.arange(op.size)
    return np.interp(t, t[ok], op[ok])


def _lip_sync(op: np.ndarray, env: np.ndarray, fps: float, notes: list[str]) -> LipSync | None:
    n = op.size
    ok = np.isfinite(op)
    need = max(int(math.ceil(0.5 * n)), 2 * MAX_LAG + 3)
    if ok.sum() < need:
        notes.append(f"lip opening vs speech not measured: {int(ok.sum())} of {n} frames have an output opening "
                     f"(need {need})")
        return None
    score = score_series(_filled(op), env, fps=fps, max_lag=MAX_LAG)
    p95 = mx = None
    count = 0
    if n > 2 * math.ceil(NULL_SHIFT_S * fps):
        null = null_correlations(score, NULL_SHIFT_S)
        p95, mx, count = float(np.percentile(null, 95)), float(null.max()), int(null.size)
    else:
        notes.append(f"no null for the lip opening: the clip ({n} frames) is not longer than "
                     f"2 x {NULL_SHIFT_S:g} s")
    return LipSync(float(score.correlation), int(score.lag), p95, mx, count, int(ok.sum()), int(n - ok.sum()))


# --------------------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------------------


def _pick_frames(face: np.ndarray, env: np.ndarray, silence: Silence, k: int) -> tuple[int, ...]:
    """The loudest face frame of each of ``k - 1`` equal stretches, and a silent one (sorted)."""
    idx = np.flatnonzero(face)
    if idx.size <= k:
        return tuple(int(i) for i in idx)
    quiet = None
    if silence.stretches:
        s, e = max(silence.stretches, key=lambda r: r[1] - r[0])
        inside = idx[(idx >= s) & (idx < e)]
        if inside.size:
            quiet = int(inside[inside.size // 2])
    if quiet is None:
        quiet = int(idx[np.argmin(env[idx])])
    rest = idx[idx != quiet]
    picks = {quiet}
    for part in np.array_split(rest, k - 1):
        if part.size:
            picks.add(int(part[np.argmax(env[part])]))
    return tuple(sorted(picks))


def _label(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.45) -> None:
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _write_sheet(path, pairs: _Pairs, regions, picks, env, silence: Silence, pixels: PixelMeasures,
                 sync: LipSync | None) -> None:
    crops: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    want = set(picks)
    for i, a, b in pairs:
        if i in want:
            c = regions[i].crop
            crops[i] = (c.crop(a), c.crop(b))
    tile = CROP_SIZE * SHEET_SCALE
    strip, gap, head = 18, 8, 26
    cols = min(len(picks), SHEET_COLUMNS)
    rows = int(math.ceil(len(picks) / cols))
    height = head + rows * (2 * (strip + tile) + gap)
    sheet = np.full((height, cols * tile + (cols - 1) * 4, 3), 32, np.uint8)
    silent = np.zeros(env.size, bool)
    for s, e in silence.stretches:
        silent[s:e] = True
    _label(sheet, "  ".join([
        f"sharpness out/in {_fmt(pixels.sharpness_ratio, '.2f')}",
        f"skin PSNR {_fmt(pixels.skin_psnr_db, '.1f')} dB",
        f"lip r {_fmt(sync and sync.r, '.2f')} (null p95 {_fmt(sync and sync.null_p95, '.2f')})",
        f"silent/speaking {_fmt(silence.still_ratio, '.2f')}",
    ]), 6, 18, 0.5)
    for k, i in enumerate(picks):
        r, c = divmod(k, cols)
        x = c * (tile + 4)
        y = head + r * (2 * (strip + tile) + gap)
        level = "silent" if silent[i] else f"speech {env[i]:.0f} dB"
        for j, (img, tag) in enumerate(zip(crops[i], ("in", "out"))):
            yy = y + j * (strip + tile)
            _label(sheet, f"frame {i} {tag}  {level}", x + 4, yy + 13)
            sheet[yy + strip: yy + strip + tile, x: x + tile] = cv2.resize(
                img, (tile, tile), interpolation=cv2.INTER_NEAREST)
    if not cv2.imwrite(os.fspath(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"could not write the contact sheet {os.fspath(path)!r}; give a .png path in a writable folder")


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m lipforce_sdk.face_quality``: print the table, write the JSON and the sheet."""
    ap = argparse.ArgumentParser(
        prog="python -m lipforce_sdk.face_quality",
        description="Does a lip-sync output keep the face? Compares the output video with its input.")
    ap.add_argument("--input", required=True, help="the video the lip-sync run was given")
    ap.add_argument("--output", required=True, help="the video it wrote (same frame size; 25 fps)")
    ap.add_argument("--audio", required=True, help="the speech that drove the run")
    ap.add_argument("--own-speech", action="store_true",
                    help="the input video's own speech drove it: also compare the lip box with the input")
    ap.add_argument("--input-order", choices=("same", "pingpong"), default="same",
                    help="same: input frame i for output frame i (same frame counts); pingpong: the back-and-forth "
                         "loop `lipforce run` makes of a shorter input")
    ap.add_argument("--control", action="store_true", help="also measure the input re-encoded as H.264")
    ap.add_argument("--sheet", help="write a PNG contact sheet of input vs output mouth crops here")
    ap.add_argument("--sheet-frames", type=int, default=8, help="frames on the contact sheet (default 8)")
    ap.add_argument("--json", help="write the numbers (and the per-frame series) as JSON here")
    args = ap.parse_args(argv)
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        print(f"error: the folder of --json {args.json!r} does not exist; create it first", file=sys.stderr)
        return 2
    try:
        q = face_quality(args.input, args.output, args.audio, own_speech=args.own_speech,
                         input_order=args.input_order, control=args.control, sheet=args.sheet,
                         sheet_frames=args.sheet_frames)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(q.to_markdown())
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(q.to_dict(), f, indent=1, allow_nan=False)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
