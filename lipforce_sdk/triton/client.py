"""Stream to a lipforce model served by Triton Inference Server (``deploy/triton``), as a local
``Engine``/``Session`` is used:

    engine = RemoteEngine("localhost:8001")            # a gRPC connection (or several)
    session = engine.session(box=(x0, y0, x1, y1))      # a sequence on the server (START)
    for audio_piece, frame in live_source():
        for out in session.push(audio_piece, frame):    # the frames that have arrived so far
            show(out.index, out.timestamp, out.image)
    for out in session.flush():                         # END: the server flushes and frees the stream
        show(out.index, out.timestamp, out.image)

Each session is one sequence (correlation ID) on a gRPC bidirectional stream; many sessions
share a connection and any number run at once. ``push`` sends the push and returns at once with
what has arrived (at most ``max_in_flight`` pushes wait for their answer; beyond that ``push``
waits). Bad input raises the session's own ``InputError`` here, before anything is sent; an error
the server reports for a push (``RemoteStreamError``, naming the stream) is raised by the next
``push`` or ``flush`` of that session, before it sends anything; the stream goes on.
Needs the ``triton`` extra: ``pip install "lipforce[triton]"`` (``tritonclient[grpc]``).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import threading
import time
from typing import Sequence

import numpy as np

from ..config import ModelConfig
from ..face import FaceBox
from ..session import InputError, OutputFrame, Session, SessionStats

__all__ = ["RemoteEngine", "RemoteSession", "RemoteStreamError", "MODEL_NAME"]

MODEL_NAME = "lipforce"
_REQUEST_ID = re.compile(r"\[request id: ([^\]]*)\]")
_SEQUENCE = re.compile(r"(?:lipforce stream|for sequence) (\d+)")


class RemoteStreamError(RuntimeError):
    """The server answered a push of one stream with an error (or stopped answering).

    ``sequence_id``: the stream; ``request_id``: the push (``"<sequence>-<n>"``, n from 0 = START)
    or ``None`` where the error concerns the whole connection; ``server_message``: the server's
    text (for bad input, the session's ``InputError`` message)."""

    def __init__(self, message: str, sequence_id: int, request_id: str | None = None, server_message: str = ""):
        super().__init__(message)
        self.sequence_id = sequence_id
        self.request_id = request_id
        self.server_message = server_message


def _grpc():
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as e:
        raise RuntimeError(f"streaming to Triton needs the triton extra ({e.name} is missing): "
                           "pip install 'lipforce[triton]'") from None
    return grpcclient


def _input(name: str, x: np.ndarray, datatype: str):
    i = _grpc().InferInput(name, list(x.shape), datatype)
    i.set_data_from_numpy(np.ascontiguousarray(x))
    return i


def _text(name: str, value: str):
    return _input(name, np.frombuffer(value.encode(), np.uint8)[None], "UINT8")


class _Connection:
    """One gRPC channel with one bidirectional stream; routes responses to the sessions by request id."""

    def __init__(self, url: str, model: str, verbose: bool = False):
        g = _grpc()
        self.url, self.model = url, model
        self.client = g.InferenceServerClient(url, verbose=verbose)
        self._lock = threading.Lock()
        self._requests: dict[str, "RemoteSession"] = {}
        self._sessions: dict[int, "RemoteSession"] = {}
        self._broken: str | None = None
        self.client.start_stream(callback=self._on_response)

    def send(self, session: "RemoteSession", request_id: str, inputs, start: bool = False, end: bool = False) -> None:
        with self._lock:
            if self._broken is not None:
                raise RemoteStreamError(f"lipforce stream {session.sequence_id}: the connection to {self.url} is "
                                        f"broken ({self._broken}); open a new RemoteEngine", session.sequence_id)
            self._requests[request_id] = session
            self._sessions[session.sequence_id] = session
        try:
            self.client.async_stream_infer(self.model, inputs, request_id=request_id, sequence_id=session.sequence_id,
                                           sequence_start=start, sequence_end=end, enable_empty_final_response=True)
        except Exception:
            with self._lock:
                self._requests.pop(request_id, None)
            raise

    def forget(self, session: "RemoteSession") -> None:
        with self._lock:
            if self._sessions.get(session.sequence_id) is session:
                del self._sessions[session.sequence_id]

    def close(self) -> None:
        try:
            self.client.stop_stream()
        finally:
            self.client.close()

    # ---------------- the stream's thread ----------------
    def _on_response(self, result, error) -> None:
        if error is not None:
            self._on_error(error)
            return
        r = result.get_response()
        p = r.parameters.get("triton_final_response")
        final = p.bool_param if p is not None else True
        with self._lock:
            session = self._requests.pop(r.id, None) if final else self._requests.get(r.id)
        if session is not None:
            session._on_result(r.id, result, final)

    def _on_error(self, error) -> None:
        msg = error.message() if hasattr(error, "message") else str(error)
        m = _REQUEST_ID.search(msg)
        with self._lock:
            session = self._requests.pop(m.group(1), None) if m else None
            rid = m.group(1) if session is not None else None
            if session is None:
                s = _SEQUENCE.search(msg)
                session = self._sessions.get(int(s.group(1))) if s else None
                if session is not None:  # no request id: a sequence's requests fail in order, take its oldest
                    rid = session._oldest()
                    self._requests.pop(rid, None)
            if session is None:  # the stream itself failed (server gone): every session on it
                self._broken = msg
                victims = {s for s in self._requests.values()}
                self._requests.clear()
        if session is not None:
            session._on_error(rid, msg)
        else:
            for s in victims:
                s._on_error(None, msg, broken=True)


class RemoteEngine:
    """A lipforce model served by Triton: ``config`` and ``session(...)`` as a local ``Engine``.

    ``url``: the server's gRPC address (``host:8001``); ``connections``: gRPC channels to spread
    sessions over (round robin); ``timeout_s``: how long ``flush`` and ``session`` wait for the
    server; ``max_in_flight``: pushes of one session sent but not yet answered before ``push``
    waits (bounds memory; enough to keep the server busy with one stream)."""

    def __init__(self, url: str = "localhost:8001", model: str = MODEL_NAME, connections: int = 1,
                 timeout_s: float = 120.0, max_in_flight: int = 16, verbose: bool = False):
        if connections < 1:
            raise ValueError(f"connections={connections}: need at least 1")
        self.url, self.model, self.timeout_s, self.max_in_flight = url, model, float(timeout_s), int(max_in_flight)
        self._conns = [_Connection(url, model, verbose) for _ in range(connections)]
        self._next = itertools.cycle(self._conns)
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        try:
            self.info = self._describe()
        except RemoteStreamError as e:
            reason = self._conns[0]._broken or str(e)
            self.close()
            raise RuntimeError(f"cannot stream to Triton at {url!r} ({reason}); is the server running there "
                               "(lipforce triton)?") from None
        self.config: ModelConfig = ModelConfig.from_dict(self.info["config"])

    def session(self, box: FaceBox | tuple[float, float, float, float] | None = None, seed: int | None = None,
                reference: Sequence[np.ndarray] | None = None, silence: str | None = None,
                face: str | tuple[float, float] = "largest", sequence_id: int | None = None,
                exemplars: bool = True, **local_only) -> "RemoteSession":
        """A new stream on the server (its START is answered before this returns, so a bad option
        raises here). Arguments as ``Engine.session``; ``tracker``, ``face_source``, ``keypoints``
        and ``avatar`` need the frames or the avatar where the engine is, so they are local only.
        ``sequence_id``: the stream's correlation ID (default: a random unused one); a START with
        the ID of a live stream replaces that stream on the server."""
        given = [k for k, v in local_only.items() if v is not None]
        unknown = [k for k in given if k not in ("tracker", "face_source", "keypoints", "avatar")]
        if unknown:
            raise TypeError(f"RemoteEngine.session() got unexpected argument(s) {', '.join(unknown)}")
        if given:
            raise InputError(f"{', '.join(given)}= cannot be sent to a Triton server; use a local Engine for them "
                             "(box=, seed=, reference=, silence= and face= are sent)")
        if not exemplars:
            raise InputError("exemplars=False is not sent to a Triton server: its sessions paste through mouth "
                             "exemplars (the served model's own, else the stream's first seconds); use a local Engine")
        if sequence_id is not None and not 0 < int(sequence_id) < 2 ** 64:
            raise ValueError(f"sequence_id={sequence_id}: a correlation ID is an integer in [1, 2**64)")
        sid = self._new_id() if sequence_id is None else int(sequence_id)
        return RemoteSession(self, next(self._next), sid, box=box, seed=seed, reference=reference, silence=silence,
                             face=face)

    def close(self) -> None:
        """End the streams still open (END, not waited for) and close the connections."""
        for c in self._conns:
            with c._lock:
                live = list(c._sessions.values())
            for s in live:
                s.close()
            try:
                c.close()
            except Exception:  # a broken stream has nothing left to close
                pass

    def __enter__(self) -> "RemoteEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RemoteEngine({self.config.name!r}, url={self.url!r}, model={self.model!r}, "
                f"backend={self.info.get('backend')!r})")

    def _new_id(self) -> int:
        with self._lock:
            while True:
                i = secrets.randbits(63)
                if i and i not in self._ids:
                    self._ids.add(i)
                    return i

    def _describe(self) -> dict:
        """A one-request sequence (START and END, nothing else): the server's model description."""
        probe = _Probe(self, self._conns[0], self._new_id())
        return probe.run()


