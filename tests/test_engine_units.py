"""engine/ without building anything: ONNX inspection, precision rules, targets, flavour detection,
state-name inference, the progress record, doctor."""

import sys
from pathlib import Path

import numpy as np
import pytest



import lipforce_sdk.engine as E  # noqa: E402  (installed as lipforce_sdk.engine; see pyproject)
onnx = pytest.importorskip("onnx", reason="inspecting graphs needs the onnx package")
from onnx import TensorProto as TP, helper, numpy_helper  # noqa: E402


def _matmul_graph(path, elem=TP.FLOAT, np_dtype=np.float32, *, fp8=False, custom=False):
    w = numpy_helper.from_array(np.ones((8, 8), np_dtype), "W")
    x = helper.make_tensor_value_info("x", elem, [1, 4, 8])
    y = helper.make_tensor_value_info("y", elem, [1, 4, 8])
    inits = [w]
    if fp8:
        inits.append(numpy_helper.from_array(np.array(0.1, np_dtype), "s"))
        nodes = [helper.make_node("QuantizeLinear", ["W", "s"], ["wq"], output_dtype=TP.FLOAT8E4M3FN),
                 helper.make_node("DequantizeLinear", ["wq", "s"], ["wd"]),
                 helper.make_node("MatMul", ["x", "wd"], ["y"], name="mm")]
    elif custom:
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
                 helper.make_node("KVAttention", ["h"], ["y"], name="attn_0", domain="lipforce")]
    else:
        nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid("lipforce", 1)] if custom else [])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=opsets)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("elem,np_dtype,precision", [
    (TP.FLOAT, np.float32, "fp32"), (TP.FLOAT16, np.float16, "fp16")])
def test_inspect_onnx_reads_precision_from_the_weights(tmp_path, elem, np_dtype, precision):
    info = E.inspect_onnx(_matmul_graph(tmp_path / "g.onnx", elem, np_dtype))
    assert info.precision == precision, info
    assert info.quantized is None and info.custom_ops == ()
    assert [t.name for t in info.inputs] == ["x"] and info.inputs[0].shape == (1, 4, 8)
    E.check_graph_precision(info, precision)  # the graph's own precision passes
    other = "fp16" if precision == "fp32" else "fp32"
    with pytest.raises(E.EngineError, match=rf"{precision} graph.*precision='{other}'"):
        E.check_graph_precision(info, other)


def test_bf16_graph_is_bf16(tmp_path):
    import ml_dtypes

    info = E.inspect_onnx(_matmul_graph(tmp_path / "g.onnx", TP.BFLOAT16, ml_dtypes.bfloat16))
    assert info.precision == "bf16"
    with pytest.raises(E.EngineError, match="bf16 graph"):
        E.check_graph_precision(info, "fp16")


def test_fp8_needs_qdq_and_names_the_gpus(tmp_path):
    plain = E.inspect_onnx(_matmul_graph(tmp_path / "a.onnx", TP.FLOAT16, np.float16))
    with pytest.raises(E.EngineError) as ei:
        E.check_graph_precision(plain, "fp8")
    msg = str(ei.value)
    assert "quantized" in msg and "Q/DQ" in msg and "SM89" in msg and "Hopper" in msg and "Blackwell" in msg
    q = E.inspect_onnx(_matmul_graph(tmp_path / "b.onnx", TP.FLOAT16, np.float16, fp8=True))
    assert q.quantized == "fp8"
    E.check_graph_precision(q, "fp8")
    with pytest.raises(E.EngineError, match="fp8-quantized"):
        E.check_graph_precision(q, "fp16")


def test_unknown_precision_refused(tmp_path):
    info = E.inspect_onnx(_matmul_graph(tmp_path / "g.onnx"))
    with pytest.raises(E.EngineError, match="int8.*expected one of fp32, fp16, bf16, fp8"):
        E.check_graph_precision(info, "int8")


def test_custom_domain_nodes_are_listed(tmp_path):
    info = E.inspect_onnx(_matmul_graph(tmp_path / "g.onnx", custom=True))
    assert info.custom_ops == (("lipforce", "KVAttention", "attn_0"),)


def test_unreadable_onnx_is_a_clear_error(tmp_path):
    p = tmp_path / "broken.onnx"
    p.write_bytes(b"\x00not an onnx file")
    with pytest.raises(E.EngineError, match="broken.onnx.*re-export"):
        E.inspect_onnx(p)


def test_state_mapping_follows_the_naming_convention():
    ins = ["x_t", "t", "write_idx", "kv_k_0", "kv_v_0", "kv_k_1", "enc_cache_3", "lonely_2"]
    outs = ["x0", "kv_k_out_0", "kv_v_out_0", "kv_k_out_1", "enc_cache_out_3"]
    assert E.infer_state_mapping(ins, outs) == {
        "kv_k_0": "kv_k_out_0", "kv_v_0": "kv_v_out_0", "kv_k_1": "kv_k_out_1", "enc_cache_3": "enc_cache_out_3"}


