"""Batched sessions: the graph calls of concurrent sessions run as one batched call.

Numerics first: the torch reference computes a cache plan per batch element (a batch of streams at
different positions equals each stream called alone, and float64), the batched ONNX graphs equal the
batch-1 graphs, and whole streams pushed from threads on a batching engine give the frames of
their solo runs. Then the scheduler: batches of more than one stream happen, a lone stream never
waits, a bad input or a failing call stays with its own session, sessions that leave are not
waited for. Then the export (max_batch=1 keeps the batch-1 contract; the plugin is batch 1 only)
and a TensorRT-RTX engine with a batch profile.
"""

import gc
import importlib.util
import json
import threading

import numpy as np
import pytest
import torch

from conftest import BOX, make_clip

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (pip install 'lipforce[onnx]')")

from lipforce_sdk import Engine, InputError, default_model_dir  # noqa: E402
from lipforce_sdk.backends.base import BackendError  # noqa: E402
from lipforce_sdk.cache_plan import RingCachePlanner  # noqa: E402
from lipforce_sdk.contract import GRAPHS, PLAN_INPUTS, feed_shapes  # noqa: E402
from lipforce_sdk.export import export_model  # noqa: E402
from lipforce_sdk.export.exporter import ExportError, example_inputs  # noqa: E402
from lipforce_sdk.model import LipSyncModel, load_model  # noqa: E402
from lipforce_sdk.model.attention import Rope3D, kv_cache_attention  # noqa: E402

MAX_B = 4
# Tolerances, measured on this 2-core CPU (fp32): a batched call vs the same streams called one by
# one differs by rounding only (~5e-6 on DiT latents of magnitude ~1); frames are uint8 after that.
TOL_LATENTS = dict(atol=5e-5, rtol=1e-4)  # fp32 per-element plan vs per-stream calls
TOL_F64 = dict(atol=1e-4, rtol=1e-4)  # fp32 (either way) vs the float64 reference
# uint8 levels, batched stream vs solo stream: a generated pixel one level off by rounding, and the seam's
# match (geometry.match_edge), which carries that pixel's difference into its neighbours, one more
FRAME_MAX_DIFF = 2
# of the pixels may differ at all: measured up to 1.2e-4 (the bundled default of 2026-12-06, the stream that
# joins late: one frame whose generated mouth comes out one level off on 67 scattered values, 2 of them two
# levels; the other streams 2e-6 to 4e-6); a stream fed another's frames or cache differs everywhere
FRAME_DIFF_FRACTION = 5e-4


@pytest.fixture(scope="module")
def batched_dir(batched_tiny):
    """The bundled default exported with a batch axis (max_batch=MAX_B), portable, opset 18."""
    assert batched_tiny[1]["max_batch"] == MAX_B
    return batched_tiny


# ------------------------------------------------------------------------------------------------
# harness: sessions pushed from threads
# ------------------------------------------------------------------------------------------------
CLIPS = [make_clip(18 + 2 * i, seed=40 + i) for i in range(4)]  # different lengths and content


def push_clip(engine, i, seed=None, before=None, bad=None, errors=None):
    """Stream clip ``i`` frame by frame; returns the output frames [F, H, W, 3] uint8.

    ``before(k)``: called before frame ``k``'s push (to hold a thread back). ``bad(session, k)``:
    called before frame ``k``'s push; whatever it raises is appended to ``errors``."""
    frames, audio = CLIPS[i]
    s = engine.session(box=BOX, seed=100 + i if seed is None else seed)
    out = []
    for k, f in enumerate(frames):
        if before is not None:
            before(k)
        if bad is not None:
            try:
                bad(s, k)
            except Exception as e:  # noqa: BLE001 - collected and checked by the test
                errors.append(e)
        out += s.push(audio[k * 640:(k + 1) * 640], f)
    out += s.push(audio[len(frames) * 640:])
    out += s.flush()
    assert [o.index for o in out] == list(range(len(frames)))
    return np.stack([o.image for o in out])