class _Waiter:
    """Frames and errors of one sequence, filled by the connection's stream thread."""

    def __init__(self, engine: RemoteEngine, conn: _Connection, sequence_id: int):
        self.engine, self.conn, self.sequence_id = engine, conn, sequence_id
        self._cond = threading.Condition()
        self._sent: dict[str, float] = {}  # request id -> when sent, in order; removed once answered
        self._n = 0

    def _oldest(self) -> str | None:
        with self._cond:
            return next(iter(self._sent), None)

    def _send(self, inputs, start: bool = False, end: bool = False) -> str:
        rid = f"{self.sequence_id}-{self._n}"
        self._n += 1
        with self._cond:
            self._sent[rid] = time.perf_counter()
            self._changed()
        try:
            self.conn.send(self, rid, inputs, start=start, end=end)
        except Exception:
            with self._cond:
                self._sent.pop(rid, None)
                self._changed()
            raise
        return rid

    def _changed(self) -> None:
        """Called under ``_cond`` after requests were sent or answered."""

    def _wait(self, done, what: str) -> None:
        t_end = time.monotonic() + self.engine.timeout_s
        with self._cond:
            while not done():
                left = t_end - time.monotonic()
                if left <= 0:
                    raise RemoteStreamError(f"lipforce stream {self.sequence_id}: no answer from {self.engine.url} "
                                            f"within {self.engine.timeout_s:g} s while {what}", self.sequence_id)
                self._cond.wait(min(left, 1.0))


