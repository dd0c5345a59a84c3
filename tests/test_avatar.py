"""Prepared avatars: audio-only streaming equals the frame-pushing path bit for bit."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lipforce_sdk import Engine
from lipforce_sdk.avatar import Avatar, AvatarError, AvatarSession, frame_pushing_session, pingpong
from lipforce_sdk.cli import PHOTO_DIR
from lipforce_sdk.session import InputError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models run single-threaded here (many threads only fight over a busy CI machine)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def loop():
    """The bundled photo clip's first 13 frames and their face-mesh keypoints."""
    from lipforce_sdk.media import iter_video_frames
    from lipforce_sdk.tracking import MeshFaceSource

    it = iter_video_frames(PHOTO_DIR / "face.mp4")
    frames = np.stack([next(it) for _ in range(13)])
    it.close()
    src = MeshFaceSource()
    return frames, [src.update(f) for f in frames]


@pytest.fixture(scope="module")
def speech():
    from lipforce_sdk.media import read_audio

    return read_audio(PHOTO_DIR / "speech.wav")[: 37 * 640 + 211]  # a partial last frame


@pytest.fixture(scope="module")
def ref_model_dir(tmp_path_factory):
    """A seeded ``tiny`` preset (frame VAE, reference frames in the sink) as a model directory."""
    from lipforce_sdk.model import LipSyncModel, save_model

    return save_model(LipSyncModel.from_preset("tiny", seed=0), tmp_path_factory.mktemp("tiny_ref"))


@pytest.fixture(scope="module", params=["default", "tiny_ref"])
def engine(request, tiny_engine, ref_model_dir):
    """Both geometries: the bundled default (temporal VAE, first chunk in the sink) and the tiny
    preset (per-frame VAE, reference frames in the sink)."""
    return tiny_engine if request.param == "default" else Engine.load(ref_model_dir)


