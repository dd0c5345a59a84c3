"""``ScheduleConfig.steps == 1``: step 1 left out, its x0 taken to be the chunk's condition with the
mouth's hole filled from the reference; the passes it runs, step 2's input against a float64
reference, streaming equal to the offline pass, ONNX Runtime equal to torch, bad values refused."""

import dataclasses

import numpy as np
import pytest

from conftest import BOX, make_clip, spy_dit_passes, stream_clip
from lipforce_sdk import Engine
from lipforce_sdk.config import ConfigError, ScheduleConfig, from_name
from lipforce_sdk.offline import render_offline
from lipforce_sdk.sampler import two_step_sample
from lipforce_sdk.session import InputError


def test_one_step_runs_step_two_from_the_filled_condition_renoised():
    """Per chunk: one pass at t_land, then the clean cache pass; no pass at t = 1. Step 2's x_t is
    (1 - t) cond + t eps2, cond the filled condition the DiT is given and eps2 the same re-noising
    draw as the two-step run's (recovered from its step 2: (x_t - (1 - t) x0_1) / t)."""
    frames, audio = make_clip(8, 3)
    two, one = Engine.load(), Engine.load(steps=1)
    assert (two.config.schedule.steps, one.config.schedule.steps) == (2, 1)
    assert one.config.schedule.timesteps == (one.config.schedule.t_land,)
    calls2, calls1 = spy_dit_passes(two), spy_dit_passes(one)
    out2 = render_offline(two, audio, frames, box=BOX)
    out1 = render_offline(one, audio, frames, box=BOX)
    t = one.config.schedule.t_land
    chunks = len(frames) // one.config.video_frames_per_chunk
    steps2 = [i for i, c in enumerate(calls2) if c.t == 1.0]
    assert len(steps2) == chunks and not any(c.t == 1.0 for c in calls1), "steps=1 runs no pass at t = 1"
    firsts = [i for i, c in enumerate(calls1) if c.t == t]
    assert len(firsts) == chunks
    assert len(calls2) - len(calls1) == chunks, "exactly one DiT pass per chunk fewer"
    for i2, i1 in zip(steps2, firsts):
        step1, land2, clean2 = calls2[i2:i2 + 3]
        land1, clean1 = calls1[i1:i1 + 2]
        assert (land2.t, clean2.t, clean1.t) == (t, 0.0, 0.0)
        eps2 = (land2.x_t - (1.0 - t) * step1.x0) / t
        np.testing.assert_allclose(land1.x_t, (1.0 - t) * land1.cond + t * eps2, rtol=0, atol=1e-5)
        np.testing.assert_allclose(clean1.x_t, land1.x0, rtol=0, atol=1e-6,
                                   err_msg="the cache pass sees step 2's x0")
        assert np.abs(step1.x0 - land1.cond).max() > 1e-3, "the model's step 1 is not the filled condition"
    assert out1.shape == out2.shape and out1.dtype == np.uint8
    assert np.abs(out1.astype(int) - out2.astype(int)).max() > 0, "leaving step 1 out shows in the frames"


def test_one_step_session_matches_the_offline_pass():
    engine = Engine.load(steps=1)
    frames, audio = make_clip(12, 5)
    ref = render_offline(engine, audio, frames, box=BOX)
    outs = stream_clip(engine, frames, audio)
    assert len(outs) == len(frames)
    for o in outs:
        np.testing.assert_array_equal(o.image, ref[o.index])


def test_two_step_sample_needs_the_condition_for_one_step():
    calls = []

    def step(x, t):
        calls.append(t)
        return x * 0.5

    x = np.ones((1, 2, 1, 2, 2))
    eps = np.full_like(x, 3.0)
    with pytest.raises(ValueError, match="condition="):
        two_step_sample(step, x, eps, ScheduleConfig(steps=1))
    assert calls == []
    cond = np.full_like(x, 2.0)
    out = two_step_sample(step, x, eps, ScheduleConfig(steps=1, t_land=0.25), condition=cond)
    assert calls == [0.25, 0.0]
    np.testing.assert_allclose(out, 0.5 * (0.75 * 2.0 + 0.25 * 3.0))


@pytest.mark.parametrize("bad", [0, 3, 1.0, "1", True, None])
def test_bad_steps_are_refused(bad):
    with pytest.raises(ConfigError, match="schedule.steps"):
        ScheduleConfig(steps=bad).validate()
    if bad is not None:  # None: the model's own
        with pytest.raises(InputError, match="schedule.steps"):
            Engine.load(steps=bad)


def test_one_step_needs_a_reference_filled_model():
    cfg = from_name("1.3b")
    assert cfg.stream.fill == "none"
    with pytest.raises(ConfigError, match="schedule.steps=1 is invalid.*stream.fill='reference'"):
        dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, steps=1)).validate()


def test_steps_round_trip_through_the_config_dict(tiny_engine):
    cfg = dataclasses.replace(tiny_engine.config, schedule=dataclasses.replace(tiny_engine.config.schedule, steps=1))
    assert type(cfg).from_dict(cfg.to_dict()).schedule.steps == 1
    d = tiny_engine.config.to_dict()
    d["schedule"].pop("steps", None)  # a manifest written before the field: both steps
    assert type(cfg).from_dict(d).schedule.steps == 2


def test_cli_steps(tmp_path, capsys):
    from lipforce_sdk.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--steps", "3", "--out", str(tmp_path / "o.mp4")])
    assert e.value.code == 2 and "invalid choice: 3" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_onnxruntime_one_step_matches_torch(exported_tiny):
    frames, audio = make_clip(8, 6)
    ort = render_offline(Engine.load(exported_tiny[1], backend="onnxruntime", steps=1), audio, frames, box=BOX)
    ref = render_offline(Engine.load(steps=1), audio, frames, box=BOX)
    diff = np.abs(ort.astype(int) - ref.astype(int))
    assert diff.max() <= 1, f"ONNX Runtime vs torch with one step: {diff.max()} levels"


def test_serve_takes_steps():
    import argparse

    from lipforce_sdk import serve

    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    assert p.parse_args([]).steps is None
    a = p.parse_args(["--steps", "1"])
    assert serve.load_engine(None, "torch", steps=a.steps).config.schedule.steps == 1
    assert serve.load_engine(None, "torch").config.schedule.steps == 2


def test_triton_passes_steps_as_an_engine_option():
    import argparse

    from lipforce_sdk.triton.server import add_arguments, engine_options_of

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert engine_options_of(p.parse_args([])) == {}
    opts = engine_options_of(p.parse_args(["--steps", "1", "--threads", "2"]))
    assert opts == {"threads": 2, "steps": 1}
    assert Engine.load(**{k: v for k, v in opts.items() if k == "steps"}).config.schedule.steps == 1
