"""The TensorRT graph runner's host-side logic, without TensorRT or a GPU.

A fake device (memory addressed by integer pointers, stream capture that records operations and
replays them) and a fake execution context (a tiny ring-cache step computed in NumPy from the
addresses bound at enqueue time, as a captured CUDA graph would) stand in for cuda-python and
TensorRT. If the runner bound the wrong ping-pong buffer, reused one parity's CUDA graph for the
other, or copied the state through the host, the results or the counters below would show it.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from lipforce_sdk.backends.base import BackendError  # noqa: E402
from lipforce_sdk.backends.tensorrt_backend import (IOPlan, PingPong, TensorRTGraphRunner,  # noqa: E402
                                                    TensorSpec, numpy_dtype)

SLOTS, WIDTH, CHUNK = 5, 3, 2  # cache [SLOTS, WIDTH], chunk of CHUNK rows

ENTRY = {  # an engine manifest entry, as build_engine writes it
    "inputs": [{"name": "x", "shape": [CHUNK, WIDTH], "dtype": "float32"},
               {"name": "write_idx", "shape": [CHUNK], "dtype": "int32"},
               {"name": "kv_0", "shape": [SLOTS, WIDTH], "dtype": "float32"},
               {"name": "kv_1", "shape": [SLOTS, WIDTH], "dtype": "float16"}],
    "outputs": [{"name": "y", "shape": [1, WIDTH], "dtype": "float32"},
                {"name": "kv_out_0", "shape": [SLOTS, WIDTH], "dtype": "float32"},
                {"name": "kv_out_1", "shape": [SLOTS, WIDTH], "dtype": "float16"}],
    "state": {"kv_0": "kv_out_0", "kv_1": "kv_out_1"},
}


def reference_step(x, write_idx, kv0, kv1):
    """What the fake engine computes: write the chunk into both caches, return a summary."""
    kv0, kv1 = kv0.copy(), kv1.copy()
    kv0[write_idx] = x
    kv1[write_idx] = (2 * x).astype(np.float16)
    y = (kv0.sum(0) + kv1.astype(np.float32).sum(0))[None]
    return y.astype(np.float32), kv0, kv1


class FakeDevice:
    """Pointer-addressed memory; capture records operations instead of running them."""

    def __init__(self):
        self.mem: dict[int, np.ndarray] = {}
        self.host: set[int] = set()
        self._next = 0x1000
        self.capturing: list | None = None
        self.graphs_made = 0
        self.graphs_live = 0
        self.launches = 0
        self.d2h_bytes = 0
        self.h2d_bytes = 0
        self.d2d_bytes = 0
        self.stream = 7

    def _alloc(self, n):
        ptr = self._next
        self._next += (n + 0xFF) & ~0xFF
        self.mem[ptr] = np.zeros(n, np.uint8)
        return ptr

    def _buf(self, ptr, n):
        """``n`` bytes at ``ptr``, which may point inside an allocation (a stream's slot in a batch buffer)."""
        base = max(b for b in self.mem if b <= ptr)
        off = ptr - base
        assert off + n <= self.mem[base].size, f"{n} bytes at +{off} overrun the allocation at {base:#x}"
        return self.mem[base][off:off + n]

    def view(self, ptr, n):
        return self._buf(ptr, n)

    def malloc(self, n):
        return self._alloc(n)

    def free(self, ptr):
        del self.mem[ptr]

    def host_alloc(self, n):
        ptr = self._alloc(n)
        self.host.add(ptr)
        return ptr, self.mem[ptr]

    def host_free(self, ptr):
        self.host.discard(ptr)
        del self.mem[ptr]

    def _op(self, fn):
        if self.capturing is not None:
            self.capturing.append(fn)
        else:
            fn()

    def memset_async(self, ptr, n):
        def run():
            self.mem[ptr][:n] = 0
        self._op(run)

    def copy_h2d_async(self, dst, src, n):
        assert src in self.host and dst not in self.host

        def run():
            self.h2d_bytes += n
            self._buf(dst, n)[:] = self._buf(src, n)
        self._op(run)

    def copy_d2h_async(self, dst, src, n):
        assert dst in self.host and src not in self.host

        def run():
            self.d2h_bytes += n
            self._buf(dst, n)[:] = self._buf(src, n)
        self._op(run)

    def copy_d2d_async(self, dst, src, n):
        def run():
            self.d2d_bytes += n
            self._buf(dst, n)[:] = self._buf(src, n)
        self._op(run)

    def synchronize(self):
        assert self.capturing is None, "synchronize inside a capture"

    def begin_capture(self):
        self.capturing = []

    def end_capture(self):
        ops, self.capturing = self.capturing, None
        self.graphs_made += 1
        self.graphs_live += 1
        return ops

    def abort_capture(self):
        self.capturing = None

    def launch(self, graph):
        self.launches += 1
        for fn in graph:
            fn()

    def destroy_graph(self, graph):
        self.graphs_live -= 1


class FakeContext:
    """Runs ``reference_step`` on whatever addresses are bound when the call is enqueued."""

    def __init__(self, device, plan_entry=ENTRY, fail=False):
        self.dev = device
        self.addr: dict[str, int] = {}
        self.specs = {t["name"]: t for t in plan_entry["inputs"] + plan_entry["outputs"]}
        self.executes = 0
        self.fail = fail

    def set_tensor_address(self, name, ptr):
        assert name in self.specs, name
        self.addr[name] = ptr

    def _arr(self, name, ptr):
        t = self.specs[name]
        dt = numpy_dtype(t["dtype"])
        n = int(np.prod(t["shape"])) * dt.itemsize
        return self.dev.view(ptr, n).view(dt).reshape(t["shape"])

    def execute_async_v3(self, stream):
        assert stream == self.dev.stream
        if self.fail:
            return False
        bound = dict(self.addr)  # a captured graph keeps the addresses of capture time
        assert set(bound) == set(self.specs), f"unbound tensors: {set(self.specs) - set(bound)}"

        def run():
            self.executes += 1
            a = {n: self._arr(n, p) for n, p in bound.items()}
            y, k0, k1 = reference_step(a["x"], a["write_idx"], a["kv_0"], a["kv_1"])
            a["kv_out_0"][...] = k0  # in place when the output aliases the input
            a["kv_out_1"][...] = k1
            a["y"][...] = y
        self.dev._op(run)
        return True


def make_runner(cuda_graph=False, aliased=(), **kw):
    dev = FakeDevice()
    plan = IOPlan.from_entry("dit_step", ENTRY, aliased=aliased)
    return TensorRTGraphRunner(plan, FakeContext(dev), dev, cuda_graph=cuda_graph, **kw), dev


def feeds_for(step, rng):
    return {"x": rng.standard_normal((CHUNK, WIDTH)).astype(np.float32),
            "write_idx": np.array([(CHUNK * step + c) % SLOTS for c in range(CHUNK)], np.int32)}


def run_and_compare(runner, state, steps, rng, ref=None):
    ref = ref or [np.zeros((SLOTS, WIDTH), np.float32), np.zeros((SLOTS, WIDTH), np.float16)]
    for step in range(steps):
        f = feeds_for(step, rng)
        out = runner.run(f, state)
        y, ref[0], ref[1] = reference_step(f["x"], f["write_idx"], ref[0], ref[1])
        assert set(out) == {"y"}
        np.testing.assert_array_equal(out["y"], y, err_msg=f"step {step}, parity {state.parity}")
    return ref


# ------------------------------------------------------------------------------------------------
# IOPlan
# ------------------------------------------------------------------------------------------------
def test_plan_splits_feeds_results_and_state():
    plan = IOPlan.from_entry("dit_step", ENTRY)
    assert [s.name for s in plan.feeds] == ["x", "write_idx"]
    assert [s.name for s in plan.results] == ["y"]
    assert [(a.name, b.name) for a, b in plan.state] == [("kv_0", "kv_out_0"), ("kv_1", "kv_out_1")]
    assert plan.state[1][0] == TensorSpec("kv_1", (SLOTS, WIDTH), "float16")
    assert plan.state[0][0].nbytes == SLOTS * WIDTH * 4 and plan.state[1][0].nbytes == SLOTS * WIDTH * 2
    assert plan.state_bytes == 2 * SLOTS * WIDTH * (4 + 2)  # two buffers per pair
    aliased = IOPlan.from_entry("dit_step", ENTRY, aliased=["kv_0"])
    assert aliased.state_bytes == SLOTS * WIDTH * 4 + 2 * SLOTS * WIDTH * 2


def test_plan_rejects_bad_state_mappings():
    bad = dict(ENTRY, state={"kv_0": "kv_out_9"})
    with pytest.raises(BackendError, match="'kv_0' -> 'kv_out_9' is not an input/output pair"):
        IOPlan.from_entry("dit_step", bad)
    bad = dict(ENTRY, state={"kv_0": "kv_out_1"})
    with pytest.raises(BackendError, match="'kv_0' is float32.*'kv_out_1' is float16"):
        IOPlan.from_entry("dit_step", bad)
    dyn = dict(ENTRY, inputs=[dict(ENTRY["inputs"][0], shape=[-1, WIDTH])] + ENTRY["inputs"][1:])
    with pytest.raises(BackendError, match="'x' has a dynamic shape"):
        IOPlan.from_entry("dit_step", dyn)
    with pytest.raises(BackendError, match="aliased tensors \\['x'\\] are not state inputs"):
        IOPlan.from_entry("dit_step", ENTRY, aliased=["x"])


def test_feed_validation_names_the_problem():
    plan = IOPlan.from_entry("dit_step", ENTRY)
    ok = {"x": np.zeros((CHUNK, WIDTH), np.float32), "write_idx": np.zeros(CHUNK, np.int32)}
    assert set(plan.validate_feeds(ok)) == {"x", "write_idx"}
    with pytest.raises(BackendError, match="'kv_0' is state, kept on the device"):
        plan.validate_feeds({**ok, "kv_0": np.zeros((SLOTS, WIDTH), np.float32)})
    with pytest.raises(BackendError, match="unknown feed 'z'"):
        plan.validate_feeds({**ok, "z": 1})
    with pytest.raises(BackendError, match=r"missing feeds \['write_idx'\]"):
        plan.validate_feeds({"x": ok["x"]})
    with pytest.raises(BackendError, match="feed 'x' is float64, the engine takes float32: pass x.astype"):
        plan.validate_feeds({**ok, "x": np.zeros((CHUNK, WIDTH))})
    with pytest.raises(BackendError, match=r"feed 'write_idx' has shape \[3\], the engine takes \[2\]"):
        plan.validate_feeds({**ok, "write_idx": np.zeros(3, np.int32)})


def test_bfloat16_maps_through_ml_dtypes():
    pytest.importorskip("ml_dtypes")
    assert numpy_dtype("bfloat16").itemsize == 2 and numpy_dtype("bfloat16").name == "bfloat16"
    with pytest.raises(BackendError, match="'complex64' has no NumPy type"):
        numpy_dtype("complex64")


# ------------------------------------------------------------------------------------------------
# PingPong
# ------------------------------------------------------------------------------------------------
def test_pingpong_swaps_input_and_output_buffers():
    plan = IOPlan.from_entry("dit_step", ENTRY)
    pp = PingPong(plan, {"kv_0": (10, 20), "kv_1": (30, 40)})
    assert pp.bindings() == {"kv_0": 10, "kv_out_0": 20, "kv_1": 30, "kv_out_1": 40}
    pp.swap()
    assert pp.bindings() == {"kv_0": 20, "kv_out_0": 10, "kv_1": 40, "kv_out_1": 30}
    assert pp.current("kv_0") == 20  # what the last call wrote is what the next call reads
    pp.swap()
    assert pp.parity == 0 and pp.current("kv_0") == 10


def test_pingpong_aliased_state_stays_in_place():
    plan = IOPlan.from_entry("dit_step", ENTRY, aliased=["kv_0"])
    pp = PingPong(plan, {"kv_0": (10, 10), "kv_1": (30, 40)})
    for _ in range(3):
        b = pp.bindings()
        assert b["kv_0"] == b["kv_out_0"] == 10
        pp.swap()
    with pytest.raises(BackendError, match="'kv_1' needs two distinct buffers"):
        PingPong(plan, {"kv_0": (10, 10), "kv_1": (30, 30)})


# ------------------------------------------------------------------------------------------------
# the runner over the fake device
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cuda_graph", [False, True])
@pytest.mark.parametrize("aliased", [(), ("kv_0", "kv_1")])
def test_runner_state_evolves_on_device_like_the_reference(cuda_graph, aliased):
    runner, dev = make_runner(cuda_graph=cuda_graph, aliased=aliased)
    state = runner.new_state()
    rng = np.random.default_rng(0)
    steps = 9
    run_and_compare(runner, state, steps, rng)
    # the state never crosses to the host: only y comes back, only x and write_idx go in
    assert dev.d2h_bytes == steps * WIDTH * 4, dev.d2h_bytes
    assert dev.h2d_bytes == steps * (CHUNK * WIDTH * 4 + CHUNK * 4), dev.h2d_bytes
    if cuda_graph:
        assert sorted(state.graphs) == [0, 1] and dev.graphs_made == 2, "one graph per ping-pong parity"
        assert dev.launches == steps - 2  # the first call at each parity is the warm-up
    else:
        assert dev.graphs_made == 0 and dev.launches == 0


def test_one_graph_for_both_parities_would_be_wrong():
    """Guard on the fake itself: replaying parity 0's graph at parity 1 must give a wrong answer."""
    runner, dev = make_runner(cuda_graph=True)
    state = runner.new_state()
    rng = np.random.default_rng(1)
    run_and_compare(runner, state, 4, rng)
    state.graphs[1] = state.graphs[0]
    with pytest.raises(AssertionError):
        run_and_compare(runner, state, 4, np.random.default_rng(2))


def test_reset_zeroes_in_place_and_keeps_graphs():
    runner, dev = make_runner(cuda_graph=True)
    state = runner.new_state()
    run_and_compare(runner, state, 5, np.random.default_rng(3))
    pointers, graphs = dict(state.pingpong.buffers), dict(state.graphs)
    runner.reset_state(state)
    assert state.pingpong.buffers == pointers and state.graphs == graphs  # no reallocation, graphs still valid
    for ptr in state.pingpong.all_pointers():
        assert not dev.mem[ptr].any()
    run_and_compare(runner, state, 5, np.random.default_rng(4))  # from zero again, at whatever parity


def test_states_are_independent():
    runner, _ = make_runner(cuda_graph=True)
    a, b = runner.new_state(), runner.new_state()
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(6)
    ref_a = ref_b = None
    for _ in range(4):  # interleave two streams on one runner
        ref_a = run_and_compare(runner, a, 1, rng_a, ref_a)
        ref_b = run_and_compare(runner, b, 1, rng_b, ref_b)
    assert set(a.pingpong.all_pointers()).isdisjoint(b.pingpong.all_pointers())


def test_warmup_calls_delay_the_capture():
    runner, dev = make_runner(cuda_graph=True, warmup_calls=3)
    state = runner.new_state()
    ref = run_and_compare(runner, state, 6, np.random.default_rng(7))
    assert dev.graphs_made == 0
    run_and_compare(runner, state, 2, np.random.default_rng(8), ref)
    assert dev.graphs_made == 2
    with pytest.raises(BackendError, match="warmup_calls=0"):
        make_runner(cuda_graph=True, warmup_calls=0)


def test_foreign_or_closed_state_is_refused():
    r1, _ = make_runner()
    r2, _ = make_runner()
    s2 = r2.new_state()
    f = feeds_for(0, np.random.default_rng(0))
    with pytest.raises(BackendError, match="not made by this runner"):
        r1.run(f, s2)
    with pytest.raises(BackendError, match="not made by this runner"):
        r1.reset_state({"kv_0": None})
    s1 = r1.new_state()
    s1.close()
    with pytest.raises(BackendError, match="closed"):
        r1.run(f, s1)


def test_stateless_graph_runs_with_state_none():
    entry = {"inputs": [{"name": "mel", "shape": [2, 3], "dtype": "float32"}],
             "outputs": [{"name": "audio_tokens", "shape": [2, 3], "dtype": "float32"}], "state": {}}

    class Double(FakeContext):
        def execute_async_v3(self, stream):
            bound = dict(self.addr)

            def run():
                self._arr("audio_tokens", bound["audio_tokens"])[...] = 2 * self._arr("mel", bound["mel"])
            self.dev._op(run)
            return True

    dev = FakeDevice()
    runner = TensorRTGraphRunner(IOPlan.from_entry("audio_encoder", entry), Double(dev, entry), dev)
    mel = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(runner.run({"mel": mel}, None)["audio_tokens"], 2 * mel)
    runner.reset_state(None)  # nothing to reset
    stateful, _ = make_runner()
    with pytest.raises(BackendError, match="dit_step keeps state \\(kv_0, kv_1\\): pass the runner's new_state"):
        stateful.run(feeds_for(0, np.random.default_rng(0)), None)
    runner.close()
    assert dev.mem == {}


def test_bad_feed_leaves_the_state_untouched():
    runner, dev = make_runner()
    state = runner.new_state()
    rng = np.random.default_rng(9)
    ref = run_and_compare(runner, state, 3, rng)
    with pytest.raises(BackendError, match="feed 'x' has shape"):
        runner.run({"x": np.zeros((1, WIDTH), np.float32), "write_idx": np.zeros(CHUNK, np.int32)}, state)
    run_and_compare(runner, state, 3, rng, ref)  # continues where it was


def test_enqueue_failure_is_an_error():
    dev = FakeDevice()
    plan = IOPlan.from_entry("dit_step", ENTRY)
    runner = TensorRTGraphRunner(plan, FakeContext(dev, fail=True), dev)
    with pytest.raises(BackendError, match="failed to enqueue"):
        runner.run(feeds_for(0, np.random.default_rng(0)), runner.new_state())


def test_close_frees_all_device_memory():
    runner, dev = make_runner(cuda_graph=True)
    states = [runner.new_state() for _ in range(2)]
    for s in states:
        run_and_compare(runner, s, 4, np.random.default_rng(10))
    assert dev.graphs_live == 4
    for s in states:
        s.close()
    runner.close()
    assert dev.mem == {} and dev.graphs_live == 0


def test_state_memory_is_flat_over_many_calls():
    runner, dev = make_runner(cuda_graph=True)
    state = runner.new_state()
    rng = np.random.default_rng(11)
    ref = run_and_compare(runner, state, 10, rng)
    allocated = {p: a.nbytes for p, a in dev.mem.items()}
    run_and_compare(runner, state, 200, rng, ref)
    assert {p: a.nbytes for p, a in dev.mem.items()} == allocated and dev.graphs_made == 2


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="needs cuda-python and a CUDA GPU")
def test_cuda_device_round_trip():
    from lipforce_sdk.backends.tensorrt_backend import CudaDevice

    try:
        dev = CudaDevice()
    except BackendError as e:
        pytest.skip(f"no usable CUDA device: {e}")
    n = 64
    hp, host = dev.host_alloc(n)
    host[:] = np.arange(n, dtype=np.uint8)
    d = dev.malloc(n)
    dev.copy_h2d_async(d, hp, n)
    dev.memset_async(d, n // 2)
    host[:] = 255
    dev.copy_d2h_async(hp, d, n)
    dev.synchronize()
    assert not host[: n // 2].any() and (host[n // 2:] == np.arange(n // 2, n, dtype=np.uint8)).all()
    dev.free(d)
    dev.host_free(hp)


# ------------------------------------------------------------------------------------------------
# batched engines (a model exported with max_batch > 1): run_batch over the fake device
# ------------------------------------------------------------------------------------------------
MAX_B = 3
BATCHED_ENTRY = {  # the same step with a batch axis (-1) in front of every tensor, profile 1..MAX_B
    "max_batch": MAX_B,
    "inputs": [dict(t, shape=[-1, *t["shape"]]) for t in ENTRY["inputs"]],
    "outputs": [dict(t, shape=[-1, *t["shape"]]) for t in ENTRY["outputs"]],
    "state": ENTRY["state"],
}


class BatchedFakeContext(FakeContext):
    """``reference_step`` per batch element, at the batch size set by ``set_input_shape``."""

    def __init__(self, device):
        super().__init__(device, BATCHED_ENTRY)
        self.shapes: dict[str, tuple] = {}

    def set_input_shape(self, name, shape):
        spec = self.specs[name]
        assert name in {t["name"] for t in BATCHED_ENTRY["inputs"]}, f"{name} is not an input"
        assert len(shape) == len(spec["shape"]) and list(shape[1:]) == spec["shape"][1:], (name, shape)
        if not 1 <= shape[0] <= MAX_B:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def _arr(self, name, ptr):
        t = self.specs[name]
        b = {s[0] for s in self.shapes.values()}
        assert len(b) == 1, f"inputs set to different batch sizes {self.shapes}"
        shape = [b.pop(), *t["shape"][1:]]
        dt = numpy_dtype(t["dtype"])
        return self.dev.view(ptr, int(np.prod(shape)) * dt.itemsize).view(dt).reshape(shape)

    def execute_async_v3(self, stream):
        bound, shapes = dict(self.addr), dict(self.shapes)
        assert set(shapes) == {t["name"] for t in BATCHED_ENTRY["inputs"]}, "input shapes not set"

        def run():
            self.executes += 1
            a = {n: self._arr(n, p) for n, p in bound.items()}
            for i in range(a["x"].shape[0]):
                y, k0, k1 = reference_step(a["x"][i], a["write_idx"][i], a["kv_0"][i], a["kv_1"][i])
                a["kv_out_0"][i], a["kv_out_1"][i], a["y"][i] = k0, k1, y
        self.dev._op(run)
        return True


def make_batched_runner(aliased=(), **kw):
    dev = FakeDevice()
    plan = IOPlan.from_entry("dit_step", BATCHED_ENTRY, aliased=aliased)
    return TensorRTGraphRunner(plan, BatchedFakeContext(dev), dev, **kw), dev


def batched_feeds(step, rng):
    return {k: v[None] for k, v in feeds_for(step, rng).items()}


def test_batched_plan_holds_one_streams_shapes():
    plan = IOPlan.from_entry("dit_step", BATCHED_ENTRY)
    assert plan.max_batch == MAX_B and plan.batched
    assert [s.shape for s in plan.feeds] == [(1, CHUNK, WIDTH), (1, CHUNK)]
    assert plan.state[0][0].shape == (1, SLOTS, WIDTH)
    flat = dict(BATCHED_ENTRY, inputs=[ENTRY["inputs"][0]] + BATCHED_ENTRY["inputs"][1:])
    with pytest.raises(BackendError, match=r"max_batch=3 but tensors \['x'\] have no batch axis"):
        IOPlan.from_entry("dit_step", flat)


@pytest.mark.parametrize("aliased", [(), ("kv_0", "kv_1")])
def test_run_batch_equals_each_stream_alone(aliased):
    """Streams at different steps batched in one call, in changing groups and orders, mixed with
    single calls: every result and every state equals the stream run alone."""
    runner, dev = make_batched_runner(aliased=aliased, cuda_graph=True)
    assert not runner.cuda_graph, "no CUDA graph for an engine whose shapes change"
    n = 3
    states = [runner.new_state() for _ in range(n)]
    rngs = [np.random.default_rng(20 + i) for i in range(n)]
    refs = [[np.zeros((SLOTS, WIDTH), np.float32), np.zeros((SLOTS, WIDTH), np.float16)] for _ in range(n)]
    steps = [0, 3, 5]  # different positions in their streams: different slots
    groups = [[0, 1, 2], [2, 0], [1], [0, 1, 2], [1, 2], [0], [2, 1, 0]]
    for g in groups:
        feeds = [batched_feeds(steps[i], rngs[i]) for i in g]
        outs = runner.run_batch([(f, states[i]) for f, i in zip(feeds, g)]) if len(g) > 1 else \
            [runner.run(feeds[0], states[g[0]])]
        for f, i, out in zip(feeds, g, outs):
            y, refs[i][0], refs[i][1] = reference_step(f["x"][0], f["write_idx"][0], refs[i][0], refs[i][1])
            np.testing.assert_array_equal(out["y"], y[None], err_msg=f"group {g}, stream {i}, step {steps[i]}")
            steps[i] += 1
    for i, st in enumerate(states):  # the latest state is where the stream's next call reads it
        pp = st.pingpong
        k0 = dev.view(pp.current("kv_0"), SLOTS * WIDTH * 4).view(np.float32).reshape(SLOTS, WIDTH)
        np.testing.assert_array_equal(k0, refs[i][0], err_msg=f"stream {i}")


def test_run_batch_moves_state_on_the_device_only():
    runner, dev = make_batched_runner()
    states = [runner.new_state() for _ in range(2)]
    rng = np.random.default_rng(30)
    runner.run_batch([(batched_feeds(0, rng), s) for s in states])
    per_stream_state = SLOTS * WIDTH * (4 + 2)
    assert dev.d2d_bytes == 2 * 2 * per_stream_state  # gathered in, scattered back, two streams
    assert dev.h2d_bytes == 2 * (CHUNK * WIDTH * 4 + CHUNK * 4) and dev.d2h_bytes == 2 * WIDTH * 4


def test_run_batch_refuses_what_it_cannot_run():
    runner, _ = make_batched_runner()
    rng = np.random.default_rng(31)
    s = runner.new_state()
    with pytest.raises(BackendError, match="one state appears twice"):
        runner.run_batch([(batched_feeds(0, rng), s), (batched_feeds(0, rng), s)])
    with pytest.raises(BackendError, match=r"a batch of 4 streams; this engine takes 1\.\.3"):
        runner.run_batch([(batched_feeds(0, rng), runner.new_state()) for _ in range(4)])
    bad = {"x": np.zeros((2, CHUNK, WIDTH), np.float32), "write_idx": np.zeros((1, CHUNK), np.int32)}
    with pytest.raises(BackendError, match=r"feed 'x' has shape \[2, 2, 3\], the engine takes \[1, 2, 3\]"):
        runner.run_batch([(bad, s), (batched_feeds(0, rng), runner.new_state())])
    other, _ = make_batched_runner()
    with pytest.raises(BackendError, match="not made by this runner"):
        runner.run_batch([(batched_feeds(0, rng), s), (batched_feeds(0, rng), other.new_state())])


def test_batched_engine_memory_is_flat():
    runner, dev = make_batched_runner()
    states = [runner.new_state() for _ in range(3)]
    rng = np.random.default_rng(32)
    runner.run_batch([(batched_feeds(0, rng), s) for s in states])
    allocated = {p: a.nbytes for p, a in dev.mem.items()}
    for step in range(1, 30):
        runner.run_batch([(batched_feeds(step, rng), s) for s in states[: 1 + step % 3]])
    assert {p: a.nbytes for p, a in dev.mem.items()} == allocated
    for st in states:
        st.close()
    runner.close()
    assert dev.mem == {}
