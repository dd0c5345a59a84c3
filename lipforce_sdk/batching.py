"""Batched sessions: the graph calls of several streams in one engine call.

``Engine.load(path, backend="onnxruntime", max_batch=8, max_wait_ms=2.0)`` (on a model directory
exported with ``max_batch >= 8``, or the torch backend) gives the engine a ``BatchScheduler``.
Sessions stay as they are for the user: each runs ``push()`` in its own thread and owns its state.
When several sessions call the same graph (audio encoder, VAE encoder, DiT step, VAE decoder)
within ``max_wait_ms`` of each other, their calls go into one batched call (at most
``max_batch``); each caller then continues with its own results.

When a batch runs (``BatchScheduler._schedule``):

* a graph's queue holds ``max_batch`` calls: it runs;
* its oldest call has waited ``max_wait_ms``: it runs (the bound on any added delay);
* no other stream could still join it: it runs at once. A session is *active* from the first
  graph call of a chunk to the end of the last chunk its ``push`` completes; an active stream that
  is not queued (running host code or another batch) could join a queue for graph ``g`` if ``g``
  still lies ahead of it in its chunk (a chunk calls the graphs in the contract's order,
  ``GRAPHS``, the DiT step several times; after the VAE decoder the next chunk may start). A lone
  session, or sessions that never overlap in time, therefore wait for nothing, and a stream that
  is behind the others can catch up with them within ``max_wait_ms``.

A session that returns from ``push`` (finished, raised, or about to be garbage-collected) is no
longer active and is never waited for. Feeds are checked against the graph's contract before they
are queued, so a malformed call raises in its own caller only; a batched call that raises is
rerun one stream at a time (the states change only once a call succeeds), so an error stays with
the stream whose call caused it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .contract import GRAPHS, BackendError

__all__ = ["BatchScheduler", "BatchStats", "stream_scope"]


@dataclass
class BatchStats:
    """How the scheduler ran: calls per graph and batch size, and how long calls waited to start."""

    WAIT_WINDOW = 4096
    calls: dict[str, Counter] = field(default_factory=lambda: {g: Counter() for g in GRAPHS})
    requests: int = 0  # graph calls of streams (a batch of b is b requests, one call)
    waited: int = 0  # requests that did not start at once (they waited for others, at most max_wait_ms)
    split_reruns: int = 0  # batched calls that raised and were rerun one stream at a time
    wait_ms: deque = field(default_factory=lambda: deque(maxlen=BatchStats.WAIT_WINDOW))

    def record(self, graph: str, size: int, waits_s: list[float]) -> None:
        self.calls[graph][size] += 1
        self.requests += size
        self.wait_ms.extend(1000.0 * w for w in waits_s)

    def by_size(self) -> dict[int, int]:
        """Engine calls per batch size, over all graphs."""
        total = Counter()
        for c in self.calls.values():
            total.update(c)
        return dict(sorted(total.items()))

    @property
    def engine_calls(self) -> int:
        return sum(self.by_size().values())

    @property
    def mean_batch(self) -> float | None:
        n = self.engine_calls
        return self.requests / n if n else None

    def summary(self) -> dict[str, Any]:
        w = np.asarray(self.wait_ms, np.float64)
        return {
            "requests": self.requests, "engine_calls": self.engine_calls, "mean_batch": self.mean_batch,
            "waited": self.waited,
            "calls_by_size": self.by_size(),
            "calls_by_graph": {g: dict(sorted(c.items())) for g, c in self.calls.items() if c},
            "wait_ms_p50": float(np.percentile(w, 50)) if w.size else None,
            "wait_ms_max": float(w.max()) if w.size else None,
            "split_reruns": self.split_reruns,
        }


class _Request:
    __slots__ = ("graph", "feeds", "state", "stream", "t_submit", "batch", "result", "error")

    def __init__(self, graph: str, feeds: Mapping[str, Any], state: Any, stream: object | None):
        self.graph, self.feeds, self.state, self.stream = graph, feeds, state, stream
        self.t_submit = time.perf_counter()
        self.batch: _Batch | None = None
        self.result: dict | None = None
        self.error: BaseException | None = None


class _Batch:
    __slots__ = ("graph", "requests", "done")

    def __init__(self, graph: str, requests: list[_Request]):
        self.graph, self.requests = graph, requests
        self.done = threading.Event()

    @property
    def leader(self) -> _Request:
        """The caller whose thread runs the batch."""
        return self.requests[0]


class BatchScheduler:
    """Gathers the graph calls of concurrent sessions into batched calls of ``backend``."""

    def __init__(self, backend, max_batch: int, max_wait_ms: float = 2.0):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise BackendError(f"max_batch={max_batch!r} must be an integer >= 1")
        if not (max_wait_ms >= 0.0):
            raise BackendError(f"max_wait_ms={max_wait_ms!r} must be >= 0 (the longest a call waits for others)")
        limit = getattr(backend, "max_batch", 1)
        if limit is not None and max_batch > limit:
            raise BackendError(_too_small(backend, max_batch))
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.stats = BatchStats()
        self._cv = threading.Condition()
        self._queues: dict[str, list[_Request]] = {g: [] for g in GRAPHS}
        self._active: dict[object, str | None] = {}  # streams inside a chunk (stream()) -> their last graph called
        self._queued: set[object] = set()  # active streams with a call in a queue
        self._local = threading.local()
        self._specs = {g: backend.feed_specs(g) for g in GRAPHS}

    # ---------------- sessions ----------------
    @contextlib.contextmanager
    def stream(self):
        """While inside, this thread runs one stream's chunk(s): its graph calls may be waited for
        by the other streams' calls (for at most ``max_wait_ms``). Re-entrant."""
        if getattr(self._local, "token", None) is not None:
            yield
            return
        token = object()
        self._local.token = token
        with self._cv:
            self._active[token] = None
        try:
            yield
        finally:
            self._local.token = None
            with self._cv:
                self._active.pop(token, None)
                self._queued.discard(token)
                self._schedule()  # the others may have been waiting for this stream only

    # ---------------- calls ----------------
    def submit(self, graph: str, feeds: Mapping[str, Any], state: Any) -> dict[str, Any]:
        """Run ``graph`` for one stream, batched with the calls of other streams that are ready;
        returns this stream's outputs (or raises its error)."""
        self._validate(graph, feeds)
        req = _Request(graph, feeds, state, getattr(self._local, "token", None))
        interrupted: BaseException | None = None
        with self._cv:
            self._queues[graph].append(req)
            if req.stream in self._active:
                self._queued.add(req.stream)
                self._active[req.stream] = graph
            self._schedule()
            if req.batch is None:
                self.stats.waited += 1
            try:
                while req.batch is None:
                    self._cv.wait(self._timeout())
                    if req.batch is None:
                        self._schedule()
            except BaseException as e:  # interrupted while queued (KeyboardInterrupt): leave no orphan call
                if req.batch is None:
                    self._queues[graph].remove(req)
                    self._queued.discard(req.stream)
                    raise
                interrupted = e  # launched meanwhile: the others wait for this thread, so run it first
        batch = req.batch
        if batch.leader is req:
            self._execute(batch)
        else:
            batch.done.wait()
        if interrupted is not None:
            raise interrupted
        if req.error is not None:
            raise req.error
        return req.result

    def _validate(self, graph: str, feeds: Mapping[str, Any]) -> None:
        """Each stream's feeds must fit the graph's contract before they are batched with others'."""
        spec = self._specs.get(graph)
        if spec is None:
            raise BackendError(f"unknown graph {graph!r}; expected one of {', '.join(GRAPHS)}")
        if set(feeds) != set(spec):
            raise BackendError(f"{graph}: feeds {sorted(feeds)} differ from the graph's inputs {sorted(spec)}")
        for name, (shape, dtype) in spec.items():
            x = feeds[name]
            got_shape = tuple(getattr(x, "shape", ()))
            got_dtype = str(getattr(x, "dtype", type(x).__name__)).removeprefix("torch.")
            if got_shape != shape or got_dtype != dtype:
                raise BackendError(f"{graph}: feed {name!r} is {got_dtype}{list(got_shape)}, one stream's call takes "
                                   f"{dtype}{list(shape)}; pass one stream's tensor of that shape and dtype")

    # ---------------- the policy (self._cv held) ----------------
    def _schedule(self) -> None:
        now = time.perf_counter()
        launched = False
        for g in GRAPHS:
            q = self._queues[g]
            while len(q) >= self.max_batch:
                self._launch(g, self.max_batch, now)
                launched = True
            if q and (now - q[0].t_submit >= self.max_wait_s or not self._may_come(g)):
                self._launch(g, len(q), now)
                launched = True
        if launched:
            self._cv.notify_all()

    def _may_come(self, graph: str) -> bool:
        """Could an active stream that is not queued still call ``graph`` in its current chunk?"""
        return any(_ahead(last, graph) for t, last in self._active.items() if t not in self._queued)

    def _launch(self, graph: str, n: int, now: float) -> None:
        q = self._queues[graph]
        reqs, q[:] = q[:n], q[n:]
        batch = _Batch(graph, reqs)
        for r in reqs:
            r.batch = batch
            self._queued.discard(r.stream)
        self.stats.record(graph, len(reqs), [now - r.t_submit for r in reqs])

    def _timeout(self) -> float | None:
        oldest = [q[0].t_submit for q in self._queues.values() if q]
        if not oldest:
            return None
        return max(0.0, min(oldest) + self.max_wait_s - time.perf_counter())

    # ---------------- running a batch (the leader's thread, no lock held) ----------------
    def _execute(self, batch: _Batch) -> None:
        reqs, be, g = batch.requests, self.backend, batch.graph
        try:
            if len(reqs) == 1:
                try:
                    reqs[0].result = be.run_graph(g, reqs[0].feeds, reqs[0].state)
                except Exception as e:
                    reqs[0].error = e
                return
            try:
                for r, res in zip(reqs, be.run_batch(g, [(r.feeds, r.state) for r in reqs]), strict=True):
                    r.result = res
            except Exception:
                # no state changed (a batched call writes the states back only once it succeeded):
                # run each stream alone, so that an error is raised only where it belongs
                self.stats.split_reruns += 1
                for r in reqs:
                    try:
                        r.result = be.run_graph(g, r.feeds, r.state)
                    except Exception as e:
                        r.error = e
        finally:
            for r in reqs:
                if r.result is None and r.error is None:
                    r.error = BackendError(f"{g}: the batched call was interrupted before it finished")
            batch.done.set()


_ORDER = {g: i for i, g in enumerate(GRAPHS)}


def _ahead(last: str | None, graph: str) -> bool:
    """A stream whose last call was ``last`` may still call ``graph`` in this chunk (or, after the
    decoder, in the next one)."""
    if last is None or last == "vae_decoder":
        return True
    return _ORDER[graph] > _ORDER[last] or graph == last == "dit_step"


def stream_scope(backend):
    """The scope of one stream's chunk computation for ``backend``'s scheduler (a no-op without one)."""
    batcher = getattr(backend, "batcher", None)
    return batcher.stream() if batcher is not None else contextlib.nullcontext()


def _too_small(backend, max_batch: int) -> str:
    limit = getattr(backend, "max_batch", 1)
    if backend.name == "tensorrt":
        fix = (f"re-export with `lipforce export --max-batch {max_batch}` and rebuild the engines with "
               "`lipforce build`")
    else:
        fix = f"re-export it with `lipforce export --max-batch {max_batch}`"
    return (f"max_batch={max_batch} but this {backend.name} model takes at most {limit} stream(s) per call "
            f"(its manifest's max_batch); {fix}, or load it with max_batch<={limit}")