def run_threads(engine, n, late=None, per_stream=None):
    """Clips 0..n-1 pushed from n threads started together; stream ``late`` starts one chunk later
    than the others (its chunk k runs beside their chunk k+1, at other cache positions)."""
    results, errors = {}, []
    start = threading.Barrier(n)
    first_chunk_done = threading.Event()

    def worker(i):
        try:
            start.wait()
            if i == late:
                first_chunk_done.wait(timeout=60)

            def before(k, i=i):
                if k == engine.config.video_frames_per_chunk * 2 and i != late:
                    first_chunk_done.set()
            results[i] = push_clip(engine, i, before=before, **(per_stream or {}).get(i, {}))
        except BaseException as e:  # noqa: BLE001
            errors.append((i, e))
            first_chunk_done.set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a session thread hung (deadlock?)"
    return results, errors


def assert_frames_close(got, want, what, max_diff=FRAME_MAX_DIFF, fraction=FRAME_DIFF_FRACTION):
    assert got.shape == want.shape, what
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    frac = float((d > 0).mean())
    assert d.max() <= max_diff and frac <= fraction, f"{what}: max diff {d.max()} levels, {frac:.2e} of pixels differ"


class PlanRecorder:
    """Wraps ``backend.run_batch`` to record whether streams at different cache positions shared a call."""

    def __init__(self, backend):
        self.mixed_positions = 0
        self._run_batch = backend.run_batch
        backend.run_batch = self

    def __call__(self, graph, calls):
        if graph == "dit_step":
            rows = {tuple(np.asarray(f["write_idx"]).reshape(-1)) for f, _ in calls}
            self.mixed_positions += len(rows) > 1
        return self._run_batch(graph, calls)


# ------------------------------------------------------------------------------------------------
# the reference model: a cache plan per batch element
# ------------------------------------------------------------------------------------------------
def _plans(offsets, S=2, W=3, C=2):
    """One plan per stream, stream ``i`` ``offsets[i]`` chunks into its stream (the ring wrapped)."""
    out = []
    for n in offsets:
        pl = RingCachePlanner(S, W, C)
        for _ in range(n):
            pl.commit()
        out.append(pl.plan())
    return out


@pytest.mark.parametrize("offsets", [(0, 1, 2), (5, 0, 11), (3, 3, 8)])
def test_cache_attention_per_element_equals_per_stream(offsets):
    torch.manual_seed(sum(offsets))
    H, D, gh, gw, C = 2, 24, 2, 3, 2
    N = gh * gw
    rope = Rope3D(D, gh, gw)
    plans = _plans(offsets, C=C)
    M = plans[0].k_pos.shape[0]
    b = len(offsets)
    q, k, v = (torch.randn(b, C * N, H, D) for _ in range(3))
    kc, vc = torch.randn(b, M * N, H, D), torch.randn(b, M * N, H, D)
    stacked = [torch.from_numpy(np.stack([getattr(p, n) for p in plans])) for n in PLAN_INPUTS]
    out, kb, vb = kv_cache_attention(q, k, v, kc, vc, *stacked, rope, inplace=False)
    kc_in, vc_in = kc.clone(), vc.clone()
    out_ip, _, _ = kv_cache_attention(q, k, v, kc_in, vc_in, *stacked, rope, inplace=True)
    torch.testing.assert_close(out_ip, out, atol=0, rtol=0)
    torch.testing.assert_close(kc_in, kb, atol=0, rtol=0)  # the in-place write is the same write
    for i, p in enumerate(plans):
        one = [torch.from_numpy(getattr(p, n)) for n in PLAN_INPUTS]
        o1, k1, v1 = kv_cache_attention(q[i:i + 1], k[i:i + 1], v[i:i + 1], kc[i:i + 1], vc[i:i + 1], *one, rope,
                                        inplace=False)
        torch.testing.assert_close(out[i:i + 1], o1, **TOL_LATENTS, msg=lambda m: f"offsets={offsets} i={i}: {m}")
        torch.testing.assert_close(kb[i:i + 1], k1, atol=0, rtol=0)  # each element wrote its own slots only
        torch.testing.assert_close(vb[i:i + 1], v1, atol=0, rtol=0)


