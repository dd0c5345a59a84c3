"""`python -m distill.realeval`'s table: one cell per column, the lip box's green share and the shaded
frames in percent."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))

from distill.realeval import _lip_box_still, to_markdown  # noqa: E402


def _row(**kw):
    row = {"clip": "face", "mode": "new speech", "sharpness": 0.83, "skin_db": 38.9, "lip_r": 0.55, "lip_lag": 1,
           "null_p95": 0.24, "lip_box_db": None, "lip_box_ssim": None, "lip_box_after_db": None,
           "silence_ratio": 0.36, "jump_ratio": 0.27, "motion_ratio": 0.70, "green_share": 0.0037,
           "control_sharpness": 1.03, "control_skin_db": 40.8}
    row.update(kw)
    return row


def _split(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def _table(rows) -> tuple[list[str], list[list[str]]]:
    """``to_markdown(rows)`` read back: its header's column names and each row's cells."""
    lines = to_markdown(rows).splitlines()
    return _split(lines[0]), [_split(line) for line in lines[2:]]


def test_every_row_has_a_cell_per_column_and_the_green_share_in_percent():
    own = _row(mode="own speech", lip_box_db=21.2, lip_box_ssim=0.737, green_share=None)
    lines = to_markdown([_row(), own]).splitlines()
    assert len(lines) == 4
    for line in lines[1:]:
        assert line.count("|") == lines[0].count("|"), line
    head, cells = _table([_row(), own])
    assert "lip box green %" in head
    k = head.index("lip box green %")
    assert cells[0][k] == "0.37" and cells[1][k] == "-"  # a share of 0.0037 is 0.37 %; not measured: -
    assert cells[1][head.index("lip box dB / SSIM")] == "21.2 / 0.737"
    k = head.index("silence std ratio (the input's own)")
    assert cells[0][k] == "0.36 (-)" and cells[1][k] == "0.36 (-)"  # results written before it was measured


def test_the_shaded_frames_below_the_lip_in_percent():
    rows = [_row(shade_share=0.004), _row(mode="own speech")]  # older results: not measured
    head, cells = _table(rows)
    k = head.index("shaded below the lip %")
    assert cells[0][k] == "0.4" and cells[1][k] == "-"


def test_the_silence_ratio_beside_the_inputs_own():
    head, cells = _table([_row(silence_input_ratio=0.59)])
    assert cells[0][head.index("silence std ratio (the input's own)")] == "0.36 (0.59)"


def test_the_still_mouths_lip_box_beside_the_speaking_ones():
    own = _row(mode="own speech", lip_box_db=21.2, lip_box_ssim=0.737, lip_box_still_db=22.97)
    head, cells = _table([_row(), own])
    k = head.index("lip box of a still mouth dB")
    assert head.index("lip box dB / SSIM") < k
    assert cells[0][k] == "-" and cells[1][k] == "23.0"  # new speech: no ground truth; own: one decimal


def test_the_still_mouth_is_the_clip_driven_by_silence_as_long_as_its_speech(tiny_engine, tmp_path):
    """``--still-baseline``: the clip run again on silence of its own speech's length, the lip box of that
    output against the real frames."""
    import numpy as np

    from lipforce_sdk.media import read_audio, read_video, write_wav

    photo = Path(__file__).resolve().parents[1] / "lipforce_sdk" / "assets" / "photo"
    own = tmp_path / "own.wav"
    write_wav(own, read_audio(photo / "speech.wav", 16000)[:24320])  # 38 frames of 640 samples
    db = _lip_box_still(tiny_engine, photo / "face.mp4", own, tmp_path / "still.mp4")
    quiet = read_audio(tmp_path / "still.wav", 16000)
    assert len(quiet) == 24320 and not np.any(quiet)
    assert len(read_video(tmp_path / "still.mp4")[0]) == 38  # one frame per 640 samples at 25 fps
    assert db is not None and 20.0 < db < 60.0


def test_the_runs_passing_each_bar():
    from distill.realeval import criteria

    rows = [_row(),                                                   # passes all it measures but silence
            _row(sharpness=0.69, lip_r=0.3, jump_ratio=1.2, silence_ratio=0.2),
            _row(lip_r=0.5, null_p95=0.55, skin_db=29.9),              # r over 0.4 but under its null
            _row(mode="own speech", lip_box_db=24.4, lip_box_still_db=25.5, silence_ratio=None),
            _row(mode="own speech", lip_box_db=21.2, lip_box_still_db=float("nan"))]
    got = {name: (k, n) for name, k, n in criteria(rows)}
    assert got["sharpness >= 0.7"] == (4, 5)
    assert got["skin >= 30 dB"] == (4, 5)
    assert got["lip r >= 0.4, above its null"] == (3, 5)
    assert got["silence std ratio <= 0.2"] == (1, 4)  # 0.2 passes; None is not measured
    assert got["boundary jump <= 1"] == (4, 5)
    assert got["own-speech lip box >= 24 dB"] == (1, 2)
    assert got["own-speech lip box above the still mouth's"] == (0, 1)  # NaN is not measured