@pytest.mark.parametrize("value,sm", [(86, "sm86"), ("8.6", "sm86"), ("sm89", "sm89"), ("SM_120", "sm120"),
                                      ("12.0", "sm120"), ((7, 5), "sm75"), (121, "sm121")])
def test_parse_compute_capability(value, sm):
    assert E.parse_compute_capability(value) == sm


def test_parse_compute_capability_rejects_garbage():
    with pytest.raises(E.EngineError, match="'ampere'.*sm86"):
        E.parse_compute_capability("ampere")


def test_no_tensorrt_names_both_install_options(monkeypatch):
    flavour_mod = sys.modules["lipforce_sdk.engine.flavour"]

    def fail(name, *a, **k):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(flavour_mod.importlib, "import_module", fail)
    with pytest.raises(E.EngineError) as ei:
        E.detect_tensorrt()
    msg = str(ei.value)
    assert "pip install tensorrt-rtx" in msg and "pip install tensorrt`" in msg and "JetPack" in msg
    with pytest.raises(E.EngineError, match="TensorRT was asked for.*import tensorrt"):
        E.detect_tensorrt("tensorrt")


def test_unknown_flavour_name():
    with pytest.raises(E.EngineError, match="unknown TensorRT flavour 'tensorflow'"):
        E.detect_tensorrt("tensorflow")


def test_progress_record_nests_and_cancels():
    p = E.BuildProgress(disable=True)
    p.phase_start("Building engine", None, 3)
    p.phase_start("Optimizing graph", "Building engine", 2)
    assert p.step_complete("Optimizing graph", 0) is True
    p.step_complete("Optimizing graph", 1)
    p.phase_finish("Optimizing graph")
    p.step_complete("Building engine", 0)
    p.cancel()
    assert p.step_complete("Building engine", 1) is False  # tells TensorRT to stop
    p.phase_finish("Building engine")
    assert [(r.name, r.depth, r.steps_done, r.finished) for r in p.phases] == [
        ("Building engine", 0, 2, True), ("Optimizing graph", 1, 2, True)]
    assert p.summary() == {"phases": 2, "top_level": ["Building engine"]}


def test_progress_draws_bars(capsys):
    p = E.BuildProgress(label="dit_step")
    p.phase_start("Building engine", None, 2)
    p.step_complete("Building engine", 0)
    p.step_complete("Building engine", 1)
    p.phase_finish("Building engine")
    assert "dit_step: Building engine" in capsys.readouterr().err


def test_doctor_reports_every_section():
    rep = E.doctor()
    for key in ("python", "torch", "onnxruntime", "tensorrt", "cuda", "gpu", "plugin_library"):
        assert key in rep, key
    assert set(rep["tensorrt"]) >= {"tensorrt_rtx", "tensorrt", "usable"}
    assert rep["plugin_library"]["expected"].endswith("liblipforce_trt_plugins.so")
    text = E.format_doctor(rep)
    assert "python.version" in text and "gpu.found" in text


