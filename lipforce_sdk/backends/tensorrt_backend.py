"""TensorRT graph runners: one engine each, state on the device, no torch.

Works with TensorRT-RTX (``tensorrt_rtx``) and full TensorRT (``tensorrt``); the engines come from
``lipforce build`` (``lipforce_sdk.engine.build_model``) and are checked by
``lipforce_sdk.engine.load_engine`` before they run.

How a call runs (``TensorRTGraphRunner.run``):

- the non-state feeds are validated (name, shape, dtype) and copied into pinned host staging
  buffers, then to device buffers owned by the runner;
- the state tensors never leave the device. Each stream's ``TensorRTState`` holds two device
  buffers per state pair; a call reads the state input from one and writes the state output to
  the other, then the two swap roles (a pointer swap: nothing is copied). Where the engine aliases
  a state output to its input (an in-place cache update), one buffer serves both;
- everything is enqueued on one CUDA stream (``execute_async_v3`` with ``set_tensor_address``)
  and the non-state outputs come back through pinned staging buffers;
- with ``cuda_graph=True`` the call (copies in, engine, copies out) is captured into a CUDA graph
  after ``warmup_calls`` plain calls. The addresses differ between the two ping-pong parities, so
  each state keeps one graph per parity; ``reset_state`` zeroes the buffers in place (memset), so
  the graphs stay valid.

Batched engines (a model exported with ``max_batch > 1``; built with an optimization profile
1 / opt / max on the batch axis): every call sets its input shapes (batch 1 for ``run``, ``b`` for
``run_batch``). ``run_batch`` gathers the streams' states into runner-owned batch buffers with
device-to-device copies, runs once, and copies each stream's slice of the new state back into that
stream's own next buffer (the state never leaves the device; each stream keeps its buffers). These
copies move each stream's state twice more per call (``samples/batch_bench.py`` counts the bytes).
No CUDA graph is captured for a batched engine (its shapes change from call to call).

The host-side logic (``IOPlan``, ``PingPong``, the runner's call sequence) is plain Python over a
small device interface (``CudaDevice`` here; a fake in the tests), so it is tested without a GPU.
Runs on one runner are serialized by a lock; sessions share a runner and own their states.
``TensorRTBackend`` puts the four runners behind the ``Backend`` interface (``Engine.load(dir,
backend="tensorrt")``).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import weakref
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .base import GRAPHS, BackendError
from .graph_backend import GraphBackend

__all__ = [
    "numpy_dtype",
    "TensorSpec",
    "IOPlan",
    "PingPong",
    "TensorRTState",
    "TensorRTGraphRunner",
    "CudaDevice",
    "load_tensorrt_runners",
    "TensorRTBackend",
]

log = logging.getLogger("lipforce.tensorrt")

_NP_DTYPES = {
    "float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64,
    "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}


def numpy_dtype(name: str) -> np.dtype:
    """The manifest's dtype name -> a NumPy dtype (``bfloat16`` through ``ml_dtypes``)."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as e:
            raise BackendError("a bfloat16 engine exchanges bfloat16 arrays, which NumPy spells with ml_dtypes: "
                               "pip install ml-dtypes") from e
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(_NP_DTYPES[name])
    except KeyError:
        raise BackendError(f"engine tensor dtype {name!r} has no NumPy type here; expected one of "
                           f"{', '.join([*_NP_DTYPES, 'bfloat16'])}") from None


# ------------------------------------------------------------------------------------------------
# Host-side plan (no TensorRT, no GPU)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def np_dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.np_dtype.itemsize

    @classmethod
    def from_dict(cls, d: Mapping, graph: str, batched: bool = False) -> "TensorSpec":
        """``batched``: the leading axis is the batch (-1); the spec is one stream's (batch 1)."""
        shape = tuple(int(x) for x in d["shape"])
        if batched and shape and shape[0] < 0:
            shape = (1,) + shape[1:]
        if any(x < 0 for x in shape):
            raise BackendError(f"graph {graph!r}: tensor {d['name']!r} has a dynamic shape {list(shape)}; the "
                               "lipforce engines are static per resolution (with a batch axis only where the model "
                               "was exported with max_batch > 1): rebuild with `lipforce build`")
        return cls(name=str(d["name"]), shape=shape, dtype=str(d["dtype"]))


