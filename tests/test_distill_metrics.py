"""PSNR / SSIM in and out of the mouth region, and the mouth-gap estimator against the
renderer's exact geometry (distill/metrics.py). No espeak-ng needed."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))

from lipforce_sdk.face import mouth_mask_hard  # noqa: E402

from distill.faces import Identity, Motion, mouth_geometry, render_clip  # noqa: E402
from distill.metrics import (fidelity, inside_mouth, measure_mouth, mouth_error, outside_mouth, psnr,  # noqa: E402
                             ssim, ssim_map)

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _brute_ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Wang et al. SSIM with an explicit 11 x 11 Gaussian window (sigma 1.5), one channel,
    at the pixels at least 5 from the border."""
    g = np.exp(-(np.arange(-5, 6) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    h, wd = x.shape
    out = np.zeros((h - 10, wd - 10))
    for i in range(5, h - 5):
        for j in range(5, wd - 5):
            px, py = x[i - 5: i + 6, j - 5: j + 6], y[i - 5: i + 6, j - 5: j + 6]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            out[i - 5, j - 5] = ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
    return out


def test_identical_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    assert psnr(a, a) == float("inf")
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    f = fidelity(a, a.copy())
    assert f["psnr_out"] == float("inf") and f["psnr_in"] == float("inf")
    assert f["ssim_out"] == pytest.approx(1.0) and f["ssim_in"] == pytest.approx(1.0)


def test_psnr_known_value_and_mask():
    a = np.zeros((32, 32, 3), np.uint8)
    b = np.full((32, 32, 3), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100.0), abs=1e-9)  # 28.13 dB
    m = np.zeros((32, 32), np.float32)
    m[:16] = 1
    c = a.copy()
    c[16:] = 50  # errors only where the mask is 0
    assert psnr(a, c, mask=m) == float("inf")
    assert psnr(a, c, mask=1 - m) == pytest.approx(10 * np.log10(255**2 / 2500.0))
    with pytest.raises(ValueError, match="mask"):
        psnr(a, c, mask=np.ones((8, 8)))
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, c[:10])


def test_ssim_matches_an_independent_computation():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (26, 30)).astype(np.float64)
    y = np.clip(x + rng.normal(0, 25, x.shape), 0, 255)
    ref = _brute_ssim_map(x, y)
    np.testing.assert_allclose(ssim_map(x, y)[5:-5, 5:-5], ref, rtol=1e-9, atol=1e-12)
    assert ssim(x, y) == pytest.approx(ref.mean(), rel=1e-9)
    # constant images: only the luminance term is left
    a, b = np.full((20, 20), 100.0), np.full((20, 20), 120.0)
    assert ssim(a, b) == pytest.approx((2 * 100 * 120 + C1) / (100**2 + 120**2 + C1), rel=1e-12)
    # colour: the mean of the channels
    xc = np.stack([x, 255 - x, x / 2], -1)
    yc = np.stack([y, 255 - y, y / 2], -1)
    per = np.mean([_brute_ssim_map(xc[..., c], yc[..., c]).mean() for c in range(3)])
    assert ssim(xc, yc) == pytest.approx(per, rel=1e-9)


def test_regions():
    s = 128
    out, ins = outside_mouth(s), inside_mouth(s)
    hard = mouth_mask_hard(s) > 0
    np.testing.assert_array_equal(ins > 0, hard)
    assert not (out > 0)[hard].any()
    # every outside pixel's 11 x 11 window misses the mask: count mask pixels per window
    from scipy.signal import convolve2d

    count = convolve2d(hard.astype(float), np.ones((11, 11)), mode="same")
    assert np.all(count[out > 0] == 0)
    assert np.all(count[(out == 0) & ~hard] > 0)  # and nothing more is left out
    assert 0.3 < out.mean() < 0.8
    # a change inside the mouth leaves the outside scores perfect
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8)
    b = a.copy()
    b[:, hard] = 255 - b[:, hard]
    f = fidelity(b, a)
    assert f["psnr_out"] == float("inf") and f["ssim_out"] == pytest.approx(1.0)
    assert f["psnr_in"] < 10 and f["ssim_in"] < 0.5


def test_mouth_estimator_recovers_the_rendered_geometry():
    """Gap height within 0.6 px on average (1 px for gaps >= 3 px at the 90th percentile),
    width within 1.5 px where the gap is >= 3 px, over random identities, poses and shapes."""
    rng = np.random.default_rng(3)
    est, tru = [], []
    for seed in range(16):
        idt, mo = Identity.random(500 + seed), Motion.random(500 + seed)
        p = rng.uniform(0, 1, (6, 4)).astype(np.float32)
        p[0] = 0.0  # one closed mouth per identity
        est.append(measure_mouth(render_clip(idt, mo, p)))
        tru.append(mouth_geometry(idt, mo, p).values)
    est, tru = np.concatenate(est), np.concatenate(tru)
    err = est - tru
    msg = f"gap err mean {np.abs(err[:, 0]).mean():.2f}, width err (gap>=3) {np.abs(err[tru[:, 0] >= 3, 1]).mean():.2f}"
    assert np.abs(err[:, 0]).mean() < 0.6, msg
    assert np.percentile(np.abs(err[tru[:, 0] >= 3, 0]), 90) < 1.0, msg
    assert np.abs(err[tru[:, 0] >= 3, 1]).mean() < 1.5, msg
    assert np.corrcoef(est[:, 0], tru[:, 0])[0, 1] > 0.97, msg
    closed = tru[:, 0] < 2
    assert np.all(est[closed, 0] < 2.5), est[closed, 0]


def test_mouth_error_summary():
    idt, mo = Identity.random(9), Motion.random(9)
    p = np.zeros((8, 4), np.float32)
    p[:, 0] = np.linspace(0, 1, 8)
    frames = render_clip(idt, mo, p)
    truth = mouth_geometry(idt, mo, p).values
    good = mouth_error(frames, truth)
    assert good.gap_mae < 0.6 and good.gap_corr > 0.98 and good.frames == 8
    bad = mouth_error(frames[::-1].copy(), truth)  # the mouth moving the wrong way
    assert bad.gap_mae > 3 and bad.gap_corr < -0.9
    with pytest.raises(ValueError, match=r"\[F, 4\]"):
        mouth_error(frames, truth[:3])
