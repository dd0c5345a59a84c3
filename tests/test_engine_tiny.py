"""CI builds the tiny model's real graphs into TensorRT-RTX engines ahead of time on the CPU."""

import json
import shutil

import pytest

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed (pip install 'lipforce[trt-rtx]')")

from conftest import corrupted_copy  # noqa: E402
from lipforce_sdk.engine import EngineError, build_model, check_engine  # noqa: E402
from lipforce_sdk.manifest import sha256_file  # noqa: E402


@pytest.fixture(scope="module")
def tiny_engines(exported_tiny, tmp_path_factory):
    from lipforce_sdk.export import export_model

    model = exported_tiny[0]
    base = tmp_path_factory.mktemp("tiny_trt")
    out = {}
    for precision, attention in (("fp32", "decomposed"), ("fp16", "decomposed"), ("fp16", "onnx_attention"),
                                 ("bf16", "onnx_attention")):
        src = exported_tiny[1] if precision == "fp32" else base / f"onnx_{precision}_{attention}"
        if precision != "fp32":
            export_model(model, src, precision=precision, attention=attention, progress=False)
        dst = base / f"trt_{precision}_{attention}"
        out[(precision, attention)] = (src, dst, build_model(src, dst, progress=False))
    return out


@pytest.mark.parametrize("key", [("fp32", "decomposed"), ("fp16", "decomposed"), ("fp16", "onnx_attention"),
                                 ("bf16", "onnx_attention")])
def test_tiny_engines_serialize_with_right_manifests(tiny_engines, key):
    src, dst, man = tiny_engines[key]
    model_man = json.loads((src / "manifest.json").read_text())
    assert json.loads((dst / "manifest.json").read_text()) == man
    assert man["backend"] == "tensorrt" and man["config"] == model_man["config"]
    assert set(man["engines"]) == {"audio_encoder", "vae_encoder", "dit_step", "vae_decoder"}
    for g, e in man["engines"].items():
        f = dst / e["file"]
        assert f.stat().st_size > 10_000 and sha256_file(f) == e["sha256"], g
        assert e["onnx_sha256"] == model_man["graphs"][g]["sha256"], g
        assert e["tensorrt"] == {"flavour": "tensorrt_rtx", "version": trt.__version__}, g
        assert e["precision"] == key[0], g
        assert [t["name"] for t in e["inputs"]] == [t["name"] for t in model_man["graphs"][g]["inputs"]], g
        assert e["state"] == model_man["graphs"][g]["state"], g
    assert len(man["engines"]["dit_step"]["state"]) == 2 * model_man["config"]["dit"]["num_layers"]  # K and V per layer
    chk = check_engine(dst, "dit_step", model_dir=src)
    assert chk.passed and not chk.deserialized  # no GPU here: stops before deserialising, and says so


def test_corrupted_and_mismatched_tiny_engines_are_refused(tiny_engines, tmp_path):
    src, dst, _ = tiny_engines[("fp16", "decomposed")]
    bad = tmp_path / "bad"
    p = corrupted_copy(dst, bad, "dit_step.engine", at=1 / 3, mask=0x5A)
    with pytest.raises(EngineError, match=r"dit_step\.engine.*(sha256|corrupt).*lipforce build"):
        check_engine(bad, "dit_step", model_dir=src)
    shutil.copyfile(dst / "dit_step.engine", p)
    m = json.loads((bad / "manifest.json").read_text())
    m["engines"]["vae_decoder"]["tensorrt"]["version"] = "1.0.0.1"
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EngineError, match=r"1\.0\.0\.1.*" + trt.__version__.replace(".", r"\.")):
        check_engine(bad, "vae_decoder", model_dir=src)
    other = tiny_engines[("fp32", "decomposed")][0]  # an engine checked against another export: stale
    with pytest.raises(EngineError, match=r"(stale|ONNX|onnx).*(re-?build|lipforce build)"):
        check_engine(dst, "dit_step", model_dir=other)


def test_fp32_onnx_attention_export_is_refused_with_the_fix(exported_tiny, tmp_path):
    from lipforce_sdk.export import export_dit_step

    src = tmp_path / "m"
    shutil.copytree(exported_tiny[1], src)
    spec = export_dit_step(exported_tiny[0], src / "dit_step.onnx", attention="onnx_attention")
    m = json.loads((src / "manifest.json").read_text())
    m["graphs"]["dit_step"] = spec
    m["attention"], m["opset"] = "onnx_attention", 23
    (src / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EngineError, match=r"fp32.*fp16/bf16.*decomposed"):
        build_model(src, tmp_path / "e", progress=False)