def test_dit_per_element_plan_over_a_stream_equals_per_stream_calls_and_float64():
    """Three streams at different positions (offsets 0, 3, 7 chunks, the ring wrapping), 12 chunks of
    three passes each, run as one batch with the caches written in place, vs each stream alone
    (fp32) and vs the batch in float64."""
    model = LipSyncModel.from_preset("tiny", seed=7, stream={"resolution": 64}).eval()
    cfg, dit = model.cfg, model.dit
    offsets, b, L = (0, 3, 7), 3, len(model.dit.blocks)
    shape = dit.cache_shape(b)
    batch = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(L)]
    batch64 = [(torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)) for _ in range(L)]
    alone = [[(torch.zeros(dit.cache_shape(1)), torch.zeros(dit.cache_shape(1))) for _ in range(L)] for _ in range(b)]
    planners = [RingCachePlanner.for_stream(cfg.stream) for _ in range(b)]
    for pl, n in zip(planners, offsets):
        for _ in range(n):
            pl.commit()
    dit64 = LipSyncModel.from_preset("tiny", seed=7, stream={"resolution": 64}).eval().double().dit
    g = torch.Generator().manual_seed(0)
    worst = {"alone": 0.0, "f64": 0.0}
    with torch.no_grad():
        for chunk in range(12):
            names, tensors, _, _ = example_inputs(model, "dit_step", seed=chunk, batch=b)
            feeds = dict(zip(names, tensors))
            plans = [pl.plan() for pl in planners]
            for n in PLAN_INPUTS:
                feeds[n] = torch.from_numpy(np.stack([getattr(p, n) for p in plans]))
            for t in (1.0, 0.5, 0.0):
                feeds["t"] = torch.full((b,), t)
                feeds["x_t"] = torch.randn(feeds["x_t"].shape, generator=g)
                args = [feeds[n] for n in names[:9]]
                x0, _ = dit.step(*args, batch, inplace=True)
                args64 = [a.double() if a.is_floating_point() else a for a in args]
                x64, _ = dit64.step(*args64, batch64, inplace=True)
                for i in range(b):
                    one = [a[i] if n in PLAN_INPUTS else a[i:i + 1] for n, a in zip(names[:9], args)]
                    x1, _ = dit.step(*one, alone[i], inplace=True)
                    torch.testing.assert_close(x0[i:i + 1], x1, **TOL_LATENTS,
                                               msg=lambda m: f"chunk {chunk} t={t} stream {i}: {m}")
                    worst["alone"] = max(worst["alone"], float((x0[i:i + 1] - x1).abs().max()))
                torch.testing.assert_close(x0.double(), x64, **TOL_F64, msg=lambda m: f"chunk {chunk} t={t}: {m}")
                worst["f64"] = max(worst["f64"], float((x0.double() - x64).abs().max()))
            for pl in planners:
                pl.commit()
    for i in range(b):  # every stream's cache, written by batched calls, is its own
        for layer in range(L):
            torch.testing.assert_close(batch[layer][0][i:i + 1], alone[i][layer][0], **TOL_LATENTS)
    assert worst["alone"] > 0 or worst["f64"] > 0  # the comparison saw real numbers


def test_batched_onnx_graphs_equal_batch1_graphs(batched_dir, exported_tiny):
    """Each batched graph at batch 3 (streams at different cache positions) vs the batch-1 graph
    called per stream."""
    bdir, bman = batched_dir
    model, odir, oman = exported_tiny
    for graph in GRAPHS:
        names, tensors, out_names, _ = example_inputs(model, graph, seed=5, batch=3)
        feeds = {n: t.numpy() for n, t in zip(names, tensors)}
        got = ort.InferenceSession(str(bdir / bman["graphs"][graph]["file"])).run(out_names, feeds)
        one = ort.InferenceSession(str(odir / oman["graphs"][graph]["file"]))
        for i in range(3):
            want = one.run(out_names, {n: (v[i] if n in PLAN_INPUTS else v[i:i + 1]) for n, v in feeds.items()})
            for name, g, w in zip(out_names, got, want):
                np.testing.assert_allclose(g[i:i + 1], w, **TOL_LATENTS, err_msg=f"{graph}.{name} element {i}")


# ------------------------------------------------------------------------------------------------
# sessions on a batching engine
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def solo_frames(batched_dir):
    """Each clip streamed alone on the batched model with no scheduler (one stream per call)."""
    engine = Engine.load(batched_dir[0], backend="onnxruntime")
    return {i: push_clip(engine, i) for i in range(4)}


