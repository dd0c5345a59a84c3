"""`python -m distill.articulation`: how much of the rig's exact mouth a model draws."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

pytest.importorskip("torch")

from distill.articulation import opening_amplitude  # noqa: E402


def _speech_envelope(n):
    env = np.zeros(n)
    env[10:n - 10] = 1.0 + 0.1 * np.sin(np.arange(n - 20))
    return env


def test_amplitude_is_the_std_ratio_and_r_finds_the_lag():
    rng = np.random.default_rng(0)
    n = 120
    exact = 0.1 + 0.05 * rng.standard_normal(n)
    env = _speech_envelope(n)
    model = 0.08 + 0.3 * np.roll(exact - 0.1, 2)  # 0.3 of the motion, two frames late
    e_std, m_std, amp, r, lag = opening_amplitude(model, exact, env)
    speaking = env > np.percentile(env, 60)
    assert e_std == pytest.approx(np.std(exact[speaking]))
    assert amp == pytest.approx(m_std / e_std)
    assert 0.2 < amp < 0.4  # the roll moves a few values across the speaking frames' edge
    assert lag == 2 and r > 0.99
    # a mouth that does not follow: r near 0 at every lag
    _, _, _, r0, _ = opening_amplitude(0.1 + 0.05 * rng.standard_normal(n), exact, env)
    assert r0 < 0.4


def test_frames_without_a_face_are_left_out_and_too_few_refused():
    n = 60
    exact = np.linspace(0, 0.3, n) % 0.1
    model = exact.copy()
    model[::3] = np.nan
    env = _speech_envelope(n)
    _, _, amp, r, lag = opening_amplitude(model, exact, env)
    assert amp == pytest.approx(1.0) and r == pytest.approx(1.0) and lag == 0
    with pytest.raises(ValueError, match="too few"):
        opening_amplitude(np.full(n, np.nan), exact, env)
    with pytest.raises(ValueError, match="one length"):
        opening_amplitude(model[:-1], exact, env)


def test_probe_on_the_bundled_photo_writes_its_clips_and_a_row(tmp_path, capsys):
    import cv2

    from distill.articulation import main

    face = REPO / "lipforce_sdk" / "assets" / "photo" / "face.mp4"
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 128, np.uint8))
    out = tmp_path / "art"
    assert main(["--faces", str(blank), str(face), "--out", str(out), "--sentences", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    (row,) = res["rows"]
    assert row["face"] == "face.mp4" and row["frames"] > 25
    assert row["exact_std"] > 0.02  # the rig's mouth speaks
    assert 0 < row["amplitude"] < 3 and -1 <= row["r"] <= 1 and abs(row["lag"]) <= 2
    for suffix in ("rest.mp4", "exact.mp4", "model.mp4", "wav"):
        assert (out / f"face.0.{suffix}").is_file()
    assert "| face.mp4 | 0 |" in (out / "results.md").read_text()
    (skip,) = res["skipped"]  # a face that cannot be used is listed, the others measured
    assert skip["face"] == str(blank) and "no face found" in skip["why"]
    captured = capsys.readouterr()
    assert "amplitude" in captured.out and "skipped" in captured.err


def test_probe_says_what_is_wrong_with_its_input(tmp_path, capsys):
    import cv2

    from distill.articulation import main

    assert main(["--faces", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 128, np.uint8))
    assert main(["--faces", str(blank), "--out", str(tmp_path / "o")]) == 1
    assert "no face could be measured" in capsys.readouterr().err
    assert main(["--faces", str(blank), "--out", str(tmp_path / "o"), "--sentences", "0"]) == 1
    assert not (tmp_path / "o" / "results.json").exists()
