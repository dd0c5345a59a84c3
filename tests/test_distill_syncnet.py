"""The sync scorer (distill/syncnet.py): offset search on known embeddings, and the committed
weights on held-out generated clips (in sync -> offset 0, shifted audio -> the shift)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))

pytest.importorskip("torch", reason="the sync scorer needs torch (pip install 'lipforce[torch]')")

from distill.speech import espeak_available  # noqa: E402
from distill.syncnet import DEFAULT_WEIGHTS, MAX_OFFSET, SyncScorer, offset_distances  # noqa: E402

needs_espeak = pytest.mark.skipif(
    not espeak_available(),
    reason="espeak-ng is not installed (libespeak-ng.so.1 not found): `apt-get install espeak-ng`")


@pytest.mark.parametrize("lag", [0, 3, -7, 15])
def test_offset_search_on_known_embeddings(lag):
    """Video window i equals audio window i - lag: the search finds ``lag``."""
    rng = np.random.default_rng(lag + 20)
    f = 80
    a = rng.normal(size=(f + 40, 16))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    v = a[20 - lag: 20 - lag + f]
    r = SyncScorer.score_embeddings(v, a[20: 20 + f])
    assert r.offset == lag and r.sync_d == pytest.approx(0.0, abs=1e-12)
    assert r.offsets.tolist() == list(range(-MAX_OFFSET, MAX_OFFSET + 1))
    assert r.sync_c == pytest.approx(np.median(r.dists) - r.dists.min())
    assert r.sync_c > 1.0  # random unit vectors are ~1.4 apart


def test_offset_search_short_clip_uses_existing_pairs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 8))
    offs, d = offset_distances(a, a, 15)
    assert offs[np.argmin(d)] == 0 and np.all(np.isfinite(d[np.abs(offs) < 20]))


def test_committed_weights_load_and_are_small():
    assert DEFAULT_WEIGHTS.exists(), f"missing {DEFAULT_WEIGHTS}: run `python -m distill.make_scorer`"
    assert DEFAULT_WEIGHTS.stat().st_size < 2_000_000
    s = SyncScorer.load()
    assert s.meta.get("command", "").startswith("python -m distill.make_scorer")
    with pytest.raises(FileNotFoundError, match="make_scorer"):
        SyncScorer.load(DEFAULT_WEIGHTS.with_name("nope.safetensors"))


@needs_espeak
def test_scorer_finds_the_offset_of_a_held_out_clip():
    from distill.data import make_clip

    from distill.evaluate import SCORE_SIZE
    from distill.faces import clip_keypoints
    from lipforce_sdk.geometry import CropAligner

    scorer = SyncScorer.load()
    clip = make_clip(7, "held_out")  # held-out sentence, voice, identity and motion
    # the scorer's view: eye-aligned mouth crops, cut from the exact keypoints as the runtime cuts them
    al = CropAligner(SCORE_SIZE)
    kps = clip_keypoints(clip.identity, clip.motion, clip.params, clip.frames.shape[1])
    crops = np.stack([al(kp).crop(f) for kp, f in zip(kps, clip.frames)])
    r0 = scorer.score(crops, clip.audio)
    assert r0.offset == 0, r0
    for shift in (5, -3):
        audio = clip.speech.shifted(shift).audio  # the video now lags this audio by `shift`
        r = scorer.score(crops, audio)
        assert r.offset == shift, (shift, r.offset, r.dists)
    other = make_clip(8, "held_out").speech.fit_frames(clip.frames.shape[0]).audio
    rx = scorer.score(crops, other)
    assert rx.sync_c < 0.6 * r0.sync_c, (rx.sync_c, r0.sync_c)
    assert rx.sync_d > r0.sync_d
