"""lipforce as a Triton Python-backend model: one sequence (correlation ID) = one stream = one
``lipforce_sdk.Session``; every session of this instance shares one ``lipforce_sdk.Engine``.

A request is one ``Session.push(audio, frame)``: AUDIO (float32 samples, maybe none) and
optionally FRAME ([H, W, 3] uint8). START creates the stream's session (options SEED, BOX,
REFERENCE, SILENCE, FACE are read there), END flushes it (its last frames are returned) and frees
it; a stream idle longer than ``max_sequence_idle_microseconds`` is freed too (its client
vanished). Responses (decoupled): one per output frame the push completed, FRAME, INDEX,
TIMESTAMP and BOX, the last flagged final; an empty final response where none completed. A bad
request gets an error response naming the stream, with the session's message; nothing of it was
consumed and the stream goes on. A request with START and END and nothing else is a describe
request: its one response carries CONFIG (the model's configuration as JSON), no session is made.

Parameters (config.pbtxt): ``model_dir`` (a lipforce model directory; relative paths are taken
from the model repository's root, empty is the SDK's bundled model), ``backend``
(``onnxruntime``, ``tensorrt`` or ``torch``), ``engine_options`` (JSON object passed to
``Engine.load``), ``workers`` (threads that run one execute()'s streams concurrently; 0: as many as
max_batch_size).
"""

from __future__ import annotations

import ctypes
import json
import os
import site
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path


def _use_server_pythonpath() -> None:
    """The backend stub starts its interpreter isolated (``PYTHONPATH`` ignored): put the server's
    ``PYTHONPATH`` entries (``lipforce_sdk.triton.server`` sets the environment's site-packages)
    in front, their ``.pth`` files processed, so numpy, ONNX Runtime and ``lipforce_sdk`` import
    from the environment that started the server."""
    before = list(sys.path)
    for p in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if p and os.path.isdir(p):
            site.addsitedir(p)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


_use_server_pythonpath()

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
_USED_DLTENSOR = ctypes.create_string_buffer(b"used_dltensor")  # lives as long as the module: capsules point at it
_capsule_set_name = ctypes.pythonapi.PyCapsule_SetName
_capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_void_p]
_capsule_set_name.restype = ctypes.c_int
_capsule_get_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_get_name.argtypes = [ctypes.py_object]
_capsule_get_name.restype = ctypes.c_char_p
OPTION_INPUTS = ("SEED", "BOX", "REFERENCE", "SILENCE", "FACE")
BACKENDS = ("onnxruntime", "tensorrt", "torch")
DEFAULT_IDLE_US = 1_000_000  # Triton's default where max_sequence_idle_microseconds is 0 or absent


class RequestError(Exception):
    """A request this model cannot serve; its message goes back to the client."""