def stream(session, audio, rng, frames=None):
    """Push ``audio`` in random pieces (and, for a frame-pushing session, one frame per 640 samples)."""
    outs, i, f = [], 0, 0
    while i < audio.size:
        n = int(rng.integers(1, 2000))
        piece = audio[i:i + n]
        i += piece.size
        if frames is None:
            outs += session.push(piece)
        else:
            while f < min(len(frames), -(-i // 640)):
                outs += session.push(frame=frames[f])
                f += 1
            outs += session.push(piece)
    if frames is not None:
        while f < len(frames):
            outs += session.push(frame=frames[f])
            f += 1
    return outs + session.flush()


def frame_pushing_outputs(engine, avatar, audio, seed=0):
    """The frame-pushing session fed the avatar's stream frames, up to a whole chunk (it pads
    with its last frame where the avatar goes on with the loop: those frames are not compared)."""
    fv = engine.config.video_frames_per_chunk
    n = -(-audio.size // 640)
    frames = avatar.stream_frames(-(-n // fv) * fv)
    return stream(frame_pushing_session(engine, avatar), audio, np.random.default_rng(seed), frames)


def test_pingpong_loop_has_no_seam():
    for n in (1, 2, 5, 13):
        idx = pingpong(n, np.arange(10 * n + 7))
        assert idx.min() == 0 and idx.max() == n - 1, f"n={n}: {idx[:20]}"
        assert np.abs(np.diff(idx)).max() <= 1, f"n={n}: a jump in the loop {idx[:20]}"
        assert pingpong(n, 3) == idx[3]


@pytest.mark.parametrize("seed", [0, 1])
def test_audio_only_stream_equals_frame_pushing_session(engine, loop, speech, seed):
    frames, kps = loop
    av = Avatar.from_frames(frames, kps, engine.config.stream.resolution)
    got = stream(engine.session(avatar=av), speech, np.random.default_rng(seed))
    ref = frame_pushing_outputs(engine, av, speech, seed)
    n = -(-speech.size // 640)
    assert [o.index for o in got] == list(range(n)), f"frames {[o.index for o in got]}"
    assert len(ref) >= n
    for o in got:
        assert o.timestamp == pytest.approx(o.index / 25.0)
        assert np.array_equal(o.image, ref[o.index].image), f"seed={seed}: frame {o.index} differs"
    # the avatar's frames are the loop's, ping-pong (the mouth region re-rendered)
    a = av.stream_frames(n)
    far = np.zeros(a.shape[1:3], bool)
    far[:40] = True  # the top rows (hair) are far from the mouth: untouched
    assert all(np.array_equal(o.image[far], a[o.index][far]) for o in got)


def test_saved_avatar_streams_without_encoding_again(engine, loop, speech, tmp_path, monkeypatch):
    frames, kps = loop
    av = Avatar.from_frames(frames, kps, engine.config.stream.resolution)
    first = stream(engine.session(avatar=av), speech, np.random.default_rng(3))
    av.save(tmp_path / "av")
    back = Avatar.load(tmp_path / "av")
    assert np.array_equal(back.frames, av.frames) and np.array_equal(back.crop_params, av.crop_params)
    monkeypatch.setattr(Avatar, "encode", lambda *a, **k: pytest.fail("the saved latents were not used"))
    again = stream(engine.session(avatar=back), speech, np.random.default_rng(4))
    assert len(again) == len(first)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again))


def test_stream_starting_mid_loop_equals_frame_pushing_from_there(engine, loop, speech):
    """A stream may begin where a player showing the idle loop has got to (whole chunks): its
    frames are the loop's from there, and equal a frame-pushing session fed those frames (the
    sink holds the loop's first frames in both)."""
    frames, kps = loop
    av = Avatar.from_frames(frames, kps, engine.config.stream.resolution)
    fv = engine.config.video_frames_per_chunk
    audio = speech[: 16 * 640]
    n, start = 16, 5 * fv  # past the loop's turn (13 frames): the ping-pong runs backwards here
    got = stream(AvatarSession(engine, av, start=start), audio, np.random.default_rng(3))
    pushed = frames[av.loop_index(np.arange(start, start + n))]
    ref = stream(frame_pushing_session(engine, av, start=start), audio, np.random.default_rng(3), pushed)
    zero = stream(engine.session(avatar=av), audio, np.random.default_rng(3))
    assert [o.index for o in got] == list(range(n))
    assert all(np.array_equal(o.image, r.image) for o, r in zip(got, ref))
    assert all(np.array_equal(o.image[:40], pushed[o.index][:40]) for o in got)  # the loop's frames from `start`
    assert not np.array_equal(got[0].image, zero[0].image)
    with pytest.raises(AvatarError, match="multiple of the chunk"):
        AvatarSession(engine, av, start=fv + 1)


def test_reset_and_second_session_repeat_the_stream(tiny_engine, loop, speech):
    frames, kps = loop
    av = Avatar.from_frames(frames, kps, tiny_engine.config.stream.resolution)
    s = tiny_engine.session(avatar=av)
    first = stream(s, speech, np.random.default_rng(5))
    s.reset()
    again = stream(s, speech, np.random.default_rng(6))
    other = stream(tiny_engine.session(avatar=av), speech, np.random.default_rng(7))
    assert len(first) == len(again) == len(other)
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.image, c.image)
               for a, b, c in zip(first, again, other))
    assert s.stats.frames_out == len(again)


def test_photo_avatar_is_a_one_frame_loop(tiny_engine, loop, speech):
    frames, kps = loop
    av = Avatar.from_frames(frames[:1], kps[:1], tiny_engine.config.stream.resolution)
    assert av.latents_for(tiny_engine).period == 1
    got = stream(tiny_engine.session(avatar=av), speech[: 20 * 640], np.random.default_rng(8))
    ref = frame_pushing_outputs(tiny_engine, av, speech[: 20 * 640], 8)
    assert len(got) == 20 and all(np.array_equal(o.image, ref[o.index].image) for o in got)


def test_bad_use_names_the_fix(tiny_engine, ref_model_dir, loop, speech, tmp_path):
    frames, kps = loop
    av = Avatar.from_frames(frames, kps, tiny_engine.config.stream.resolution)
    s = tiny_engine.session(avatar=av)
    with pytest.raises(InputError, match="push audio only"):
        s.push(speech[:640], frames[0])
    with pytest.raises(InputError, match="no audio"):
        s.push(np.zeros(0, np.float32))
    assert len(stream(s, speech[:8 * 640], np.random.default_rng(0))) == 8  # still usable
    with pytest.raises(InputError, match="drop box="):
        tiny_engine.session(avatar=av, box=(0, 0, 10, 10))
    with pytest.raises(AvatarError, match="crops are 64 px"):
        Engine.load(ref_model_dir).session(avatar=Avatar.from_frames(frames, kps, 64))
    with pytest.raises(AvatarError, match="lipforce enroll"):
        Avatar.load(tmp_path)


def test_cli_run_avatar_writes_the_stream(tiny_engine, loop, tmp_path):
    from lipforce_sdk.cli import main
    from lipforce_sdk.media import probe, read_video

    frames, kps = loop
    Avatar.from_frames(frames, kps, tiny_engine.config.stream.resolution).save(tmp_path / "av")
    out = tmp_path / "out.mp4"
    assert main(["run", "--avatar", str(tmp_path / "av"), "--audio", str(PHOTO_DIR / "speech.wav"),
                 "--out", str(out), "--no-progress"]) == 0
    info = probe(out)
    assert info.has_audio and info.num_frames == 150, info
    assert read_video(out)[0].shape[1:3] == frames.shape[1:3]
    assert main(["run", "--avatar", str(tmp_path / "av"), "--video", "x.mp4", "--out", str(out)]) == 2


@pytest.fixture(scope="module")
def ort_engines(exported_tiny, ref_model_dir, tmp_path_factory):
    """ONNX Runtime engines of both geometries."""
    from lipforce_sdk.export import export_model
    from lipforce_sdk.model import load_model

    d = tmp_path_factory.mktemp("tiny_ref_onnx")
    export_model(load_model(ref_model_dir), d, progress=False)
    return {"default": Engine.load(exported_tiny[1], backend="onnxruntime"),
            "tiny_ref": Engine.load(d, backend="onnxruntime")}


@pytest.mark.parametrize("which", ["default", "tiny_ref"])
def test_onnxruntime_audio_only_stream_equals_frame_pushing_session(ort_engines, loop, speech, which):
    engine = ort_engines[which]
    frames, kps = loop
    av = Avatar.from_frames(frames, kps, engine.config.stream.resolution)
    got = stream(engine.session(avatar=av), speech, np.random.default_rng(11))
    ref = frame_pushing_outputs(engine, av, speech, 11)
    assert len(got) == -(-speech.size // 640)
    for o in got:
        assert np.array_equal(o.image, ref[o.index].image), f"{which}: frame {o.index} differs (onnxruntime)"


def test_onnxruntime_avatar_streams_without_torch(ort_engines, loop, tmp_path):
    frames, kps = loop
    engine = ort_engines["tiny_ref"]
    av = Avatar.from_frames(frames, kps, engine.config.stream.resolution)
    av.latents_for(engine)
    av.save(tmp_path / "av")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from lipforce_sdk import Engine
        from lipforce_sdk.avatar import Avatar
        e = Engine.load({str(engine.model_dir)!r}, backend="onnxruntime")
        s = e.session(avatar=Avatar.load({str(tmp_path / "av")!r}))
        n = len(s.push(np.zeros(16 * 640, np.float32))) + len(s.flush())
        assert n == 16, n
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_avatar_session_is_a_session(tiny_engine, loop):
    frames, kps = loop
    s = tiny_engine.session(avatar=Avatar.from_frames(frames, kps, tiny_engine.config.stream.resolution))
    assert isinstance(s, AvatarSession) and s.avatar.num_frames == 13
