"""Build the bundled sample clip: ``lipforce_sdk/assets/sample/{face.mp4, speech.wav, face_boxes.json}``.

The sample is what the bundled default model was made for: a procedural talking face from
``distill/`` (the generator the model was trained on), with an identity and head motion from a
seed range that neither the training nor the held-out evaluation draws, and speech the model
never heard.

- ``face.mp4``: the *source* video: this face saying other sentences (``SOURCE_TEXT``), so the
  mouth moves, but not with ``speech.wav``. ``lipforce run`` must make it follow the new speech.
- ``speech.wav``: espeak-ng saying ``TEXT`` (voice ``VOICE`` at ``RATE`` words per minute).
- ``face_boxes.json``: ``crop_box``, the face box to give the SDK (the frame is framed as the
  SDK's face tracker crops a face, so it is the whole frame), and per frame the exact face box
  and mouth centre (from the generator's pose and mouth geometry), the exact lip gap the target
  would show, and the source's. ``lipforce_sdk.sync_check`` reads it.

Only needed to regenerate the assets (they are committed); not used at install or test time.
Deterministic for a given espeak-ng and x264 build. Run from the repository root (``distill``
is a package of the repository, not installed); needs the espeak-ng library::

    apt-get install espeak-ng
    python samples/make_sample_clip.py            # writes lipforce_sdk/assets/sample/
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from distill.faces import Identity, Motion, _to_crop, make_pair, mouth_geometry  # noqa: E402
from distill.sentences import HELD_OUT, SENTENCES, TRAIN  # noqa: E402
from distill.speech import RATES, VOICES, synthesize  # noqa: E402
from lipforce_sdk import media  # noqa: E402
from lipforce_sdk.face import FaceTracker  # noqa: E402

OUT_DIR = os.path.join(REPO, "lipforce_sdk", "assets", "sample")
FPS = 25
SAMPLE_RATE = 16000
SIZE = 256  # frame side; the model's crop (128) is this frame scaled by 1/2
# Identities / motions: train draws seeds 0.., held-out 1_000_000..; the sample is the first
# seed of its own range.
SEED = 3_000_000
VOICE, RATE = "en-us+f2", 180  # one of the training voices, inside the training rates
TEXT = (
    "Hello! This is a short sample clip for lip force. "
    "The mouth you see follows the voice, frame by frame."
)
SOURCE_VOICE, SOURCE_RATE = "en-us+f2", 170
SOURCE_TEXT = " ".join(HELD_OUT[:2])  # two sentences the training never saw
LEAD_S, TAIL_S = 0.25, 0.4  # silence around the speech
SOURCE_LEAD_S, SOURCE_TAIL_S = 0.3, 0.3

# The face box at rest, in crop units: FaceTracker widens a face box by `margin` on every side
# and moves it down by `chin_shift` face sizes, so a face of size 1 / (1 + 2 margin) fills the crop.
_TRACKER = FaceTracker(crop_size=128)  # only its framing defaults are read
FACE_SIZE = 1.0 / (1.0 + 2.0 * _TRACKER.margin)
FACE_CENTRE = (0.5, 0.5 - _TRACKER.chin_shift * FACE_SIZE)


def face_boxes(pose: np.ndarray) -> np.ndarray:
    """``[F, 4]`` face boxes (frame pixels) of the rest box carried through each frame's head pose."""
    out = np.zeros((len(pose), 4))
    for i, p in enumerate(pose):
        cx, cy = _to_crop(p, *FACE_CENTRE)
        half = 0.5 * FACE_SIZE * float(p[3])
        out[i] = np.array([cx - half, cy - half, cx + half, cy + half]) * SIZE
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT_DIR, help="output folder (default: %(default)s)")
    args = ap.parse_args()
    assert VOICE in VOICES and SOURCE_VOICE in VOICES and RATES[0] <= min(RATE, SOURCE_RATE) <= RATES[1]
    assert TEXT not in SENTENCES and not any(s in SOURCE_TEXT for s in TRAIN)
    os.makedirs(args.out, exist_ok=True)

    tgt = synthesize(TEXT, VOICE, RATE).padded(LEAD_S, TAIL_S)
    src = synthesize(SOURCE_TEXT, SOURCE_VOICE, SOURCE_RATE).padded(SOURCE_LEAD_S, SOURCE_TAIL_S)
    pair = make_pair(Identity.random(SEED), Motion.random(SEED), src, tgt, size=SIZE)
    n = len(pair.source)
    audio = pair.audio  # as synthesized: the level the model was trained on

    media.write_video(os.path.join(args.out, "face.mp4"), pair.source, FPS, crf=18)
    media.write_wav(os.path.join(args.out, "speech.wav"), audio, SAMPLE_RATE)
    boxes = face_boxes(pair.motion.pose(n))
    mouths = pair.geometry.centre.astype(np.float64) + 0.5  # crop-pixel indices -> [i, i+1) pixels
    gap_src = mouth_geometry(pair.identity, pair.motion, pair.params_src, SIZE).gap_px
    meta = {
        "video": "face.mp4",
        "audio": "speech.wav",
        "fps": FPS,
        "num_frames": n,
        "width": SIZE,
        "height": SIZE,
        "sample_rate": SAMPLE_RATE,
        "text": TEXT,
        "voice": VOICE,
        "rate_wpm": RATE,
        "source_text": SOURCE_TEXT,
        "source_voice": SOURCE_VOICE,
        "source_rate_wpm": SOURCE_RATE,
        "generator": f"distill.faces.make_pair(Identity.random({SEED}), Motion.random({SEED}), size={SIZE})",
        "coordinates": "frame pixels, pixel i covers [i, i+1); boxes are x0, y0, x1, y1",
        "crop_box": [0.0, 0.0, float(SIZE), float(SIZE)],
        "frames": [
            {
                "face_box": [round(float(v), 2) for v in boxes[i]],
                "mouth": [round(float(v), 2) for v in mouths[i]],
                "lip_gap_px": round(float(pair.geometry.gap_px[i]), 3),
                "source_lip_gap_px": round(float(gap_src[i]), 3),
            }
            for i in range(n)
        ],
    }
    with open(os.path.join(args.out, "face_boxes.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{n} frames ({n / FPS:.2f} s), {SIZE}x{SIZE}")
    for name in ("face.mp4", "speech.wav", "face_boxes.json"):
        p = os.path.join(args.out, name)
        print(f"{p}: {os.path.getsize(p) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