def test_engine_and_doctor_import_no_torch():
    import subprocess

    code = ("import sys; import lipforce_sdk.engine as E; E.doctor(); import lipforce_sdk.backends.tensorrt_backend; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(Path(__file__).parent))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False", "engine/, doctor() or the TensorRT backend imported torch"


# ------------------------------------------------------------------------------------------------
# full TensorRT's side of the flavour, over a stand-in module (TensorRT is not installable everywhere)
# ------------------------------------------------------------------------------------------------
class _FakeCache:
    def __init__(self, blob):
        self.blob = bytes(blob)

    def serialize(self):
        return self.blob + b"+more"


class _FakeConfig:
    def __init__(self):
        self.cache = None
        self.loaded = None
        self.hardware_compatibility_level = None
        self.preview = {}

    def create_timing_cache(self, blob):
        self.loaded = bytes(blob)
        return _FakeCache(blob)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache

    def set_preview_feature(self, feature, on):
        self.preview[feature] = on


def _full_trt():
    from types import SimpleNamespace

    mod = SimpleNamespace(HardwareCompatibilityLevel=SimpleNamespace(AMPERE_PLUS="ampere+"),
                          PreviewFeature=SimpleNamespace(ALIASED_PLUGIN_IO_10_03="alias"))
    return E.TensorRTFlavour(name="tensorrt", module=mod, version="10.3.0")


ORIN = E.GpuInfo(name="Orin", compute_capability=(8, 7))
H100 = E.GpuInfo(name="NVIDIA H100", compute_capability=(9, 0))


def test_full_tensorrt_targets_the_local_gpu():
    fl = _full_trt()
    assert fl.supports_plugins and fl.supports_timing_cache and not fl.builds_without_gpu
    with pytest.raises(E.EngineError, match="no CUDA GPU was found.*TensorRT-RTX"):
        fl.configure_target(_FakeConfig(), None, precision="fp16", gpu=None)
    assert fl.configure_target(_FakeConfig(), None, precision="fp16", gpu=ORIN) == {
        "gpu": "Orin", "compute_capability": "sm87", "hardware_compatibility": "none"}
    with pytest.raises(E.EngineError, match=r"builds for the GPU it runs on \(Orin, sm87\), not for sm90"):
        fl.configure_target(_FakeConfig(), "sm90", precision="fp16", gpu=ORIN)
    cfg = _FakeConfig()
    assert fl.configure_target(cfg, "ampere+", precision="fp16", gpu=H100)["hardware_compatibility"] == "ampere_plus"
    assert cfg.hardware_compatibility_level == "ampere+"
    with pytest.raises(E.EngineError, match="fp8.*not on sm87"):
        fl.configure_target(_FakeConfig(), None, precision="fp8", gpu=ORIN)
    assert fl.configure_target(_FakeConfig(), None, precision="fp8", gpu=H100)["compute_capability"] == "sm90"


def test_full_tensorrt_timing_cache_is_written_then_reused(tmp_path):
    fl = _full_trt()
    path = tmp_path / "cache" / "timing.cache"
    first = _FakeConfig()
    assert fl.attach_timing_cache(first, path) is not None and first.loaded == b""  # starts empty
    assert fl.save_timing_cache(first, path) == len(b"+more") and path.read_bytes() == b"+more"
    second = _FakeConfig()
    fl.attach_timing_cache(second, path)
    assert second.loaded == b"+more"  # the saved cache is read back
    fl.save_timing_cache(second, path)
    assert path.read_bytes() == b"+more+more"


def test_plugin_libraries_load_once_and_missing_ones_are_named(tmp_path):
    fl = _full_trt()
    lib = tmp_path / "liblipforce_trt_plugins.so"
    lib.write_bytes(b"\x7fELF")
    calls = []

    class Registry:
        def load_library(self, path):
            calls.append(path)
            return object()

    assert fl.load_plugin_libraries(Registry(), [lib]) == [lib.resolve()]
    assert fl.load_plugin_libraries(Registry(), [lib]) == [lib.resolve()]
    assert calls == [str(lib.resolve())]  # the registry is process-wide: loaded once
    with pytest.raises(E.EngineError, match="libnope.so' does not exist"):
        fl.load_plugin_libraries(Registry(), [tmp_path / "libnope.so"])
    cfg = _FakeConfig()
    assert fl.enable_plugin_features(cfg) == ["ALIASED_PLUGIN_IO_10_03"] and cfg.preview == {"alias": True}


def test_engine_gpu_check_names_both_gpus():
    check = sys.modules["lipforce_sdk.engine.check"]
    full = {"file": "dit_step.engine", "target": {"gpu": "NVIDIA H100", "compute_capability": "sm90",
                                                   "hardware_compatibility": "none"}}
    check._gpu_fits(full, H100, _full_trt())
    with pytest.raises(E.EngineError, match=r"built on NVIDIA H100 \(sm90\) and this GPU is Orin \(sm87\)"):
        check._gpu_fits(full, ORIN, _full_trt())
    rtx = E.TensorRTFlavour(name="tensorrt_rtx", module=None, version="1.7.1.116")
    entry = {"file": "dit_step.engine", "target": {"compute_capabilities": ["sm86", "sm89"]}}
    check._gpu_fits(entry, E.GpuInfo("RTX 4090", (8, 9)), rtx)
    with pytest.raises(E.EngineError, match=r"built for sm86, sm89 and this GPU is RTX 5090 \(sm120\)"):
        check._gpu_fits(entry, E.GpuInfo("RTX 5090", (12, 0)), rtx)
    with pytest.raises(E.EngineError, match="not a TensorRT-RTX target: use full TensorRT"):
        check._gpu_fits(entry, H100, rtx)


# ---- attention flavour chosen by TensorRT version ------------------------------------------------------
class _FakeModule:
    pass


@pytest.mark.parametrize("name,version,classes,precision,want,kv_layer", [
    ("tensorrt", "10.3.0", (), "fp16", "plugin", False),             # JetPack 6: no native attention -> plugin
    ("tensorrt", "10.3.0", (), "fp32", "plugin", False),
    ("tensorrt", "10.14.1", (), "fp16", "onnx_attention", False),    # IAttention from 10.14
    ("tensorrt", "10.14.1", (), "fp32", "decomposed", False),        # fused attention has no fp32 kernels
    ("tensorrt", "10.15.0", (), "fp16", "onnx_attention", True),     # IKVCacheUpdateLayer from 10.15
    ("tensorrt", "11.1.0", (), "bf16", "onnx_attention", True),
    ("tensorrt", "10.9.0", ("IAttention",), "bf16", "onnx_attention", False),  # feature detection wins
    ("tensorrt_rtx", "1.7.1", (), "fp16", "onnx_attention", False),
    ("tensorrt_rtx", "1.7.1", (), "fp32", "decomposed", False),
])
def test_recommended_attention_by_version(name, version, classes, precision, want, kv_layer):
    from lipforce_sdk.engine import TensorRTFlavour

    mod = _FakeModule()
    for c in classes:
        setattr(mod, c, object)
    fl = TensorRTFlavour(name=name, module=mod, version=version)
    assert fl.recommended_attention(precision) == want, f"{name} {version} {precision}"
    assert fl.has_native_kv_cache_update == kv_layer, f"{name} {version}"