def test_threaded_sessions_batch_and_equal_their_solo_runs(batched_dir, solo_frames, exported_tiny):
    engine = Engine.load(batched_dir[0], backend="onnxruntime", max_batch=MAX_B, max_wait_ms=50.0)
    rec = PlanRecorder(engine.backend)
    results, errors = run_threads(engine, 4, late=3)
    assert not errors, errors
    for i in range(4):
        assert_frames_close(results[i], solo_frames[i], f"stream {i} batched vs alone")
    st = engine.batching.stats
    sizes = st.by_size()
    assert max(sizes) > 1, f"no batch of more than one stream ran: {st.summary()}"
    assert st.requests == sum(k * v for k, v in sizes.items()) and st.split_reruns == 0
    assert rec.mixed_positions > 0, "no DiT call held streams at different cache positions"
    assert engine.batching._active == {} and not any(engine.batching._queues.values())
    # and vs the batch-1 export (other graphs: rounding differs, frames within the same bound)
    b1 = Engine.load(exported_tiny[1], backend="onnxruntime")
    assert_frames_close(push_clip(b1, 0), results[0], "stream 0 batched vs the batch-1 export")


def test_torch_backend_batches_with_the_same_results(solo_frames):
    engine = Engine.load(backend="torch", max_batch=3, max_wait_ms=50.0)
    solo = Engine.load(backend="torch")
    results, errors = run_threads(engine, 3, late=2)
    assert not errors, errors
    assert max(engine.batching.stats.by_size()) > 1, engine.batching.stats.summary()
    for i in range(3):
        assert_frames_close(results[i], push_clip(solo, i), f"torch stream {i} batched vs alone")
        # across backends the bound of tests/test_export_onnx.py (torch vs ONNX Runtime: <= 2 levels)
        assert_frames_close(results[i], solo_frames[i], f"torch batched vs onnxruntime alone, stream {i}",
                            max_diff=2, fraction=1.0)


def test_one_step_sessions_batch_with_the_same_results():
    """``steps=1`` (two DiT calls per chunk, step 2 and the cache pass): batched as alone."""
    engine = Engine.load(backend="torch", max_batch=3, max_wait_ms=50.0, steps=1)
    solo = Engine.load(backend="torch", steps=1)
    results, errors = run_threads(engine, 3, late=2)
    assert not errors, errors
    assert max(engine.batching.stats.by_size()) > 1, engine.batching.stats.summary()
    for i in range(3):
        assert_frames_close(results[i], push_clip(solo, i), f"one-step torch stream {i} batched vs alone")


def test_lone_session_never_waits(batched_dir, solo_frames):
    # a long max_wait: a call that waited would show in the stats (and cost 0.2 s)
    engine = Engine.load(batched_dir[0], backend="onnxruntime", max_batch=MAX_B, max_wait_ms=200.0)
    idle = engine.session(box=BOX)  # alive but not pushing: never waited for
    idle.push(np.zeros(640, np.float32), CLIPS[1][0][0])
    assert_frames_close(push_clip(engine, 0), solo_frames[0], "lone stream")
    push_clip(engine, 2)  # sequential sessions in one thread never overlap
    st = engine.batching.stats
    assert st.waited == 0 and st.by_size() == {1: st.requests}, st.summary()


def test_bad_input_stays_in_its_own_session(batched_dir, solo_frames):
    """Stream 1 pushes NaN audio once (InputError, nothing consumed); stream 2's renderer makes a
    malformed DiT input once (refused before batching). Each error is raised in its own thread
    only, and every stream's frames are its solo frames."""
    engine = Engine.load(batched_dir[0], backend="onnxruntime", max_batch=MAX_B, max_wait_ms=50.0)
    errs = {1: [], 2: []}

    def nan_audio(s, k):
        if k == 7:
            s.push(np.full(10, np.nan, np.float32))

    def bad_noise(s, k):
        if k == 5:
            good = s.renderer.noise

            def once(chunk_index):
                s.renderer.noise = good
                a, b = good(chunk_index)
                return a[:, :, :1], b  # one latent frame short
            s.renderer.noise = once

    results, errors = run_threads(engine, 3, per_stream={1: dict(bad=nan_audio, errors=errs[1]),
                                                         2: dict(bad=bad_noise, errors=errs[2])})
    assert len(errs[1]) == 1 and isinstance(errs[1][0], InputError) and "NaN" in str(errs[1][0])
    assert [i for i, _ in errors] == [2], errors  # the malformed call ended stream 2's push, nobody else's
    e = errors[0][1]
    assert isinstance(e, BackendError) and "feed 'x_t' is float32[1, 16, 1, 32, 32]" in str(e), e
    for i in (0, 1):
        assert_frames_close(results[i], solo_frames[i], f"stream {i} beside the bad inputs")
    assert engine.batching._active == {}, "the session that raised is still counted as active"


