"""Start a real ``tritonserver`` for a lipforce model repository (``deploy/triton``).

The binary, its libraries and the Python backend come from the ``nvidia-pytriton`` wheel
(``pip install --no-deps nvidia-pytriton==0.7.0``; ``--no-deps`` because its metadata pins
``numpy<2``, which the binary itself does not need). The Python backend's stub embeds the
interpreter of the running Python (``libpython3.X``) and starts it isolated; the server gets
this environment's site-packages in ``PYTHONPATH`` and the model (``deploy/triton``) puts them on
``sys.path``, so numpy, ONNX Runtime and ``lipforce_sdk`` import from here.

    with TritonServer("deploy/triton") as server:       # free loopback ports, waits until ready
        engine = RemoteEngine(server.grpc_url)
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TritonServer", "TritonNotInstalledError", "TritonServerError", "TritonDistribution", "find_tritonserver",
           "prepare_repository", "set_parameter", "MODEL_NAME", "REPOSITORY"]

MODEL_NAME = "lipforce"
_HERE = Path(__file__).resolve().parent
# deploy/triton of a checkout (an editable install), else the copy installed with the package
REPOSITORY = next((d for d in (_HERE.parents[1] / "deploy" / "triton", _HERE.parent / "deploy" / "triton")
                   if (d / MODEL_NAME / "config.pbtxt").is_file()), _HERE.parents[1] / "deploy" / "triton")
INSTALL_HINT = "pip install --no-deps nvidia-pytriton==0.7.0"


class TritonNotInstalledError(RuntimeError):
    """No ``tritonserver`` binary: the ``nvidia-pytriton`` wheel is not installed."""


class TritonServerError(RuntimeError):
    """``tritonserver`` exited or did not become ready; the message ends with its log tail."""


@dataclass(frozen=True)
class TritonDistribution:
    """Where the wheel keeps the server: the binary, its shared libraries, the Python backend."""

    binary: Path
    libs: Path
    python_backend: Path  # libtriton_python.so
    backend_utils: Path  # triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this Python version


def find_tritonserver() -> TritonDistribution:
    """The ``tritonserver`` of the installed ``nvidia-pytriton`` wheel, or ``TritonNotInstalledError``
    naming the fix."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalledError(f"tritonserver is not installed: {INSTALL_HINT} (the binary, its libraries and "
                                      "the Python backend ship in that wheel; --no-deps keeps numpy 2)")
    root = Path(list(spec.submodule_search_locations)[0])
    dist = root / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = TritonDistribution(binary=dist / "bin" / "tritonserver", libs=root.parent / "nvidia_pytriton.libs",
                               python_backend=dist / "backends" / "python" / "libtriton_python.so",
                               backend_utils=dist / "backends" / "python" / "triton_python_backend_utils.py",
                               stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub")
    for name in ("binary", "libs", "python_backend", "backend_utils"):
        if not getattr(found, name).exists():
            raise TritonNotInstalledError(f"the nvidia-pytriton wheel at {str(root)!r} has no {name.replace('_', ' ')} "
                                          f"({str(getattr(found, name))!r}); reinstall it: {INSTALL_HINT}")
    if not found.stub.is_file():
        have = sorted(p.name for p in (dist / "python_backend_stubs").iterdir()) \
            if (dist / "python_backend_stubs").is_dir() else []
        raise TritonNotInstalledError(f"nvidia-pytriton has no Python backend stub for Python {version} "
                                      f"(it has {', '.join(have) or 'none'}); run with one of those Python versions")
    return found


def _libpython_dir() -> Path | None:
    """The directory of this interpreter's ``libpython3.X.so.1.0``, which the stub links (None where
    the interpreter was built without one: then the system's is used)."""
    name = sysconfig.get_config_var("INSTSONAME") or f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    for d in (sysconfig.get_config_var("LIBDIR"), sys.base_prefix + "/lib"):
        if d and (Path(d) / name).is_file():
            return Path(d)
    return None


def _check_libpython() -> None:
    if _libpython_dir() is not None:
        return
    name = f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        if (Path(d) / name).is_file():
            return
    raise TritonNotInstalledError(f"the Triton Python backend embeds {name}, which this Python ({sys.executable}) "
                                  f"does not have; install it (Debian/Ubuntu: apt-get install "
                                  f"libpython{sys.version_info[0]}.{sys.version_info[1]}) or use a Python built with "
                                  "--enable-shared")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _python_path() -> list[str]:
    """What the stub's interpreter must import from: this environment's site-packages (their
    ``.pth`` files included: an editable install maps ``lipforce_sdk`` there) and the directory
    holding ``lipforce_sdk`` (a checkout on ``PYTHONPATH``). The stub starts its interpreter
    isolated, so the model (``deploy/triton/lipforce/1/model.py``) adds these itself."""
    import lipforce_sdk

    paths = site.getsitepackages() + [site.getusersitepackages()]
    paths += [p for p in sys.path if p.endswith("site-packages")]
    paths.append(str(Path(lipforce_sdk.__file__).resolve().parents[1]))
    seen, out = set(), []
    for p in paths:
        if p and p not in seen and Path(p).is_dir():
            seen.add(p)
            out.append(p)
    return out


# ---------------------------------------------------------------------------------------------
# config.pbtxt edits (a copy of the repository with another model, backend or idle timeout)
# ---------------------------------------------------------------------------------------------


def set_parameter(config: str, key: str, value: str) -> str:
    """``config`` (config.pbtxt text) with ``parameters { key: KEY value { string_value: VALUE } }``
    set, replacing an existing entry or adding one."""
    entry = f'parameters {{ key: "{key}" value {{ string_value: {json.dumps(value)} }} }}'
    pat = re.compile(r'parameters\s*\{\s*key:\s*"' + re.escape(key) + r'"\s*value\s*\{\s*string_value:\s*'
                     r'"(?:[^"\\]|\\.)*"\s*\}\s*\}')
    if pat.search(config):
        return pat.sub(lambda m: entry, config, count=1)
    return config.rstrip() + "\n" + entry + "\n"


def _set_field(config: str, field: str, value: int) -> str:
    pat = re.compile(r"(\b" + re.escape(field) + r":\s*)\d+")
    if not pat.search(config):
        raise ValueError(f"config.pbtxt has no {field}: to set")
    return pat.sub(lambda m: f"{m.group(1)}{int(value)}", config, count=1)


def prepare_repository(src: str | Path, dst: str | Path, *, model_dir: str | Path | None = None,
                       backend: str | None = None, engine_options: dict | None = None,
                       idle_timeout_s: float | None = None, max_batch_size: int | None = None,
                       instances: int | None = None) -> Path:
    """Copy the model repository ``src`` to ``dst`` with the ``lipforce`` model's parameters
    replaced where given: ``model_dir`` (written as an absolute path), ``backend``,
    ``engine_options`` (JSON), ``idle_timeout_s`` (``max_sequence_idle_microseconds``),
    ``max_batch_size`` and ``instances`` (the instance group's count). Returns ``dst``."""
    src, dst = Path(src), Path(dst)
    if not (src / MODEL_NAME / "config.pbtxt").is_file():
        raise FileNotFoundError(f"{str(src)!r} is not a lipforce model repository (no {MODEL_NAME}/config.pbtxt)")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    p = dst / MODEL_NAME / "config.pbtxt"
    text = p.read_text()
    if model_dir is not None:
        text = set_parameter(text, "model_dir", str(Path(model_dir).resolve()))
    if backend is not None:
        text = set_parameter(text, "backend", backend)
    if engine_options is not None:
        text = set_parameter(text, "engine_options", json.dumps(engine_options))
    if idle_timeout_s is not None:
        text = _set_field(text, "max_sequence_idle_microseconds", int(round(idle_timeout_s * 1e6)))
    if max_batch_size is not None:
        text = _set_field(text, "max_batch_size", max_batch_size)
    if instances is not None:
        text = _set_field(text, "count", instances)
    p.write_text(text)
    return dst


# ---------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------


class TritonServer:
    """A ``tritonserver`` process serving ``repository`` on loopback (or ``host``), as a context
    manager: ``start()`` waits until the server and its models are ready (``ready_timeout_s``),
    ``stop()`` ends it. Ports not given are chosen free. The server's log goes to ``log_path``
    (in a temporary directory unless given); errors end with its tail.

    ``python_backend_args``: ``--backend-config=python,KEY=VALUE`` settings (e.g.
    ``{"shm-default-byte-size": str(64 << 20)}`` for large frames)."""

    def __init__(self, repository: str | Path | None = None, *, host: str = "127.0.0.1", grpc_port: int | None = None,
                 http_port: int | None = None, metrics_port: int | None = None, ready_timeout_s: float = 180.0,
                 log_verbose: int = 0, log_path: str | Path | None = None, env: dict | None = None,
                 python_backend_args: dict | None = None, extra_args: tuple[str, ...] = ()):
        self.repository = Path(repository) if repository is not None else REPOSITORY
        if not any(self.repository.glob("*/config.pbtxt")):
            raise FileNotFoundError(f"{str(self.repository)!r} is not a Triton model repository (no "
                                    "MODEL/config.pbtxt in it); pass deploy/triton or a copy of it")
        self.host = host
        self._ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self.ready_timeout_s = ready_timeout_s
        self.log_verbose = log_verbose
        self._log_path = Path(log_path) if log_path is not None else None
        self._env = dict(env or {})
        self._python_backend_args = dict(python_backend_args or {})
        self._extra_args = tuple(extra_args)
        self._proc: subprocess.Popen | None = None
        self._shm_prefix: str | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._log_file = None

    # ---------------- addresses ----------------
    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self._ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self._ports['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self._ports['metrics']}/metrics"

    @property
    def log_path(self) -> Path:
        return self._log_path

    # ---------------- life cycle ----------------
    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "TritonServer":
        if self._proc is not None:
            raise TritonServerError("this TritonServer is already started")
        auto = [k for k, v in self._ports.items() if v is None]
        auto_log = self._log_path is None
        for attempt in range(3):
            try:
                return self._start()
            except TritonServerError as e:  # a port chosen free was taken before the server bound it: others
                if not auto or attempt == 2 or "already in use" not in str(e):
                    raise
                for k in auto:
                    self._ports[k] = None
                if auto_log:
                    self._log_path = None
        raise AssertionError("unreachable")

    def _start(self) -> "TritonServer":
        dist = find_tritonserver()
        _check_libpython()
        self._workdir = tempfile.TemporaryDirectory(prefix="lipforce-triton-")
        work = Path(self._workdir.name)
        backends = self._backend_directory(dist, work / "backends")
        for k, v in self._ports.items():
            if v is None:
                self._ports[k] = _free_port(self.host)
        if self._log_path is None:
            self._log_path = work / "tritonserver.log"
        cmd = [str(dist.binary), f"--model-repository={self.repository.resolve()}",
               f"--backend-directory={backends}", f"--cache-directory={work / 'caches'}",
               f"--grpc-address={self.host}", f"--grpc-port={self._ports['grpc']}",
               f"--http-address={self.host}", f"--http-port={self._ports['http']}",
               f"--metrics-address={self.host}", f"--metrics-port={self._ports['metrics']}", "--allow-metrics=true",
               f"--allow-gpu-metrics={str(Path('/dev/nvidiactl').exists()).lower()}", "--strict-readiness=true",
               "--exit-on-error=true",
               f"--log-verbose={self.log_verbose}", "--log-info=true", "--log-warning=true", "--log-error=true"]
        # our own prefix for the Python backend's /dev/shm regions: stop() removes any a crash left
        self._shm_prefix = f"lipforce_triton_{os.getpid()}_{secrets.token_hex(4)}_"
        py_args = {"shm-region-prefix-name": self._shm_prefix, **self._python_backend_args}
        cmd += [f"--backend-config=python,{k}={v}" for k, v in py_args.items()]
        cmd += list(self._extra_args)
        self._log_file = open(self._log_path, "ab")
        self._proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=self._environment(dist),
                                      cwd=work, start_new_session=True)
        atexit.register(self.stop)  # a program that ends without stop() leaves no server behind
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the server (SIGTERM; SIGKILL after ``timeout_s``), any backend stub it left (a
        crashed server leaves them running) and its shared-memory regions, and remove its
        temporary files (the log stays where ``log_path`` was given)."""
        p, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if p is not None:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            try:  # the backend stubs outlive a server that crashed: they are in its process group
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            for f in Path("/dev/shm").glob(f"{self._shm_prefix}*") if self._shm_prefix else ():
                f.unlink(missing_ok=True)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            if self._log_path is not None and self._log_path.parent == Path(self._workdir.name):
                self._saved_log = self.log_text()  # the temporary log goes with the directory; keep its text
            self._workdir.cleanup()
            self._workdir = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        if self._log_path is not None and self._log_path.is_file():
            return self._log_path.read_text(errors="replace")
        return getattr(self, "_saved_log", "")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_summary(self, lines: int = 25) -> str:
        """The log's error lines (a model that failed to load says why there) and its tail."""
        text = self.log_text().splitlines()
        errors = [line for line in text if (line.startswith("E") and "CudaDriverHelper" not in line)
                  or "UNAVAILABLE" in line][-10:]
        if errors:
            return "errors in its log:\n" + "\n".join(errors) + "\nits log ends:\n" + "\n".join(text[-8:])
        return "its log ends:\n" + "\n".join(text[-lines:])

    def metrics(self) -> str:
        """The Prometheus metrics text (Triton's and the lipforce model's own)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            return r.read().decode()

    # ---------------- internals ----------------
    def _backend_directory(self, dist: TritonDistribution, where: Path) -> Path:
        """A backend directory with the Python backend and the stub for this Python beside it."""
        py = where / "python"
        py.mkdir(parents=True)
        for f in (dist.python_backend, dist.backend_utils, dist.stub):
            shutil.copy2(f, py / f.name)
        (py / dist.stub.name).chmod(0o755)
        return where

    def _environment(self, dist: TritonDistribution) -> dict:
        env = dict(os.environ)
        lib = [str(dist.libs)]
        pylib = _libpython_dir()
        if pylib is not None:
            lib.insert(0, str(pylib))
        if env.get("LD_LIBRARY_PATH"):
            lib.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(lib)
        pp = _python_path()
        if env.get("PYTHONPATH"):
            pp.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = ":".join(pp)
        if pylib is not None:
            env["PYTHONHOME"] = sys.base_prefix  # the stdlib of the Python whose libpython the stub embeds
        env["PYTHONNOUSERSITE"] = "1"
        env.update(self._env)
        return env

    def _wait_ready(self) -> None:
        t_end = time.monotonic() + self.ready_timeout_s
        url = f"{self.http_url}/v2/health/ready"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise TritonServerError(f"tritonserver exited with code {code} before it was ready (repository "
                                        f"{str(self.repository)!r}); {self.log_summary()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > t_end:
                raise TritonServerError(f"tritonserver was not ready after {self.ready_timeout_s:.0f} s (repository "
                                        f"{str(self.repository)!r}; raise ready_timeout_s where the model loads "
                                        f"slowly); {self.log_summary()}")
            time.sleep(0.25)


# ---------------------------------------------------------------------------------------------
# lipforce triton
# ---------------------------------------------------------------------------------------------


def add_arguments(p) -> None:
    from ..config import SCHEDULE_STEPS

    p.add_argument("--repository", default=None, metavar="DIR",
                   help="the model repository (default: deploy/triton of this checkout)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8001, help="gRPC port, where clients stream (default 8001)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port: health, model config (default 8000)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="serve this model directory instead of the repository's model_dir parameter")
    p.add_argument("--backend", default=None, choices=["onnxruntime", "tensorrt", "torch"],
                   help="instead of the repository's backend parameter")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (engine_options)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="run the graph calls of up to N streams as one engine call (engine_options; the model must "
                        "be exported with lipforce export --max-batch N or more, or served with --backend torch)")
    p.add_argument("--max-wait-ms", type=float, default=None,
                   help="with --max-batch: the longest a call waits for others to join it (default 2)")
    p.add_argument("--steps", type=int, choices=SCHEDULE_STEPS, default=None,
                   help="denoising steps per chunk, as `lipforce run --steps` (engine_options; default: the "
                        "model's own)")
    p.add_argument("--instances", type=int, default=None,
                   help="model instances (processes, each with its own engine; default: the repository's, 1)")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                   help="free a stream after this many seconds without a request (default: the repository's, 60)")
    p.add_argument("--log", default=None, metavar="FILE",
                   help="write the server's log here (default: a temporary file)")


def engine_options_of(a) -> dict:
    """The ``engine_options`` (``Engine.load`` keywords) that ``lipforce triton``'s options ask for."""
    return {k: v for k, v in (("threads", a.threads), ("max_batch", a.max_batch), ("max_wait_ms", a.max_wait_ms),
                              ("steps", a.steps)) if v is not None}


def run_args(a) -> int:
    """``lipforce triton``: serve until Ctrl-C (or SIGTERM)."""
    repo = Path(a.repository) if a.repository else REPOSITORY
    if not (repo / MODEL_NAME / "config.pbtxt").is_file():
        raise FileNotFoundError(f"{str(repo)!r} has no {MODEL_NAME}/config.pbtxt; pass --repository DIR (deploy/triton "
                                "of a lipforce checkout, or your copy of it)")
    tmp = None
    if a.max_wait_ms is not None and a.max_batch is None:
        raise ValueError("--max-wait-ms goes with --max-batch N (it is how long a call waits for others to batch with)")
    opts = engine_options_of(a)
    over = {"model_dir": a.model, "backend": a.backend, "idle_timeout_s": a.idle_timeout, "instances": a.instances,
            "engine_options": opts or None}
    if any(v is not None for v in over.values()):
        tmp = tempfile.TemporaryDirectory(prefix="lipforce-repository-")
        repo = prepare_repository(repo, Path(tmp.name) / "repository", **over)
    server = TritonServer(repo, host=a.host, grpc_port=a.port, http_port=a.http_port, metrics_port=a.metrics_port,
                          log_path=a.log)
    try:
        with server:
            print(f"lipforce triton: serving {str(repo)!r}\n"
                  f"  gRPC     {server.grpc_url}   (lipforce run --server {server.grpc_url})\n"
                  f"  HTTP     {server.http_url}\n  metrics  {server.metrics_url}\n  log      {server.log_path}\n"
                  "Ctrl-C stops it.", flush=True)
            while server.running:
                time.sleep(0.5)
            raise TritonServerError(f"tritonserver stopped on its own; {server.log_summary()}")
    except KeyboardInterrupt:
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()