def _log(level: str, msg: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        getattr(logger, f"log_{level}")(msg)
    else:  # pragma: no cover - older Python backends
        print(f"lipforce [{level}] {msg}", flush=True)


class _Metrics:
    """The model's own Prometheus metrics (Triton's metrics endpoint), labelled by instance."""

    def __init__(self, instance: str):
        self.enabled = hasattr(pb_utils, "MetricFamily")
        if not self.enabled:  # pragma: no cover - Python backends before custom metrics
            return
        fam = pb_utils.MetricFamily
        labels = {"instance": instance}
        self._families = {}  # a family must outlive its metrics

        def metric(name, description, kind, **extra):
            if name not in self._families:
                self._families[name] = fam(name=name, description=description, kind=kind)
            return self._families[name].Metric(labels={**labels, **extra})

        self.live = metric("lipforce_live_sessions", "streams with a live session", fam.GAUGE)
        self.started = metric("lipforce_sessions_started_total", "sessions created by START", fam.COUNTER)
        ended = "lipforce_sessions_ended_total"
        self.ended = {r: metric(ended, "sessions freed, by reason", fam.COUNTER, reason=r)
                      for r in ("end", "idle", "restart")}
        self.frames = metric("lipforce_frames_out_total", "frames returned", fam.COUNTER)
        self.errors = metric("lipforce_request_errors_total", "requests answered with an error", fam.COUNTER)
        # a batching engine (engine_options max_batch > 1): graph calls of the streams, and the engine
        # calls they ran in (mean batch = requests / calls)
        self.graph_requests = metric("lipforce_graph_requests", "graph calls of the streams (batching engine)",
                                     fam.GAUGE)
        self.engine_calls = metric("lipforce_engine_calls", "engine calls they ran in (batching engine)", fam.GAUGE)

    def set_live(self, n: int) -> None:
        if self.enabled:
            self.live.set(n)

    def set_batching(self, stats) -> None:
        if self.enabled:
            self.graph_requests.set(stats.requests)
            self.engine_calls.set(stats.engine_calls)

    def count(self, name: str, n: int = 1, reason: str | None = None) -> None:
        if self.enabled and n:
            (self.ended[reason] if name == "ended" else getattr(self, name)).increment(n)


class _Stream:
    def __init__(self, session):
        self.session = session
        self.last_used = time.monotonic()
        self.busy = True  # a request of this stream is being served
        self.frames_out = 0


@dataclass
class _Job:
    """One request, read on the execute() thread; run on a worker; answered on the execute() thread."""

    request: object
    corrid: int
    start: bool = False
    end: bool = False
    ready: bool = True
    audio: np.ndarray | None = None
    frame: np.ndarray | None = None
    options: dict = field(default_factory=dict)
    given: list = field(default_factory=list)
    frames: list = field(default_factory=list)  # OutputFrames to send
    describe: bool = False
    error: str | None = None


class _Notes:
    """Log lines and metric changes made on the worker threads, published by the execute() thread
    once the workers are done, or by the idle reaper. The model talks to the Python backend
    (inputs, responses, logs, metrics) from one thread at a time, holding ``pb_lock``: with
    responses, logs and metrics sent from the worker threads at once, tritonserver 2.51's Python
    backend crashed (SIGSEGV) within a few hundred requests."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: list = []

    def log(self, level: str, msg: str) -> None:
        with self._lock:
            self._items.append(("log", level, msg))

    def count(self, name: str, n: int = 1, reason: str | None = None) -> None:
        with self._lock:
            self._items.append(("count", name, n, reason))

    def live(self, n: int) -> None:
        with self._lock:
            self._items.append(("live", n))

    def publish(self, metrics: "_Metrics") -> None:
        with self._lock:
            items, self._items = self._items, []
        for it in items:
            if it[0] == "log":
                _log(it[1], it[2])
            elif it[0] == "count":
                metrics.count(it[1], it[2], reason=it[3])
            else:
                metrics.set_live(it[1])


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = cfg = json.loads(args["model_config"])
        self.name = args.get("model_instance_name", "lipforce")
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        if args.get("model_instance_kind") == "GPU" and "CUDA_VISIBLE_DEVICES" not in os.environ:
            # one stub process per instance: this instance sees its own GPU as device 0
            os.environ["CUDA_VISIBLE_DEVICES"] = str(args.get("model_instance_device_id", 0))
        backend = params.get("backend", "onnxruntime") or "onnxruntime"
        if backend not in BACKENDS:
            raise pb_utils.TritonModelException(f"parameter backend={backend!r} is not one of {BACKENDS}; set it in "
                                                "config.pbtxt")
        try:
            options = json.loads(params.get("engine_options") or "{}")
        except json.JSONDecodeError as e:
            raise pb_utils.TritonModelException(f"parameter engine_options={params['engine_options']!r} is not JSON "
                                                f"({e}); write a JSON object, e.g. {{\"threads\": 2}}") from None
        if not isinstance(options, dict):
            raise pb_utils.TritonModelException(f"parameter engine_options must be a JSON object, got {options!r}")
        model_dir = self._model_dir(params.get("model_dir", ""), Path(args["model_repository"]))

        from lipforce_sdk import Engine, InputError, __version__
        from lipforce_sdk.face import FaceNotFoundError

        self._input_errors = (InputError, FaceNotFoundError)
        t0 = time.perf_counter()
        try:
            self.engine = Engine.load(model_dir, backend=backend, **options)
        except Exception as e:
            raise pb_utils.TritonModelException(
                f"lipforce could not load model_dir={str(model_dir)!r} with backend={backend!r} "
                f"(engine_options={options}): {type(e).__name__}: {e}") from None
        self.describe = json.dumps({"config": self.engine.config.to_dict(), "backend": backend,
                                    "model_dir": str(model_dir), "sdk_version": __version__,
                                    "instance": self.name}).encode()
        seq = cfg.get("sequence_batching", {})
        self.idle_s = (int(seq.get("max_sequence_idle_microseconds") or 0) or DEFAULT_IDLE_US) / 1e6
        workers = int(params.get("workers") or 0) or max(1, int(cfg.get("max_batch_size") or 1))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lipforce-stream")
        self.streams: dict[int, _Stream] = {}
        self.lock = threading.Lock()
        self.notes = _Notes()
        self.pb_lock = threading.Lock()  # one thread at a time talks to the backend (see _Notes)
        self.metrics = _Metrics(self.name)
        self.metrics.set_live(0)
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="lipforce-idle", daemon=True)
        self._reaper.start()
        _log("info", f"lipforce: {self.engine!r} loaded in {time.perf_counter() - t0:.1f} s; {workers} worker "
                     f"thread(s); streams idle for {self.idle_s:g} s are freed")

    @staticmethod
    def _model_dir(value: str, model_path: Path) -> Path:
        if not value:
            from lipforce_sdk import default_model_dir

            return default_model_dir()
        p = Path(os.path.expandvars(os.path.expanduser(value)))
        if not p.is_absolute():
            p = Path(os.path.normpath(model_path.parent / p))  # relative to the model repository's root
        if not p.is_dir():
            raise pb_utils.TritonModelException(
                f"parameter model_dir={value!r} resolves to {str(p)!r}, which is not a directory; export the model "
                f"there (e.g. lipforce export --out {p}) or set model_dir in config.pbtxt (relative paths are taken "
                f"from the model repository {str(model_path.parent)!r})")
        return p.resolve()

    # ---------------- execute ----------------
    def execute(self, requests):
        # Read every request here, run the streams concurrently on the workers (one task per
        # stream: the sequence batcher puts at most one request per stream in a call, and
        # grouping keeps their order should a stream appear twice), answer here once all are
        # done: a stream's next request always finds its state after this one.
        with self.pb_lock:
            jobs = [self._read(r) for r in requests]
        groups: dict[int, list[_Job]] = {}
        for j in jobs:
            groups.setdefault(j.corrid, []).append(j)
        futures = [self.pool.submit(self._run_all, js) for js in groups.values()]
        for f in futures:
            f.result()
        with self.pb_lock:
            self.notes.publish(self.metrics)  # first: a client that has its answer sees the metrics it changed
            if self.engine.batching is not None:
                self.metrics.set_batching(self.engine.batching.stats)
            for j in jobs:
                self._answer(j)
        return None

    def _read(self, request) -> _Job:
        job = _Job(request, self._corrid(request))
        try:
            job.start, job.end, job.ready = (self._flag(request, n) for n in ("START", "END", "READY"))
            audio = self._tensor(request, "AUDIO")
            frame = self._tensor(request, "FRAME")
            job.audio = np.zeros(0, np.float32) if audio is None else self._one(audio, "AUDIO")
            job.frame = None if frame is None else self._one(frame, "FRAME")
            job.given = [n for n in OPTION_INPUTS if pb_utils.get_input_tensor_by_name(request, n) is not None]
            if job.start:
                job.options = self._options(request)
        except RequestError as e:
            job.error = str(e)
        return job

    def _run_all(self, jobs: list[_Job]) -> None:
        for j in jobs:
            if j.error is not None:
                continue
            try:
                self._run(j)
            except RequestError as e:
                j.error = str(e)
            except Exception as e:  # a bug: report it on this stream, keep serving the others
                self.notes.log("error", f"lipforce stream {j.corrid}: {traceback.format_exc()}")
                j.error = f"{type(e).__name__}: {e}"

    def _run(self, job: _Job) -> None:
        """Apply one request to its stream (no pb_utils here: see _Notes)."""
        if not job.ready:
            return
        empty = job.audio.size == 0 and job.frame is None
        if job.start and job.end and empty and not job.given:
            job.describe = True
            return
        if job.start:
            stream = self._open(job)
        else:
            if job.given:
                raise RequestError(f"{', '.join(job.given)} given on a request without START: stream options are "
                                   "read on the START request only; start a new stream to change them")
            if job.end and empty and self._stream(job.corrid) is None:
                return  # an END with nothing to push for a stream that is gone (or never started)
            stream = self._acquire(job.corrid)
        try:
            if not empty or not (job.start or job.end):
                try:
                    job.frames += stream.session.push(job.audio, job.frame)
                except self._input_errors as e:
                    job.error = str(e)
            if job.end:
                job.frames += stream.session.flush()
        finally:
            self._release(job.corrid, stream, ended=job.end, frames=len(job.frames))
        self.notes.count("frames", len(job.frames))

    def _answer(self, job: _Job) -> None:
        sender = job.request.get_response_sender()
        try:
            if job.describe:
                cfg = np.frombuffer(self.describe, np.uint8)[None].copy()
                sender.send(pb_utils.InferenceResponse(output_tensors=[self._out("CONFIG", cfg)]), flags=FINAL)
                return
            for i, f in enumerate(job.frames):
                last = i == len(job.frames) - 1 and job.error is None
                sender.send(self._frame_response(f), flags=FINAL if last else 0)
            if job.error is not None:
                self.metrics.count("errors")
                rid = job.request.request_id()
                msg = f"lipforce stream {job.corrid}: {job.error}"  # the request id as Triton's own errors put it
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"[request id: {rid}] {msg}" if rid else msg)), flags=FINAL)
            elif not job.frames:
                sender.send(flags=FINAL)
        except Exception:  # the client went away mid-answer; the stream's state is intact
            _log("warn", f"lipforce stream {job.corrid}: could not send its responses: {traceback.format_exc()}")

    # ---------------- streams ----------------
    def _open(self, job: _Job) -> _Stream:
        try:
            session = self.engine.session(**job.options)
        except self._input_errors as e:
            raise RequestError(str(e)) from None
        stream = _Stream(session)
        with self.lock:
            old = self.streams.pop(job.corrid, None)
            self.streams[job.corrid] = stream
            live = len(self.streams)
        if old is not None:
            self.notes.count("ended", reason="restart")
            self.notes.log("info", f"lipforce stream {job.corrid}: a new START replaced the live stream "
                                   f"({old.frames_out} frames out); its state is dropped")
        self.notes.count("started")
        self.notes.live(live)
        self.notes.log("info", f"lipforce stream {job.corrid}: started ({live} live)")
        return stream

    def _stream(self, corrid: int) -> _Stream | None:
        with self.lock:
            return self.streams.get(corrid)

    def _acquire(self, corrid: int) -> _Stream:
        with self.lock:
            stream = self.streams.get(corrid)
            if stream is not None:
                stream.busy = True
        if stream is None:
            raise RequestError(f"no live session (it ended, or was freed after {self.idle_s:g} s idle, or its first "
                               "request lacked START); start the stream again with sequence_start=True")
        return stream

    def _release(self, corrid: int, stream: _Stream, ended: bool, frames: int) -> None:
        with self.lock:
            stream.busy = False
            stream.last_used = time.monotonic()
            stream.frames_out += frames
            if ended and self.streams.get(corrid) is stream:
                del self.streams[corrid]
            live = len(self.streams)
        if ended:
            self.notes.count("ended", reason="end")
            self.notes.live(live)
            self.notes.log("info", f"lipforce stream {corrid}: ended, {stream.frames_out} frames out ({live} live)")

    def _reap(self) -> None:
        """Free the streams idle longer than the sequence batcher's idle timeout."""
        while not self._stop.wait(min(1.0, max(0.05, self.idle_s / 4))):
            now = time.monotonic()
            with self.lock:
                gone = [(c, s) for c, s in self.streams.items() if not s.busy and now - s.last_used > self.idle_s]
                for c, _ in gone:
                    del self.streams[c]
                live = len(self.streams)
            for c, s in gone:
                self.notes.count("ended", reason="idle")
                self.notes.log("info", f"lipforce stream {c}: freed after {now - s.last_used:.1f} s idle without "
                                       f"END, {s.frames_out} frames out ({live} live)")
            if gone:
                self.notes.live(live)
                with self.pb_lock:  # published now: a vanished client sends no request that would
                    self.notes.publish(self.metrics)

    # ---------------- tensors ----------------
    @staticmethod
    def _tensor(request, name):
        """An input as a NumPy array of its own (the request's memory is released after execute()).
        Read through DLPack: the stub's ``as_numpy`` of nvidia-pytriton 0.7.0 (built for NumPy 1)
        mis-reads NumPy 2's dtypes (every element came back as the first)."""
        t = pb_utils.get_input_tensor_by_name(request, name)
        return None if t is None else np.array(np.from_dlpack(t), copy=True)

    def _flag(self, request, name: str) -> bool:
        t = self._tensor(request, name)
        if t is None:  # the control input is configured; fall back to the request's flags
            flags = request.flags()
            return {"START": bool(flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START),
                    "END": bool(flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END), "READY": True}[name]
        return bool(t.reshape(-1)[0])

    def _corrid(self, request) -> int:
        t = self._tensor(request, "CORRID")
        return int(t.reshape(-1)[0]) if t is not None else int(request.correlation_id())

    @staticmethod
    def _one(x: np.ndarray, name: str) -> np.ndarray:
        """A request carries one push: its batch dimension is 1."""
        if x.shape[0] != 1:
            raise RequestError(f"{name} has batch size {x.shape[0]} (shape {list(x.shape)}); a request carries one "
                               f"push: send shape [1, ...]")
        return x[0]

    def _options(self, request) -> dict:
        """Engine.session's arguments from a START request's option inputs."""
        opts = {}
        seed = self._tensor(request, "SEED")
        if seed is not None:
            opts["seed"] = int(self._one(seed, "SEED").reshape(-1)[0])
        box = self._tensor(request, "BOX")
        if box is not None:
            b = self._one(box, "BOX").astype(np.float64)
            if not np.isfinite(b).all() or not (b[2] > b[0] and b[3] > b[1]):
                raise RequestError(f"BOX {b.tolist()} is not a box: pass x0, y0, x1, y1 in frame pixels with x1 > x0 "
                                   "and y1 > y0")
            opts["box"] = tuple(float(v) for v in b)
        ref = self._tensor(request, "REFERENCE")
        if ref is not None:
            opts["reference"] = list(self._one(ref, "REFERENCE"))
        silence = self._tensor(request, "SILENCE")
        if silence is not None:
            opts["silence"] = self._text(silence, "SILENCE")
        face = self._tensor(request, "FACE")
        if face is not None:
            v = self._text(face, "FACE")
            if v not in ("largest", "center"):
                try:
                    x, y = (float(t) for t in v.split(","))
                except ValueError:
                    raise RequestError(f"FACE {v!r}: use largest, center, or X,Y (a pixel, e.g. 640,360)") from None
                v = (x, y)
            opts["face"] = v
        return opts

    def _text(self, x: np.ndarray, name: str) -> str:
        try:
            return self._one(x, name).tobytes().decode()
        except UnicodeDecodeError:
            raise RequestError(f"{name} is not UTF-8 text; send the text's UTF-8 bytes as UINT8") from None

    @staticmethod
    def _out(name: str, x: np.ndarray):
        """An output tensor, through DLPack (see ``_tensor``). The stub marks the capsule it took as
        "used_dlpack" where DLPack says "used_dltensor", so NumPy's capsule destructor reported an
        error for every tensor; the standard name tells it the stub owns the tensor now."""
        cap = np.ascontiguousarray(x).__dlpack__()
        t = pb_utils.Tensor.from_dlpack(name, cap)
        if _capsule_get_name(cap) == b"used_dlpack":  # taken by the stub (a stub that copies leaves it to NumPy)
            _capsule_set_name(cap, ctypes.addressof(_USED_DLTENSOR))
        return t

    def _frame_response(self, f):
        box = np.full((1, 4), np.nan) if f.box is None else np.array([[f.box.x0, f.box.y0, f.box.x1, f.box.y1]])
        return pb_utils.InferenceResponse(output_tensors=[
            self._out("FRAME", f.image[None]),
            self._out("INDEX", np.array([[f.index]], np.int64)),
            self._out("TIMESTAMP", np.array([[f.timestamp]], np.float64)),
            self._out("BOX", box),
        ])

    def finalize(self):
        self._stop.set()
        self.pool.shutdown(wait=True)
        with self.lock:
            n = len(self.streams)
            self.streams.clear()
        _log("info", f"lipforce: unloaded ({n} live stream(s) dropped)")