class _Probe(_Waiter):
    def run(self) -> dict:
        self.info, self.error = None, None
        try:
            self._send([_input("AUDIO", np.zeros((1, 0), np.float32), "FP32")], start=True, end=True)
            self._wait(lambda: not self._sent, "asking for the model's description")
        finally:
            self.conn.forget(self)
        if self.error is not None or self.info is None:
            raise RuntimeError(f"the Triton model {self.engine.model!r} at {self.engine.url} did not describe itself "
                               f"({self.error or 'no CONFIG in its answer'}); is it the lipforce model of "
                               "deploy/triton?")
        return self.info

    def _on_result(self, rid, result, final) -> None:
        cfg = result.as_numpy("CONFIG")
        with self._cond:
            if cfg is not None:
                self.info = json.loads(cfg.tobytes().decode())
            if final:
                self._sent.pop(rid, None)
                self._cond.notify_all()

    def _on_error(self, rid, msg, broken: bool = False) -> None:
        with self._cond:
            self.error = msg
            self._sent.clear() if broken or rid is None else self._sent.pop(rid, None)
            self._cond.notify_all()


class RemoteSession(_Waiter):
    """One stream on the server: ``push(audio, frame)`` / ``flush()`` as ``Session``, the frames
    computed by the server. ``stats``: ``SessionStats`` seen from here: a chunk's latency is from
    sending the push that completed it to its last frame arriving (network, queueing behind the
    stream's earlier pushes, compute); ``fps``: frames over the time the stream had requests
    on the server."""

    def __init__(self, engine: RemoteEngine, conn: _Connection, sequence_id: int, box=None, seed=None, reference=None,
                 silence=None, face="largest"):
        super().__init__(engine, conn, sequence_id)
        self.cfg = engine.config
        self.sample_rate = self.cfg.audio.sample_rate
        self.fps = self.cfg.stream.fps
        self.stats = SessionStats()
        self._frame_hw: tuple[int, int] | None = None
        self._frames: list[OutputFrame] = []
        self._errors: list[RemoteStreamError] = []
        self._arrived: dict[str, int] = {}  # request id -> frames so far
        self._ended = False
        self._t_first_push: float | None = None
        self._busy_since: float | None = None
        self._start(self._options(box, seed, reference, silence, face))
        self.stats = SessionStats()  # the stream's own numbers start after its START

    # ---------------- public API ----------------
    def push(self, audio=None, frame: np.ndarray | None = None, sample_rate: int | None = None) -> list[OutputFrame]:
        """Send any number of audio samples and/or one frame; return the frames that have arrived
        (maybe none, maybe of earlier pushes). Bad input raises ``InputError`` and nothing is sent;
        an error the server reported for an earlier push raises ``RemoteStreamError`` and this push
        is not sent (push it again)."""
        if self._ended:
            raise InputError("push() after flush(): the stream has ended; open a new session to start another")
        self._raise_errors()
        # the session's own checks, with its messages (they read sample_rate and _frame_hw)
        a = Session._check_audio(self, audio, sample_rate)
        f = Session._check_frame(self, frame) if frame is not None else None
        if a.size == 0 and f is None:
            raise InputError("push() got no audio samples and no frame; pass audio=<samples>, frame=<HxWx3 uint8>, "
                             "or both")
        self._wait(lambda: len(self._sent) < self.engine.max_in_flight or bool(self._errors), "waiting to push")
        self._raise_errors()
        inputs = [_input("AUDIO", a[None], "FP32")]
        if f is not None:
            inputs.append(_input("FRAME", f[None], "UINT8"))
        if self._t_first_push is None:
            self._t_first_push = time.perf_counter()
        self._send(inputs)
        self.stats.audio_samples_in += a.size
        if f is not None:
            self._frame_hw = self._frame_hw or f.shape[:2]
            self.stats.frames_in += 1
        return self._take()

    def flush(self) -> list[OutputFrame]:
        """End of stream: send END (the server completes the last partial chunk and frees the
        stream), wait for every frame and return those not returned yet."""
        if not self._ended:
            self._raise_errors()
            self._send([_input("AUDIO", np.zeros((1, 0), np.float32), "FP32")], end=True)
            self._ended = True
        self._wait(lambda: not self._sent, "flushing")
        self.conn.forget(self)
        self._raise_errors()
        return self._take()

    @property
    def in_flight(self) -> int:
        """Requests of this stream sent and not yet fully answered."""
        with self._cond:
            return len(self._sent)

    def close(self) -> None:
        """End the stream on the server now (END, frames not waited for)."""
        if not self._ended:
            self._ended = True
            try:
                self._send([_input("AUDIO", np.zeros((1, 0), np.float32), "FP32")], end=True)
            except Exception:  # the connection is gone: so is the stream (the server frees it when idle)
                pass
        self.conn.forget(self)

    def reset(self) -> None:
        """Start a new stream with the same options (the current one is ended on the server and
        its frames not yet returned are dropped)."""
        self.close()
        self._wait(lambda: not self._sent, "ending the stream")
        with self._cond:
            self._frames.clear()
            self._errors.clear()
        self.sequence_id = self.engine._new_id()
        self._frame_hw, self._ended, self._t_first_push, self._n, self._busy_since = None, False, None, 0, None
        self._start(self._opts)
        self.stats = SessionStats()

    # ---------------- internals ----------------
    def _options(self, box, seed, reference, silence, face) -> list:
        opts = []
        if seed is not None:
            opts.append(_input("SEED", np.array([[int(seed)]], np.int64), "INT64"))
        if box is not None:
            b = box if isinstance(box, FaceBox) else FaceBox(*(float(v) for v in box))
            opts.append(_input("BOX", np.array([[b.x0, b.y0, b.x1, b.y1]], np.float64), "FP64"))
        if reference is not None:
            frames = [Session._check_frame(self, np.asarray(f)) for f in reference]
            if not frames:
                raise InputError("reference= is empty; pass frame(s) of the person, or None")
            if len({f.shape for f in frames}) > 1:
                raise InputError(f"reference frames differ in size ({sorted({f.shape for f in frames})}); "
                                 "pass frames of one size")
            opts.append(_input("REFERENCE", np.stack(frames)[None], "UINT8"))
        if silence is not None:
            opts.append(_text("SILENCE", str(silence)))
        if face != "largest":
            opts.append(_text("FACE", face if isinstance(face, str) else f"{float(face[0])},{float(face[1])}"))
        return opts

    def _start(self, opts) -> None:
        self._opts = opts
        self._send([_input("AUDIO", np.zeros((1, 0), np.float32), "FP32")] + opts, start=True)
        self._wait(lambda: not self._sent, "starting the stream")
        try:
            self._raise_errors()
        except RemoteStreamError:
            self.close()  # ends the sequence on the server at once instead of at its idle timeout
            raise

    def _take(self) -> list[OutputFrame]:
        with self._cond:
            out, self._frames = self._frames, []
        return sorted(out, key=lambda f: f.index)

    def _raise_errors(self) -> None:
        with self._cond:
            if not self._errors:
                return
            err = self._errors.pop(0)
        raise err

    def _on_result(self, rid: str, result, final: bool) -> None:
        img = result.as_numpy("FRAME")
        now = time.perf_counter()
        with self._cond:
            if img is not None:
                idx = int(result.as_numpy("INDEX").reshape(-1)[0])
                ts = float(result.as_numpy("TIMESTAMP").reshape(-1)[0])
                b = result.as_numpy("BOX").reshape(-1)
                box = None if not np.isfinite(b).all() else FaceBox(*(float(v) for v in b))
                # a copy: the response's buffer is read-only, a local session's frames are not
                self._frames.append(OutputFrame(index=idx, timestamp=ts, image=np.array(img[0]), box=box))
                self._arrived[rid] = self._arrived.get(rid, 0) + 1
                self.stats.frames_without_face += box is None
                if self.stats.time_to_first_frame_ms is None and self._t_first_push is not None:
                    self.stats.time_to_first_frame_ms = (now - self._t_first_push) * 1000.0
            if final:
                t_sent = self._sent.pop(rid, now)
                n = self._arrived.pop(rid, 0)
                if n:
                    self.stats.chunk_latency_ms.append((now - t_sent) * 1000.0)
                    self.stats.chunks += 1
                    self.stats.frames_out += n
                self._changed()
                self._cond.notify_all()

    def _on_error(self, rid: str | None, msg: str, broken: bool = False) -> None:
        if broken:
            text = f"lipforce stream {self.sequence_id}: the stream to {self.engine.url} failed: {msg}"
        else:
            push = "the START" if rid is not None and rid.endswith("-0") else f"push {rid}"
            text = f"lipforce stream {self.sequence_id}: the server rejected {push}: {msg}"
            if "must specify the START flag" in msg:
                text += (" (the server no longer knows this stream: it was idle longer than the model's "
                         "max_sequence_idle_microseconds; open a new session)")
        err = RemoteStreamError(text, self.sequence_id, rid, msg)
        with self._cond:
            if broken:
                self._sent.clear()
            elif rid is not None:
                self._sent.pop(rid, None)
                self._arrived.pop(rid, None)
            self._errors.append(err)
            self._changed()
            self._cond.notify_all()

    def _changed(self) -> None:
        """``stats.compute_ms_total`` is the time this stream had requests on the server, so
        ``stats.fps`` is the frames per second the server gave it."""
        now = time.perf_counter()
        if self._sent and self._busy_since is None:
            self._busy_since = now
        elif not self._sent and self._busy_since is not None:
            self.stats.compute_ms_total += (now - self._busy_since) * 1000.0
            self._busy_since = None
