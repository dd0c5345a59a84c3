"""Audio guidance of the second step (``ScheduleConfig.guidance``): the passes it runs, its maths
against a float64 reference, the off value leaves the frames as they were, bad values refused."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BOX, make_clip, spy_dit_passes, stream_clip
from lipforce_sdk import Engine
from lipforce_sdk.config import ConfigError, ScheduleConfig
from lipforce_sdk.offline import render_offline
from lipforce_sdk.session import InputError

sys.path.append(str(Path(__file__).resolve().parents[1]))  # distill/ (the training loss's lips map)


@pytest.mark.parametrize("region", ["crop", "lips", "mouth"])
def test_guided_step_two_is_null_plus_g_times_the_difference(region):
    """crop: x_null + g (x_audio - x_null) over the whole crop; lips (the default region): x_audio +
    (g - 1) L (x_audio - x_null), L the soft lips box (``geometry.lips_region``): the same formula
    where L is 1, the audio pass alone where it is 0; mouth: the same with L the box between the
    mouth corners (``geometry.mouth_region``)."""
    from lipforce_sdk.geometry import lips_region, mouth_region

    engine = Engine.load(guidance=2.5, guidance_region=region)
    assert engine.config.schedule.guidance_region == region
    calls = spy_dit_passes(engine)
    frames, audio = make_clip(8, 3)
    render_offline(engine, audio, frames, box=BOX)
    t_land = engine.config.schedule.t_land
    chunks = [i for i, c in enumerate(calls) if c.t == 1.0]
    assert len(chunks) == 8 // engine.config.video_frames_per_chunk
    for i in chunks:
        step1, null, audio_pass, clean = calls[i:i + 4]
        assert not step1.null, "step 1 is not guided: one pass with the chunk's audio"
        assert (null.t, audio_pass.t, clean.t) == (t_land, t_land, 0.0)
        assert null.null and not audio_pass.null, "step 2: the null-audio pass first, then the audio pass"
        assert np.array_equal(null.x_t, audio_pass.x_t), "both passes of step 2 see the same x_t"
        if region == "crop":
            want = null.x0 + 2.5 * (audio_pass.x0 - null.x0)
        else:
            cfg = engine.config
            box = {"lips": lips_region, "mouth": mouth_region}[region]
            lips = box(cfg.stream.resolution, cfg.latent_hw).astype(np.float64)
            want = audio_pass.x0 + 1.5 * lips * (audio_pass.x0 - null.x0)
        np.testing.assert_allclose(clean.x_t, want, rtol=0, atol=1e-5)
        assert np.abs(audio_pass.x0 - null.x0).max() > 1e-3, "the audio changes the pass: guidance is not a no-op"


def test_guidance_one_is_the_unguided_run(tiny_engine):
    frames, audio = make_clip(8, 4)
    ref = render_offline(tiny_engine, audio, frames, box=BOX)
    assert tiny_engine.config.schedule.guidance >= 1.0
    off = Engine.load(guidance=1.0)
    calls = spy_dit_passes(off)
    got = render_offline(off, audio, frames, box=BOX)
    t_land = off.config.schedule.t_land
    assert sum(c.t == t_land for c in calls) == len(frames) // off.config.video_frames_per_chunk, "1: one pass per step"
    if tiny_engine.config.schedule.guidance == 1.0:
        np.testing.assert_array_equal(got, ref)
    else:
        assert not np.array_equal(got, ref), "the model's own guidance shows in its frames"


def test_guidance_changes_the_frames_and_a_session_matches_the_offline_pass():
    engine = Engine.load(guidance=3.0)
    frames, audio = make_clip(12, 5)
    ref = render_offline(engine, audio, frames, box=BOX)
    plain = render_offline(Engine.load(guidance=1.0), audio, frames, box=BOX)
    assert np.abs(ref.astype(int) - plain.astype(int)).max() > 0
    for o in stream_clip(engine, frames, audio):
        np.testing.assert_array_equal(o.image, ref[o.index])


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "2", True])
def test_bad_guidance_is_refused(bad):
    with pytest.raises(ConfigError, match="schedule.guidance"):
        ScheduleConfig(guidance=bad).validate()
    with pytest.raises(InputError, match="schedule.guidance"):
        Engine.load(guidance=bad)


@pytest.mark.parametrize("bad", ["jaw", "", None, 1])
def test_bad_guidance_region_is_refused(bad):
    with pytest.raises(ConfigError, match="schedule.guidance_region"):
        ScheduleConfig(guidance_region=bad).validate()
    if bad is not None:  # None: the model's own
        with pytest.raises(InputError, match="schedule.guidance_region"):
            Engine.load(guidance=2.0, guidance_region=bad)


def test_lips_region_covers_the_lips_and_leaves_the_chin():
    """The guidance region: 1 over the middle of the lips, 0 at the crop's top (the nose), bottom (the
    chin) and sides (the cheeks); the training loss's lips weight is the same map."""
    import torch

    from distill.teacher import lips_map
    from lipforce_sdk.config import from_name
    from lipforce_sdk.geometry import CropSpec, lips_region

    cfg = from_name("tiny")
    s = cfg.stream.resolution
    h, w = cfg.latent_hw
    m = lips_region(s, (h, w))
    assert m.shape == (h, w) and m.dtype == np.float32 and 0.0 <= m.min() and m.max() <= 1.0
    spec = CropSpec()
    mouth_row = int((0.5 - spec.down / spec.side + 0.02) * h)
    assert m[mouth_row, w // 2] > 0.99
    assert m[: int(0.2 * h)].max() == 0.0 and m[int(0.6 * h):].max() == 0.0  # nose / chin
    assert m[:, : int(0.2 * w)].max() == 0.0 and m[:, int(0.85 * w):].max() == 0.0  # cheeks
    assert torch.equal(lips_map(cfg), torch.from_numpy(m))
    with pytest.raises(ValueError, match="whole number of latent pixels"):
        lips_region(100, (32, 32))


def test_mouth_region_lies_between_the_corners_inside_the_lips_box():
    """The "mouth" guidance region: 1 over the mouth's middle, inside the lips box everywhere, 0 where
    every framing puts the mouth corners (0.29 and 0.71 of the crop: ``CropSpec`` aligns the eyes and
    the mouth sits 0.7-0.8 eye distances wide) and beyond; ``guidance_region`` names the three."""
    from lipforce_sdk.config import from_name
    from lipforce_sdk.geometry import CropSpec, guidance_region, lips_region, mouth_region

    cfg = from_name("tiny")
    s = cfg.stream.resolution
    h, w = cfg.latent_hw
    m, lips = mouth_region(s, (h, w)), lips_region(s, (h, w))
    assert m.shape == (h, w) and m.dtype == np.float32 and 0.0 <= m.min() and m.max() <= 1.0
    spec = CropSpec()
    mouth_row = int((0.5 - spec.down / spec.side + 0.02) * h)
    assert m[mouth_row, w // 2] > 0.99
    assert (m <= lips + 1e-6).all() and m.sum() < 0.7 * lips.sum()
    corners = [int(0.29 * w), int(0.71 * w)]
    assert m[:, :corners[0] + 1].max() < 0.05 and m[:, corners[1]:].max() < 0.05, "no guidance at the corners"
    assert lips[mouth_row, corners].min() > 0.5, "the lips box reaches them"
    np.testing.assert_array_equal(guidance_region("mouth", s, (h, w)), m)
    np.testing.assert_array_equal(guidance_region("lips", s, (h, w)), lips)
    assert guidance_region("crop", s, (h, w)) is None
    with pytest.raises(ValueError, match="guidance region"):
        guidance_region("jaw", s, (h, w))


def test_guidance_region_changes_the_frames(tiny_engine):
    """Lips-guided frames differ from the unguided ones (guidance acts) and from crop-guided ones (the
    region acts)."""
    frames, audio = make_clip(8, 7)
    lips = render_offline(Engine.load(guidance=2.5, guidance_region="lips"), audio, frames, box=BOX)
    crop = render_offline(Engine.load(guidance=2.5, guidance_region="crop"), audio, frames, box=BOX)
    mouth = render_offline(Engine.load(guidance=2.5, guidance_region="mouth"), audio, frames, box=BOX)
    plain = render_offline(Engine.load(guidance=1.0), audio, frames, box=BOX)
    assert np.abs(lips.astype(int) - plain.astype(int)).max() > 2
    assert np.abs(lips.astype(int) - crop.astype(int)).max() > 2
    assert np.abs(mouth.astype(int) - lips.astype(int)).max() > 2


def test_guidance_round_trips_through_the_config_dict(tiny_engine):
    cfg = dataclasses.replace(tiny_engine.config, schedule=dataclasses.replace(
        tiny_engine.config.schedule, guidance=1.7, guidance_region="crop"))
    again = type(cfg).from_dict(cfg.to_dict())
    assert again.schedule.guidance == 1.7 and again.schedule.guidance_region == "crop"


def test_cli_refuses_a_bad_guidance(tmp_path, capsys):
    from lipforce_sdk.cli import main

    assert main(["run", "--guidance", "-1", "--out", str(tmp_path / "o.mp4"), "--no-progress"]) == 2
    assert "schedule.guidance=-1.0 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()
    with pytest.raises(SystemExit) as e:
        main(["run", "--guidance", "2", "--guidance-region", "jaw", "--out", str(tmp_path / "o.mp4")])
    assert e.value.code == 2 and "invalid choice: 'jaw'" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_onnxruntime_guides_as_torch_does(exported_tiny):
    """The graph backends return host arrays: the same combination, the same frames as torch."""
    frames, audio = make_clip(8, 6)
    ort = render_offline(Engine.load(exported_tiny[1], backend="onnxruntime", guidance=2.0), audio, frames, box=BOX)
    ref = render_offline(Engine.load(guidance=2.0), audio, frames, box=BOX)
    plain = render_offline(Engine.load(exported_tiny[1], backend="onnxruntime"), audio, frames, box=BOX)
    diff = np.abs(ort.astype(int) - ref.astype(int))
    assert diff.max() <= 1, f"ONNX Runtime vs torch at guidance 2: {diff.max()} levels"
    assert np.abs(ort.astype(int) - plain.astype(int)).max() > 2, "guidance changes the ONNX Runtime frames"


def test_null_tokens_are_converted_once_per_stream():
    """The null audio tokens (the reference pass and the guided step's null pass) reach the backend as
    one array, converted once, not once per chunk."""
    engine = Engine.load(guidance=2.0)
    be = engine.backend
    shape = None
    converted, seen = [], []
    inner_as, inner_step = be.asarray, be.dit_step

    def asarray(x):
        out = inner_as(x)
        if shape is not None and np.shape(x) == shape and not np.any(x):
            converted.append(out)
        return out

    def dit_step(x_t, t, cond, mask, audio_tokens, plan, state):
        seen.append(audio_tokens)
        return inner_step(x_t, t, cond, mask, audio_tokens, plan, state)

    cfg = engine.config
    shape = (1, cfg.video_frames_per_chunk, cfg.audio.tokens_per_frame, cfg.audio.token_dim)
    be.asarray, be.dit_step = asarray, dit_step
    frames, audio = make_clip(12, 6)
    render_offline(engine, audio, frames, box=BOX)
    from lipforce_sdk.backends.base import host_array

    nulls = [a for a in seen if not np.any(host_array(a))]
    chunks = len(frames) // cfg.video_frames_per_chunk
    assert len(nulls) >= chunks, "a null pass per guided chunk (and the reference passes)"
    assert len(converted) == 1, f"the null tokens were converted {len(converted)} times"
    assert all(a is converted[0] for a in nulls), "every null pass reads the one converted array"
