"""Building TensorRT engines with TensorRT-RTX on this machine (no GPU needed) and checking them.

Graphs are made here: a one-layer attention step with a ring KV cache as state in/out, exported
by torch dynamo at opset 18 in fp32 and fp16; an opset-23 ``Attention`` node in fp16; an fp8 Q/DQ
MatMul; and a fake model directory with its manifest.
"""

import hashlib
import importlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest



import lipforce_sdk.engine as E  # noqa: E402  (installed as lipforce_sdk.engine; see pyproject)
trt = pytest.importorskip("tensorrt_rtx", reason="building engines on a CPU-only machine needs TensorRT-RTX "
                                                  "(pip install tensorrt-rtx)")
onnx = pytest.importorskip("onnx", reason="the builder reads graphs with the onnx package")
from onnx import TensorProto as TP, helper, numpy_helper  # noqa: E402

NO_GPU = E.local_gpu() is None
RTX = "tensorrt_rtx"
M_SLOTS, HEADS, HEAD_DIM, DIM, CHUNK = 6, 2, 16, 32, 2


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# graphs
# ---------------------------------------------------------------------------------------------
def _export_kv_step(path: Path, dtype_name: str) -> Path:
    """One attention step over a ring KV cache: writes the chunk's K/V at ``write_idx``, attends
    over the valid slots, returns the updated cache as state outputs."""
    torch = pytest.importorskip("torch", reason="the test graphs are exported with torch.onnx (dynamo)")
    dtype = getattr(torch, dtype_name)

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Linear(DIM, 3 * DIM)
            self.o = torch.nn.Linear(DIM, DIM)

        def forward(self, x, write_idx, k_valid, kv_k_0, kv_v_0):
            b, c, _ = x.shape  # x [1, C, D]
            q, k, v = self.qkv(x).view(b, c, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)  # [1, H, C, hd]
            idx = write_idx.long()
            kc = kv_k_0.index_copy(2, idx, k)  # [1, H, M, hd]
            vc = kv_v_0.index_copy(2, idx, v)
            bias = torch.where(k_valid[None, None, None, :] > 0, 0.0, -1e4).to(q.dtype)  # [1, 1, 1, M]
            a = torch.softmax(q @ kc.transpose(-1, -2) * HEAD_DIM ** -0.5 + bias, -1) @ vc
            return self.o(a.transpose(1, 2).reshape(b, c, DIM)), kc, vc

    torch.manual_seed(0)
    m = Step().to(dtype).eval()
    cache = torch.zeros(1, HEADS, M_SLOTS, HEAD_DIM, dtype=dtype)
    args = (torch.randn(1, CHUNK, DIM, dtype=dtype), torch.tensor([1, 2], dtype=torch.int32),
            torch.ones(M_SLOTS, dtype=torch.int32), cache, cache.clone())
    torch.onnx.export(m, args, str(path), dynamo=True, opset_version=18, external_data=False, verbose=False,
                      input_names=["x", "write_idx", "k_valid", "kv_k_0", "kv_v_0"],
                      output_names=["y", "kv_k_out_0", "kv_v_out_0"])
    return path


