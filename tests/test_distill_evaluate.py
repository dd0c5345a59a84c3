"""Held-out evaluation (distill/evaluate.py): the measures on ground truth and on the unchanged
input, the tolerances against pixel noise, and ONNX Runtime against torch on the bundled model."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))

pytest.importorskip("torch", reason="the sync scorer needs torch (pip install 'lipforce[torch]')")

from lipforce_sdk.face import mouth_mask  # noqa: E402

from distill.data import make_sample_pair  # noqa: E402
import distill.evaluate as ev  # noqa: E402
from distill.evaluate import (METRICS, PIXEL_TOLERANCE, TOLERANCES, _diff, _offset_diff,  # noqa: E402
                              aligned_crops, compare_backends, cut_pair, held_out_pairs, results_table,
                              score_clip)
from distill.speech import espeak_available  # noqa: E402
from distill.syncnet import SyncScorer  # noqa: E402

needs_espeak = pytest.mark.skipif(
    not espeak_available(),
    reason="espeak-ng is not installed (libespeak-ng.so.1 not found): `apt-get install espeak-ng`")

FRAMES = 40


@pytest.fixture(scope="module")
def scorer():
    return SyncScorer.load()


SIZE = 256  # held-out pairs are rendered as 256 x 256 frames, cut by the runtime's geometry


@pytest.fixture(scope="module")
def full_pair():
    return make_sample_pair(0, "held_out", SIZE)


@pytest.fixture(scope="module")
def pair(full_pair):
    return cut_pair(full_pair, FRAMES)


@needs_espeak
def test_held_out_pairs_are_cut_consistently(full_pair):
    (p,) = held_out_pairs(1, max_frames=FRAMES)
    f = FRAMES
    assert full_pair.target.shape[0] > f
    assert p.source.shape == p.target.shape == (f, SIZE, SIZE, 3)
    assert p.audio.shape == (f * 640,) and p.speech.audio.shape == (f * 640,)
    assert p.speech_src.audio.shape == (f * 640,)
    assert p.params.shape[0] == p.params_src.shape[0] == p.geometry.values.shape[0] == f
    np.testing.assert_array_equal(p.target, full_pair.target[:f])
    np.testing.assert_array_equal(p.source, full_pair.source[:f])
    np.testing.assert_array_equal(p.audio, full_pair.audio[: f * 640])
    np.testing.assert_array_equal(p.geometry.values, full_pair.geometry.values[:f])
    assert cut_pair(full_pair, 10_000) is full_pair


@needs_espeak
def test_scored_crops_are_the_runtime_crops(pair):
    """The scorer sees the mouth crops the runtime cuts from the source (exact keypoints)."""
    from lipforce_sdk.geometry import AlignedCrop

    from distill.evaluate import pair_keypoints

    crops = aligned_crops(pair.source, pair)
    kps = pair_keypoints(pair)
    assert crops.shape == (pair.source.shape[0], 128, 128, 3)
    raw = AlignedCrop.from_keypoints(kps[0], 128).crop(pair.source[0])
    np.testing.assert_array_equal(crops[0], raw)  # the first frame is unsmoothed


@needs_espeak
def test_ground_truth_scores_as_ground_truth(pair, scorer):
    gt = score_clip(pair.target, pair, scorer)
    src = score_clip(pair.source, pair, scorer)
    assert set(gt) == set(METRICS)
    assert gt["psnr_out"] == math.inf and gt["psnr_in"] == math.inf
    assert gt["ssim_out"] == pytest.approx(1.0) and gt["ssim_in"] == pytest.approx(1.0)
    assert gt["offset"] == 0
    assert gt["gap_mae_px"] < 1.0 and gt["gap_corr"] > 0.8
    # the source mouth says another sentence
    assert gt["sync_c"] > src["sync_c"] + 0.2, (gt, src)
    assert gt["sync_d"] < src["sync_d"] - 0.1, (gt, src)
    assert src["gap_mae_px"] > gt["gap_mae_px"] + 0.3
    assert src["psnr_out"] == math.inf  # source and target are equal outside the mouth
    assert 20.0 < src["psnr_in"] < 45.0


@needs_espeak
def test_tolerances_hold_under_one_level_noise_but_not_a_new_mouth(pair, scorer):
    """+-1 level on every mouth pixel stays within the tolerances; the source mouth does not."""
    base = score_clip(pair.source, pair, scorer)
    rng = np.random.default_rng(3)
    m = (mouth_mask(SIZE) > 0)[None, :, :, None]
    noisy = np.clip(pair.source.astype(int) + rng.integers(-1, 2, pair.source.shape) * m, 0, 255).astype(np.uint8)
    assert np.abs(noisy.astype(int) - pair.source).max() <= PIXEL_TOLERANCE
    got = score_clip(noisy, pair, scorer)
    for k in METRICS:
        assert _diff(got[k], base[k]) <= TOLERANCES[k], (k, got[k], base[k])
    new = score_clip(pair.target, pair, scorer)
    far = [k for k in ("sync_c", "sync_d", "gap_mae_px", "gap_corr", "psnr_in", "ssim_in")
           if _diff(new[k], base[k]) > TOLERANCES[k]]
    assert len(far) == 6, far


def test_difference_rules():
    assert _diff(math.inf, math.inf) == 0.0 and _diff(math.nan, math.nan) == 0.0
    assert _diff(math.nan, 0.3) == math.inf and _diff(30.0, math.inf) == math.inf
    assert _diff(0.25, 0.5) == 0.25
    d = np.full(31, 1.0)  # offsets -15 .. 15
    d[15], d[16], d[5] = 0.5, 0.505, 0.9
    assert _offset_diff(d, 0.0, 1.0, tie=0.01) == 0.0  # a tie at +1
    assert _offset_diff(d, 0.0, -10.0, tie=0.01) == 10.0
    assert _offset_diff(d, 0.0, 0.0, tie=0.0) == 0.0


def test_out_of_tolerance_fails_and_exits_1(monkeypatch, capsys):
    """A backend 0.05 off in Sync-C and 5 levels off in pixels: FAIL, and the command exits 1."""
    base = {k: 0.5 for k in METRICS}
    frames = np.zeros((4, 8, 8, 3), np.uint8)

    def summ(name, d, px):
        row = {**base, "sync_c": base["sync_c"] + d}
        return ev.Summary(name, [row], row, [np.zeros(31)], 0.1, [frames + px])

    sums = {"torch": summ("torch", 0.0, 0), "onnxruntime": summ("onnxruntime", 0.05, 5)}
    md = {b: {k: _diff(s.clips[0][k], sums["torch"].clips[0][k]) for k in METRICS} for b, s in sums.items()}
    res = ev.BackendComparison(sums, {}, md, {"torch": 0, "onnxruntime": 5}, {}, clips=1, frames=4)
    res.passed = {b: not res.failures(b) for b in sums}
    assert res.failures("onnxruntime") == ["sync_c", "pixels"] and not res.ok
    assert "onnxruntime vs torch: FAIL (sync_c, pixels)" in res.to_markdown()
    monkeypatch.setattr(ev, "compare_backends", lambda *a, **k: res)
    assert ev.main(["--clips", "1"]) == 1
    assert "| sync_c | 0.0100 | 0.5000 | 0.5500 | 0.0500 FAIL |" in capsys.readouterr().out


@needs_espeak
def test_wrong_frames_are_refused(pair, scorer):
    with pytest.raises(ValueError, match=r"shaped like pair.target"):
        score_clip(pair.target[:-1], pair, scorer)
    with pytest.raises(ValueError, match=r"shaped like pair.target"):
        score_clip(pair.target[:, :64, :64], pair, scorer)
    with pytest.raises(ValueError, match=r"uint8.*astype\(np.uint8\)"):
        score_clip(pair.target.astype(np.float32), pair, scorer)


@needs_espeak
def test_onnxruntime_matches_torch_on_the_bundled_model(tmp_path, scorer):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (pip install 'lipforce[onnx]')")
    res = compare_backends(backends=("torch", "onnxruntime"), clips=1, max_frames=FRAMES, out=tmp_path,
                           scorer=scorer, log=None)
    assert (tmp_path / "onnx" / "manifest.json").exists()
    assert list(res.summaries) == ["torch", "onnxruntime"] and res.frames == FRAMES
    for b in res.summaries.values():
        assert b.frames[0].shape == (FRAMES, SIZE, SIZE, 3) and b.seconds_per_frame > 0
    diffs = res.max_diff["onnxruntime"]
    assert all(diffs[k] <= TOLERANCES[k] for k in METRICS), diffs
    assert res.pixel_diff["onnxruntime"] <= PIXEL_TOLERANCE
    assert res.passed == {"torch": True, "onnxruntime": True} and res.ok
    # the engine leaves everything outside the mouth as it was
    assert res.summaries["torch"].clips[0]["psnr_out"] == math.inf
    table = res.to_markdown()
    assert "onnxruntime vs torch: PASS" in table and "| sync_c |" in table
    # the references are the ground truth and the input
    assert res.references["target"].mean["psnr_in"] == math.inf
    assert res.references["source"].mean["sync_d"] > res.references["target"].mean["sync_d"]
    rows = results_table([*res.summaries.values(), *res.references.values()]).splitlines()
    assert len(rows) == 2 + 4 and rows[0].startswith("|  | sync_c | sync_d | offset |")
    assert rows[4].startswith("| target | ") and "| inf |" in rows[4]
