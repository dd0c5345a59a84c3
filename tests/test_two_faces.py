"""Two faces in the picture: the tracker (and so the session) follows the one asked for."""

import cv2
import numpy as np
import pytest

from lipforce_sdk.facemesh import LandmarkTracker
from lipforce_sdk.facemesh.tracker import face_selector


@pytest.fixture(scope="module")
def two_faces():
    """A 900x400 frame: the photo face large on the left (centre x 180), small near the middle (x 470)."""
    from lipforce_sdk.cli import PHOTO_DIR
    from lipforce_sdk.media import read_video

    face = read_video(PHOTO_DIR / "face.mp4")[0][0]
    canvas = np.full((400, 900, 3), 90, np.uint8)
    canvas[20:380, 0:360] = cv2.resize(face, (360, 360), interpolation=cv2.INTER_AREA)
    canvas[100:300, 370:570] = cv2.resize(face, (200, 200), interpolation=cv2.INTER_AREA)
    return canvas


def mouth_x(lm) -> float:
    return float(lm.points[[13, 14], 0].mean())


@pytest.mark.parametrize("select, lo, hi", [("largest", 0, 360), ("center", 370, 570), ((850.0, 200.0), 370, 570),
                                            ((10.0, 10.0), 0, 360)])
def test_tracker_takes_the_face_asked_for(two_faces, select, lo, hi):
    lm = LandmarkTracker(select=select, smoothing=False).update(two_faces)
    assert lm is not None and lo < mouth_x(lm) < hi


def test_bad_select_is_a_clear_error():
    for bad in ("biggest", (1.0,), (np.nan, 2.0)):
        with pytest.raises(ValueError, match="select="):
            face_selector(bad)


def test_session_renders_the_chosen_face_only(tiny_engine, two_faces):
    audio = (0.1 * np.random.default_rng(0).standard_normal(4 * 640)).astype(np.float32)
    for face, (lo, hi) in (("largest", (0, 360)), ("center", (370, 570))):
        s = tiny_engine.session(face=face)
        outs = []
        for i in range(4):
            outs += s.push(audio[i * 640:(i + 1) * 640], two_faces)
        outs += s.flush()
        changed = np.any(np.stack([o.image for o in outs]) != two_faces, axis=(0, 3))
        xs = np.nonzero(changed)[1]
        assert xs.size and lo <= xs.min() and xs.max() < hi, f"face={face}: pixels changed in x {xs.min()}..{xs.max()}"


def test_run_face_option_parses():
    from lipforce_sdk.cli import build_parser

    p = build_parser()
    assert p.parse_args(["run", "--face", "center"]).face == "center"
    assert p.parse_args(["run", "--face", "640,360"]).face == (640.0, 360.0)
    with pytest.raises(SystemExit):
        p.parse_args(["run", "--face", "left"])


def test_mesh_source_reports_its_trackers_choice():
    """The session's reference frames take the face the stream's own tracker takes."""
    from lipforce_sdk.tracking import AutoFaceSource, MeshFaceSource

    assert MeshFaceSource(LandmarkTracker(select="center")).select == "center"
    assert AutoFaceSource(MeshFaceSource(select=(5.0, 6.0))).select == (5.0, 6.0)