def test_failed_batched_call_is_rerun_per_stream(batched_dir, solo_frames):
    engine = Engine.load(batched_dir[0], backend="onnxruntime", max_batch=MAX_B, max_wait_ms=50.0)
    real = engine.backend.run_batch
    failed = []

    def flaky(graph, calls):
        if graph == "dit_step" and not failed:
            failed.append(len(calls))
            raise RuntimeError("injected failure of a whole batch")
        return real(graph, calls)

    engine.backend.run_batch = flaky
    results, errors = run_threads(engine, 3)
    assert not errors, errors
    assert failed and engine.batching.stats.split_reruns == 1
    for i in range(3):
        assert_frames_close(results[i], solo_frames[i], f"stream {i} after a failed batch")


def test_sessions_that_leave_are_not_waited_for(batched_dir):
    # a long max_wait: a call that waited would show in the stats (and cost 0.2 s)
    engine = Engine.load(batched_dir[0], backend="onnxruntime", max_batch=MAX_B, max_wait_ms=200.0)
    frames, audio = CLIPS[0]

    def abandon():  # a stream pushed half-way, then dropped
        s = engine.session(box=BOX)
        for k in range(6):
            s.push(audio[k * 640:(k + 1) * 640], frames[k])

    t = threading.Thread(target=abandon)
    t.start()
    t.join(timeout=60)
    gc.collect()
    assert engine.batching._active == {}
    push_clip(engine, 1)  # would wait 10 s per call for a stream that is gone
    assert engine.batching.stats.waited == 0


def test_max_batch_needs_a_batched_export(exported_tiny):
    with pytest.raises(BackendError, match=r"takes at most 1 stream\(s\) per call.*lipforce export --max-batch 4"):
        Engine.load(exported_tiny[1], backend="onnxruntime", max_batch=4)
    with pytest.raises(BackendError, match="max_batch=0 must be an integer >= 1"):
        Engine.load(exported_tiny[1], backend="onnxruntime", max_batch=0)


def test_scheduler_refuses_a_feed_of_the_wrong_shape(batched_dir):
    engine = Engine.load(batched_dir[0], backend="onnxruntime", max_batch=MAX_B)
    with pytest.raises(BackendError, match=r"audio_encoder: feed 'mel' is float32\[2, 2, 20, 80\], one stream's "
                                           r"call takes float32\[1, 2, 20, 80\]"):
        engine.batching.submit("audio_encoder", {"mel": np.zeros((2, 2, 20, 80), np.float32)}, None)


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
def test_max_batch_1_export_keeps_the_batch1_contract(exported_tiny):
    """max_batch=1 (the default) writes what it always wrote: no max_batch in the manifest, every
    tensor with its batch of 1, the DiT's plan [C]/[M]."""
    model, out, man = exported_tiny
    disk = json.loads((out / "manifest.json").read_text())
    assert "max_batch" not in disk
    for g in GRAPHS:
        spec = disk["graphs"][g]
        feeds = {t["name"]: tuple(t["shape"]) for t in spec["inputs"] if t["name"] not in spec["state"]}
        assert feeds == feed_shapes(model.cfg, g), g
        assert all(t["shape"][0] == 1 for t in spec["inputs"] + spec["outputs"] if t["name"] not in PLAN_INPUTS), g
    c, m = model.cfg.stream.chunk_frames, model.cfg.num_slots
    dit = {t["name"]: t["shape"] for t in disk["graphs"]["dit_step"]["inputs"]}
    assert (dit["write_idx"], dit["q_pos"], dit["k_pos"], dit["k_valid"], dit["t"]) == ([c], [c], [m], [m], [1])
    assert [t["name"] for t in disk["graphs"]["dit_step"]["outputs"]][:3] == ["x0", "kv_k_out_0", "kv_v_out_0"]


def test_batched_export_has_a_batch_axis_everywhere(batched_dir, exported_tiny):
    _, man = batched_dir
    one = exported_tiny[2]
    assert man["max_batch"] == MAX_B
    for g in GRAPHS:
        b, o = man["graphs"][g], one["graphs"][g]
        assert [t["name"] for t in b["inputs"]] == [t["name"] for t in o["inputs"]] and b["state"] == o["state"]
        for tb, to in zip(b["inputs"] + b["outputs"], o["inputs"] + o["outputs"]):
            want = [-1, *to["shape"]] if tb["name"] in PLAN_INPUTS else [-1, *to["shape"][1:]]
            assert tb["shape"] == want and tb["dtype"] == to["dtype"], (g, tb, to)


