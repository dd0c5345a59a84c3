"""Procedural talking faces (distill/faces.py): determinism, the mouth-only difference of a
source/target pair, motion, and the renderer's input checks. No espeak-ng needed."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))

from lipforce_sdk.face import mouth_mask_hard  # noqa: E402

from distill.faces import Identity, Motion, make_pair, mouth_geometry, render_clip  # noqa: E402
from distill.metrics import measure_mouth  # noqa: E402
from distill.speech import PAUSE, Phoneme, Speech  # noqa: E402

SR = 16000


def _speech(seed: int, seconds: float = 1.6) -> Speech:
    """Noise-burst "syllables" with vowel/bilabial phonemes at known times (no espeak-ng)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    audio = np.zeros(n, np.float32)
    ph = [Phoneme(PAUSE, 0.0, 0.2)]
    t = 0.2
    while t < seconds - 0.5:
        d = float(rng.uniform(0.12, 0.3))
        ph += [Phoneme("b", t, t + 0.06), Phoneme(str(rng.choice(["A:", "u:", "i:", "E"])), t + 0.06, t + d)]
        audio[int((t + 0.06) * SR): int((t + d) * SR)] = 0.2 * rng.standard_normal(int((t + d) * SR) - int((t + 0.06) * SR))
        t += d
    ph.append(Phoneme(PAUSE, t, seconds))
    return Speech(audio, tuple(ph))


def _params(seed: int, frames: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (frames, 4)).astype(np.float32)


def test_identity_and_motion_are_seeded():
    assert Identity.random(7) == Identity.random(7)
    assert Identity.random(7) != Identity.random(8)
    m = Motion.random(3)
    np.testing.assert_array_equal(m.pose(40), m.pose(40))
    # frame i depends only on the seed and i, not on the clip length or start
    np.testing.assert_array_equal(m.pose(10), m.pose(30)[:10])
    np.testing.assert_array_equal(m.blink(50)[20:], m.blink(30, start=20))
    np.testing.assert_array_equal(m.gaze(60)[5:25], m.gaze(20, start=5))
    assert not np.array_equal(m.pose(30), Motion.random(4).pose(30))
    assert m.blink(25 * 20).max() > 0.9  # blinks happen in 20 s
    assert Motion.random(3, amount=0.0).pose(20)[:, :3].max() == 0.0


def test_render_is_deterministic():
    idt, mo, p = Identity.random(11), Motion.random(11), _params(0, 6)
    a = render_clip(idt, mo, p)
    b = render_clip(idt, mo, p)
    assert a.shape == (6, 128, 128, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    c = render_clip(Identity.random(12), mo, p)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5  # another identity looks different
    # rendering frames 3..5 alone gives the same frames as part of the whole clip
    np.testing.assert_array_equal(render_clip(idt, mo, p[3:], start_frame=3), a[3:])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pair_differs_only_inside_the_mouth_mask(seed):
    src, tgt = _speech(100 + seed), _speech(200 + seed)
    pair = make_pair(Identity.random(seed), Motion.random(seed), src, tgt)
    f = pair.target.shape[0]
    assert pair.source.shape == pair.target.shape == (f, 128, 128, 3)
    assert pair.audio.shape == (f * 640,) and pair.audio.dtype == np.float32
    assert pair.params.shape == (f, 4)
    np.testing.assert_array_equal(pair.mask_hard, mouth_mask_hard(128))
    diff = np.any(pair.source != pair.target, axis=-1)  # [F, S, S]
    outside = pair.mask_hard == 0
    assert not diff[:, outside].any(), f"{int(diff[:, outside].sum())} pixels differ outside the mask"
    assert diff[:, ~outside].any(axis=-1).sum() > f // 2  # and the mouths do differ
    # the target's geometry is the one its params describe
    np.testing.assert_array_equal(pair.geometry.values,
                                  mouth_geometry(pair.identity, pair.motion, pair.params).values)


def test_make_pair_is_deterministic_and_fits_lengths():
    src, tgt = _speech(1, 2.0), _speech(2, 1.2)
    a = make_pair(Identity.random(5), Motion.random(5), src, tgt)
    b = make_pair(Identity.random(5), Motion.random(5), src, tgt)
    np.testing.assert_array_equal(a.source, b.source)
    np.testing.assert_array_equal(a.target, b.target)
    assert a.target.shape[0] == 30  # 1.2 s at 25 fps; the 2 s source is cut to match
    c = make_pair(Identity.random(5), Motion.random(5), src, tgt, num_frames=40)
    assert c.target.shape[0] == 40 and c.audio.size == 40 * 640
    assert np.all(c.params[31:] < 0.02)  # padded with silence: mouth at rest


def test_mouth_opens_with_its_parameter():
    idt, mo = Identity.random(21), Motion.random(21)
    p = np.zeros((5, 4), np.float32)
    p[:, 0] = [0.0, 0.25, 0.5, 0.75, 1.0]
    gap = measure_mouth(render_clip(idt, mo, p))[:, 0]
    assert np.all(np.diff(gap) > 1.0), gap


def test_render_rejects_bad_params():
    idt, mo = Identity.random(0), Motion.random(0)
    with pytest.raises(ValueError, match=r"\[F, 4\]"):
        render_clip(idt, mo, np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        render_clip(idt, mo, np.full((2, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="size"):
        render_clip(idt, mo, np.zeros((2, 4), np.float32), size=16)
