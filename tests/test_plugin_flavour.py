"""The plugin-flavour DiT step (one lipforce::KVCacheAttention node per layer, run in ONNX Runtime
by the C++ CPU reference) equals the portable graph, chunk after chunk with the state carried."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (pip install 'lipforce[onnx]')")
pytest.importorskip("onnxruntime_extensions", reason="needs onnxruntime-extensions (pip install 'lipforce[plugin-ort]')")

from conftest import BOX, make_clip  # noqa: E402
from lipforce_sdk import Engine  # noqa: E402
from lipforce_sdk.cache_plan import RingCachePlanner  # noqa: E402
from lipforce_sdk.export import export_model  # noqa: E402
from lipforce_sdk.export.exporter import example_inputs  # noqa: E402
from lipforce_sdk.offline import render_offline  # noqa: E402

FP32 = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def plugin_dir(exported_tiny, tmp_path_factory):
    model = exported_tiny[0]
    out = tmp_path_factory.mktemp("tiny_plugin")
    man = export_model(model, out, attention="plugin", progress=False)
    return out, man


def test_plugin_graph_has_one_node_per_layer(plugin_dir, exported_tiny):
    import onnx

    from lipforce_sdk import kvattn

    out, man = plugin_dir
    assert man["flavour"] == "plugin" and man["attention"] == "plugin"
    g = onnx.load(str(out / "dit_step.onnx")).graph
    nodes = [n for n in g.node if n.op_type == kvattn.OP_TYPE]
    layers = exported_tiny[0].cfg.dit.num_layers
    assert len(nodes) == layers and all(n.domain == kvattn.DOMAIN for n in nodes)
    attrs = {a.name for a in nodes[0].attribute}
    assert set(kvattn.ATTRIBUTE_NAMES) <= attrs
    assert [o for o in nodes[1].output[1:]] == ["kv_k_out_1", "kv_v_out_1"]
    portable = onnx.load(str(exported_tiny[1] / "dit_step.onnx")).graph
    count = lambda graph, op: sum(n.op_type == op for n in graph.node)  # noqa: E731
    # self-attention and the cache writes live in the plugin node; the audio cross-attention stays
    assert count(portable, "Softmax") == 2 * layers and count(g, "Softmax") == layers
    assert count(portable, "ScatterND") == 2 * layers and count(g, "ScatterND") == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_plugin_dit_step_equals_portable_over_chunks(plugin_dir, exported_tiny, seed):
    model, portable_dir, _ = exported_tiny
    out, _ = plugin_dir
    runners = {name: Engine.load(d, backend="onnxruntime").backend.runners["dit_step"]
               for name, d in (("portable", portable_dir), ("plugin", out))}
    states = {k: r.new_state() for k, r in runners.items()}
    cfg = model.cfg
    pl = RingCachePlanner.for_stream(cfg.stream)
    for chunk in range(cfg.num_slots + 5):  # past a ring wrap
        names, tensors, _, _ = example_inputs(model, "dit_step", seed=1000 * seed + chunk)
        feeds = {n: t.numpy() for n, t in zip(names[:5], tensors[:5])}
        feeds.update(pl.plan().as_feeds())
        got = {k: runners[k].run(feeds, states[k])["x0"] for k in runners}
        np.testing.assert_allclose(got["plugin"], got["portable"], **FP32, err_msg=f"seed={seed} chunk={chunk} x0")
        for name in states["portable"]:
            np.testing.assert_allclose(states["plugin"][name], states["portable"][name], **FP32,
                                       err_msg=f"seed={seed} chunk={chunk} {name}")
        pl.commit()


def test_stream_through_plugin_graphs_matches_portable(plugin_dir, exported_tiny):
    frames, audio = make_clip(20, 31, hw=(128, 128))
    a = render_offline(Engine.load(exported_tiny[1], backend="onnxruntime"), audio, frames, box=BOX)
    b = render_offline(Engine.load(plugin_dir[0], backend="onnxruntime"), audio, frames, box=BOX)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
