"""`python -m distill.follow`: whether a model's mouth follows the sound, per clip, in latent space."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

torch = pytest.importorskip("torch")

from distill.follow import main, motion_scores  # noqa: E402
from lipforce_sdk.session import default_model_dir  # noqa: E402


def test_motion_scores_measure_amplitude_and_correlation_after_each_windows_mean():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 8, 5, 5, generator=g)
    where = torch.zeros(1, 1, 1, 5, 5, dtype=torch.bool)
    where[..., 1:4, 1:4] = True
    assert motion_scores(z, z, where) == pytest.approx((1.0, 1.0))
    offset = torch.randn(3, 4, 1, 5, 5, generator=g)  # a still difference per window is not motion
    assert motion_scores(2 * z + offset, z, where) == pytest.approx((2.0, 1.0))
    assert motion_scores(-0.5 * z, z, where) == pytest.approx((0.5, -1.0))
    m, r = motion_scores(offset.expand_as(z), z, where)  # a mouth that does not move
    assert m == pytest.approx(0.0, abs=1e-6) and np.isnan(r)
    noise = torch.randn(z.shape, generator=g)
    m, r = motion_scores(noise, z, where)  # unrelated motion: about as large, uncorrelated
    assert 0.8 < m < 1.25 and abs(r) < 0.15
    out = z.clone()
    out[..., 0, 0] = 100.0  # outside `where`: not counted
    assert motion_scores(out, z, where) == pytest.approx((1.0, 1.0))


def test_follow_scores_each_clip_and_refuses_models_of_another_vae(tmp_path, capsys):
    data = tmp_path / "clips"
    data.mkdir()
    photo = REPO / "lipforce_sdk" / "assets" / "photo"
    shutil.copy(photo / "face.mp4", data / "face.mp4")
    shutil.copy(photo / "speech.wav", data / "face.wav")
    out = tmp_path / "rows.json"
    args = ["--clips", str(data), "--model", str(default_model_dir()), "--work", str(tmp_path / "w"),
            "--json", str(out), "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| default | face |" in text and "| default | mean of 1 clips |" in text
    (row,) = json.loads(out.read_text())
    assert row["clip"] == "face" and row["windows"] >= 2
    assert 0.0 <= row["motion"] and -1.0 <= row["own"] <= 1.0 and -1.0 <= row["other"] <= 1.0
    assert row["own"] != row["other"]  # another moment's speech renders another mouth

    other = tmp_path / "other_vae"
    shutil.copytree(default_model_dir(), other)
    from safetensors.torch import load_file, save_file

    sd = load_file(str(other / "vae.safetensors"))
    k = next(iter(sd))
    sd[k] = sd[k] + 1e-3
    save_file(sd, str(other / "vae.safetensors"))
    assert main(args[:3] + [str(other)] + args[4:]) == 1
    assert "share one VAE" in capsys.readouterr().err
    assert main(args[:3] + [str(default_model_dir()), str(other)] + args[4:]) == 1
    assert main(["--clips", str(data), "--model", str(tmp_path)]) == 1
    assert "not a model directory" in capsys.readouterr().err