def test_plugin_flavour_is_batch_1_only(tmp_path):
    model = LipSyncModel.from_preset("tiny", seed=1, stream={"resolution": 64})
    with pytest.raises(ExportError, match=r"max_batch=2 with attention='plugin'.*batch 1.*attention='decomposed' "
                                          r"or 'onnx_attention'.*--max-batch 2.*or max_batch=1 for the plugin"):
        export_model(model, tmp_path / "p", attention="plugin", max_batch=2, progress=False)
    assert not (tmp_path / "p").exists()
    for bad in (0, 2.5, True):
        with pytest.raises(ExportError, match="must be an integer >= 1"):
            export_model(model, tmp_path / "q", max_batch=bad, progress=False)


def test_opset23_attention_exports_with_a_batch_axis(tmp_path, batched_dir):
    from lipforce_sdk.export import export_dit_step

    model = load_model(default_model_dir())
    spec = export_dit_step(model, tmp_path / "dit.onnx", attention="onnx_attention", max_batch=3)
    assert {t["name"]: t["shape"][0] for t in spec["inputs"]} == {t["name"]: -1 for t in spec["inputs"]}
    names, tensors, out_names, _ = example_inputs(model, "dit_step", seed=2, batch=3)
    feeds = {n: t.numpy() for n, t in zip(names, tensors)}
    got = ort.InferenceSession(str(tmp_path / "dit.onnx")).run(out_names, feeds)
    want = ort.InferenceSession(str(batched_dir[0] / "dit_step.onnx")).run(out_names, feeds)
    for name, g, w in zip(out_names, got, want):
        np.testing.assert_allclose(g, w, **TOL_LATENTS, err_msg=name)


# ------------------------------------------------------------------------------------------------
# TensorRT-RTX: a batched engine builds with the profile 1..B (running it needs a GPU)
# ------------------------------------------------------------------------------------------------
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


@pytest.fixture(scope="module")
def batched_rtx_engines(batched_dir, tmp_path_factory):
    if not HAS_RTX:
        pytest.skip("building engines on a CPU-only machine needs TensorRT-RTX (pip install tensorrt-rtx)")
    from lipforce_sdk.engine import build_model

    out = tmp_path_factory.mktemp("tiny_b4_rtx")
    return out, build_model(batched_dir[0], out, progress=False, flavour="tensorrt_rtx", opt_batch=2)


def test_batched_tensorrt_rtx_engine_builds_with_a_batch_profile(batched_rtx_engines, batched_dir):
    from lipforce_sdk.backends.tensorrt_backend import IOPlan
    from lipforce_sdk.engine import check_engine

    out, man = batched_rtx_engines
    assert man["max_batch"] == MAX_B and sorted(man["engines"]) == sorted(GRAPHS)
    for g, e in man["engines"].items():
        assert e["max_batch"] == MAX_B and e["batch_profile"] == {"min": 1, "opt": 2, "max": MAX_B}, g
        assert all(t["shape"][0] == -1 for t in e["inputs"] + e["outputs"]), g
        plan = IOPlan.from_entry(g, e)  # what the runner would run: one stream's shapes
        graph = batched_dir[1]["graphs"][g]
        want = {t["name"]: tuple([1, *t["shape"][1:]]) for t in graph["inputs"] if t["name"] not in graph["state"]}
        assert {s.name: s.shape for s in plan.feeds} == want, g
        rec = check_engine(out, g, model_dir=batched_dir[0])
        assert "engine sha256" in rec.passed and "onnx sha256" in rec.passed


def test_batch_profile_out_of_range_is_refused(batched_dir, tmp_path):
    if not HAS_RTX:
        pytest.skip("needs TensorRT-RTX (pip install tensorrt-rtx)")
    from lipforce_sdk.engine import EngineError, build_model

    with pytest.raises(EngineError, match=r"opt_batch=9 must lie in 1\.\.max_batch=4"):
        build_model(batched_dir[0], tmp_path / "e", progress=False, flavour="tensorrt_rtx", graphs=["audio_encoder"],
                    opt_batch=9)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="running a TensorRT engine needs cuda-python "
                    "and a CUDA GPU; the build is checked above on the CPU")