@dataclass(frozen=True)
class IOPlan:
    """Which engine tensors are fed, returned, or kept as state, with their sizes."""

    graph: str
    feeds: tuple[TensorSpec, ...]  # non-state inputs, engine order
    results: tuple[TensorSpec, ...]  # non-state outputs
    state: tuple[tuple[TensorSpec, TensorSpec], ...]  # (state input, state output)
    aliased: frozenset = frozenset()  # state inputs the engine updates in place (output aliases input)
    max_batch: int = 1  # > 1: every tensor has a leading batch axis 1..max_batch; specs are one stream's

    @classmethod
    def from_entry(cls, graph: str, entry: Mapping, aliased: Sequence[str] = ()) -> "IOPlan":
        """Build the plan from an engine manifest entry (``inputs``, ``outputs``, ``state``, and
        ``max_batch`` for an engine with a batch axis)."""
        max_batch = int(entry.get("max_batch", 1))
        batched = max_batch > 1
        inputs = {d["name"]: TensorSpec.from_dict(d, graph, batched) for d in entry["inputs"]}
        outputs = {d["name"]: TensorSpec.from_dict(d, graph, batched) for d in entry["outputs"]}
        if batched:
            flat = [d["name"] for d in entry["inputs"] + entry["outputs"] if list(d["shape"])[:1] != [-1]]
            if flat:
                raise BackendError(f"graph {graph!r}: the engine has max_batch={max_batch} but tensors {flat} have no "
                                   "batch axis (-1) in front; re-export the model and rebuild with `lipforce build`")
        mapping = dict(entry.get("state") or {})
        pairs = []
        for s_in, s_out in mapping.items():
            if s_in not in inputs or s_out not in outputs:
                raise BackendError(f"graph {graph!r}: state {s_in!r} -> {s_out!r} is not an input/output pair of the "
                                   f"engine (inputs {sorted(inputs)}, outputs {sorted(outputs)}); rebuild with "
                                   "`lipforce build`")
            a, b = inputs[s_in], outputs[s_out]
            if a.shape != b.shape or a.dtype != b.dtype:
                raise BackendError(f"graph {graph!r}: state input {s_in!r} is {a.dtype}{list(a.shape)} but its output "
                                   f"{s_out!r} is {b.dtype}{list(b.shape)}; the state must keep its shape and dtype: "
                                   "fix the exporter")
            pairs.append((a, b))
        unknown = set(aliased) - set(mapping)
        if unknown:
            raise BackendError(f"graph {graph!r}: aliased tensors {sorted(unknown)} are not state inputs")
        outs = set(mapping.values())
        return cls(graph=graph,
                   feeds=tuple(s for n, s in inputs.items() if n not in mapping),
                   results=tuple(s for n, s in outputs.items() if n not in outs),
                   state=tuple(pairs), aliased=frozenset(aliased), max_batch=max_batch)

    @property
    def batched(self) -> bool:
        return self.max_batch > 1

    @property
    def state_bytes(self) -> int:
        """Device bytes one stream's state takes (two buffers per pair, one where aliased)."""
        return sum(a.nbytes * (1 if a.name in self.aliased else 2) for a, _ in self.state)

    def validate_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check the feeds against the plan; return them as arrays. Errors name the tensor and the fix."""
        want = {s.name: s for s in self.feeds}
        state_names = {a.name for a, _ in self.state} | {b.name for _, b in self.state}
        for name in feeds:
            if name in want:
                continue
            if name in state_names:
                raise BackendError(f"{self.graph}: {name!r} is state, kept on the device by the runner: do not feed "
                                   "it (new_state() starts it at zero, reset_state() zeroes it)")
            raise BackendError(f"{self.graph}: unknown feed {name!r}; the engine takes {sorted(want)}")
        missing = [n for n in want if n not in feeds]
        if missing:
            raise BackendError(f"{self.graph}: missing feeds {missing}; the engine takes "
                               + ", ".join(f"{s.name} {s.dtype}{list(s.shape)}" for s in self.feeds))
        out = {}
        for name, spec in want.items():
            arr = np.asarray(feeds[name])
            if arr.dtype != spec.np_dtype:
                raise BackendError(f"{self.graph}: feed {name!r} is {arr.dtype}, the engine takes {spec.dtype}: "
                                   f"pass x.astype({spec.dtype!r})")
            if arr.shape != spec.shape:
                raise BackendError(f"{self.graph}: feed {name!r} has shape {list(arr.shape)}, the engine takes "
                                   f"{list(spec.shape)} (engines are static per resolution; rebuild for another size)")
            out[name] = arr
        return out


class PingPong:
    """The device addresses one stream's state is bound to, call after call.

    ``buffers[s_in] = (ptr0, ptr1)``: at parity 0 the state input reads ``ptr0`` and the state
    output writes ``ptr1``; ``swap()`` flips the parity, so the output just written is the next
    call's input. An aliased pair has ``ptr0 == ptr1`` and never moves.
    """

    def __init__(self, plan: IOPlan, buffers: Mapping[str, tuple[int, int]]):
        self.plan = plan
        self.buffers = dict(buffers)
        self.parity = 0
        for a, _ in plan.state:
            p0, p1 = self.buffers[a.name]
            if (p0 == p1) != (a.name in plan.aliased):
                raise BackendError(f"{plan.graph}: state {a.name!r} needs "
                                   f"{'one buffer (aliased)' if a.name in plan.aliased else 'two distinct buffers'}")

    def bindings(self) -> dict[str, int]:
        out = {}
        for a, b in self.plan.state:
            bufs = self.buffers[a.name]
            out[a.name] = bufs[self.parity]
            out[b.name] = bufs[1 - self.parity] if a.name not in self.plan.aliased else bufs[0]
        return out

    def current(self, state_input: str) -> int:
        """The buffer holding the latest state (what the next call reads)."""
        return self.buffers[state_input][self.parity]

    def swap(self) -> None:
        self.parity ^= 1

    def all_pointers(self) -> list[int]:
        return sorted({p for pair in self.buffers.values() for p in pair})


def _free_state(device, pointers: list[int], graphs: dict) -> None:
    try:
        for g in graphs.values():
            device.destroy_graph(g)
        graphs.clear()
        for p in pointers:
            device.free(p)
    except Exception:  # pragma: no cover - freeing at interpreter exit must not raise
        log.debug("freeing TensorRT state failed", exc_info=True)


class TensorRTState:
    """One stream's state on the device: the ping-pong buffers and, per parity, a captured CUDA graph."""

    def __init__(self, runner: "TensorRTGraphRunner", pingpong: PingPong, device):
        self._runner = weakref.ref(runner)
        self.pingpong = pingpong
        self.graphs: dict[int, Any] = {}
        self.calls = [0, 0]  # calls run at each parity
        self.capture_failed = False
        self._finalizer = weakref.finalize(self, _free_state, device, pingpong.all_pointers(), self.graphs)

    @property
    def parity(self) -> int:
        return self.pingpong.parity

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Free the device buffers and graphs now (otherwise when the state is garbage collected)."""
        self._finalizer()


def _free_runner(device, pointers: list[int], host_pointers: list[int]) -> None:
    try:
        for p in pointers:
            device.free(p)
        for p in host_pointers:
            device.host_free(p)
    except Exception:  # pragma: no cover
        log.debug("freeing TensorRT runner buffers failed", exc_info=True)


class TensorRTGraphRunner:
    """Runs one TensorRT engine (``GraphRunner`` protocol of ``base.py``).

    ``context`` is a TensorRT ``IExecutionContext`` (``set_tensor_address``, ``execute_async_v3``);
    ``device`` is a ``CudaDevice``. Use ``load_tensorrt_runners`` (or ``from_loaded``) rather than
    the constructor.
    """

    def __init__(self, plan: IOPlan, context, device, *, cuda_graph: bool = False, warmup_calls: int = 1,
                 keepalive: Sequence[Any] = ()):
        if warmup_calls < 1:
            raise BackendError(f"warmup_calls={warmup_calls} must be >= 1: TensorRT needs a plain call before capture")
        self.plan = plan
        if cuda_graph and plan.batched:
            log.info("%s: a batched engine's shapes change between calls; running it without CUDA graphs", plan.graph)
            cuda_graph = False
        self.cuda_graph = cuda_graph
        self.warmup_calls = warmup_calls
        self._ctx = context
        self._dev = device
        self._keepalive = tuple(keepalive)  # engine, runtime, logger, runtime cache: must outlive the context
        self._lock = threading.Lock()
        self._dbuf: dict[str, int] = {}
        self._hptr: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}  # [max_batch * stream shape[0], ...] staging per feed/result
        mb = plan.max_batch
        for spec in plan.feeds + plan.results:
            n = max(spec.nbytes * mb, 1)
            self._dbuf[spec.name] = device.malloc(n)
            ptr, raw = device.host_alloc(n)
            self._hptr[spec.name] = ptr
            self._host[spec.name] = raw[:spec.nbytes * mb].view(spec.np_dtype).reshape(
                (spec.shape[0] * mb,) + spec.shape[1:])
        self._batch_state: dict[str, tuple[int, int]] = {}  # state input -> (in, out) buffers for max_batch streams
        self._dptrs = list(self._dbuf.values())  # freed with the runner (the batch state buffers join it)
        self._finalizer = weakref.finalize(self, _free_runner, device, self._dptrs, list(self._hptr.values()))
        self._stateless: TensorRTState | None = None  # used when a graph without state is run with state=None
        self.on_close: list = []  # callbacks run by close() (e.g. saving the TensorRT-RTX runtime cache)

    # ---- construction from an engine ----
    @classmethod
    def from_loaded(cls, loaded, device, *, cuda_graph: bool = True, warmup_calls: int = 1,
                    runtime_cache: bool = True) -> "TensorRTGraphRunner":
        """A runner for a ``lipforce_sdk.engine.LoadedEngine`` (checked and deserialized)."""
        engine = loaded.engine
        entry = loaded.entry
        aliased = []
        if hasattr(engine, "get_aliased_input_tensor"):
            for s_in, s_out in (entry.get("state") or {}).items():
                if engine.get_aliased_input_tensor(s_out) == s_in:
                    aliased.append(s_in)
        plan = IOPlan.from_entry(loaded.graph, entry, aliased=aliased)
        keep = [loaded.runtime, engine, loaded.logger]
        on_close = []
        if loaded.flavour.is_rtx and runtime_cache and hasattr(engine, "create_runtime_config"):
            # TensorRT-RTX compiles kernels on first use; its runtime cache keeps them between runs.
            cache_path = Path(loaded.engine_dir) / f"{loaded.graph}.runtime_cache"
            rcfg = engine.create_runtime_config()
            cache = rcfg.create_runtime_cache()
            if cache_path.is_file() and not cache.deserialize(cache_path.read_bytes()):
                log.info("%s does not fit this GPU/driver/TensorRT-RTX; starting an empty runtime cache", cache_path)
            rcfg.set_runtime_cache(cache)
            context = engine.create_execution_context(rcfg)
            keep += [rcfg, cache]

            def save_runtime_cache(cache=cache, path=cache_path):
                try:
                    blob = cache.serialize()
                    tmp = path.with_name(path.name + ".tmp")
                    with open(tmp, "wb") as f:
                        f.write(blob)
                    tmp.replace(path)
                except OSError as e:
                    log.warning("could not save the TensorRT-RTX runtime cache %s (%s)", path, e)

            on_close.append(save_runtime_cache)
        else:
            context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"{loaded.flavour} could not create an execution context for {loaded.graph} "
                               f"({'; '.join(getattr(loaded.logger, 'errors', [])) or 'out of GPU memory?'})")
        runner = cls(plan, context, device, cuda_graph=cuda_graph, warmup_calls=warmup_calls, keepalive=keep)
        runner.on_close.extend(on_close)
        return runner

    # ---- GraphRunner protocol ----
    def new_state(self) -> TensorRTState:
        dev = self._dev
        buffers = {}
        for a, _ in self.plan.state:
            p0 = dev.malloc(max(a.nbytes, 1))
            p1 = p0 if a.name in self.plan.aliased else dev.malloc(max(a.nbytes, 1))
            buffers[a.name] = (p0, p1)
        pp = PingPong(self.plan, buffers)
        state = TensorRTState(self, pp, dev)
        self._zero(state)
        return state

    def reset_state(self, state: TensorRTState | None) -> None:
        if state is None and not self.plan.state:
            return
        self._own(state)
        with self._lock:
            self._zero(state)

    def run(self, feeds: Mapping[str, np.ndarray], state: TensorRTState | None) -> dict[str, np.ndarray]:
        """``state`` may be None for a graph without state tensors (the audio encoder)."""
        arrays = self.plan.validate_feeds(feeds)
        if state is None:
            if self.plan.state:
                raise BackendError(f"{self.plan.graph} keeps state ({', '.join(a.name for a, _ in self.plan.state)}):"
                                   " pass the runner's new_state()")
            if self._stateless is None:
                self._stateless = self.new_state()
            state = self._stateless
        self._own(state)
        dev = self._dev
        with self._lock:
            for name, arr in arrays.items():
                np.copyto(self._host[name][:arr.shape[0]], arr)
            if self.plan.batched:
                self._set_batch(1)
            p = state.parity
            graph = state.graphs.get(p)
            if (graph is None and self.cuda_graph and not state.capture_failed
                    and state.calls[p] >= self.warmup_calls):
                graph = self._capture(state)
            if graph is not None:
                dev.launch(graph)
            else:
                self._enqueue(state)
            dev.synchronize()
            state.calls[p] += 1
            state.pingpong.swap()
            return {s.name: self._host[s.name][:s.shape[0]].copy() for s in self.plan.results}

    def run_batch(self, calls: Sequence[tuple[Mapping[str, np.ndarray], "TensorRTState | None"]]
                  ) -> list[dict[str, np.ndarray]]:
        """Several streams in one call of a batched engine (``IOPlan.max_batch`` > 1): each feed
        is one stream's (batch 1), each state that stream's own; returns each stream's results."""
        plan, dev = self.plan, self._dev
        b = len(calls)
        if not 1 <= b <= plan.max_batch:
            raise BackendError(f"{plan.graph}: a batch of {b} streams; this engine takes 1..{plan.max_batch} "
                               "(export with a larger --max-batch and rebuild for more)")
        arrays = [plan.validate_feeds(f) for f, _ in calls]
        states = []
        for _, st in calls:
            if st is None and plan.state:
                raise BackendError(f"{plan.graph} keeps state: pass each stream's new_state()")
            if st is not None:
                self._own(st)
            states.append(st)
        if plan.state and len({id(st) for st in states}) != b:
            raise BackendError(f"{plan.graph}: one state appears twice in a batch; each stream runs once per call")
        with self._lock:
            for spec in plan.feeds:
                n0 = spec.shape[0]
                for i, arr in enumerate(arrays):
                    np.copyto(self._host[spec.name][i * n0:(i + 1) * n0], arr[spec.name])
            if plan.batched:
                self._set_batch(b)
            buf = self._batch_buffers()
            for a, _ in plan.state:  # gather: each stream's current state into the batch buffer
                for i, st in enumerate(states):
                    dev.copy_d2d_async(buf[a.name][0] + i * a.nbytes, st.pingpong.current(a.name), a.nbytes)
            self._enqueue_bound(b, {**{a.name: buf[a.name][0] for a, _ in plan.state},
                                    **{o.name: buf[a.name][1] for a, o in plan.state}})
            for a, _ in plan.state:  # scatter: each stream's slice into the buffer its next call reads
                for i, st in enumerate(states):
                    pp = st.pingpong
                    dst = pp.buffers[a.name][0 if a.name in plan.aliased else 1 - pp.parity]
                    dev.copy_d2d_async(dst, buf[a.name][1] + i * a.nbytes, a.nbytes)
            dev.synchronize()
            for st in states:
                if st is not None:
                    st.pingpong.swap()
            return [{s.name: self._host[s.name][i * s.shape[0]:(i + 1) * s.shape[0]].copy() for s in plan.results}
                    for i in range(b)]

    def close(self) -> None:
        """Save caches and free the runner's buffers (states free their own)."""
        for cb in self.on_close:
            cb()
        self.on_close.clear()
        if self._stateless is not None:
            self._stateless.close()
            self._stateless = None
        self._finalizer()
        self._keepalive = ()

    # ---- internals ----
    def _own(self, state) -> None:
        if not isinstance(state, TensorRTState) or state._runner() is not self:
            raise BackendError(f"{self.plan.graph}: this state was not made by this runner's new_state(); each graph "
                               "runner keeps its own state")
        if state.closed:
            raise BackendError(f"{self.plan.graph}: this state was closed; make a new one with new_state()")

    def _zero(self, state: TensorRTState) -> None:
        for a, _ in self.plan.state:
            for ptr in set(state.pingpong.buffers[a.name]):
                self._dev.memset_async(ptr, a.nbytes)
        self._dev.synchronize()

    def _enqueue(self, state: TensorRTState) -> None:
        self._enqueue_bound(1, state.pingpong.bindings())

    def _enqueue_bound(self, b: int, state_bindings: Mapping[str, int]) -> None:
        """Copy ``b`` streams' feeds in, run with the state tensors at ``state_bindings``, copy the results out."""
        dev, ctx = self._dev, self._ctx
        for s in self.plan.feeds:
            dev.copy_h2d_async(self._dbuf[s.name], self._hptr[s.name], s.nbytes * b)
        for s in self.plan.feeds + self.plan.results:
            ctx.set_tensor_address(s.name, self._dbuf[s.name])
        for name, ptr in state_bindings.items():
            ctx.set_tensor_address(name, ptr)
        if not ctx.execute_async_v3(dev.stream):
            raise BackendError(f"{self.plan.graph}: TensorRT failed to enqueue the engine (see the TensorRT log); "
                               "run `lipforce doctor`")
        for s in self.plan.results:
            dev.copy_d2h_async(self._hptr[s.name], self._dbuf[s.name], s.nbytes * b)

    def _set_batch(self, b: int) -> None:
        """A batched engine's input shapes for a call of ``b`` streams."""
        for s in self.plan.feeds + tuple(a for a, _ in self.plan.state):
            if not self._ctx.set_input_shape(s.name, (s.shape[0] * b,) + s.shape[1:]):
                raise BackendError(f"{self.plan.graph}: TensorRT refused the shape of {s.name!r} for a batch of {b} "
                                   f"(the engine's profile takes 1..{self.plan.max_batch}); rebuild with `lipforce build`")

    def _batch_buffers(self) -> dict[str, tuple[int, int]]:
        """State input -> (input, output) device buffers for ``max_batch`` streams, allocated at the
        first batched call (one buffer where the engine updates the state in place)."""
        if not self._batch_state and self.plan.state:
            for a, _ in self.plan.state:
                n = max(a.nbytes * self.plan.max_batch, 1)
                p_in = self._dev.malloc(n)
                p_out = p_in if a.name in self.plan.aliased else self._dev.malloc(n)
                self._batch_state[a.name] = (p_in, p_out)
                self._dptrs.extend({p_in, p_out})
        return self._batch_state

    def _capture(self, state: TensorRTState):
        dev, ctx = self._dev, self._ctx
        capturable = getattr(ctx, "is_stream_capturable", None)
        if capturable is not None and not capturable(dev.stream):
            log.info("%s: the execution context cannot be stream-captured; running without a CUDA graph",
                     self.plan.graph)
            state.capture_failed = True
            return None
        dev.begin_capture()
        try:
            self._enqueue(state)
        except Exception:
            dev.abort_capture()
            raise
        try:
            graph = dev.end_capture()
        except BackendError as e:
            log.info("%s: CUDA graph capture failed (%s); running without one", self.plan.graph, e)
            state.capture_failed = True
            return None
        state.graphs[state.parity] = graph
        return graph


