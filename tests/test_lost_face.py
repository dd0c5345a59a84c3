"""A face that leaves the picture and comes back: frames without it pass through unchanged, and
lip sync starts afresh where it returns (no cache from before the gap)."""

import numpy as np
import pytest

from conftest import BOX, make_clip
from lipforce_sdk.geometry import FaceKeypoints
from lipforce_sdk.offline import render_offline
from lipforce_sdk.session import fill_lost


class BlankMeansNoFace:
    """The fixed box's keypoints, none on an all-black frame (the face has left)."""

    def __init__(self):
        self.kp = FaceKeypoints.template(BOX)

    def update(self, frame):
        return None if frame.max() == 0 else self.kp

    def reset(self):
        pass


def stream(engine, audio, frames, piece=640):
    s = engine.session(face_source=BlankMeansNoFace())
    outs = []
    for i, f in enumerate(frames):
        outs += s.push(audio[i * piece:(i + 1) * piece], f)
    outs += s.push(audio[len(frames) * piece:])
    return outs + s.flush(), s.stats


def test_fill_lost_takes_the_nearest_view_earlier_first():
    assert fill_lost([None, "a", None, None, "b"]) == ["a", "a", "a", "b", "b"]
    with pytest.raises(ValueError):
        fill_lost([None, None])


def test_gap_passes_through_and_stream_equals_offline(tiny_engine):
    frames, audio = make_clip(40, 3)
    gap = range(12, 26)
    frames[list(gap)] = 0
    outs, st = stream(tiny_engine, audio, frames)
    ref = render_offline(tiny_engine, audio, frames, face_source=BlankMeansNoFace())
    assert [o.index for o in outs] == list(range(40))
    for o in outs:
        assert np.array_equal(o.image, ref[o.index]), f"frame {o.index} differs from the offline pass"
    lost = list(gap)  # every frame without a face, from the first
    for o in outs:
        if o.index in lost:
            assert o.box is None and np.array_equal(o.image, frames[o.index]), f"frame {o.index} was changed"
        else:
            assert o.box is not None and not np.array_equal(o.image, frames[o.index]), f"frame {o.index} not rendered"
    assert st.frames_without_face == len(lost) and st.resumes == 1


def test_after_the_gap_nothing_from_before_it_counts(tiny_engine):
    """Two streams that differ only before the gap (the sink's reference frames aside) give the
    same frames after it; without a gap they do not (the cache carries the past)."""
    frames, audio = make_clip(40, 4)
    other, _ = make_clip(40, 5)
    n_ref, gap = 2, range(12, 26)
    changed = frames.copy()
    changed[n_ref:gap[0]] = other[n_ref:gap[0]]
    after = range(gap[-1] + 1, 40)

    def run(f, with_gap):
        f = f.copy()
        if with_gap:
            f[list(gap)] = 0
        outs, _ = stream(tiny_engine, audio, f)
        return {o.index: o.image for o in outs}

    a, b = run(frames, True), run(changed, True)
    assert all(np.array_equal(a[i], b[i]) for i in after)
    a, b = run(frames, False), run(changed, False)
    assert not all(np.array_equal(a[i], b[i]) for i in after)


def test_before_the_face_appears_frames_pass_through(tiny_engine):
    """The face first shows at frame 9: frames before it come out unchanged, lip sync (and the
    sink's reference) starts there, the stream equals the offline pass; no face at all: the
    offline pass says so."""
    from lipforce_sdk import FaceNotFoundError

    frames, audio = make_clip(20, 6)
    frames[:9] = 0
    outs, st = stream(tiny_engine, audio, frames)
    ref = render_offline(tiny_engine, audio, frames, face_source=BlankMeansNoFace())
    assert all(np.array_equal(o.image, ref[o.index]) for o in outs) and len(outs) == 20
    assert all(np.array_equal(o.image, frames[o.index]) == (o.index < 9) for o in outs)
    assert st.frames_without_face == 9 and st.resumes == 0
    with pytest.raises(FaceNotFoundError, match="no face found in any of the 20 frames"):
        render_offline(tiny_engine, audio, np.zeros_like(frames), face_source=BlankMeansNoFace())


def test_run_on_a_video_without_a_face_is_an_error_and_writes_nothing(tiny_engine, tmp_path):
    from lipforce_sdk import FaceNotFoundError
    from lipforce_sdk.cli import run_clip
    from lipforce_sdk.media import write_video, write_wav

    video, wav, out = tmp_path / "wall.mp4", tmp_path / "s.wav", tmp_path / "out.mp4"
    write_video(video, np.full((6, 96, 128, 3), 128, np.uint8), 25)
    write_wav(wav, np.zeros(6 * 640, np.float32))
    with pytest.raises(FaceNotFoundError, match=r"no face found in any of the 6 frames of .*wall\.mp4.*--box"):
        run_clip(tiny_engine, video, wav, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.wav", "wall.mp4"]


def test_face_mesh_loses_and_finds_the_face_in_a_real_clip(tiny_engine):
    """The bundled photo clip with the face gone for 2 s (grey frames) mid-clip, face mesh on:
    the 2 s come out unchanged, the mouth is re-rendered before and after, and outside the crop
    nothing changes anywhere."""
    from lipforce_sdk.cli import PHOTO_DIR
    from lipforce_sdk.media import read_audio, read_video

    frames, _ = read_video(PHOTO_DIR / "face.mp4")
    n = 90
    frames = frames[np.arange(n) % len(frames)].copy()
    audio = read_audio(PHOTO_DIR / "speech.wav")
    audio = np.resize(audio, n * 640)
    gap = range(20, 70)
    frames[list(gap)] = 128
    out = render_offline(tiny_engine, audio, frames)
    lost = list(gap)
    assert all(np.array_equal(out[i], frames[i]) for i in lost)
    for i in (*range(0, 20), *range(70, n)):
        assert not np.array_equal(out[i], frames[i]), f"frame {i}: the mouth was not re-rendered"
    # outside a generous box around the mouth nothing changes in any frame
    changed = np.any(out != frames, axis=(0, 3))
    ys, xs = np.nonzero(changed)
    h, w = frames.shape[1:3]
    assert (ys.max() - ys.min()) < 0.6 * h and (xs.max() - xs.min()) < 0.6 * w
