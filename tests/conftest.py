import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def load_sample(name: str):
    """``samples/NAME.py`` imported as a module (the samples are scripts, not a package)."""
    mod_name = f"lipforce_sample_{name}_under_test"
    spec = importlib.util.spec_from_file_location(mod_name, REPO / "samples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tiny_engine():
    from lipforce_sdk import Engine

    return Engine.load()  # the bundled default, torch backend


def make_clip(n_frames: int, seed: int = 0, hw=(96, 80), extra_samples: int = 321):
    """Random frames and noise-like speech of matching length (fixed box avoids detection)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (n_frames, *hw, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(n_frames * 640 + extra_samples)).astype(np.float32)
    return frames, audio


BOX = (8.0, 10.0, 72.0, 74.0)


def spy_dit_passes(engine):
    """Record every DiT pass of ``engine``'s backend from now on: a list of ``SimpleNamespace(t, null,
    x_t, cond, x0)``, ``null`` whether the pass got the null (all-zero) audio tokens, the arrays as
    float64 host copies (``cond``: the condition as the DiT is given it, the hole filled)."""
    from types import SimpleNamespace

    from lipforce_sdk.backends.base import host_array

    be, calls = engine.backend, []
    inner = be.dit_step

    def dit_step(x_t, t, cond, mask, audio_tokens, plan, state):
        x0 = inner(x_t, t, cond, mask, audio_tokens, plan, state)
        calls.append(SimpleNamespace(t=t, null=not np.any(host_array(audio_tokens)),
                                     x_t=host_array(x_t).astype(np.float64), cond=host_array(cond).astype(np.float64),
                                     x0=host_array(x0).astype(np.float64)))
        return x0

    be.dit_step = dit_step
    return calls


def stream_clip(engine, frames, audio, box=BOX):
    """``frames`` and their 640 samples each pushed one by one through a new session, the rest of the
    audio after them, then flushed: the frames it returned, in the order returned."""
    s = engine.session(box=box)
    outs = []
    for i, f in enumerate(frames):
        outs += s.push(audio[i * 640:(i + 1) * 640], f)
    return outs + s.push(audio[len(frames) * 640:]) + s.flush()


def frame_views(frames, cfg, box=BOX):
    """What the session gives ``ChunkRenderer`` for ``frames`` streamed with a fixed ``box``."""
    from lipforce_sdk.geometry import FaceKeypoints
    from lipforce_sdk.session import FramePreparer

    prep, kp = FramePreparer(cfg), FaceKeypoints.template(box)
    return [prep(f, kp) for f in frames]


def corrupted_copy(src, dst, name: str, at: float = 0.5, mask: int = 0xFF):
    """Copy directory ``src`` to ``dst`` and flip bits of one byte of file ``name`` (at fraction ``at``)."""
    import shutil

    shutil.copytree(src, dst)
    p = dst / name
    b = bytearray(p.read_bytes())
    b[int(len(b) * at)] ^= mask
    p.write_bytes(bytes(b))
    return p


@pytest.fixture(scope="session")
def batched_tiny(tmp_path_factory):
    """The bundled default exported once with a batch axis (max_batch=4; portable, opset 18): (out_dir, manifest)."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (pip install 'lipforce[onnx]')")
    from lipforce_sdk import default_model_dir
    from lipforce_sdk.export import export_model
    from lipforce_sdk.model import load_model

    out = tmp_path_factory.mktemp("tiny_b4")
    return out, export_model(load_model(default_model_dir()), out, progress=False, max_batch=4)


@pytest.fixture(scope="session")
def exported_tiny(tmp_path_factory):
    """The bundled default exported once (portable, opset 18): (model, out_dir, manifest)."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (pip install 'lipforce[onnx]')")
    from lipforce_sdk import default_model_dir
    from lipforce_sdk.export import export_model
    from lipforce_sdk.model import load_model

    model = load_model(default_model_dir())
    out = tmp_path_factory.mktemp("tiny_onnx")
    return model, out, export_model(model, out, progress=False)


@pytest.fixture(scope="session")
def ort_tiny(exported_tiny):
    """The bundled default on ONNX Runtime (the live avatar's tests: fast, torch-free at run time)."""
    from lipforce_sdk import Engine

    return Engine.load(exported_tiny[1], backend="onnxruntime")


@pytest.fixture(scope="session")
def loop_avatar(ort_tiny):
    """The bundled photo clip's first 50 frames (2 s) as a prepared avatar, for ``ort_tiny``."""
    from lipforce_sdk.serve import default_avatar

    return default_avatar(ort_tiny, loop_seconds=2.0)
