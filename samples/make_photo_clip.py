"""Build the bundled photo clip: ``lipforce_sdk/assets/photo/{face.mp4, speech.wav, face_boxes.json}``.

A real face with gentle, smooth motion for the face tracker to follow (the face detection and
tracking tests use it), and a sentence of speech of the same length.

- Face: ``skimage.data.astronaut()``, the NASA portrait of astronaut Eileen Collins (public
  domain, shipped in the scikit-image wheel). Each frame is a similarity warp of the still
  photo (slow sway, zoom and a few degrees of tilt, all sums of low-frequency sinusoids),
  so the face moves in the frame like a slightly moving head/camera.
- Speech: espeak-ng (voice ``en-us+f3``) saying ``TEXT``, resampled to 16 kHz mono and
  placed so that it ends before the video does.
- ``face_boxes.json``: for every frame, where the face (hand-annotated once on the photo:
  hairline to chin, cheek to cheek), both eyes and the mouth centre are, carried through
  the frame's warp. Tests use it as the known face location.

Only needed to regenerate the assets (they are committed); not used at install or test
time. Deterministic for a given espeak-ng and x264 build. Needs scikit-image (used only
here, not an SDK dependency) and the ``espeak-ng`` program::

    pip install scikit-image && apt-get install espeak-ng
    python samples/make_photo_clip.py            # writes lipforce_sdk/assets/photo/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from lipforce_sdk import media  # noqa: E402

OUT_DIR = os.path.join(REPO, "lipforce_sdk", "assets", "photo")
FPS = 25
NUM_FRAMES = 150  # 6.0 s
SIZE = 320  # output frames are SIZE x SIZE
SAMPLE_RATE = 16000
VOICE = "en-us+f3"
TEXT = (
    "Hello! This is a short sample clip for lip force. "
    "The mouth you see follows the voice, frame by frame."
)
SPEECH_START_S = 0.25  # silence before the first word
SPEECH_END_S = 5.6  # the last word ends by then

# Hand-annotated on astronaut() (512 x 512), in photo pixels.
PHOTO_FACE_BOX = (182.0, 80.0, 270.0, 180.0)  # hairline to chin, cheek to cheek
PHOTO_EYES = ((203.0, 102.0), (247.0, 103.0))  # subject's right eye, left eye (image L, R)
PHOTO_MOUTH = (222.0, 145.0)
VIEW_CENTER = (224.0, 140.0)  # photo point shown at the frame centre at rest
VIEW_SIDE = 288.0  # photo pixels across the frame at rest


def load_photo() -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        sys.exit("scikit-image is needed to build the photo clip: pip install scikit-image")
    img = data.astronaut()
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8, img.shape
    return img


def motion(i: int) -> tuple[float, float, float, float]:
    """(dx, dy, zoom, angle_deg) of frame ``i``: smooth, slow, a few pixels/degrees."""
    t = i / FPS
    tau = 2.0 * np.pi
    dx = 9.0 * np.sin(tau * 0.21 * t) + 4.0 * np.sin(tau * 0.47 * t + 1.1)
    dy = 5.0 * np.sin(tau * 0.29 * t + 0.6) + 2.0 * np.sin(tau * 0.53 * t + 2.0)
    zoom = 1.0 + 0.05 * np.sin(tau * 0.13 * t + 0.4)
    angle = 3.0 * np.sin(tau * 0.17 * t + 0.3) + 1.0 * np.sin(tau * 0.41 * t + 1.7)
    return float(dx), float(dy), float(zoom), float(angle)


def frame_transform(i: int) -> np.ndarray:
    """2x3 affine mapping photo pixel coordinates to frame pixel coordinates."""
    dx, dy, zoom, angle = motion(i)
    scale = zoom * SIZE / VIEW_SIDE
    a = np.deg2rad(angle)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    # the photo point VIEW_CENTER + (dx, dy) lands on the frame centre
    src_c = np.array(VIEW_CENTER) + (dx, dy)
    t = np.array([SIZE / 2.0, SIZE / 2.0]) - rot @ src_c
    return np.hstack([rot, t[:, None]])


def apply(m: np.ndarray, pts) -> np.ndarray:
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    return p @ m[:, :2].T + m[:, 2]


def render_frames(photo: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    frames, boxes = [], []
    x0, y0, x1, y1 = PHOTO_FACE_BOX
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    for i in range(NUM_FRAMES):
        m = frame_transform(i)
        # cv2 maps pixel centres: convert the [i, i+1) convention (centre i + 0.5)
        shift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
        unshift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
        m_idx = (shift @ np.vstack([m, [0, 0, 1]]) @ unshift)[:2]
        frames.append(
            cv2.warpAffine(
                photo, m_idx, (SIZE, SIZE), flags=cv2.INTER_CUBIC,
                borderMode=cv2.BORDER_REFLECT101,
            )
        )
        c = apply(m, corners)
        boxes.append(
            {
                "face_box": [round(float(v), 2) for v in (*c.min(0), *c.max(0))],
                "eyes": [[round(float(v), 2) for v in p] for p in apply(m, PHOTO_EYES)],
                "mouth": [round(float(v), 2) for v in apply(m, PHOTO_MOUTH)[0]],
            }
        )
    return np.stack(frames), boxes


def synth_speech(tmp: str) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("espeak-ng is needed to build the photo clip's speech: apt-get install espeak-ng")

    def say(speed: int) -> np.ndarray:
        path = os.path.join(tmp, f"speech_{speed}.wav")
        subprocess.run([exe, "-v", VOICE, "-s", str(speed), "-w", path, TEXT], check=True)
        a = media.read_audio(path, SAMPLE_RATE)
        voiced = np.flatnonzero(np.abs(a) > 0.01)
        return a[voiced[0] : voiced[-1] + 1]

    target = SPEECH_END_S - SPEECH_START_S
    speech = say(175)
    speed = int(round(175 * (len(speech) / SAMPLE_RATE) / target))
    speed = min(max(speed, 140), 230)
    speech = say(speed)
    while len(speech) > target * SAMPLE_RATE and speed < 260:
        speed += 5
        speech = say(speed)
    print(f"espeak-ng: voice {VOICE}, speed {speed} wpm, {len(speech) / SAMPLE_RATE:.2f} s")
    speech = 0.9 * speech / np.max(np.abs(speech))
    out = np.zeros(NUM_FRAMES * SAMPLE_RATE // FPS, np.float32)
    start = int(SPEECH_START_S * SAMPLE_RATE)
    n = min(len(speech), len(out) - start)
    out[start : start + n] = speech[:n]
    return out


def check_detection(frames: np.ndarray, boxes: list[dict]) -> None:
    from lipforce_sdk.face import FaceBox, HaarFaceDetector

    det = HaarFaceDetector()
    ious = []
    for i, f in enumerate(frames):
        b = det.detect(f)
        if b is None:
            sys.exit(f"the Haar detector misses the face in frame {i}; reduce the motion")
        ious.append(b.iou(FaceBox(*boxes[i]["face_box"])))
    print(f"Haar detector: face found in all {len(frames)} frames, IoU with the annotated "
          f"box min {min(ious):.2f} / mean {np.mean(ious):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT_DIR, help="output folder (default: %(default)s)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    frames, boxes = render_frames(load_photo())
    check_detection(frames, boxes)
    video_path = os.path.join(args.out, "face.mp4")
    media.write_video(video_path, frames, FPS, crf=18)
    with tempfile.TemporaryDirectory() as tmp:
        speech = synth_speech(tmp)
    media.write_wav(os.path.join(args.out, "speech.wav"), speech, SAMPLE_RATE)
    meta = {
        "video": "face.mp4",
        "audio": "speech.wav",
        "fps": FPS,
        "num_frames": NUM_FRAMES,
        "width": SIZE,
        "height": SIZE,
        "sample_rate": SAMPLE_RATE,
        "text": TEXT,
        "voice": VOICE,
        "coordinates": "frame pixels, pixel i covers [i, i+1); face_box is x0, y0, x1, y1",
        "frames": boxes,
    }
    with open(os.path.join(args.out, "face_boxes.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for name in ("face.mp4", "speech.wav", "face_boxes.json"):
        p = os.path.join(args.out, name)
        print(f"{p}: {os.path.getsize(p) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
