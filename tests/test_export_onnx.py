"""Exported graphs vs their PyTorch modules, and whole streams through ONNX Runtime vs torch."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import BOX, corrupted_copy, frame_views, make_clip

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (pip install 'lipforce[onnx]')")

from lipforce_sdk import Engine  # noqa: E402
from lipforce_sdk.export import export_model  # noqa: E402
from lipforce_sdk.export.exporter import DiTStepGraph, VAEDecoderGraph, VAEEncoderGraph, AudioEncoderGraph, example_inputs  # noqa: E402
from lipforce_sdk.offline import render_offline  # noqa: E402

TOL = {"fp32": dict(atol=2e-4, rtol=1e-3)}
WRAPPERS = {"audio_encoder": AudioEncoderGraph, "vae_encoder": VAEEncoderGraph, "dit_step": DiTStepGraph,
            "vae_decoder": VAEDecoderGraph}


def _check_graph(model, path, graph, seed):
    names, tensors, out_names, _ = example_inputs(model, graph, seed=seed)
    with torch.no_grad():
        ref = WRAPPERS[graph](model).eval()(*tensors)
    ref = ref if isinstance(ref, tuple) else (ref,)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(out_names, {n: t.numpy() for n, t in zip(names, tensors)})
    for name, r, g in zip(out_names, ref, got):
        np.testing.assert_allclose(g, r.numpy(), **TOL["fp32"], err_msg=f"{graph}.{name} seed={seed}")


@pytest.mark.parametrize("graph", ["audio_encoder", "vae_encoder", "dit_step", "vae_decoder"])
@pytest.mark.parametrize("seed", [1, 2])
def test_each_graph_matches_torch(exported_tiny, graph, seed):
    model, out, man = exported_tiny
    _check_graph(model, out / man["graphs"][graph]["file"], graph, seed)


def test_opset23_attention_flavour_matches_torch(tmp_path):
    from lipforce_sdk.export import export_dit_step
    from lipforce_sdk.model import LipSyncModel

    model = LipSyncModel.from_preset("tiny", seed=4, stream={"resolution": 64}).eval()
    spec = export_dit_step(model, tmp_path / "dit.onnx", attention="onnx_attention")
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "dit.onnx")).graph.node}
    assert "Attention" in ops, f"no fused Attention node (ops: {sorted(ops)})"
    _check_graph(model, tmp_path / "dit.onnx", "dit_step", seed=3)
    assert spec["state"]["kv_k_1"] == "kv_k_out_1"


def test_manifest_has_what_the_runtime_reads(exported_tiny):
    model, out, man = exported_tiny
    disk = json.loads((out / "manifest.json").read_text())
    assert disk == json.loads(json.dumps(man))
    c = man["config"]
    st = model.cfg.stream
    assert c["name"] == "tiny" and c["stream"]["chunk_frames"] == st.chunk_frames and c["stream"]["window_frames"] == st.window_frames
    assert c["stream"]["sink_frames"] == st.sink_frames and c["stream"]["sink"] == st.sink
    assert c["stream"]["fps"] == 25.0 and c["audio"]["sample_rate"] == 16000
    assert c["schedule"]["t_land"] == model.cfg.schedule.t_land and man["opset"] == 18 and man["flavour"] == "portable"
    assert man["sdk_version"] and man["precision"] == "fp32"
    from lipforce_sdk.manifest import sha256_file

    for g, spec in man["graphs"].items():
        assert sha256_file(out / spec["file"]) == spec["sha256"], g
    dit = man["graphs"]["dit_step"]
    kv = next(i for i in dit["inputs"] if i["name"] == "kv_k_0")
    st, d = model.cfg.stream, model.cfg.dit
    h, w = model.cfg.latent_hw
    tokens = (h // d.patch_size[1]) * (w // d.patch_size[2])  # per latent frame
    slots = st.sink_frames + st.window_frames + st.chunk_frames
    assert kv["shape"] == [1, slots * tokens, d.num_heads, d.dim // d.num_heads] and kv["dtype"] == "float32"
    assert [i["name"] for i in dit["inputs"][5:9]] == ["write_idx", "q_pos", "k_pos", "k_valid"]
    assert len(dit["state"]) == 2 * model.cfg.dit.num_layers


def test_stream_through_onnxruntime_matches_torch(exported_tiny, tiny_engine):
    _, out, _ = exported_tiny
    e_ort = Engine.load(out, backend="onnxruntime")
    frames, audio = make_clip(20, 21)
    ref = render_offline(tiny_engine, audio, frames, box=BOX)
    s = e_ort.session(box=BOX)
    rng = np.random.default_rng(5)
    from test_streaming import push_randomly

    outs = push_randomly(s, audio, frames, rng)
    assert [o.index for o in outs] == list(range(20))
    for o in outs:
        d = np.abs(o.image.astype(int) - ref[o.index].astype(int))
        assert d.max() <= 2, f"frame {o.index}: ORT vs torch max |diff| {d.max()}"


def test_latents_through_onnxruntime_match_torch_over_chunks(exported_tiny, tiny_engine):
    """Float-level comparison of the generated crops over several chunks (state carried)."""
    from lipforce_sdk.audio import log_mel_clip
    from lipforce_sdk.cache_plan import RingCachePlanner
    from lipforce_sdk.session import ChunkRenderer, reference_frames_needed

    _, out, _ = exported_tiny
    e_ort = Engine.load(out, backend="onnxruntime")
    cfg = tiny_engine.config
    fv = cfg.video_frames_per_chunk
    frames, audio = make_clip(10 * fv, 22, hw=(128, 128))
    mel = log_mel_clip(audio, cfg.audio, 25.0, 10 * fv)
    views = frame_views(frames, cfg)
    res = {}
    for name, eng in (("torch", tiny_engine), ("ort", e_ort)):
        r, pl, st = ChunkRenderer(eng.backend, cfg, 0), RingCachePlanner.for_stream(cfg.stream), eng.backend.new_state()
        if reference_frames_needed(cfg):
            r.write_reference(views[:reference_frames_needed(cfg)], pl, st)
        res[name] = np.stack([r.render(views[k * fv:(k + 1) * fv], mel[k * fv:(k + 1) * fv], k, pl, st)
                              for k in range(10)]).astype(int)
    assert np.abs(res["torch"] - res["ort"]).max() <= 2


def test_runtime_imports_no_torch(exported_tiny):
    _, out, _ = exported_tiny
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from lipforce_sdk import Engine
        e = Engine.load({str(out)!r}, backend="onnxruntime")
        s = e.session(box=(0, 0, 64, 64))
        rng = np.random.default_rng(0)
        n = 0
        for i in range(9):
            n += len(s.push((0.1 * rng.standard_normal(640)).astype(np.float32), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
        n += len(s.flush())
        assert n == 9, n
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not bad, bad
        print("ok", n)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(out), timeout=300)
    assert r.returncode == 0 and "ok 9" in r.stdout, r.stdout + r.stderr


def test_corrupted_graph_is_refused(exported_tiny, tmp_path):
    from lipforce_sdk.backends.base import BackendError

    _, out, _ = exported_tiny
    bad = tmp_path / "m"
    corrupted_copy(out, bad, "dit_step.onnx")
    with pytest.raises(BackendError, match=r"dit_step\.onnx.*sha256.*re-export"):
        Engine.load(bad, backend="onnxruntime")


def test_loading_weights_dir_with_onnxruntime_says_export_first():
    from lipforce_sdk.backends.base import BackendError

    with pytest.raises(BackendError, match=r"no exported graphs.*lipforce export"):
        Engine.load(backend="onnxruntime")


def test_export_leaves_the_model_untouched(tmp_path):
    from lipforce_sdk.export import export_dit_step
    from lipforce_sdk.model import LipSyncModel

    model = LipSyncModel.from_preset("tiny", seed=6, stream={"resolution": 32}).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, tmp_path / "a", precision="fp16", progress=False)
    export_dit_step(model, tmp_path / "b.onnx", precision="bf16", attention="plugin")
    after = model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())
    assert model.training, "export changed the model's train/eval mode"
    from lipforce_sdk.model.attention import kv_cache_attention

    assert model.dit.cache_attention is kv_cache_attention