# ------------------------------------------------------------------------------------------------
# The device: cuda-python, thin
# ------------------------------------------------------------------------------------------------
def _cudart():
    from ..engine.gpu import cuda_runtime_module

    cudart = cuda_runtime_module()
    if cudart is None:
        raise BackendError("the TensorRT backend allocates device memory through cuda-python: "
                           "pip install cuda-python")
    return cudart


class CudaDevice:
    """Device and pinned host memory, copies, and graph capture on one CUDA stream (cuda-python)."""

    def __init__(self, device_index: int = 0):
        rt = _cudart()
        self._rt = rt
        self._call(rt.cudaSetDevice(device_index), f"cudaSetDevice({device_index})")
        self._stream_obj = self._call(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreate")
        self.stream = int(self._stream_obj)

    def _call(self, res, what: str):
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            _, msg = self._rt.cudaGetErrorString(err)
            raise BackendError(f"CUDA {what} failed: {msg.decode() if isinstance(msg, bytes) else msg} "
                               "(run `lipforce doctor`)")
        return rest[0] if len(rest) == 1 else (rest or None)

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self._rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self._call(self._rt.cudaFree(ptr), "cudaFree")

    def host_alloc(self, nbytes: int) -> tuple[int, np.ndarray]:
        ptr = int(self._call(self._rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        return ptr, np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(ptr))

    def host_free(self, ptr: int) -> None:
        self._call(self._rt.cudaFreeHost(ptr), "cudaFreeHost")

    def memset_async(self, ptr: int, nbytes: int) -> None:
        self._call(self._rt.cudaMemsetAsync(ptr, 0, nbytes, self.stream), "cudaMemsetAsync")

    def copy_h2d_async(self, dst: int, src: int, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream), "cudaMemcpyAsync(H2D)")

    def copy_d2h_async(self, dst: int, src: int, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream), "cudaMemcpyAsync(D2H)")

    def copy_d2d_async(self, dst: int, src: int, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._call(self._rt.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream), "cudaMemcpyAsync(D2D)")

    def synchronize(self) -> None:
        self._call(self._rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def begin_capture(self) -> None:
        mode = self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call(self._rt.cudaStreamBeginCapture(self.stream, mode), "cudaStreamBeginCapture")

    def end_capture(self):
        graph = self._call(self._rt.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
        try:
            return self._call(self._rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            self._rt.cudaGraphDestroy(graph)

    def abort_capture(self) -> None:
        res = self._rt.cudaStreamEndCapture(self.stream)
        if int(res[0]) == 0 and res[1] is not None:
            self._rt.cudaGraphDestroy(res[1])

    def launch(self, graph_exec) -> None:
        self._call(self._rt.cudaGraphLaunch(graph_exec, self.stream), "cudaGraphLaunch")

    def destroy_graph(self, graph_exec) -> None:
        self._rt.cudaGraphExecDestroy(graph_exec)


def load_tensorrt_runners(engine_dir: str | Path, *, graphs: Sequence[str] | None = None, cuda_graph: bool = True,
                          model_dir: str | Path | None = None, flavour: str | None = None,
                          device: CudaDevice | None = None, runtime_cache: bool = True
                          ) -> dict[str, TensorRTGraphRunner]:
    """Check and load every engine of ``engine_dir`` (written by ``lipforce build``); one runner per graph.

    All runners share one CUDA stream. ``model_dir`` also checks the engines against that model
    directory's ONNX hashes; ``flavour`` insists on ``"tensorrt_rtx"`` or ``"tensorrt"``.
    """
    try:
        from lipforce_sdk.engine import load_engine, read_engine_manifest
    except ImportError as e:
        raise BackendError(f"lipforce_sdk.engine does not import ({e}); install the SDK (pip install -e .)") from e
    manifest = read_engine_manifest(engine_dir)
    names = list(graphs) if graphs is not None else (
        [g for g in GRAPHS if g in manifest["engines"]] + [g for g in manifest["engines"] if g not in GRAPHS])
    loaded = [load_engine(engine_dir, g, model_dir=model_dir, flavour=flavour) for g in names]
    dev = device or CudaDevice()
    return {le.graph: TensorRTGraphRunner.from_loaded(le, dev, cuda_graph=cuda_graph, runtime_cache=runtime_cache)
            for le in loaded}


class TensorRTBackend(GraphBackend):
    """The four graphs as TensorRT engines built by ``lipforce build``; caches stay on the GPU."""

    @classmethod
    def load(cls, engine_dir: str | Path, *, cuda_graph: bool = True, model_dir: str | Path | None = None,
             flavour: str | None = None, runtime_cache: bool = True) -> "TensorRTBackend":
        """Check and load ``engine_dir`` (see ``load_tensorrt_runners`` for the options)."""
        from ..manifest import read_manifest

        d = Path(engine_dir)
        manifest, cfg = read_manifest(d)
        if "engines" not in manifest:
            raise BackendError(f"{str(d)!r} has no TensorRT engines (its manifest has no 'engines'): build them with "
                               f"`lipforce build {d} --out ENGINE_DIR` and load ENGINE_DIR")
        runners = load_tensorrt_runners(d, cuda_graph=cuda_graph, model_dir=model_dir, flavour=flavour,
                                        runtime_cache=runtime_cache)
        return cls("tensorrt", cfg, manifest, runners)

    def close(self) -> None:
        for r in self.runners.values():
            r.close()
