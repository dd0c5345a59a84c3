"""Many streams on a real Triton Inference Server (deploy/triton, Python backend, sequence batcher),
against solo local runs of the same clips: frames bit for bit, END and the idle timeout free the
session, a bad push is an error on its own stream only, ``lipforce run --server`` writes the local
run's MP4. Skipped (with the reason) only where tritonclient or nvidia-pytriton is not installed."""

import importlib.util
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BOX, make_clip
from lipforce_sdk import Engine, InputError
from lipforce_sdk.triton.server import (REPOSITORY, TritonNotInstalledError, TritonServer, TritonServerError,
                                        find_tritonserver, prepare_repository, set_parameter)

_MISSING = [why for mod, why in (
    ("tritonclient.grpc", "tritonclient is not installed (pip install 'lipforce[triton]')"),
    ("pytriton", "tritonserver is not installed (pip install --no-deps nvidia-pytriton==0.7.0)"))
    if importlib.util.find_spec(mod.split(".")[0]) is None or importlib.util.find_spec(mod) is None]
needs_triton = pytest.mark.skipif(bool(_MISSING), reason="; ".join(_MISSING))

IDLE_S = 3.0  # the test server's max_sequence_idle_microseconds
OPTIONS = {"threads": 1}  # the same engine options on the server and locally
SPF = 640  # samples per video frame at 16 kHz / 25 fps


@pytest.fixture(scope="module")
def model_dir(exported_tiny):
    return exported_tiny[1]


@pytest.fixture(scope="module")
def local(model_dir):
    return Engine.load(model_dir, backend="onnxruntime", **OPTIONS)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """deploy/triton with a short idle timeout, its model_dir a path relative to the repository
    (beside it: Triton takes every directory in the repository for a model)."""
    root = tmp_path_factory.mktemp("triton")
    repo = prepare_repository(REPOSITORY, root / "repository", backend="onnxruntime", engine_options=OPTIONS,
                              idle_timeout_s=IDLE_S)
    (root / "models").mkdir()
    (root / "models" / "tiny").symlink_to(model_dir, target_is_directory=True)
    cfg = repo / "lipforce" / "config.pbtxt"
    cfg.write_text(set_parameter(cfg.read_text(), "model_dir", "../models/tiny"))
    with TritonServer(repo) as s:
        yield s


@pytest.fixture
def remote(server):
    from lipforce_sdk.triton.client import RemoteEngine

    with RemoteEngine(server.grpc_url, connections=2) as e:
        yield e


def solo(engine, frames, audio, seed, box=BOX):
    """A clip streamed alone through a local session: one frame and its samples per push."""
    s = engine.session(box=box, seed=seed)
    return stream(s, frames, audio)


def stream(session, frames, audio):
    out = []
    for i in range(len(frames)):
        out += session.push(audio[i * SPF:(i + 1) * SPF], frames[i])
    out += session.push(audio[len(frames) * SPF:])
    return out + session.flush()


def stream_concurrently(sessions, clips):
    """Each clip through its session, all in their own threads released together; the frames per session."""
    got, errors = [None] * len(sessions), []
    go = threading.Barrier(len(sessions))

    def run(k):
        try:
            go.wait()
            got[k] = stream(sessions[k], *clips[k])
        except Exception as e:  # pragma: no cover - reported below
            errors.append((k, e))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return got


def assert_same_frames(got, want, what):
    assert [f.index for f in got] == [f.index for f in want], f"{what}: frame indices differ"
    assert [f.timestamp for f in got] == [f.timestamp for f in want], f"{what}: timestamps differ"
    for g, w in zip(got, want):
        if not np.array_equal(g.image, w.image):
            d = np.abs(g.image.astype(np.int16) - w.image.astype(np.int16))
            raise AssertionError(f"{what}: frame {g.index} differs from the solo local run in {int((d > 0).sum())} "
                                 f"values, max {int(d.max())}")
        assert g.box == w.box, f"{what}: frame {g.index} box {g.box} != {w.box}"