def _attention_op(path: Path) -> Path:
    """An opset-23 ``Attention`` node in fp16 (TensorRT-RTX maps it to a fused attention layer)."""
    shape = [1, HEADS, 8, HEAD_DIM]
    ins = [helper.make_tensor_value_info(n, TP.FLOAT16, shape) for n in ("q", "k", "v")]
    out = helper.make_tensor_value_info("y", TP.FLOAT16, shape)
    g = helper.make_graph([helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn_0")], "attn", ins, [out])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    onnx.save(m, str(path))
    return path


def _fp8_matmul(path: Path) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float16), "W")
    s = numpy_helper.from_array(np.array(0.1, np.float16), "s")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], output_dtype=TP.FLOAT8E4M3FN),
             helper.make_node("DequantizeLinear", ["xq", "s"], ["xd"]),
             helper.make_node("QuantizeLinear", ["W", "s"], ["wq"], output_dtype=TP.FLOAT8E4M3FN),
             helper.make_node("DequantizeLinear", ["wq", "s"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    x = helper.make_tensor_value_info("x", TP.FLOAT16, [1, 16, 16])
    y = helper.make_tensor_value_info("y", TP.FLOAT16, [1, 16, 16])
    onnx.save(helper.make_model(helper.make_graph(nodes, "fp8", [x], [y], [w, s]),
                                opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return path


def _audio_encoder(path: Path) -> Path:
    """A stateless graph named like the model's audio encoder."""
    w = numpy_helper.from_array(np.full((8, 4), 0.5, np.float16), "W")
    mel = helper.make_tensor_value_info("mel", TP.FLOAT16, [1, 4, 3, 8])
    out = helper.make_tensor_value_info("audio_tokens", TP.FLOAT16, [1, 4, 3, 4])
    g = helper.make_graph([helper.make_node("MatMul", ["mel", "W"], ["audio_tokens"], name="proj")], "audio",
                          [mel], [out], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _io(path: Path) -> tuple[list, list]:
    info = E.inspect_onnx(path)
    return [t.as_dict() for t in info.inputs], [t.as_dict() for t in info.outputs]


def _make_model_dir(d: Path, kv16: Path) -> Path:
    """A model directory as the exporter writes it: manifest + one ONNX file per graph."""
    from lipforce_sdk.config import from_name

    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(kv16, d / "dit_step.onnx")
    _audio_encoder(d / "audio_encoder.onnx")
    graphs = {}
    for g in ("audio_encoder", "dit_step"):
        ins, outs = _io(d / f"{g}.onnx")
        state = {"kv_k_0": "kv_k_out_0", "kv_v_0": "kv_v_out_0"} if g == "dit_step" else {}
        graphs[g] = {"file": f"{g}.onnx", "sha256": sha(d / f"{g}.onnx"), "inputs": ins, "outputs": outs,
                     "state": state}
    manifest = {"format": "lipforce-model", "format_version": 1, "sdk_version": "0.1.0",
                "config": from_name("tiny").to_dict(), "flavour": "portable", "opset": 18, "precision": "fp16",
                "graphs": graphs}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return d


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    return {"kv32": _export_kv_step(d / "kv32.onnx", "float32"), "kv16": _export_kv_step(d / "kv16.onnx", "float16"),
            "attn": _attention_op(d / "attn.onnx"), "fp8": _fp8_matmul(d / "fp8.onnx")}


@pytest.fixture(scope="module")
def built_model(graphs, tmp_path_factory):
    """(model_dir, engine_dir, returned manifest) built once for the check tests."""
    base = tmp_path_factory.mktemp("model")
    model_dir = _make_model_dir(base / "model", graphs["kv16"])
    out = E.build_model(model_dir, base / "engines", progress=False, flavour=RTX)
    return model_dir, base / "engines", out


def _copy_engine_dir(built_model, tmp_path) -> Path:
    d = tmp_path / "engines"
    shutil.copytree(built_model[1], d)
    return d


def _edit_manifest(d: Path, fn) -> None:
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


# ---------------------------------------------------------------------------------------------
# build_engine
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,precision,dtype", [("kv32", "fp32", "float32"), ("kv16", "fp16", "float16")])
def test_kv_step_builds_and_its_manifest_entry_is_right(graphs, tmp_path, key, precision, dtype):
    engine = tmp_path / f"{key}.engine"
    entry = E.build_engine(graphs[key], engine, precision=precision, progress=False, flavour=RTX)
    assert engine.stat().st_size > 10_000, f"{key}: engine of {engine.stat().st_size} bytes"
    assert entry["sha256"] == sha(engine) and entry["bytes"] == engine.stat().st_size
    assert entry["tensorrt"] == {"flavour": RTX, "version": trt.__version__}
    assert entry["precision"] == precision
    assert entry["onnx_sha256"] == sha(graphs[key]) and entry["onnx_file"] == graphs[key].name
    assert [t["name"] for t in entry["inputs"]] == ["x", "write_idx", "k_valid", "kv_k_0", "kv_v_0"]
    assert [t["name"] for t in entry["outputs"]] == ["y", "kv_k_out_0", "kv_v_out_0"]
    dtypes = {t["name"]: t["dtype"] for t in entry["inputs"] + entry["outputs"]}
    assert dtypes == {"x": dtype, "write_idx": "int32", "k_valid": "int32", "kv_k_0": dtype, "kv_v_0": dtype,
                      "y": dtype, "kv_k_out_0": dtype, "kv_v_out_0": dtype}
    assert {t["name"]: t["shape"] for t in entry["inputs"]}["kv_k_0"] == [1, HEADS, M_SLOTS, HEAD_DIM]
    assert entry["state"] == {"kv_k_0": "kv_k_out_0", "kv_v_0": "kv_v_out_0"}  # inferred from the names
    assert entry["plugin_libraries"] == [] and entry["onnx_external_data"] == [] and entry["build_seconds"] > 0
    if NO_GPU:
        assert entry["target"] == {"compute_capabilities": list(E.RTX_DEFAULT_TARGETS),
                                   "selected_by": "default portable set"}


def test_progress_monitor_reports_nested_phases(graphs, tmp_path):
    rec = E.BuildProgress(disable=True)
    E.build_engine(graphs["kv32"], tmp_path / "p.engine", precision="fp32", progress=rec, flavour=RTX)
    top = [p for p in rec.phases if p.depth == 0]
    nested = [p for p in rec.phases if p.depth > 0]
    assert len(top) >= 1 and len(nested) >= 3, [(p.name, p.depth) for p in rec.phases]
    assert all(p.finished for p in rec.phases), [p.name for p in rec.phases if not p.finished]
    assert all(p.parent in {q.name for q in rec.phases} for p in nested)
    assert all(0 < p.steps_done <= p.num_steps for p in top)


def test_progress_bars_are_drawn(graphs, tmp_path, capsys):
    E.build_engine(graphs["attn"], tmp_path / "a.engine", precision="fp16", progress=True, flavour=RTX)
    err = capsys.readouterr().err
    assert "attn: " in err and "step" in err  # tqdm bar labelled with the graph


def test_cancelled_build_is_an_error(graphs, tmp_path):
    rec = E.BuildProgress(disable=True)
    rec.cancel()
    with pytest.raises(E.EngineError, match="cancelled"):
        E.build_engine(graphs["kv32"], tmp_path / "c.engine", precision="fp32", progress=rec, flavour=RTX)
    assert not (tmp_path / "c.engine").exists()


def test_timing_cache_is_a_noop_in_tensorrt_rtx(graphs, tmp_path):
    cache = tmp_path / "timing.cache"
    entry = E.build_engine(graphs["kv16"], tmp_path / "t.engine", precision="fp16", timing_cache=cache,
                           progress=False, flavour=RTX)
    assert not cache.exists()
    assert entry["timing_cache"]["path"] is None and "runtime cache" in entry["timing_cache"]["note"]


@pytest.mark.gpu
@pytest.mark.skipif(NO_GPU or importlib.util.find_spec("tensorrt") is None,
                    reason="full TensorRT builds need the tensorrt package and a CUDA GPU")
def test_timing_cache_written_and_reused_with_full_tensorrt(graphs, tmp_path):
    cache = tmp_path / "timing.cache"
    first = E.build_engine(graphs["kv16"], tmp_path / "a.engine", precision="fp16", timing_cache=cache,
                           progress=False, flavour="tensorrt")
    assert cache.stat().st_size > 0 and first["timing_cache"]["saved_bytes"] == cache.stat().st_size
    second = E.build_engine(graphs["kv16"], tmp_path / "b.engine", precision="fp16", timing_cache=cache,
                            progress=False, flavour="tensorrt")
    assert second["timing_cache"]["loaded_bytes"] == first["timing_cache"]["saved_bytes"]


def test_precision_mismatch_is_refused(graphs, tmp_path):
    with pytest.raises(E.EngineError, match=r"fp16 graph.*precision='fp32'.*strongly typed"):
        E.build_engine(graphs["kv16"], tmp_path / "x.engine", precision="fp32", progress=False, flavour=RTX)
    with pytest.raises(E.EngineError, match=r"fp32 graph.*precision='bf16'"):
        E.build_engine(graphs["kv32"], tmp_path / "x.engine", precision="bf16", progress=False, flavour=RTX)
    assert not (tmp_path / "x.engine").exists()


def test_fp8_without_quantization_is_refused(graphs, tmp_path):
    with pytest.raises(E.EngineError, match=r"quantized \(Q/DQ\) graph.*SM89.*Hopper.*Blackwell"):
        E.build_engine(graphs["kv16"], tmp_path / "x.engine", precision="fp8", progress=False, flavour=RTX)


def test_fp8_qdq_graph_builds_for_sm89_and_later_only(graphs, tmp_path):
    entry = E.build_engine(graphs["fp8"], tmp_path / "f.engine", precision="fp8", progress=False, flavour=RTX,
                           target="portable")
    assert entry["precision"] == "fp8" and entry["target"]["compute_capabilities"] == ["sm89", "sm120", "sm121"]
    with pytest.raises(E.EngineError, match="fp8.*not on sm86"):
        E.build_engine(graphs["fp8"], tmp_path / "g.engine", precision="fp8", progress=False, flavour=RTX,
                       target=["sm86", "sm89"])


def test_opset23_attention_fp16_builds(graphs, tmp_path):
    entry = E.build_engine(graphs["attn"], tmp_path / "a.engine", precision="fp16", progress=False, flavour=RTX)
    assert [(t["name"], t["dtype"]) for t in entry["inputs"]] == [("q", "float16"), ("k", "float16"),
                                                                   ("v", "float16")]
    assert entry["state"] == {} and (tmp_path / "a.engine").stat().st_size > 0


def test_target_compute_capabilities_are_recorded(graphs, tmp_path):
    entry = E.build_engine(graphs["kv16"], tmp_path / "t.engine", precision="fp16", progress=False, flavour=RTX,
                           target=["8.6", "sm89", 86])
    assert entry["target"] == {"compute_capabilities": ["sm86", "sm89"], "selected_by": "requested"}
    entry = E.build_engine(graphs["kv16"], tmp_path / "t.engine", precision="fp16", progress=False, flavour=RTX,
                           target="8.9, 12.0")  # as `lipforce build --target` passes it
    assert entry["target"]["compute_capabilities"] == ["sm89", "sm120"]
    with pytest.raises(E.EngineError, match="sm87.*not a TensorRT-RTX target.*full TensorRT"):
        E.build_engine(graphs["kv16"], tmp_path / "t.engine", precision="fp16", progress=False, flavour=RTX,
                       target="sm87")


def test_bf16_is_refused_for_turing():
    fl = E.detect_tensorrt(RTX)
    config = trt.Builder(trt.Logger()).create_builder_config()
    with pytest.raises(E.EngineError, match="bf16.*SM80.*Turing"):
        fl.configure_target(config, "sm75", precision="bf16", gpu=None)
    assert fl.configure_target(config, "sm75", precision="fp16", gpu=None)["compute_capabilities"] == ["sm75"]


@pytest.mark.skipif(not NO_GPU, reason="checks the no-GPU behaviour")
def test_target_current_needs_a_gpu(graphs, tmp_path):
    with pytest.raises(E.EngineError, match="target='current' needs a CUDA GPU"):
        E.build_engine(graphs["kv16"], tmp_path / "t.engine", precision="fp16", progress=False, flavour=RTX,
                       target="current")


def test_dynamic_input_gets_a_static_profile(graphs, tmp_path):
    m = onnx.load(str(graphs["kv32"]))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    dyn = tmp_path / "dyn.onnx"
    onnx.save(m, str(dyn))
    with pytest.raises(E.EngineError, match=r"input 'x' of dyn.onnx has a dynamic shape \(-1, 2, 32\)"):
        E.build_engine(dyn, tmp_path / "d.engine", precision="fp32", progress=False, flavour=RTX)
    entry = E.build_engine(dyn, tmp_path / "d.engine", precision="fp32", progress=False, flavour=RTX,
                           shapes={"x": [1, CHUNK, DIM]})
    assert entry["inputs"][0] == {"name": "x", "shape": [1, CHUNK, DIM], "dtype": "float32"}


def test_external_weights_are_hashed_too(graphs, tmp_path):
    m = onnx.load(str(graphs["kv16"]))
    onnx.save(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.weights", size_threshold=0)
    entry = E.build_engine(tmp_path / "ext.onnx", tmp_path / "e.engine", precision="fp16", progress=False,
                           flavour=RTX)
    assert entry["onnx_external_data"] == [{"file": "ext.weights", "sha256": sha(tmp_path / "ext.weights")}]


def test_parser_errors_name_the_node(tmp_path):
    x = helper.make_tensor_value_info("x", TP.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("y", TP.FLOAT, [])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["h"], name="relu_0"),
                           helper.make_node("Det", ["h"], ["y"], name="det_node_7")], "g", [x], [y])
    p = tmp_path / "det.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(p))
    with pytest.raises(E.EngineError, match=r"could not parse .*det.onnx[\s\S]*'det_node_7' \(Det\)"):
        E.build_engine(p, tmp_path / "d.engine", precision="fp32", progress=False, flavour=RTX)


def test_custom_ops_refused_by_tensorrt_rtx_before_parsing(tmp_path):
    x = helper.make_tensor_value_info("x", TP.FLOAT16, [4, 4])
    y = helper.make_tensor_value_info("y", TP.FLOAT16, [4, 4])
    g = helper.make_graph([helper.make_node("KVAttention", ["x"], ["y"], name="attn_0", domain="lipforce")],
                          "g", [x], [y])
    p = tmp_path / "plug.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("lipforce", 1)]),
              str(p))
    with pytest.raises(E.EngineError, match="lipforce::KVAttention.*no plugin path"):
        E.build_engine(p, tmp_path / "p.engine", precision="fp16", progress=False, flavour=RTX)
    with pytest.raises(E.EngineError, match="no custom-plugin path"):
        E.build_engine(p, tmp_path / "p.engine", precision="fp16", progress=False, flavour=RTX,
                       plugin_libraries=[tmp_path / "libx.so"])


# ---------------------------------------------------------------------------------------------
# build_model
# ---------------------------------------------------------------------------------------------
def test_build_model_writes_engines_and_manifest(built_model):
    model_dir, out_dir, out = built_model
    model = json.loads((model_dir / "manifest.json").read_text())
    on_disk = json.loads((out_dir / "manifest.json").read_text())
    assert on_disk == out
    assert out["backend"] == "tensorrt"
    for key in ("format", "format_version", "config", "flavour", "opset", "precision", "graphs"):
        assert out[key] == model[key], key
    assert sorted(out["engines"]) == ["audio_encoder", "dit_step"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["audio_encoder.engine", "dit_step.engine", "manifest.json"]
    for g, e in out["engines"].items():
        assert e["sha256"] == sha(out_dir / e["file"]), g
        assert e["onnx_sha256"] == model["graphs"][g]["sha256"], g
        assert e["precision"] == "fp16" and e["tensorrt"]["version"] == trt.__version__
        assert e["state"] == model["graphs"][g]["state"], g
        assert [t["name"] for t in e["inputs"]] == [t["name"] for t in model["graphs"][g]["inputs"]]


def test_build_model_refuses_plugin_flavour_with_tensorrt_rtx(built_model, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(built_model[0], d)
    _edit_manifest(d, lambda m: m.update(flavour="plugin"))
    with pytest.raises(E.EngineError, match="'plugin' flavour.*no custom-plugin path.*portable flavour"):
        E.build_model(d, tmp_path / "out", progress=False, flavour=RTX)


def test_build_model_refuses_a_changed_onnx_file(built_model, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(built_model[0], d)
    _audio_encoder(d / "audio_encoder.onnx")
    with (d / "audio_encoder.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(E.EngineError, match="audio_encoder.onnx has sha256.*re-export"):
        E.build_model(d, tmp_path / "out", progress=False, flavour=RTX)


def test_build_model_refuses_another_precision_than_the_export(built_model, tmp_path):
    with pytest.raises(E.EngineError, match="precision='fp32'.*exported in 'fp16'"):
        E.build_model(built_model[0], tmp_path / "out", precision="fp32", progress=False, flavour=RTX)
    with pytest.raises(E.EngineError, match="out_dir .* is the model directory"):
        E.build_model(built_model[0], built_model[0], progress=False, flavour=RTX)


# ---------------------------------------------------------------------------------------------
# check_engine / load_engine
# ---------------------------------------------------------------------------------------------
def test_check_engine_passes_a_fresh_build(built_model):
    model_dir, out_dir, _ = built_model
    for g in ("audio_encoder", "dit_step"):
        rec = E.check_engine(out_dir, g, model_dir=model_dir)
        assert rec.passed[:3] == ["engine sha256", f"TensorRT-RTX {trt.__version__}", "onnx sha256"], rec
        if NO_GPU:
            assert not rec.deserialized and "no CUDA GPU" in rec.skipped
        else:
            assert rec.deserialized


def test_corrupted_engine_is_refused(built_model, tmp_path):
    d = _copy_engine_dir(built_model, tmp_path)
    p = d / "dit_step.engine"
    blob = bytearray(p.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    p.write_bytes(bytes(blob))
    with pytest.raises(E.EngineError, match=r"dit_step.engine is corrupted.*rebuild with `lipforce build`"):
        E.check_engine(d, "dit_step")
    E.check_engine(d, "audio_encoder")  # the other engine is untouched


def test_engine_from_another_tensorrt_version_is_refused(built_model, tmp_path):
    d = _copy_engine_dir(built_model, tmp_path)
    _edit_manifest(d, lambda m: m["engines"]["dit_step"]["tensorrt"].update(version="1.0.0.21"))
    with pytest.raises(E.EngineError) as ei:
        E.check_engine(d, "dit_step")
    msg = str(ei.value)
    assert "1.0.0.21" in msg and trt.__version__ in msg and "lipforce build" in msg


def test_engine_from_another_flavour_is_refused(built_model, tmp_path):
    d = _copy_engine_dir(built_model, tmp_path)
    _edit_manifest(d, lambda m: m["engines"]["dit_step"]["tensorrt"].update(flavour="tensorrt", version="10.3.0"))
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(E.EngineError, match=r"TensorRT 10.3.0, which does not import here.*tensorrt==10.3.0"):
            E.check_engine(d, "dit_step")
    with pytest.raises(E.EngineError, match="built with TensorRT 10.3.0 and TensorRT-RTX .* was asked"):
        E.check_engine(d, "dit_step", flavour=RTX)


def test_stale_engine_is_refused(built_model, tmp_path):
    d = _copy_engine_dir(built_model, tmp_path)
    _edit_manifest(d, lambda m: m["graphs"]["dit_step"].update(sha256="0" * 64))
    with pytest.raises(E.EngineError, match="dit_step.engine is stale.*lipforce build"):
        E.check_engine(d, "dit_step")
    # and against a re-exported model directory
    model = tmp_path / "model"
    shutil.copytree(built_model[0], model)
    _edit_manifest(model, lambda m: m["graphs"]["audio_encoder"].update(sha256="f" * 64))
    with pytest.raises(E.EngineError, match=r"audio_encoder.engine is stale.*the model in"):
        E.check_engine(built_model[1], "audio_encoder", model_dir=model)


def test_missing_engine_or_graph_is_a_clear_error(built_model, tmp_path):
    d = _copy_engine_dir(built_model, tmp_path)
    with pytest.raises(E.EngineError, match="no engine for graph 'vae_decoder'.*lipforce build"):
        E.check_engine(d, "vae_decoder")
    (d / "audio_encoder.engine").unlink()
    with pytest.raises(E.EngineError, match="audio_encoder.engine .* is missing"):
        E.check_engine(d, "audio_encoder")
    with pytest.raises(E.EngineError, match="not a TensorRT engine manifest"):
        E.check_engine(built_model[0], "dit_step")


@pytest.mark.skipif(not NO_GPU, reason="checks the no-GPU behaviour")
def test_load_engine_without_gpu_stops_before_deserializing(built_model):
    with pytest.raises(E.EngineError, match="no CUDA GPU here.*cannot deserialize"):
        E.load_engine(built_model[1], "dit_step")


@pytest.mark.skipif(not NO_GPU, reason="checks the no-GPU behaviour")
def test_engine_load_with_tensorrt_backend_without_gpu_is_a_clear_error(built_model):
    from lipforce_sdk.backends.base import BackendError
    from lipforce_sdk.session import Engine

    with pytest.raises(E.EngineError, match=r"cannot load engine \S*audio_encoder.engine: no CUDA GPU"):
        Engine.load(built_model[1], backend="tensorrt")
    with pytest.raises(BackendError, match="no TensorRT engines.*lipforce build"):
        Engine.load(built_model[0], backend="tensorrt")


@pytest.mark.gpu
@pytest.mark.skipif(NO_GPU, reason="deserializing and running an engine needs a CUDA GPU")
def test_engine_runs_and_matches_onnxruntime_over_calls(built_model):
    ort = pytest.importorskip("onnxruntime")
    from lipforce_sdk.backends.tensorrt_backend import load_tensorrt_runners

    model_dir, out_dir, _ = built_model
    runner = load_tensorrt_runners(out_dir, graphs=["dit_step"])["dit_step"]
    sess = ort.InferenceSession(str(model_dir / "dit_step.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    state = runner.new_state()
    kv = np.zeros((1, HEADS, M_SLOTS, HEAD_DIM), np.float16)
    ref_state = {"kv_k_0": kv, "kv_v_0": kv}
    for step in range(6):  # eager, then CUDA-graph replays at both parities
        feeds = {"x": rng.standard_normal((1, CHUNK, DIM)).astype(np.float16),
                 "write_idx": np.array([(2 * step) % M_SLOTS, (2 * step + 1) % M_SLOTS], np.int32),
                 "k_valid": np.ones(M_SLOTS, np.int32)}
        got = runner.run(feeds, state)["y"]
        y, k, v = sess.run(None, {**feeds, **ref_state})
        ref_state = {"kv_k_0": k, "kv_v_0": v}
        np.testing.assert_allclose(got.astype(np.float32), y.astype(np.float32), atol=2e-2, rtol=2e-2,
                                   err_msg=f"step {step}")
    runner.close()
