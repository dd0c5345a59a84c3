"""The bundled default model moves the lips with the speech, through the SDK's runtime path.

On held-out procedural pairs (new sentences, identities and motions; the data it was trained
for) the lip gap measured in the ``Engine``'s output follows the renderer's exact gap for the
new speech, and does so far better than the input video's mouth (which says another sentence).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytest.importorskip("torch")

# Measured on the first held-out pairs with the default model (torch): 0.54-0.71 for the
# output, -0.21-0.26 for the input video, 0.94-0.96 for the target itself.
MIN_GAP_CORRELATION = 0.4


def test_default_model_lip_gap_follows_the_new_speech():
    from distill.evaluate import SCORE_SIZE, _at, held_out_pairs, render_engine
    from distill.metrics import measure_mouth
    from lipforce_sdk import Engine

    engine = Engine.load()
    for p in held_out_pairs(2, max_frames=100):
        out, _ = render_engine(engine, p)
        truth = p.geometry.gap_px
        got = float(np.corrcoef(measure_mouth(_at(out, SCORE_SIZE))[:, 0], truth)[0, 1])
        src = float(np.corrcoef(measure_mouth(_at(p.source, SCORE_SIZE))[:, 0], truth)[0, 1])
        assert got >= MIN_GAP_CORRELATION, f"output lip gap vs true gap: r = {got:.3f}"
        assert got > src + 0.2, f"output r = {got:.3f} is not clearly above the input video's r = {src:.3f}"
