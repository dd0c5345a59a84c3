"""Build the bundled avatar sample: ``lipforce_sdk/assets/avatar_sample/talking.mp4``.

A short talking clip with its own sound, for the enrollment smoke test (``tests/test_enroll.py``)
and for trying ``lipforce enroll`` in a minute. The face is frame 0 of the bundled photo clip
(``lipforce_sdk/assets/photo``: NASA's public-domain portrait of astronaut Eileen Collins); it
says two sentences spoken by espeak-ng (voice ``en-us+f3``): its own lips are warped to the
viseme shapes of that speech (``distill.photoreal.talk``), with a slow sway of the head
(``distill.faces.Motion``). 8 s, 320 x 320, 25 fps, H.264 + AAC.

Only needed to regenerate the asset (it is committed). Needs the ``espeak-ng`` library::

    python samples/make_avatar_sample.py        # writes lipforce_sdk/assets/avatar_sample/talking.mp4
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from distill.faces import Motion  # noqa: E402
from distill.photoreal import PhotoFace, talk  # noqa: E402
from distill.speech import synthesize  # noqa: E402
from distill.visemes import frame_params  # noqa: E402
from lipforce_sdk import media  # noqa: E402

OUT = os.path.join(REPO, "lipforce_sdk", "assets", "avatar_sample", "talking.mp4")
PHOTO = os.path.join(REPO, "lipforce_sdk", "assets", "photo", "face.mp4")
FPS = 25
SECONDS = 8.0
VOICE = "en-us+f3"
TEXT = "Welcome! I am the avatar of this kiosk. Ask me about the museum, the maps, or the opening hours."
RATE = 165


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=OUT)
    a = p.parse_args(argv)
    frame0 = next(media.iter_video_frames(PHOTO))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its mouth is partly open: that is its rest pose
        face = PhotoFace.detect(frame0)
    n = int(SECONDS * FPS)
    sp = synthesize(TEXT, VOICE, RATE).padded(0.3, 0.0).fit_frames(n)
    clip = talk(face, frame_params(sp, n), Motion.random(7, amount=0.5), seed=0)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    media.write_video(a.out, clip.frames, FPS, audio=sp.audio)
    print(f"wrote {a.out}: {n} frames {clip.frames.shape[2]}x{clip.frames.shape[1]}, {sp.duration:.2f} s of speech, "
          f"{os.path.getsize(a.out) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