def test_batched_tensorrt_sessions_equal_their_solo_runs(batched_rtx_engines, solo_frames):
    from lipforce_sdk.engine import local_gpu

    if local_gpu() is None:
        pytest.skip("no CUDA GPU: a TensorRT engine runs only on one")
    engine = Engine.load(batched_rtx_engines[0], backend="tensorrt", max_batch=MAX_B, max_wait_ms=50.0)
    results, errors = run_threads(engine, 4, late=3)
    assert not errors, errors
    assert max(engine.batching.stats.by_size()) > 1
    for i in range(4):  # TensorRT fp32 vs ONNX Runtime fp32: kernels differ, frames within a few levels
        d = np.abs(results[i].astype(np.int16) - solo_frames[i].astype(np.int16))
        assert d.max() <= 4, f"stream {i}: max diff {d.max()}"


# ------------------------------------------------------------------------------------------------
# samples/batch_bench.py's counts, from the config, against the modules
# ------------------------------------------------------------------------------------------------
def _bench_module():
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "samples" / "batch_bench.py"
    spec = importlib.util.spec_from_file_location("batch_bench", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["batch_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("preset", ["tiny", "1.3b", "14b"])
def test_bench_parameter_counts_equal_the_modules(preset):
    """The counts come from the config alone; the modules are built on the meta device (no weights)."""
    from lipforce_sdk.config import from_name

    bb = _bench_module()
    cfg = from_name(preset)
    with torch.device("meta"):
        m = LipSyncModel(cfg)
    count = lambda params: sum(p.numel() for p in params)  # noqa: E731
    got = {g.graph: g.params for g in bb.graph_costs(cfg, 2)}
    assert got == {"audio_encoder": count(m.audio_encoder.parameters()), "dit_step": count(m.dit.parameters()),
                   "vae_encoder": count(p for n, p in m.vae.named_parameters() if n.startswith("enc")),
                   "vae_decoder": count(p for n, p in m.vae.named_parameters() if n.startswith("dec"))}


@pytest.mark.parametrize("preset,over", [("tiny", {}), ("1.3b", {"stream": {"resolution": 64}, "dit": {"num_layers": 2}})])
def test_bench_flops_equal_torchs_flop_counter(preset, over):
    """FLOPs per call vs ``torch.utils.flop_counter`` (matmuls, convolutions, attention) on the real
    graphs. The counter misses the tiny DiT's attention (its CPU kernel is not one it counts), so the
    DiT is compared on a shrunken 1.3b, where it counts it."""
    from torch.utils.flop_counter import FlopCounterMode

    from lipforce_sdk.export.exporter import _WRAPPERS

    bb = _bench_module()
    model = LipSyncModel.from_preset(preset, seed=0, **over).eval()
    for g in bb.graph_costs(model.cfg, 2):
        if preset == "tiny" and g.graph == "dit_step":
            continue
        _, tensors, _, _ = example_inputs(model, g.graph)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            _WRAPPERS[g.graph](model).eval()(*tensors)
        assert g.flops == pytest.approx(fc.get_total_flops(), rel=1e-3), g.graph


def test_batch_1_export_over_a_batched_one_drops_max_batch(tmp_path, monkeypatch):
    """The manifest is updated in place by each export: a batch-1 export into a directory that held a
    batched one must not leave ``max_batch`` behind. (The graphs are stubbed: this is about the manifest.)"""
    from lipforce_sdk.export import exporter

    for g in GRAPHS:
        monkeypatch.setattr(exporter, f"export_{g}", lambda model, path, precision, max_batch, g=g, **kw:
                            {"file": f"{g}.onnx", "max_batch_traced": max_batch})
    model = LipSyncModel.from_preset("tiny", seed=2, stream={"resolution": 32})
    assert export_model(model, tmp_path, max_batch=2, progress=False)["max_batch"] == 2
    man = export_model(model, tmp_path, progress=False)
    disk = json.loads((tmp_path / "manifest.json").read_text())
    assert "max_batch" not in man and "max_batch" not in disk
    assert {g["max_batch_traced"] for g in disk["graphs"].values()} == {1}


# ------------------------------------------------------------------------------------------------
# the scheduler's policy on a stub backend (no model; the order of events is forced)
# ------------------------------------------------------------------------------------------------
class StubBackend:
    """Doubles its input; records the batch sizes it ran."""

    name, max_batch = "stub", 8

    def __init__(self):
        self.sizes = []

    def feed_specs(self, graph):
        return {"x": ((1, 2), "float32")}

    def run_graph(self, graph, feeds, state):
        self.sizes.append(1)
        return {"y": 2 * feeds["x"]}

    def run_batch(self, graph, calls):
        self.sizes.append(len(calls))
        return [{"y": 2 * f["x"]} for f, _ in calls]


def _x(v):
    return np.full((1, 2), v, np.float32)


def _until(cond, timeout=30.0):
    import time

    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out waiting for the other thread"
        time.sleep(0.001)


def _scheduler(max_wait_ms=60_000.0):
    from lipforce_sdk.batching import BatchScheduler

    be = StubBackend()
    return be, BatchScheduler(be, max_batch=4, max_wait_ms=max_wait_ms)


def test_a_call_waits_for_a_stream_that_may_join_and_runs_with_it():
    be, sch = _scheduler()
    got = {}

    def a():
        with sch.stream():
            got["a"] = sch.submit("audio_encoder", {"x": _x(1)}, None)["y"]

    with sch.stream():  # B: active, not queued, nothing called yet: it may join A's call
        ta = threading.Thread(target=a)
        ta.start()
        _until(lambda: sch._queues["audio_encoder"])
        got["b"] = sch.submit("audio_encoder", {"x": _x(2)}, None)["y"]
    ta.join(10)
    assert be.sizes == [2] and sch.stats.waited == 1
    np.testing.assert_array_equal(got["a"], _x(2))
    np.testing.assert_array_equal(got["b"], _x(4))


def test_a_call_does_not_wait_for_a_stream_past_its_graph():
    """B last called the DiT step: it will not call the audio encoder before its chunk ends, so A's
    audio call runs at once (a wait of 60 s would hang the test)."""
    be, sch = _scheduler()
    with sch.stream():  # B
        sch.submit("dit_step", {"x": _x(1)}, None)
        done = threading.Event()

        def a():
            with sch.stream():
                sch.submit("audio_encoder", {"x": _x(1)}, None)
            done.set()

        threading.Thread(target=a).start()
        assert done.wait(30)
    assert sch.stats.waited == 0 and be.sizes == [1, 1]


def test_a_call_runs_when_the_stream_it_waits_for_leaves():
    be, sch = _scheduler()
    done = threading.Event()
    leave = threading.Event()

    def b():
        with sch.stream():
            leave.wait(30)

    tb = threading.Thread(target=b)
    tb.start()
    _until(lambda: sch._active)

    def a():
        with sch.stream():
            sch.submit("vae_decoder", {"x": _x(1)}, None)
        done.set()

    threading.Thread(target=a).start()
    _until(lambda: sch._queues["vae_decoder"])
    assert not done.is_set()  # waiting for B
    leave.set()  # B returns from push without calling the decoder
    assert done.wait(30)
    tb.join(10)
    assert be.sizes == [1] and sch.stats.waited == 1


def test_max_wait_bounds_the_wait():
    be, sch = _scheduler(max_wait_ms=5.0)
    with sch.stream():  # B may join but never calls
        t = threading.Thread(target=lambda: sch.submit("audio_encoder", {"x": _x(1)}, None))
        with sch.stream():
            pass
        t.start()
        t.join(30)  # would hang for a 60 s max_wait
        assert not t.is_alive()
    assert be.sizes == [1] and sch.stats.by_size() == {1: 1}


def test_an_interrupted_wait_leaves_no_orphan_call(monkeypatch):
    be, sch = _scheduler()
    raised = []

    def interrupted_wait(timeout=None):
        raise KeyboardInterrupt

    def a():
        with sch.stream():
            try:
                sch.submit("audio_encoder", {"x": _x(1)}, None)
            except KeyboardInterrupt as e:
                raised.append(e)

    with sch.stream():  # B may join: A waits, and its wait is interrupted
        monkeypatch.setattr(sch._cv, "wait", interrupted_wait)
        t = threading.Thread(target=a)
        t.start()
        t.join(30)
        assert raised and not sch._queues["audio_encoder"] and not sch._queued
    assert be.sizes == [] and sch._active == {}