def metric(server, name, **labels) -> float:
    """The sum of a metric's samples over the model's instances (those with ``labels``)."""
    total, found = 0.0, False
    for line in server.metrics().splitlines():
        m = re.match(rf"{name}\{{([^}}]*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total, found = total + float(m.group(2)), True
    assert found, f"metric {name} {labels} is not reported"
    return total


def wait_for(cond, what, limit_s=60.0, state=lambda: ""):
    """Poll ``cond`` (a hang guard, not a timing check: the limit is far above what it needs)."""
    t_end = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < t_end, f"still waiting for {what} after {limit_s:.0f} s {state()}"
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# without a server
# ---------------------------------------------------------------------------------------------


def test_a_missing_tritonserver_names_the_fix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    with pytest.raises(TritonNotInstalledError, match=r"pip install --no-deps nvidia-pytriton==0\.7\.0"):
        find_tritonserver()
    with pytest.raises(TritonNotInstalledError, match="nvidia-pytriton"):
        TritonServer(REPOSITORY).start()


def test_the_repository_copy_carries_the_given_parameters(tmp_path):
    repo = prepare_repository(REPOSITORY, tmp_path / "r", model_dir=tmp_path, backend="torch",
                              engine_options={"threads": 3}, idle_timeout_s=2.5, instances=2)
    text = (repo / "lipforce" / "config.pbtxt").read_text()
    assert f'key: "model_dir" value {{ string_value: "{tmp_path.resolve()}" }}' in text
    assert 'key: "backend" value { string_value: "torch" }' in text
    assert 'key: "engine_options" value { string_value: "{\\"threads\\": 3}" }' in text
    assert "max_sequence_idle_microseconds: 2500000" in text and "count: 2" in text
    assert text.count('key: "model_dir"') == 1 and (repo / "lipforce" / "1" / "model.py").is_file()
    original = (REPOSITORY / "lipforce" / "config.pbtxt").read_text()
    assert "max_sequence_idle_microseconds: 60000000" in original, "the repository itself was changed"


# ---------------------------------------------------------------------------------------------
# a real server
# ---------------------------------------------------------------------------------------------


@needs_triton
def test_a_model_that_cannot_load_stops_the_server_with_its_reason(tmp_path):
    repo = prepare_repository(REPOSITORY, tmp_path / "r", model_dir=tmp_path / "no-such-model")
    with pytest.raises(TritonServerError) as e:
        TritonServer(repo, ready_timeout_s=120).start()
    assert "no-such-model" in str(e.value) and "lipforce export" in str(e.value), str(e.value)


@needs_triton
def test_the_server_describes_its_model(remote, local, model_dir):
    """model_dir relative to the repository (../models/tiny, see ``server``) is the exported model."""
    assert remote.config == local.config
    assert remote.info["backend"] == "onnxruntime"
    assert Path(remote.info["model_dir"]) == Path(model_dir).resolve()


@needs_triton
def test_eight_streams_at_once_give_each_its_solo_frames(server, remote, local):
    """8 sequences pushed concurrently from 8 threads over 2 gRPC connections, each its own clip,
    frame size and seed: every frame equals the clip's solo local run bit for bit (the same
    ONNX Runtime graphs, options and seed; a session's frames depend on its own inputs only, and
    ONNX Runtime's CPU kernels give the same bits whichever thread runs them)."""
    from tritonclient.grpc import InferenceServerClient

    n = 8
    clips = [make_clip(8 + k % 3, seed=10 + k, hw=(96, 80) if k % 2 else (80, 96)) for k in range(n)]
    boxes = [BOX if k % 2 else (12.0, 6.0, 76.0, 70.0) for k in range(n)]
    sessions = [remote.session(box=boxes[k], seed=100 + k) for k in range(n)]
    assert metric(server, "lipforce_live_sessions") == n
    got = stream_concurrently(sessions, clips)
    for k in range(n):
        want = solo(local, *clips[k], seed=100 + k, box=boxes[k])
        assert len(want) == len(clips[k][0])
        assert_same_frames(got[k], want, f"stream {k}")
        assert sessions[k].stats.frames_out == len(want) and sessions[k].stats.frames_in == len(want)
    assert metric(server, "lipforce_live_sessions") == 0
    # the sequence batcher handed the model requests of several streams in one execute() call
    stats = InferenceServerClient(server.grpc_url).get_inference_statistics("lipforce", as_json=True)
    sizes = {int(b["batch_size"]) for b in stats["model_stats"][0]["batch_stats"]}
    assert max(sizes) > 1, f"every execute() held one request (batch sizes {sorted(sizes)})"


@needs_triton
def test_a_batching_engine_on_the_server_batches_the_streams_and_keeps_their_frames(batched_tiny, local,
                                                                                  tmp_path_factory):
    """The batched export and ``engine_options: {"max_batch": 4}``: four streams at once run
    their graph calls together in the server (its lipforce_graph_requests over lipforce_engine_calls
    > 1) and each stream's frames equal its solo local run (batch-1 graphs) within the batched
    tolerance of tests/test_batching.py (1 level on at most 1e-4 of the values)."""
    from lipforce_sdk.triton.client import RemoteEngine

    root = tmp_path_factory.mktemp("triton_batched")
    repo = prepare_repository(REPOSITORY, root / "repository", model_dir=batched_tiny[0], backend="onnxruntime",
                              engine_options={**OPTIONS, "max_batch": 4, "max_wait_ms": 20.0})
    n = 4
    clips = [make_clip(12, seed=50 + k) for k in range(n)]
    with TritonServer(repo) as srv, RemoteEngine(srv.grpc_url) as remote:
        got = stream_concurrently([remote.session(box=BOX, seed=200 + k) for k in range(n)], clips)
        requests, calls = metric(srv, "lipforce_graph_requests"), metric(srv, "lipforce_engine_calls")
    assert calls > 0 and requests / calls > 1.0, f"{requests:.0f} graph calls ran in {calls:.0f} engine calls"
    for k in range(n):
        want = solo(local, *clips[k], seed=200 + k)
        assert [f.index for f in got[k]] == [f.index for f in want]
        d = np.stack([np.abs(g.image.astype(np.int16) - w.image.astype(np.int16)) for g, w in zip(got[k], want)])
        assert d.max() <= 1 and (d > 0).mean() <= 1e-4, f"stream {k}: max {d.max()}, {(d > 0).mean():.2e} differ"


@needs_triton
def test_end_frees_the_stream_and_a_new_start_with_its_id_is_a_fresh_stream(server, remote, local):
    ended = metric(server, "lipforce_sessions_ended_total", reason="end")
    live = metric(server, "lipforce_live_sessions")
    a, b = make_clip(7, seed=31), make_clip(9, seed=32)
    s = remote.session(box=BOX, seed=1, sequence_id=4242)
    assert metric(server, "lipforce_live_sessions") == live + 1
    first = stream(s, *a)
    assert_same_frames(first, solo(local, *a, seed=1), "first stream")
    assert metric(server, "lipforce_live_sessions") == live, "END did not free the session"
    assert metric(server, "lipforce_sessions_ended_total", reason="end") == ended + 1
    with pytest.raises(InputError, match="after flush"):
        s.push(a[1][:SPF], a[0][0])
    # the same correlation ID again: nothing of the first stream (clock, caches, frame size) is left
    again = remote.session(box=BOX, seed=2, sequence_id=4242)
    assert_same_frames(stream(again, *b), solo(local, *b, seed=2), "restarted stream")
    assert metric(server, "lipforce_live_sessions") == live
    # reset(): the stream so far is ended on the server, its frames dropped; a fresh one goes on
    s = remote.session(box=BOX, seed=2)
    for i in range(5):
        s.push(a[1][i * SPF:(i + 1) * SPF], a[0][i])
    s.reset()
    assert_same_frames(stream(s, *b), solo(local, *b, seed=2), "stream after reset()")
    assert metric(server, "lipforce_live_sessions") == live
    assert metric(server, "lipforce_sessions_ended_total", reason="end") == ended + 4  # 2 streams, reset, flush


@needs_triton
def test_a_stream_whose_client_vanished_is_freed_after_the_idle_timeout(server, remote):
    from lipforce_sdk.triton.client import RemoteStreamError

    idle = metric(server, "lipforce_sessions_ended_total", reason="idle")
    frames, audio = make_clip(4, seed=41)
    s = remote.session(box=BOX, seed=3)
    sid = s.sequence_id
    for i in range(4):
        s.push(audio[i * SPF:(i + 1) * SPF], frames[i])
    wait_for(lambda: s.in_flight == 0, "the pushes to be answered")
    assert metric(server, "lipforce_live_sessions") >= 1
    # the client goes silent: no END, no more requests
    # the reaper counts the stream ended, then sets the live gauge: two updates a scrape can fall between
    wait_for(lambda: (metric(server, "lipforce_sessions_ended_total", reason="idle") == idle + 1
                      and metric(server, "lipforce_live_sessions") == 0),
             f"the stream to be freed after {IDLE_S} s idle",
             state=lambda: (f"(ended idle {metric(server, 'lipforce_sessions_ended_total', reason='idle')}, was {idle};"
                            f" live {metric(server, 'lipforce_live_sessions')})"))
    assert re.search(rf"lipforce stream {sid}: freed after \d+\.\d s idle without END", server.log_text())
    # coming back to it later: the server no longer knows the stream, and says so on this stream
    s.push(audio[:SPF], frames[0])
    with pytest.raises(RemoteStreamError, match=str(sid)) as e:
        s.flush()
    assert e.value.sequence_id == sid


class RawStream:
    """A plain tritonclient gRPC stream (as any client would write it), answers kept by request id."""

    def __init__(self, url):
        from tritonclient.grpc import InferenceServerClient

        self.client = InferenceServerClient(url)
        self.answers, self.errors, self.done = {}, [], threading.Condition()
        self.client.start_stream(callback=self._on)

    def _on(self, result, error):
        with self.done:
            if error is not None:
                self.errors.append(error.message())
            else:
                r = result.get_response()
                frame = result.as_numpy("FRAME")
                self.answers.setdefault(r.id, [])
                if frame is not None:
                    self.answers[r.id].append((int(result.as_numpy("INDEX")[0, 0]), frame[0]))
            self.done.notify_all()

    def send(self, rid, seq, audio=None, frame=None, start=False, end=False, audio_type="FP32", box=None):
        from tritonclient.grpc import InferInput

        def inp(name, x, dt):
            i = InferInput(name, list(x.shape), dt)
            i.set_data_from_numpy(x)
            return i

        audio = np.zeros(0, np.float32) if audio is None else audio
        inputs = [inp("AUDIO", audio[None], audio_type)]
        if frame is not None:
            inputs.append(inp("FRAME", frame[None], "UINT8"))
        if box is not None:
            inputs.append(inp("BOX", np.array([box], np.float64), "FP64"))
        self.client.async_stream_infer("lipforce", inputs, request_id=rid, sequence_id=seq, sequence_start=start,
                                       sequence_end=end, enable_empty_final_response=True)

    def wait(self, n_answers, n_errors):
        wait_for(lambda: len(self.answers) >= n_answers and len(self.errors) >= n_errors,
                 f"{n_answers} answers and {n_errors} errors", state=lambda: (sorted(self.answers), self.errors))

    def close(self):
        self.client.stop_stream()
        self.client.close()


@needs_triton
def test_a_bad_push_is_an_error_on_its_own_stream_only(server, remote, local):
    """A raw client sends bad pushes on one stream between good ones while three other streams
    play: each bad push gets one error naming the stream, with the session's message; nothing
    of it is consumed (the stream's frames are still its solo run), the others are untouched."""
    from lipforce_sdk.triton.client import RemoteStreamError

    errors = metric(server, "lipforce_request_errors_total")
    frames, audio = make_clip(8, seed=51)
    others = [make_clip(8, seed=52 + k) for k in range(3)]
    good = [remote.session(box=BOX, seed=60 + k) for k in range(3)]
    got = [[] for _ in good]
    raw, seq = RawStream(server.grpc_url), 777001
    try:
        bad = {  # request id -> what the error must say
            "nan": "NaN/Inf", "alpha": "3 channels", "size": "frame size changed", "loud": "must lie in",
            "dtype": "INT32",
        }
        n_good = 0
        for i in range(8):
            for k, s in enumerate(good):
                got[k] += s.push(others[k][1][i * SPF:(i + 1) * SPF], others[k][0][i])
            raw.send(f"g{i}", seq, audio[i * SPF:(i + 1) * SPF], frames[i], start=i == 0, box=BOX if i == 0 else None)
            n_good += 1
            if i == 2:
                raw.send("nan", seq, np.full(SPF, np.nan, np.float32), frames[3])
                raw.send("alpha", seq, audio[:SPF], np.zeros((96, 80, 4), np.uint8))
            if i == 4:
                raw.send("size", seq, audio[:SPF], np.zeros((64, 64, 3), np.uint8))
                raw.send("loud", seq, np.full(SPF, 3.0, np.float32))
                raw.send("dtype", seq, np.zeros(SPF, np.int32), audio_type="INT32")
        raw.send("tail", seq, audio[8 * SPF:])
        raw.send("end", seq, end=True)
        raw.send("nostart", 777002, audio[:SPF], frames[0])  # a stream whose first request lacks START
        raw.wait(n_good + 2, len(bad) + 1)
        for k, s in enumerate(good):
            got[k] += s.push(others[k][1][8 * SPF:])
            got[k] += s.flush()
    finally:
        raw.close()
    assert len(raw.errors) == len(bad) + 1, raw.errors
    for rid, says in bad.items():
        hits = [e for e in raw.errors if f"[request id: {rid}]" in e]
        assert len(hits) == 1 and says in hits[0], (rid, raw.errors)
        if rid != "dtype":  # the others reached the session: its message, naming the stream
            assert f"lipforce stream {seq}:" in hits[0], hits[0]
    assert any("777002" in e and "START" in e for e in raw.errors), raw.errors
    assert not any(rid in raw.answers for rid in bad)
    out = sorted((i, f) for rid in raw.answers for i, f in raw.answers[rid])
    want = solo(local, frames, audio, seed=None)
    assert [i for i, _ in out] == [w.index for w in want]
    assert all(np.array_equal(f, w.image) for (_, f), w in zip(out, want)), "the failed pushes changed the stream"
    for k in range(3):
        assert_same_frames(got[k], solo(local, *others[k], seed=60 + k), f"good stream {k}")
    assert metric(server, "lipforce_request_errors_total") == errors + len(bad) - 1  # dtype: Triton's own check
    # the Python client: the session's checks raise here before anything is sent, and the stream goes on
    s = remote.session(box=BOX, seed=70)
    with pytest.raises(InputError, match="NaN/Inf"):
        s.push(np.full(SPF, np.nan, np.float32), frames[0])
    with pytest.raises(InputError, match="dtype float32 is not supported"):
        s.push(audio[:SPF], frames[0].astype(np.float32))
    assert_same_frames(stream(s, frames, audio), solo(local, frames, audio, seed=70), "client-checked stream")
    # an option the server's session refuses: the START's error, naming the stream
    with pytest.raises(RemoteStreamError, match=r"stream \d+: the server rejected the START: .*silence='loud'"):
        remote.session(box=BOX, silence="loud")


@needs_triton
def test_lipforce_run_server_writes_the_local_runs_mp4(server, local, tmp_path, monkeypatch):
    """The bundled photo clip (a real face: the face mesh tracks it, the reference is its most
    closed mouth) with 1.2 s of its speech, through the server by ``lipforce run --server`` and
    locally by the same ``run_clip``. The frames are compared as they go into the MP4 encoder:
    x264 here does not encode the same frames to the same bits twice (two local runs of this
    clip decode up to 30 levels apart), so decoded files cannot be compared exactly."""
    import lipforce_sdk.media as media
    from lipforce_sdk.cli import PHOTO_DIR, main, run_clip

    written = {}
    real_write = media.VideoWriter.write

    def write(self, img, *a, **k):
        written.setdefault(self.path, []).append(np.array(img))
        return real_write(self, img, *a, **k)

    monkeypatch.setattr(media.VideoWriter, "write", write)
    wav = tmp_path / "speech.wav"
    media.write_wav(wav, media.read_audio(PHOTO_DIR / "speech.wav")[:int(1.2 * 16000)])
    video = PHOTO_DIR / "face.mp4"
    assert main(["run", "--server", server.grpc_url, "--video", str(video), "--audio", str(wav),
                 "--out", str(tmp_path / "remote.mp4"), "--no-progress"]) == 0
    stats = run_clip(local, video, wav, tmp_path / "local.mp4", progress=False)
    remote, want = ([v for k, v in written.items() if Path(k).name.startswith(f".{n}.")] for n in ("remote", "local"))
    assert len(remote) == len(want) == 1, sorted(written)
    remote, want = remote[0], want[0]
    assert len(want) == stats.frames_out == 30 and stats.frames_without_face == 0
    assert len(remote) == len(want)
    for i, (r, w) in enumerate(zip(remote, want)):
        assert np.array_equal(r, w), f"frame {i} of the served run differs from the local run's"
    out = media.read_video(tmp_path / "remote.mp4")[0]
    assert len(out) == 30 and out[0].shape == want[0].shape
    assert media.probe(tmp_path / "remote.mp4").has_audio
    # the model and backend are the server's
    assert main(["run", "--server", server.grpc_url, "--backend", "torch", "--out", str(tmp_path / "x.mp4")]) == 2


@needs_triton
def test_lipforce_triton_serves_a_batched_model_until_sigterm(batched_tiny, tmp_path):
    """The ``lipforce triton`` command: a batched export served with --max-batch, described over
    gRPC, a stream through it, then SIGTERM stops the server and its backend processes."""
    import os
    import signal
    import subprocess
    import sys

    from lipforce_sdk.triton.client import RemoteEngine
    from lipforce_sdk.triton.server import _free_port

    ports = [_free_port("127.0.0.1") for _ in range(3)]
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "lipforce_sdk.cli", "triton", "--model", str(batched_tiny[0]), "--backend",
           "onnxruntime", "--threads", "1", "--max-batch", "4", "--port", str(ports[0]), "--http-port",
           str(ports[1]), "--metrics-port", str(ports[2]), "--log", str(log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        for line in proc.stdout:  # until the server says it is ready (or the command ends)
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        assert proc.poll() is None, "lipforce triton ended:\n" + "".join(lines)
        assert f"127.0.0.1:{ports[0]}" in "".join(lines)
        with RemoteEngine(f"127.0.0.1:{ports[0]}") as remote:
            assert remote.config.name == "tiny" and remote.info["backend"] == "onnxruntime"
            frames, audio = make_clip(8, seed=3)
            got = stream(remote.session(box=BOX, seed=5), frames, audio)
        assert [f.index for f in got] == list(range(len(frames)))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, 128 + signal.SIGTERM)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    left = subprocess.run(["pgrep", "-f", f"--grpc-port={ports[0]}"], capture_output=True, text=True).stdout.split()
    assert not left, f"tritonserver still running after SIGTERM: pids {left}"
    assert "max_batch=4" in log.read_text(), "the server's engine is not the batched one (its log has no max_batch=4)"
