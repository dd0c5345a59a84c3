"""Every GPU check of lipforce in one command: build, kernel numerics, sanitizer, kernel speed, 1.3b stream.

On a machine with one H100 or H200 (SM90), from the repository root::

    python samples/gpu_check.py --out OUT_DIR          # 216 s on an H200 (2026-12-04) + ~100 s profile; stops at 390 s

Here, without a GPU, the same code paths at the ``tiny`` preset's sizes on the CPU (what needs CUDA is
skipped with its reason)::

    python samples/gpu_check.py --dry-run --out /tmp/gpu_check      # about a minute on 2 cores

**The device command.** The lent GPU machine runs one bash command in the repository root of a copy of the
working tree and sends back what is written under ``$OUT`` (at most 8 files); the report is 3 files::

    PYTHONUNBUFFERED=1 python3 samples/gpu_check.py --out $OUT/gpu_check          # timeout_s=480

A rerun on the still-warm machine may pick parts (the build in ``build/gpu_check`` is kept and incremental)::

    PYTHONUNBUFFERED=1 python3 samples/gpu_check.py --out $OUT/gpu_check --parts kernels,stream,baseline

Parts, in order; each runs in its own subprocess (process group) with its own time limit, and the whole run
has one budget: a part gets ``min(its limit, what is left minus the reserve of the parts after it)``, so a
slow or hung part is killed and the rest still run. A killed part keeps the figures it had saved.

==============  =====  ==================================================================================
part            limit  on the GPU (dry run: the same code at tiny sizes on the CPU)
==============  =====  ==================================================================================
env             30 s   GPU, driver, torch/CUDA, nvcc, CMake, compute-sanitizer, runtime
build           150 s  ``_kvattn`` for the GPU's arch (sm_90) with CMake, offline (dry run: configure only)
kernels         90 s   CUDA kernels vs the CPU reference (fp16, bf16; D 64/128; B 1/2; masks with NaN; all
                       masked; partial tiles; large positions; a planner-driven ring that wraps; the preset's
                       shapes vs a float64 torch reference) and the GPU-marked tests of tests/test_kvattn.py
kernel_timing   60 s   kernels vs torch's path and SDPA over the same concatenated cache at the preset's
                       shapes, with H100/H200 FLOP and byte floors and this GPU's measured ceilings
stream          150 s  1.3b at 512x512 bf16, torch backend, seeded weights: TTFF, chunk p50/p95/p99, FPS,
                       memory per session; eager, lipforce kernel as the cache attention, CUDA graph of the
                       DiT step, both
baseline        150 s  bidirectional 50-step CFG baseline (same scale) on 2 s (and 4 s if it fits), ratio
sanitizer       120 s  compute-sanitizer memcheck and racecheck on small kernel cases (where it runs)
profile         150 s  the eager stream of ``stream`` taken apart: each backend stage timed (synchronised),
                       the host's share; then under torch.profiler: GPU busy share, kernels per chunk, the
                       kernels by kind (GEMM, attention, conv, copies, the rest) and the top kernels
==============  =====  ==================================================================================

**How lipforce is importable there, offline.** Nothing is installed: the ``build`` part configures the
repository's CMake project with the running Python (``-DPython_EXECUTABLE``), pybind11's CMake dir from that
Python, ``nvcc`` and ``-DLIPFORCE_CUDA_ARCHITECTURES`` = the GPU's arch, and builds only the ``_kvattn``
target into ``build/gpu_check`` (ignored by git; kept between calls on a warm machine). Every later part runs
with ``PYTHONPATH=<repo>:build/gpu_check/csrc``: ``lipforce_sdk`` comes from the source tree and
``lipforce_sdk.kvattn.native_module()`` finds the top-level ``_kvattn`` there. ``pip install .`` is not used:
it would need scikit-build-core to resolve offline, write into the image's site-packages, and rebuild for
every architecture of the default list. The torch-backend path needs neither ``av`` (not on that image) nor
``lipforce_sdk.export``/``engine``; the clip's speech is read with the standard ``wave`` module.

**Not here:** TensorRT engines cannot run on that SM90 machine (TensorRT-RTX does not target SM90, and full
TensorRT does not install from the registry there), so the TensorRT backend is not measured.
``torch.compile`` is not tried: the DiT passes a fresh attention closure per layer and call, which makes
dynamo recompile; CUDA graphs attack the same launch overhead directly.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
DEVICE_COMMAND = "PYTHONUNBUFFERED=1 python3 samples/gpu_check.py --out $OUT/gpu_check"
DRY_RUN_COMMAND = "python samples/gpu_check.py --dry-run --out /tmp/gpu_check"
STATUSES = ("pass", "fail", "skip")
REPORT_FILES = ("report.md", "report.json", "gpu_check.log")
PAPER = {"fps": 31.0, "ratio": 17.6, "source": "Lip Forcing paper: 1.3B student vs the same-scale bidirectional model"}
# Datasheet leads (dense fp16/bf16 tensor-core rate, HBM bandwidth), SXM parts; not readings.
DATASHEET = {"H100 SXM": {"tflops": 989.4, "tbs": 3.35}, "H200 SXM": {"tflops": 989.4, "tbs": 4.8}}
TEST_HANG_ENV = "LIPFORCE_GPU_CHECK_TEST_HANG"  # test hook: the named part sleeps (checks the time limits)
NOTES = [
    "TensorRT engines cannot run on the lent SM90 machine: TensorRT-RTX does not target SM90 and full TensorRT "
    "does not install from the registry there, so the TensorRT backend is not measured here.",
    "torch.compile is not tried: the DiT hands each layer a fresh attention closure per call, which makes "
    "dynamo recompile; the CUDA-graph variant removes the same launch overhead directly.",
    "Weights are seeded random (speed does not depend on their values); frames are random, the speech is the "
    "bundled sample's.",
]


@dataclasses.dataclass(frozen=True)
class PartSpec:
    name: str
    title: str
    limit_s: float  # its own limit on the GPU
    dry_limit_s: float  # its own limit in the dry run
    reserve_s: float  # the least time worth starting it with (kept free by the parts before it)


PARTS = (
    PartSpec("env", "Machine and toolchain", 30, 60, 5),
    PartSpec("build", "Build lipforce_sdk._kvattn for the GPU (CMake, offline)", 150, 90, 20),
    PartSpec("kernels", "KV-cache attention kernels vs the references", 90, 90, 15),
    PartSpec("kernel_timing", "Kernel speed vs PyTorch SDPA over the same cache, with floors", 60, 60, 15),
    PartSpec("stream", "Streaming on the torch backend: TTFF, chunk latency, FPS, memory", 150, 120, 45),
    PartSpec("baseline", "Bidirectional CFG baseline (same scale, whole clip) and the speed ratio", 150, 120, 40),
    PartSpec("sanitizer", "compute-sanitizer memcheck and racecheck on small kernel cases", 120, 60, 45),
    PartSpec("profile", "Where a streamed chunk's time goes: stages, GPU busy share, kernels", 150, 60, 30),
)
PART_NAMES = tuple(p.name for p in PARTS)


def part_timeout(limit_s: float, now: float, deadline: float, later_reserve_s: float) -> float:
    """Seconds a part may run: its own limit, and never into the time kept for the parts after it."""
    return min(limit_s, deadline - now - later_reserve_s)


# =============================================================================================================
# small helpers (no torch)
# =============================================================================================================
def find_tool(name: str) -> str | None:
    """A tool on PATH, else beside the running Python (pip's cmake / ninja in a venv's bin/)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


def find_nvcc() -> str | None:
    for cand in (shutil.which("nvcc"), os.environ.get("CUDACXX"),
                 os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    return None


def find_sanitizer() -> str | None:
    cands = [shutil.which("compute-sanitizer")]
    nvcc = find_nvcc()
    if nvcc:
        d = Path(nvcc).resolve().parent
        cands += [d / "compute-sanitizer", d.parent / "compute-sanitizer" / "compute-sanitizer"]
    cands += [Path("/usr/local/cuda/bin/compute-sanitizer"), Path("/usr/local/cuda/compute-sanitizer/compute-sanitizer")]
    cands += sorted(Path("/usr/local").glob("cuda*/compute-sanitizer/compute-sanitizer"))
    cands += sorted(Path("/opt/nvidia").glob("**/compute-sanitizer")) if Path("/opt/nvidia").is_dir() else []
    for c in cands:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def run_cmd(cmd, timeout: float, env=None, cwd=None) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, stdout+stderr, seconds). Kills the command's whole process group on timeout."""
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace", env=env, cwd=cwd, **_new_group())
    except OSError as e:
        return 127, f"{cmd[0]}: {e}", time.perf_counter() - t0
    try:
        out, _ = p.communicate(timeout=max(1.0, timeout))
        return p.returncode, out, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        _kill_group(p)
        out, _ = p.communicate()
        return None, out, time.perf_counter() - t0


def _new_group() -> dict:
    return {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        p.kill()


def _tail(text: str, n: int = 1500) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def read_speech(path: Path):
    """16-bit PCM mono WAV -> float32 in [-1, 1] (the standard library's wave: no av needed)."""
    import wave

    import numpy as np

    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono PCM, got {w.getsampwidth() * 8}-bit, "
                             f"{w.getnchannels()} channels")
        rate, data = w.getframerate(), w.readframes(w.getnframes())
    if rate != 16000:
        raise ValueError(f"{path}: expected 16000 Hz, got {rate}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def _fmt(v, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and abs(v) < 0.01:
            return f"{v:.2e}"
        return f"{v:.{nd}f}" if abs(v) < 1e5 else f"{v:.3g}"
    return str(v)


# =============================================================================================================
# child side: the part's result, saved after every figure (a killed part keeps what it had)
# =============================================================================================================
class Skip(Exception):
    """The part cannot run here; the message says why."""


class PartResult:
    def __init__(self, path: Path, name: str):
        self.path = path
        self.data = {"name": name, "status": "running", "reason": "", "results": {}, "tables": []}
        self.save()

    def put(self, key: str, value) -> None:
        self.data["results"][key] = value
        self.save()

    def table(self, title: str, columns, rows, **context) -> None:
        """A figure table; ``context`` carries gpu, precision, shapes, command, wall_s."""
        rows = [[_fmt(v) for v in r] for r in rows]
        for t in self.data["tables"]:
            if t["title"] == title:
                t.update(columns=list(columns), rows=rows, context=context)
                break
        else:
            self.data["tables"].append({"title": title, "columns": list(columns), "rows": rows, "context": context})
        self.save()

    def finish(self, status: str, reason: str) -> None:
        self.data["status"], self.data["reason"] = status, reason
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_json_default))
        os.replace(tmp, self.path)


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


class Ctx:
    """What a part knows: options, its deadline, torch and the device."""

    def __init__(self, args):
        self.args = args
        self.dry_run = bool(args.dry_run)
        self.deadline = float(args.deadline)
        self.build_dir = Path(args.build_dir)
        self._torch = None

    def left(self) -> float:
        return self.deadline - time.time()

    @property
    def torch(self):
        if self._torch is None:
            import torch

            self._torch = torch
        return self._torch

    @property
    def cuda(self) -> bool:
        """CUDA is used: not a dry run and torch sees a GPU."""
        return not self.dry_run and self.torch.cuda.is_available()

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def need_cuda(self) -> None:
        if not self.dry_run and not self.torch.cuda.is_available():
            raise Skip("no CUDA device visible to torch (torch.cuda.is_available() is False); "
                       "use --dry-run on a machine without a GPU")

    @property
    def gpu(self) -> str:
        if self.cuda:
            t = self.torch
            p = t.cuda.get_device_properties(0)
            return f"{p.name} (sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB)"
        return f"none: CPU ({platform.machine()}, {os.cpu_count()} cores, torch {self.torch.get_num_threads()} threads)"

    def command(self, part: str) -> str:
        dry = " --dry-run" if self.dry_run else ""
        return f"python samples/gpu_check.py --parts {part}{dry} --out {self.args.out}"

    def config(self):
        from lipforce_sdk.config import from_name

        return from_name(self.args.preset)

    def stream_config(self):
        """The preset at the streaming resolution: ``--resolution``, else the preset's own; the dry run's default
        is the smallest multiple of the VAE's compression times the DiT patch that is at least 64 px."""
        cfg = self.config()
        res = self.args.resolution
        if not res and self.dry_run:
            mult = cfg.vae.spatial_compression * cfg.dit.patch_size[1]
            res = mult * max(1, -(-64 // mult))
        return cfg.replace(stream={"resolution": res}) if res else cfg

    def native(self):
        """lipforce_sdk._kvattn (the build's top-level _kvattn on the GPU machine), or None."""
        from lipforce_sdk import kvattn

        try:
            return kvattn.native_module()
        except ImportError:
            return None

    def native_cuda(self):
        """The native module when its CUDA launcher can run here, else None."""
        n = self.native()
        return n if (self.cuda and n is not None and getattr(n, "cuda_compiled", False)) else None

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()


def load_kvattn_tests():
    """tests/test_kvattn.py as a module: its cases, input maker, tolerances, CUDA runner and float64 reference."""
    import importlib.util

    path = REPO / "tests" / "test_kvattn.py"
    name = "lipforce_test_kvattn"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


# =============================================================================================================
# the CUDA launcher on torch tensors, and as the model's cache attention
# =============================================================================================================
def cuda_kv_cache_attention(native, q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, grid_h, grid_w,
                            rope_theta=10000.0, workspaces=None, out=None):
    """lipforce's CUDA kernels on torch CUDA tensors (fp16/bf16); caches [B, T, H, D] written in place.
    Returns out [B, Lc, H, D]. ``workspaces`` (a dict) keeps the RoPE-table workspace between calls."""
    import torch

    names = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
    if q.dtype not in names:
        raise ValueError(f"the CUDA kernels take float16 or bfloat16, got {q.dtype}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != q.dtype or not t.is_contiguous() or not t.is_cuda:
            raise ValueError(f"{name} must be a contiguous CUDA tensor of {q.dtype} (written in place), got "
                             f"{t.dtype}, contiguous={t.is_contiguous()}, device={t.device}")
    q, k, v = (t.contiguous() for t in (q, k, v))
    idx = [t.to(torch.int32).contiguous() for t in (write_idx, q_pos, k_pos, k_valid)]
    b, _, h, d = q.shape
    m, c = idx[2].shape[0], idx[0].shape[0]
    key = (h, d, grid_h, grid_w, m, c, q.device.index)
    ws = None if workspaces is None else workspaces.get(key)
    if ws is None:
        ws = torch.empty(native.cuda_workspace_size(h, d, grid_h, grid_w, m, c), dtype=torch.uint8, device=q.device)
        if workspaces is not None:
            workspaces[key] = ws
    if out is None:
        out = torch.empty_like(q)
    native.kv_cache_attention_cuda(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), idx[0].data_ptr(),
        idx[1].data_ptr(), idx[2].data_ptr(), idx[3].data_ptr(), out.data_ptr(), ws.data_ptr(), ws.numel(), b, h, d,
        grid_h, grid_w, m, c, float(rope_theta), names[q.dtype], torch.cuda.current_stream(q.device).cuda_stream)
    return out


def kernel_cache_attention(native):
    """A drop-in for ``WanDiT.cache_attention`` (same signature as model.attention.kv_cache_attention) that runs
    lipforce's CUDA kernels: the eager runtime's cache write, RoPE and attention in one launch sequence."""
    workspaces: dict = {}

    def fn(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, rope, inplace=True):
        if not inplace:
            raise ValueError("the CUDA kernels write the cache in place (inplace=True)")
        out = cuda_kv_cache_attention(native, q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid,
                                      rope.grid_h, rope.grid_w, rope.theta, workspaces)
        return out, k_cache, v_cache

    return fn


def graphed_backend_class():
    """TorchBackend with each session's DiT step captured once as a CUDA graph (defined lazily: imports torch)."""
    import numpy as np

    from lipforce_sdk.backends.torch_backend import TorchBackend
    from lipforce_sdk.cache_plan import RingCachePlanner

    class GraphedDitBackend(TorchBackend):
        """The torch backend whose DiT step is a CUDA graph per session, captured when the session is made.

        The step's inputs are copied into static buffers (the plan as one int32 copy), the session's KV cache
        has fixed addresses, the graph is replayed and its output cloned. With ``capture=False`` (or on a CPU)
        the same buffers feed an eager step (the dry run's code path). Inputs of another shape than the
        config's fall back to the eager step.
        """

        def __init__(self, model, device=None, precision="fp32", capture=True):
            super().__init__(model, device=device, precision=precision)
            self.capture = bool(capture) and self.device.type == "cuda"

        def new_state(self):
            state = super().new_state()
            state["dit_graph"] = self._prepare(state)
            return state

        def _prepare(self, state):
            torch, cfg = self.torch, self.config
            h, w = cfg.latent_hw
            c, m = cfg.stream.chunk_frames, cfg.num_slots
            kw = dict(device=self.device, dtype=self.dtype)
            g = argparse.Namespace(graph=None, out=None, c=c, m=m)
            g.x_t = torch.zeros(1, cfg.latent_channels, c, h, w, **kw)
            g.cond = torch.zeros_like(g.x_t)
            g.mask = torch.zeros(1, cfg.mask_channels, c, h, w, **kw)
            g.audio = torch.zeros(1, cfg.video_frames_per_chunk, cfg.audio.tokens_per_frame, cfg.audio.token_dim, **kw)
            g.t = torch.zeros(1, **kw)
            g.plan = torch.zeros(2 * c + 2 * m, dtype=torch.int32, device=self.device)  # write_idx|q_pos|k_pos|k_valid
            if self.capture:
                self._capture(g, state)
            return g

        def _plan_views(self, g):
            c, m = g.c, g.m
            return g.plan[:c], g.plan[c:2 * c], g.plan[2 * c:2 * c + m], g.plan[2 * c + m:]

        def _run(self, g, state):
            with self.torch.inference_mode():
                x0, _ = self.model.dit.step(g.x_t, g.t, g.cond, g.mask, g.audio, *self._plan_views(g),
                                            state["kv"].layers(), inplace=True)
            return x0

        def _set_plan(self, g, plan):
            flat = np.concatenate([plan.write_idx, plan.q_pos, plan.k_pos, plan.k_valid]).astype(np.int32)
            g.plan.copy_(self.torch.from_numpy(flat))

        def _capture(self, g, state):
            torch = self.torch
            self._set_plan(g, RingCachePlanner.for_stream(self.config.stream).plan())
            for buf in (g.x_t, g.cond, g.audio):
                buf.normal_()
            g.mask.fill_(1.0)
            g.t.fill_(1.0)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: handles, workspaces, kernel selection
                for _ in range(2):
                    self._run(g, state)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                g.out = self._run(g, state)
            torch.cuda.synchronize()
            self.reset_state(state)  # the dummy passes wrote into the cache
            g.graph = graph

        def dit_step(self, x_t, t, cond, mask, audio_tokens, plan, state):
            g = state.get("dit_graph")
            shapes = (tuple(x_t.shape), tuple(cond.shape), tuple(mask.shape), tuple(audio_tokens.shape),
                      plan.write_idx.shape[0], plan.k_pos.shape[0])
            if g is None or shapes != (tuple(g.x_t.shape), tuple(g.cond.shape), tuple(g.mask.shape),
                                       tuple(g.audio.shape), g.c, g.m):
                return super().dit_step(x_t, t, cond, mask, audio_tokens, plan, state)
            with self.torch.inference_mode():
                g.x_t.copy_(x_t)
                g.cond.copy_(cond)
                g.mask.copy_(mask)
                g.audio.copy_(audio_tokens)
                g.t.fill_(float(t))
                self._set_plan(g, plan)
                if g.graph is not None:
                    g.graph.replay()
                    out = g.out
                else:
                    out = self._run(g, state)
                return out.clone()

    return GraphedDitBackend


# =============================================================================================================
# part: env
# =============================================================================================================
def part_env(ctx: Ctx, res: PartResult):
    info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
            "kernel": platform.release(), "cpus": os.cpu_count()}
    torch = ctx.torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    l2_mib=round(getattr(p, "L2_cache_size", 0) / 2**20, 1) or None,
                    cudnn=torch.backends.cudnn.version())
    smi = find_tool("nvidia-smi")
    if smi:
        rc, out, _ = run_cmd([smi, "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], timeout=15)
        info["nvidia_smi"] = out.strip() if rc == 0 else f"exit {rc}: {_tail(out, 300)}"
    tools = {}
    for name, cmd in (("nvcc", [find_nvcc(), "--version"]), ("cmake", [find_tool("cmake"), "--version"]),
                      ("ninja", [find_tool("ninja"), "--version"]), ("compute-sanitizer", [find_sanitizer(), "--version"]),
                      ("cuobjdump", [find_tool("cuobjdump"), "--version"])):
        if cmd[0] is None:
            tools[name] = "not found"
            continue
        rc, out, _ = run_cmd(cmd, timeout=15)
        lines = [ln for ln in out.strip().splitlines() if ln.strip()]
        tools[name] = f"{cmd[0]}: {lines[-1] if name == 'nvcc' and lines else (lines[0] if lines else '')}"
    info["tools"] = tools
    mods = {}
    for mod in ("numpy", "pybind11", "onnxruntime", "cv2", "safetensors", "av", "tensorrt", "tensorrt_rtx"):
        try:
            m = __import__(mod)
            mods[mod] = getattr(m, "__version__", "present")
        except Exception as e:  # noqa: BLE001 - any import failure is "absent" here
            mods[mod] = f"absent ({type(e).__name__})"
    info["modules"] = mods
    res.put("machine", info)
    rows = [[k, v] for k, v in info.items() if k not in ("tools", "modules")]
    rows += [[f"tool {k}", v] for k, v in tools.items()] + [[f"module {k}", v] for k, v in mods.items()]
    res.table("Machine", ["what", "value"], rows, gpu=ctx.gpu, precision="-", shapes="-", command=ctx.command("env"),
              wall_s=None)
    if not ctx.dry_run and not torch.cuda.is_available():
        return "fail", "not a dry run, but torch sees no CUDA device: every GPU part will skip"
    return "pass", f"{info.get('gpu', 'no GPU (dry run)')}, torch {torch.__version__}"


# =============================================================================================================
# part: build
# =============================================================================================================
def part_build(ctx: Ctx, res: PartResult):
    cmake, ninja, nvcc = find_tool("cmake"), find_tool("ninja"), find_nvcc()
    if cmake is None:
        raise Skip("cmake not found (on PATH or beside the Python)")
    rc, pyb, _ = run_cmd([sys.executable, "-c", "import pybind11; print(pybind11.get_cmake_dir())"], timeout=30)
    pyb = pyb.strip().splitlines()[-1] if rc == 0 and pyb.strip() else None
    if not ctx.dry_run:
        if nvcc is None:
            return "fail", "nvcc not found: the CUDA kernels cannot be built"
        if pyb is None:
            return "fail", f"pybind11 is not importable by {sys.executable}: the Python module cannot be built"
    arch = ctx.args.arch
    if not arch:
        arch = "90"
        if ctx.cuda:
            major, minor = ctx.torch.cuda.get_device_capability(0)
            arch = f"{major}{minor}"
    bdir = ctx.build_dir
    conf = [cmake, "-S", REPO, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release", "-DLIPFORCE_BUILD_CUDA=ON",
            f"-DLIPFORCE_CUDA_ARCHITECTURES={arch}", f"-DLIPFORCE_BUILD_PYTHON={'ON' if pyb else 'OFF'}",
            f"-DPython_EXECUTABLE={sys.executable}"]
    conf += ["-G", "Ninja"] if ninja and not (bdir / "CMakeCache.txt").exists() else []
    conf += [f"-DCMAKE_CUDA_COMPILER={nvcc}"] if nvcc else []
    conf += [f"-Dpybind11_DIR={pyb}"] if pyb else []
    if ninja:
        conf += [f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    rc, out, t_conf = run_cmd(conf, timeout=min(120, ctx.left()))
    print(out)
    if rc != 0 and (bdir / "CMakeCache.txt").exists():  # a cache of another generator / compiler: start afresh
        shutil.rmtree(bdir, ignore_errors=True)
        conf = [c for c in conf if c not in ("-G", "Ninja")] + (["-G", "Ninja"] if ninja else [])
        rc, out, t_conf = run_cmd(conf, timeout=min(120, ctx.left()))
        print(out)
    lipforce_lines = [ln.strip("- ").strip() for ln in out.splitlines() if "lipforce:" in ln]
    cuda_on = any("CUDA kernels ON" in ln for ln in lipforce_lines)
    res.put("configure", {"command": " ".join(map(str, conf)), "seconds": round(t_conf, 1), "exit": rc,
                          "lipforce": lipforce_lines, "arch": arch, "python_module": bool(pyb)})
    rows = [["configure", f"exit {rc}", round(t_conf, 1), "; ".join(lipforce_lines) or _tail(out, 300)]]
    ctx_kw = dict(gpu=ctx.gpu, precision="-", shapes=f"sm_{arch}", command=ctx.command("build"))
    res.table("Build", ["step", "result", "seconds", "detail"], rows, wall_s=round(t_conf, 1), **ctx_kw)
    if rc != 0:
        return "fail", f"CMake configure failed (exit {rc}): {_tail(out, 400)}"
    if ctx.dry_run:
        return "pass", (f"dry run: configured only (sm_{arch}; CUDA kernels {'ON' if cuda_on else 'OFF'}; "
                        f"Python module {'ON' if pyb else 'OFF: pybind11 not importable here'}); nothing compiled")
    if not cuda_on:
        return "fail", "CMake did not enable the CUDA kernels: " + "; ".join(lipforce_lines)
    build = [cmake, "--build", bdir, "--target", "_kvattn", "-j", str(os.cpu_count() or 4)]
    rc, out, t_build = run_cmd(build, timeout=max(5.0, ctx.left() - 15))
    print(_tail(out, 6000))
    rows.append(["build _kvattn", "timeout" if rc is None else f"exit {rc}", round(t_build, 1), _tail(out, 300)])
    res.table("Build", ["step", "result", "seconds", "detail"], rows, wall_s=round(t_conf + t_build, 1), **ctx_kw)
    if rc != 0:
        return "fail", f"build failed ({'timeout' if rc is None else f'exit {rc}'}): {_tail(out, 600)}"
    probe = ("import json, _kvattn as m; print(json.dumps({'file': m.__file__, 'cuda_compiled': m.cuda_compiled, "
             "'head_dims': list(getattr(m, 'CUDA_HEAD_DIMS', ()))}))")
    env = dict(os.environ, PYTHONPATH=str(bdir / "csrc"))
    rc, out, _ = run_cmd([sys.executable, "-c", probe], timeout=60, env=env)
    if rc != 0:
        return "fail", f"the built module does not import: {_tail(out, 600)}"
    mod = json.loads(out.strip().splitlines()[-1])
    res.put("module", mod)
    detail = f"{mod['file']}, cuda_compiled={mod['cuda_compiled']}, head dims {mod['head_dims']}"
    cuobjdump = find_tool("cuobjdump")
    if cuobjdump:
        rc2, out2, _ = run_cmd([cuobjdump, "--list-elf", mod["file"]], timeout=30)
        elfs = sorted({ln.split(".")[-2] for ln in out2.splitlines() if ".cubin" in ln and "sm_" in ln})
        res.put("cubin_archs", elfs)
        detail += f"; cubins: {', '.join(elfs) or _tail(out2, 200)}"
    rows.append(["import", "ok" if mod["cuda_compiled"] else "no CUDA", None, detail])
    res.table("Build", ["step", "result", "seconds", "detail"], rows, wall_s=round(t_conf + t_build, 1), **ctx_kw)
    if not mod["cuda_compiled"]:
        return "fail", "the module was built without the CUDA launcher"
    return "pass", f"sm_{arch} in {t_conf + t_build:.0f} s: {detail}"


# =============================================================================================================
# part: kernels (numerics)
# =============================================================================================================
class CpuRefImpl:
    """The dry run's implementation under test: the C++ CPU reference (fp32), checked against NumPy float64."""

    name, dtype, reference = "C++ CPU reference (fp32)", "float32", "numpy"

    def __init__(self):
        from lipforce_sdk import kvattn

        self.kvattn = kvattn

    def round(self, a):
        return a

    def run(self, x):
        import numpy as np

        y = dict(x)
        n = x["grid_h"] * x["grid_w"]
        y["k_cache"], y["v_cache"] = x["k_cache"].copy(), x["v_cache"].copy()
        for s in np.nonzero(x["k_valid"] == 0)[0].tolist():  # garbage in masked slots must not leak
            y["k_cache"][:, s * n:(s + 1) * n] = np.nan
            y["v_cache"][:, s * n:(s + 1) * n] = np.nan
        seen = {name: y[name].copy() for name in ("q", "k", "v", "k_cache", "v_cache")}
        out, kc, vc = self.kvattn.kv_cache_attention_cpu(**y)
        return out, kc, vc, seen

    def new_cache(self, shape):
        import numpy as np

        return [np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)]

    def step(self, state, q, k, v, plan, grid_h, grid_w):
        return self.kvattn.kv_cache_attention_cpu(q, k, v, state[0], state[1], plan.write_idx, plan.q_pos, plan.k_pos,
                                                  plan.k_valid, grid_h, grid_w, inplace=True)[0]

    def caches(self, state):
        return state


class CudaImpl:
    """lipforce's CUDA kernels through the launcher (tests/test_kvattn.py's run_cuda for single cases)."""

    reference = "cpu"

    def __init__(self, native, tk, dtype: str):
        import torch

        self.native, self.tk, self.dtype, self.torch = native, tk, dtype, torch
        self.tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
        self.name = f"lipforce CUDA kernels ({dtype})"
        self.workspaces: dict = {}

    def round(self, a):
        return self.torch.from_numpy(a).to(self.tdtype).float().numpy()

    def run(self, x):
        (out, kc, vc), seen = self.tk.run_cuda(x, self.dtype, mask_garbage=True)
        return (out.float().cpu().numpy(), kc.float().cpu().numpy(), vc.float().cpu().numpy(), seen)

    def new_cache(self, shape):
        t = self.torch
        return [t.full(shape, float("nan"), dtype=self.tdtype, device="cuda") for _ in range(2)]

    def step(self, state, q, k, v, plan, grid_h, grid_w):
        t = self.torch
        dq, dk, dv = (t.from_numpy(a).to("cuda", self.tdtype) for a in (q, k, v))
        idx = [t.from_numpy(a).to("cuda") for a in (plan.write_idx, plan.q_pos, plan.k_pos, plan.k_valid)]
        out = t.full_like(dq, float("nan"))  # poisoned: every element must be written
        cuda_kv_cache_attention(self.native, dq, dk, dv, state[0], state[1], *idx, grid_h, grid_w,
                                workspaces=self.workspaces, out=out)
        t.cuda.synchronize()
        return out.float().cpu().numpy()

    def caches(self, state):
        return [c.float().cpu().numpy() for c in state]


def _errors(got, ref) -> tuple[float, float]:
    import numpy as np

    diff = np.asarray(got, np.float64) - np.asarray(ref, np.float64)
    max_abs = float(np.abs(diff).max()) if diff.size else 0.0
    nref = float(np.linalg.norm(ref))
    return max_abs, (float(np.linalg.norm(diff)) / nref if nref > 0 else max_abs)


def _big(case) -> bool:
    n = case.grid_h * case.grid_w
    return case.batch * case.chunk_frames * n * case.num_slots * n * case.num_heads * case.head_dim > 2e8


def check_case(impl, tk, label: str, case, all_masked: bool = False) -> dict:
    """One call of the implementation vs its reference on the same (rounded) inputs, masked slots holding NaN
    for the implementation and zeros for the reference; the cache write must be exact."""
    import numpy as np

    from lipforce_sdk import kvattn

    x = tk.make_inputs(case)
    if all_masked:
        x["k_valid"][:] = 0
    got, k_cache, v_cache, seen = impl.run(x)
    n = case.tokens
    ref_in = dict(x, **{k: v.copy() for k, v in seen.items()})
    for s in np.nonzero(x["k_valid"] == 0)[0].tolist():
        ref_in["k_cache"][:, s * n:(s + 1) * n] = 0.0
        ref_in["v_cache"][:, s * n:(s + 1) * n] = 0.0
    reference = impl.reference
    if reference == "cpu" and _big(case):
        import torch

        reference = "torch float64 (GPU)"
        tin = {k: (torch.from_numpy(v).cuda() if isinstance(v, np.ndarray) else v) for k, v in ref_in.items()}
        ref = tk.torch_reference(**tin)[0].cpu().numpy()
    elif reference == "cpu":
        reference = "C++ CPU reference (fp32)"
        ref = kvattn.kv_cache_attention_cpu(**ref_in)[0]
    else:
        reference = "NumPy float64"
        ref = kvattn.kv_cache_attention_numpy(**ref_in)[0]
    tol = tk.TOLERANCES[impl.dtype]
    finite = bool(np.isfinite(got).all())
    max_abs, rel = _errors(got, ref)
    close = bool(np.allclose(got, ref, **tol)) if finite else False
    if all_masked:
        close = close and bool(np.array_equal(got, np.zeros_like(got)))
    cache_ok = True
    for ci, slot in enumerate(x["write_idx"].tolist()):
        for cache, src in ((k_cache, seen["k"]), (v_cache, seen["v"])):
            cache_ok &= bool(np.array_equal(cache[:, slot * n:(slot + 1) * n], src[:, ci * n:(ci + 1) * n]))
    for s in range(case.num_slots):
        if s not in x["write_idx"] and x["k_valid"][s]:
            cache_ok &= bool(np.array_equal(k_cache[:, s * n:(s + 1) * n], seen["k_cache"][:, s * n:(s + 1) * n]))
    return {"case": label, "shape": str(case), "impl": impl.name, "dtype": impl.dtype, "reference": reference,
            "max_abs": max_abs, "rel_l2": rel, "atol": tol["atol"], "rtol": tol["rtol"], "finite": finite,
            "cache_exact": cache_ok, "ok": bool(finite and close and cache_ok)}


def check_ring(impl, label: str, head_dim: int, heads: int, grid: tuple[int, int], sink: int, window: int,
               chunk: int, batch: int, tol: dict, passes: int = 2, seed: int = 0) -> dict:
    """A stream through the ring: the planner's plans over enough chunks to wrap the ring, ``passes`` writes per
    chunk before its commit (as the sampler does), caches starting as NaN; carried state vs the reference's."""
    import numpy as np

    from lipforce_sdk import kvattn
    from lipforce_sdk.cache_plan import RingCachePlanner

    planner = RingCachePlanner(sink, window, chunk)
    gh, gw = grid
    n = gh * gw
    shape = (batch, planner.M * n, heads, head_dim)
    state = impl.new_cache(shape)
    if impl.reference == "numpy":
        ref_k, ref_v = np.full(shape, np.nan), np.full(shape, np.nan)
    else:
        ref_k, ref_v = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    rng = np.random.default_rng(seed)
    worst_abs = worst_rel = 0.0
    ok = True
    chunks = planner.S + 2 * planner.R + 1  # the ring wraps twice
    calls = 0
    for _ in range(chunks):
        plan = planner.plan()
        for _ in range(passes):
            q, k, v = (impl.round(rng.standard_normal((batch, chunk * n, heads, head_dim)).astype(np.float32))
                       for _ in range(3))
            got = impl.step(state, q, k, v, plan, gh, gw)
            if impl.reference == "numpy":
                ref, ref_k, ref_v = kvattn.kv_cache_attention_numpy(q, k, v, ref_k, ref_v, plan.write_idx, plan.q_pos,
                                                                    plan.k_pos, plan.k_valid, gh, gw)
            else:
                ref = kvattn.kv_cache_attention_cpu(q, k, v, ref_k, ref_v, plan.write_idx, plan.q_pos, plan.k_pos,
                                                    plan.k_valid, gh, gw, inplace=True)[0]
            a, r = _errors(got, ref)
            worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, r)
            ok &= bool(np.isfinite(got).all() and np.allclose(got, ref, **tol))
            calls += 1
        planner.commit()
    kc, vc = impl.caches(state)
    cache_ok = bool(np.array_equal(kc, ref_k.astype(np.float32), equal_nan=True)
                    and np.array_equal(vc, ref_v.astype(np.float32), equal_nan=True))
    return {"case": label, "shape": f"D{head_dim}-B{batch}-H{heads}-g{gh}x{gw}-S{sink}-W{window}-C{chunk}",
            "impl": impl.name, "dtype": impl.dtype,
            "reference": "NumPy float64" if impl.reference == "numpy" else "C++ CPU reference (fp32)", "max_abs": worst_abs, "rel_l2": worst_rel, "atol": tol["atol"],
            "rtol": tol["rtol"], "finite": True, "cache_exact": cache_ok, "ok": bool(ok and cache_ok),
            "calls": calls}


def kernel_cases(tk, cfg):
    """(label, case, all_masked): the shapes the kernels must get right, the preset's last."""
    C = tk.Case
    gh, gw = cfg.grid_hw
    preset = [(f"{cfg.name} preset B{b}", C(cfg.dit.head_dim, b, gh, gw, cfg.stream.chunk_frames, cfg.num_slots,
                                             "relative", num_heads=cfg.dit.num_heads), False) for b in (1, 2)]
    return [
        ("D64 B1, 8x8 grid", C(64, 1, 8, 8, 1, 8, "relative", num_heads=2), False),
        ("D64 B2, positions after many ring wraps", C(64, 2, 8, 8, 1, 8, "large", num_heads=2), False),
        ("D128 B2, partial tiles (5x7, C2)", C(128, 2, 5, 7, 2, 5, "random", num_heads=3), False),
        ("D128 B1, unrelated positions", C(128, 1, 4, 6, 3, 9, "random", num_heads=2), False),
        ("D64 B2, every slot masked", C(64, 2, 8, 8, 1, 8, "relative", num_heads=2), True),
        ("D128 B1, every slot masked", C(128, 1, 3, 5, 2, 4, "relative", num_heads=2), True),
    ] + preset


def ring_cases(cfg):
    """(label, head_dim, heads, grid, sink, window, chunk, batch)."""
    s = cfg.stream
    return [
        (f"ring of the {cfg.name} stream (S{s.sink_frames} W{s.window_frames} C{s.chunk_frames})", cfg.dit.head_dim,
         2, (8, 8), s.sink_frames, s.window_frames, s.chunk_frames, 1),
        ("ring, 2-frame chunks, D64 B2", 64, 2, (4, 4), 1, 4, 2, 2),
        ("ring, no sink, D128 B1", 128, 2, (3, 4), 0, 3, 1, 1),
    ]


def _case_rows(records):
    return [[r["case"], r["shape"], r["dtype"], r["reference"], r["max_abs"], r["rel_l2"],
             f"{r['atol']:g}/{r['rtol']:g}", "exact" if r["cache_exact"] else "WRONG",
             "ok" if r["ok"] else "FAIL"] for r in records]


CASE_COLUMNS = ["case", "shape", "dtype", "reference", "max abs err", "rel L2 err", "atol/rtol", "cache write",
                "result"]


def part_kernels(ctx: Ctx, res: PartResult):
    ctx.need_cuda()
    native = ctx.native()
    if native is None:
        if ctx.dry_run:
            raise Skip("lipforce_sdk._kvattn is not built here (pip install .); the dry run checks the C++ reference")
        return "fail", "no _kvattn module: did the build part pass?"
    tk = load_kvattn_tests()
    cfg = ctx.config()
    failures = []
    # 1. the GPU-marked tests of tests/test_kvattn.py (on the dry run they skip: no CUDA)
    env = dict(os.environ, LIPFORCE_EXPECT_CUDA="1" if ctx.cuda else "0")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_kvattn.py", "-k", "cuda"]
    rc, out, secs = run_cmd(cmd, timeout=min(60, max(10.0, ctx.left() / 2)), env=env, cwd=REPO)
    print(_tail(out, 4000))
    summary = next((ln.strip("= ") for ln in reversed(out.splitlines()) if " in " in ln and ("passed" in ln or
                    "skipped" in ln or "failed" in ln or "error" in ln)), _tail(out, 200))
    res.put("pytest", {"command": " ".join(cmd[1:]), "exit": rc, "summary": summary, "seconds": round(secs, 1)})
    if ctx.cuda and rc != 0:
        failures.append(f"pytest -k cuda: {summary}")
    if not ctx.cuda and rc not in (0, 5):
        failures.append(f"pytest -k cuda (dry run): exit {rc}: {summary}")
    # 2. the cases, with their errors
    if ctx.cuda:
        if not getattr(native, "cuda_compiled", False):
            return "fail", f"{getattr(native, '__file__', '_kvattn')} has no CUDA launcher (build part?)"
        impls = [CudaImpl(native, tk, d) for d in ("float16", "bfloat16")]
    else:
        impls = [CpuRefImpl()]
    records = []
    t0 = time.perf_counter()
    for impl in impls:
        for label, case, all_masked in kernel_cases(tk, cfg):
            if not ctx.cuda and _big(case):
                continue
            r = check_case(impl, tk, label, case, all_masked)
            records.append(r)
            res.put("cases", records)
        for label, d, h, grid, s, w, c, b in ring_cases(cfg):
            r = check_ring(impl, label, d, h, grid, s, w, c, b, tk.TOLERANCES[impl.dtype])
            records.append(r)
            res.put("cases", records)
        res.table("Kernel numerics", CASE_COLUMNS, _case_rows(records), gpu=ctx.gpu,
                  precision=", ".join(i.dtype for i in impls), shapes=f"as listed; preset {cfg.name}",
                  command=ctx.command("kernels"), wall_s=round(time.perf_counter() - t0, 1),
                  impl=", ".join(i.name for i in impls))
    failures += [f"{r['case']} ({r['dtype']}): max abs err {r['max_abs']:.3g}" for r in records if not r["ok"]]
    if failures:
        return "fail", "; ".join(failures)
    worst = {d: max((r["max_abs"] for r in records if r["dtype"] == d), default=0.0) for d in {r["dtype"] for r in records}}
    return "pass", (f"{len(records)} cases ({', '.join(f'{d} worst abs err {v:.2g}' for d, v in sorted(worst.items()))}); "
                    f"pytest -k cuda: {summary}")


# =============================================================================================================
# part: kernel_timing
# =============================================================================================================
def measure_ceilings(ctx: Ctx) -> dict:
    """This machine's matrix rate (16-bit, or fp32 on the CPU) and copy bandwidth, on random data."""
    torch = ctx.torch
    dev = ctx.device
    n, nbytes = (8192, 2**30) if ctx.cuda else (384, 2**25)
    dt = torch.bfloat16 if ctx.cuda else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    mm = bench(ctx, lambda _: torch.mm(a, b), [None], reps=10, warmup=3)
    cp = bench(ctx, lambda _: dst.copy_(src), [None], reps=10, warmup=3)
    return {"matmul": f"{n}^3 {str(dt).replace('torch.', '')}", "tflops": 2 * n**3 / (mm["median_ms"] * 1e-3) / 1e12,
            "copy_bytes": 2 * nbytes, "tbs": 2 * nbytes / (cp["median_ms"] * 1e-3) / 1e12}


def bench(ctx: Ctx, fn, sets, reps: int, warmup: int) -> dict:
    """Median / min of ``reps`` calls, rotating over ``sets``; CUDA events on the GPU, the host clock otherwise."""
    torch = ctx.torch
    for i in range(warmup):
        fn(sets[i % len(sets)])
    ctx.sync()
    if ctx.cuda:
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for i, (s, e) in enumerate(ev):
            s.record()
            fn(sets[i % len(sets)])
            e.record()
        torch.cuda.synchronize()
        ms = sorted(s.elapsed_time(e) for s, e in ev)
    else:
        ms = []
        for i in range(reps):
            t0 = time.perf_counter()
            fn(sets[i % len(sets)])
            ms.append((time.perf_counter() - t0) * 1e3)
        ms.sort()
    return {"median_ms": ms[len(ms) // 2], "min_ms": ms[0], "reps": reps}


def attention_floor(flops: float, nbytes: float, tflops: float, tbs: float) -> float:
    """Microseconds: the larger of the arithmetic and the memory time."""
    return max(flops / (tflops * 1e12), nbytes / (tbs * 1e12)) * 1e6


def part_kernel_timing(ctx: Ctx, res: PartResult):
    ctx.need_cuda()
    torch = ctx.torch
    import torch.nn.functional as F

    from lipforce_sdk.cache_plan import RingCachePlanner
    from lipforce_sdk.model.attention import Rope3D, kv_cache_attention

    cfg = ctx.config()
    native = ctx.native_cuda()
    dev = ctx.device
    t_start = time.perf_counter()
    ceil = measure_ceilings(ctx)
    res.put("ceilings", ceil)
    b, h, d = 1, cfg.dit.num_heads, cfg.dit.head_dim
    gh, gw = cfg.grid_hw
    n, c, m = gh * gw, cfg.stream.chunk_frames, cfg.num_slots
    lc, t_tok = c * n, m * n
    planner = RingCachePlanner.for_stream(cfg.stream)
    for _ in range(m + 1):  # steady state: every slot valid
        planner.commit()
    plan = planner.plan()
    tv = int(plan.k_valid.sum()) * n
    flops = 4.0 * b * h * lc * tv * d
    dtypes = ["bfloat16", "float16"] if ctx.cuda else ["float32"]
    reps, warmup, nsets = (50, 10, 3) if ctx.cuda else (5, 2, 1)
    rows, figures, agreement = [], [], {}
    this = ("measured here", ceil["tflops"], ceil["tbs"])
    for dname in dtypes:
        if ctx.left() < 8:
            break
        dt = getattr(torch, dname)
        es = torch.finfo(dt).bits // 8
        rope = Rope3D(d, gh, gw, cfg.dit.rope_theta).to(dev)
        idx = [torch.from_numpy(a).to(dev) for a in (plan.write_idx, plan.q_pos, plan.k_pos, plan.k_valid)]
        sets = []
        for _ in range(nsets):  # rotate: one set's cache is about the L2's size
            s = argparse.Namespace()
            s.q, s.k, s.v = (torch.randn(b, lc, h, d, device=dev, dtype=dt) for _ in range(3))
            s.kc, s.vc = (torch.randn(b, t_tok, h, d, device=dev, dtype=dt) for _ in range(2))
            s.out = torch.empty_like(s.q)
            s.qr = rope(s.q, idx[1]).transpose(1, 2)  # [B, H, Lc, D], rotated
            s.kr = rope(s.kc, idx[2]).transpose(1, 2)  # [B, H, T, D], the concatenated cache, rotated
            s.vr = s.vc.transpose(1, 2)
            s.mask = (idx[3] != 0).repeat_interleave(n)[None, None, None, :].expand(1, 1, lc, t_tok)
            sets.append(s)
        ws: dict = {}
        impls = [
            ("lipforce kernels (write + RoPE + attention)", (4 * lc + 2 * tv) * b * h * d * es,
             (lambda s: cuda_kv_cache_attention(native, s.q, s.k, s.v, s.kc, s.vc, *idx, gh, gw, cfg.dit.rope_theta,
                                                ws, s.out)) if native is not None else None),
            ("torch path of the model (index_copy + RoPE + masked SDPA)", (4 * lc + 2 * tv) * b * h * d * es,
             lambda s: kv_cache_attention(s.q, s.k, s.v, s.kc, s.vc, *idx, rope, inplace=True)),
            ("SDPA over the rotated cache, no mask", (2 * lc + 2 * tv) * b * h * d * es,
             lambda s: F.scaled_dot_product_attention(s.qr, s.kr, s.vr)),
            ("SDPA over the rotated cache, bool mask", (2 * lc + 2 * tv) * b * h * d * es,
             lambda s: F.scaled_dot_product_attention(s.qr, s.kr, s.vr, attn_mask=s.mask)),
        ]
        if native is not None:  # the kernels against the model's torch path on the same inputs
            s0 = sets[0]
            with torch.inference_mode():
                got = cuda_kv_cache_attention(native, s0.q, s0.k, s0.v, s0.kc.clone(), s0.vc.clone(), *idx, gh, gw,
                                              cfg.dit.rope_theta, ws)
                want = kv_cache_attention(s0.q, s0.k, s0.v, s0.kc.clone(), s0.vc.clone(), *idx, rope, inplace=True)[0]
            agreement[dname] = float((got.float() - want.float()).abs().max())
            res.put("kernels_vs_torch_path_max_abs", agreement)
        base_us = None
        for name, nbytes, fn in impls:
            if fn is None:
                rows.append([name, dname, "-", "-", "-", "-", "-", "-", "-", "skip: no CUDA launcher"])
                continue
            with torch.inference_mode():
                r = bench(ctx, fn, sets, reps, warmup)
            us = r["median_ms"] * 1e3
            base_us = us if name.startswith("SDPA over the rotated cache, no") else base_us
            floors = [attention_floor(flops, nbytes, tf, bw) for _, tf, bw in
                      [(k, v["tflops"], v["tbs"]) for k, v in DATASHEET.items()] + [this]]
            fig = {"impl": name, "dtype": dname, "median_us": us, "min_us": r["min_ms"] * 1e3,
                   "tflops": flops / (us * 1e-6) / 1e12, "gbs": nbytes / (us * 1e-6) / 1e9, "flops": flops,
                   "bytes": nbytes, "floor_us": dict(zip(list(DATASHEET) + ["measured"], floors))}
            figures.append(fig)
            rows.append([name, dname, us, fig["tflops"], fig["gbs"], floors[0], floors[1], floors[2],
                         us / floors[2], f"median of {reps}"])
            res.put("timings", figures)
        for f in figures:
            if f["dtype"] == dname and base_us:
                f["vs_sdpa_no_mask"] = f["median_us"] / base_us
        shapes = (f"B{b} H{h} D{d}, {lc} chunk tokens ({c} x {gh}x{gw}), cache {t_tok} tokens ({m} slots, "
                  f"{tv} valid)")
        res.table("Kernel timing", ["implementation", "dtype", "median us", "TFLOP/s", "GB/s (ideal bytes)",
                                    "floor H100 SXM us", "floor H200 SXM us", "floor here us", "x floor here", "note"],
                  rows, gpu=ctx.gpu, precision=", ".join(dtypes), shapes=shapes, command=ctx.command("kernel_timing"),
                  wall_s=round(time.perf_counter() - t_start, 1),
                  floors=(f"FLOPs {flops:.3g} (4*B*H*Lc*Tvalid*D); floor = max(FLOPs / rate, ideal bytes / bandwidth); "
                          "H100 SXM 989 TFLOP/s 3.35 TB/s, H200 SXM 989 TFLOP/s 4.8 TB/s (datasheet, dense 16-bit); "
                          f"here: {ceil['tflops']:.3g} TFLOP/s ({ceil['matmul']} matmul), {ceil['tbs']:.3g} TB/s "
                          "(copy, read + write)"),
                  agreement="; ".join(f"{k}: max abs difference kernels vs torch path {v:.3g}"
                                      for k, v in agreement.items()) or None)
        del sets
    ok = [f for f in figures if f["impl"].startswith("lipforce")]
    if native is None and ctx.cuda:
        return "fail", "no CUDA launcher: only the torch rows were timed"
    if ok:
        best = min(ok, key=lambda f: f["median_us"])
        return "pass", (f"kernels {best['median_us']:.0f} us ({best['dtype']}), "
                        f"{best.get('vs_sdpa_no_mask', float('nan')):.2f}x SDPA without mask; floor here "
                        f"{best['floor_us']['measured']:.0f} us")
    return "pass", "dry run: torch rows timed at the preset's shapes; kernels need CUDA"


# =============================================================================================================
# part: stream
# =============================================================================================================
def seeded_model(ctx: Ctx, preset: str, resolution: int):
    """The preset's model with seeded weights, built on the device (a 1.3B model initialised on the CPU takes
    seconds and a 5 GB host-to-device copy; the values do not matter for speed)."""
    from lipforce_sdk.model import LipSyncModel

    if ctx.cuda:
        with ctx.torch.device("cuda"):
            return LipSyncModel.from_preset(preset, seed=0, stream={"resolution": resolution})
    return LipSyncModel.from_preset(preset, seed=0, stream={"resolution": resolution})


def _frame_diff(a_frames, b_frames) -> tuple[float, float]:
    import numpy as np

    n = min(len(a_frames), len(b_frames))
    if n == 0:
        return float("nan"), float("nan")
    d = np.abs(np.stack(a_frames[:n]).astype(np.int16) - np.stack(b_frames[:n]).astype(np.int16))
    return float(d.mean()), float(d.max())


def part_stream(ctx: Ctx, res: PartResult):
    ctx.need_cuda()
    torch = ctx.torch
    import latency

    from lipforce_sdk import Engine
    from lipforce_sdk.backends.torch_backend import TorchBackend
    from lipforce_sdk.cli import SAMPLE_DIR

    cfg = ctx.stream_config()
    resolution, precision, dev = cfg.stream.resolution, ctx.args.precision, ctx.device
    speech = read_speech(SAMPLE_DIR / "speech.wav")
    frames, audio = latency.make_clip(speech, ctx.args.stream_seconds, resolution, cfg.audio.sample_rate, cfg.stream.fps)
    t0 = time.perf_counter()
    model = seeded_model(ctx, cfg.name, resolution)
    init_s = time.perf_counter() - t0
    sdpa_attention = model.dit.cache_attention
    native = ctx.native_cuda()
    kernel_attention = kernel_cache_attention(native) if native is not None else None
    Graphed = graphed_backend_class()
    gpu_mb = (lambda: torch.cuda.memory_allocated() / 2**20) if ctx.cuda else (lambda: None)
    variants = [("eager", False, False), ("eager + lipforce kernels", False, True),
                ("CUDA graph of the DiT step", True, False), ("CUDA graph + lipforce kernels", True, True)]
    figures, rows, failures = [], [], []
    eager_frames = None
    weights_mb = None
    shapes = (f"{cfg.name}: dim {cfg.dit.dim}, {cfg.dit.num_layers} layers, {cfg.dit.num_heads} heads; "
              f"{resolution}x{resolution} crop, {cfg.tokens_per_frame} tokens/latent frame, chunk "
              f"{cfg.stream.chunk_frames} latent fr. ({cfg.video_frames_per_chunk} video fr.), cache {cfg.num_slots} "
              f"slots; clip {ctx.args.stream_seconds:g} s ({len(frames)} frames)")
    last_wall = None
    for name, graphed, use_kernel in variants:
        label = name if ctx.cuda or not graphed else f"{name} (not captured: no CUDA; same buffers, eager step)"
        if use_kernel and kernel_attention is None:
            rows.append([label] + ["-"] * 9 + ["skip: no CUDA launcher" if ctx.cuda else "skip: needs CUDA"])
            continue
        if last_wall is not None and ctx.left() < 1.5 * last_wall + 10:
            rows.append([label] + ["-"] * 9 + [f"skip: {ctx.left():.0f} s left in the part"])
            continue
        v0 = time.perf_counter()
        fig = {"variant": label}
        try:
            model.dit.cache_attention = kernel_attention if use_kernel else sdpa_attention
            be = Graphed(model, device=dev, precision=precision) if graphed else TorchBackend(model, device=dev,
                                                                                               precision=precision)
            engine = Engine(be)
            ctx.sync()
            if weights_mb is None:
                weights_mb = gpu_mb()
            latency.stream_once(engine, frames[:2 * cfg.video_frames_per_chunk], audio)  # warm-up
            ctx.sync()
            m0 = gpu_mb()
            s0 = time.perf_counter()
            session = engine.session(box=(0, 0, resolution, resolution))
            ctx.sync()
            fig["setup_ms"] = (time.perf_counter() - s0) * 1e3
            fig["session_alloc_mb"] = None if m0 is None else gpu_mb() - m0
            fig["state_mb"] = be.state_nbytes(session.state) / 2**20
            del session
            gc.collect()
            if ctx.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            m1 = gpu_mb()
            keep = []
            stats, wall = latency.stream_once(engine, frames, audio, keep=keep)
            peak = None if m1 is None else torch.cuda.max_memory_allocated() / 2**20 - m1
            fig.update(ttff_ms=stats.time_to_first_frame_ms, p50_ms=stats.p50_ms, p95_ms=stats.p95_ms,
                       p99_ms=stats.p99_ms, fps=stats.fps, chunks=stats.chunks, frames=len(keep), wall_s=wall,
                       stream_peak_mb=peak, weights_mb=weights_mb)
            if eager_frames is None:
                eager_frames = keep
                fig["vs_eager_mean_abs"] = fig["vs_eager_max_abs"] = 0.0
            else:
                fig["vs_eager_mean_abs"], fig["vs_eager_max_abs"] = _frame_diff(keep, eager_frames)
            if graphed and not use_kernel and fig["vs_eager_mean_abs"] > 4.0:  # same kernels: a buffer bug shows
                failures.append(f"{label}: frames differ from eager (mean |diff| {fig['vs_eager_mean_abs']:.2f})")
            fig["ok"] = True
            note = "ok"
        except Exception as e:  # noqa: BLE001 - one variant's failure is reported, the others still run
            traceback.print_exc()
            fig.update(ok=False, error=f"{type(e).__name__}: {e}")
            note = f"FAIL: {type(e).__name__}: {_tail(str(e), 200)}"
            if name == "eager" or (graphed and not use_kernel):
                failures.append(f"{label}: {note}")
        finally:
            model.dit.cache_attention = sdpa_attention
            engine = be = None
            gc.collect()
            if ctx.cuda:
                torch.cuda.empty_cache()
        last_wall = time.perf_counter() - v0
        fig["variant_wall_s"] = last_wall
        figures.append(fig)
        res.put("variants", figures)
        res.put("model_init_s", init_s)
        rows.append([label, fig.get("ttff_ms"), fig.get("p50_ms"), fig.get("p95_ms"), fig.get("p99_ms"),
                     fig.get("fps"), fig.get("setup_ms"), fig.get("session_alloc_mb"), fig.get("stream_peak_mb"),
                     fig.get("vs_eager_mean_abs"), note])
        res.table("Streaming", ["variant", "TTFF ms", "p50 ms", "p95 ms", "p99 ms", "FPS", "session setup ms",
                                "session alloc MiB", "stream peak MiB", "mean abs diff vs eager (0-255)", "result"], rows,
                  gpu=ctx.gpu, precision=precision, shapes=shapes, command=ctx.command("stream"),
                  wall_s=round(time.perf_counter() - t0, 1),
                  memory=(f"weights {_fmt(weights_mb, 0)} MiB; session alloc = what engine.session() allocates "
                          "(KV cache, VAE caches, graph pool); stream peak = max allocated during the stream above "
                          "what was allocated before it" if ctx.cuda else "GPU memory: none (CPU)"),
                  timing=("FPS = output frames per second of chunk compute; TTFF from the first push, clip pushed "
                          f"at once; model init {init_s:.1f} s (CPU, seeded), not in the figures"))
    eager = next((f for f in figures if f["variant"] == "eager" and f.get("ok")), None)
    if failures or eager is None:
        return "fail", "; ".join(failures) or "the eager stream did not run"
    best = max((f for f in figures if f.get("ok")), key=lambda f: f["fps"])
    return "pass", (f"eager {eager['fps']:.1f} FPS (TTFF {eager['ttff_ms']:.0f} ms, p50 {eager['p50_ms']:.1f} ms, "
                    f"p95 {eager['p95_ms']:.1f} ms); best: {best['variant']} {best['fps']:.1f} FPS")


# =============================================================================================================
# part: baseline
# =============================================================================================================
def part_baseline(ctx: Ctx, res: PartResult):
    ctx.need_cuda()
    import latency

    from lipforce_sdk.backends.torch_backend import TorchBackend
    from lipforce_sdk.cli import SAMPLE_DIR

    cfg = ctx.stream_config()
    resolution, precision, dev = cfg.stream.resolution, ctx.args.precision, ctx.device
    speech = read_speech(SAMPLE_DIR / "speech.wav")
    t0 = time.perf_counter()
    be = TorchBackend(seeded_model(ctx, cfg.name, resolution), device=dev, precision=precision)
    init_s = time.perf_counter() - t0
    ns = argparse.Namespace(preset=cfg.name, resolution=resolution, device=dev, precision=precision,
                            steps=ctx.args.steps, cfg=ctx.args.cfg)
    lengths = [float(x) for x in ctx.args.baseline_seconds.split(",")]
    frames, audio = latency.make_clip(speech, lengths[0], resolution, cfg.audio.sample_rate, cfg.stream.fps)
    w0 = time.perf_counter()
    latency.bidirectional_baseline(argparse.Namespace(**{**vars(ns), "steps": 1}), frames, audio, backend=be)
    warm_s = time.perf_counter() - w0
    clips, rows = [], []
    prev = None
    res.put("model_init_s", init_s)
    for sec in lengths:
        predicted = None if prev is None else prev[1] * (sec / prev[0]) ** 2 + 2 * warm_s  # attention: quadratic
        if predicted is not None and predicted + 5 > ctx.left():
            rows.append([sec, "-", "-", "-", "-", "-", "-", f"skip: predicted {predicted:.0f} s > "
                                                            f"{ctx.left():.0f} s left"])
        else:
            frames, audio = latency.make_clip(speech, sec, resolution, cfg.audio.sample_rate, cfg.stream.fps)
            r = latency.bidirectional_baseline(ns, frames, audio, backend=be)
            r.update(clip_s=sec, latent_frames=r["tokens"] // cfg.tokens_per_frame, predicted_s=predicted)
            clips.append(r)
            prev = (sec, r["seconds"])
            rows.append([sec, r["frames"], r["latent_frames"], r["tokens"], r["passes"], r["seconds"], r["fps"],
                         f"GPU peak {_fmt(r['gpu_peak_mb'], 0)} MiB" if r["gpu_peak_mb"] else "ok"])
            res.put("clips", clips)
        res.table("Bidirectional baseline", ["clip s", "frames", "latent frames", "tokens", "DiT passes", "seconds",
                                             "FPS", "note"], rows,
                  gpu=ctx.gpu, precision=precision,
                  shapes=(f"{cfg.name} at {resolution}x{resolution}, whole clip at once, full attention over all "
                          f"latent frames, {ns.steps} Euler steps with CFG {ns.cfg:g} (2 passes per step)"),
                  command=ctx.command("baseline"), wall_s=round(time.perf_counter() - t0, 1),
                  timing=f"VAE encode + {2 * ns.steps} DiT passes + VAE decode, after a 1-step warm-up "
                         f"({warm_s:.1f} s); model init {init_s:.1f} s not counted")
    if not clips:
        return "fail", "no clip fitted in the part's time"
    return "pass", ", ".join(f"{c['clip_s']:g} s clip: {c['fps']:.2f} FPS ({c['seconds']:.1f} s)" for c in clips)


# =============================================================================================================
# part: sanitizer
# =============================================================================================================
SANITIZE_CASES = (("D64 B1, 8x8 grid, NaN in masked slots", (64, 1, 8, 8, 1, 8, "relative", 2)),
                  ("D128 B2, partial tiles (5x7, C2)", (128, 2, 5, 7, 2, 5, "random", 3)))


def sanitize_case_main(dry_run: bool) -> int:
    """The small cases compute-sanitizer runs (the kernels vs the C++ reference); exit 0 when all agree."""
    tk = load_kvattn_tests()
    from lipforce_sdk import kvattn

    native = kvattn.native_module()
    impls = [CpuRefImpl()] if dry_run else [CudaImpl(native, tk, d) for d in ("float16", "bfloat16")]
    ok = True
    for impl in impls:
        for label, (d, b, gh, gw, c, m, pos, h) in SANITIZE_CASES:
            r = check_case(impl, tk, label, tk.Case(d, b, gh, gw, c, m, pos, num_heads=h))
            print(f"sanitize case: {label} {impl.dtype}: max abs err {r['max_abs']:.3g} {'ok' if r['ok'] else 'FAIL'}")
            ok &= r["ok"]
    if not dry_run:
        import torch

        torch.cuda.synchronize()
    return 0 if ok else 1


def part_sanitizer(ctx: Ctx, res: PartResult):
    tool = find_sanitizer()
    res.put("compute_sanitizer", tool)
    if ctx.dry_run:
        if ctx.native() is None:
            raise Skip("lipforce_sdk._kvattn is not built here (pip install .), and its C++ reference runs the "
                       "dry run's sanitizer cases; compute-sanitizer itself needs a CUDA device")
        rc = sanitize_case_main(dry_run=True)
        if rc != 0:
            return "fail", "the sanitizer's cases failed on the CPU reference"
        raise Skip(f"dry run: compute-sanitizer needs a CUDA device (its cases ran on the C++ reference; "
                   f"compute-sanitizer {'at ' + tool if tool else 'not found'})")
    ctx.need_cuda()
    if tool is None:
        raise Skip("compute-sanitizer not found (PATH, beside nvcc, /usr/local/cuda, /opt/nvidia)")
    # each tensor its own allocation (bounds exact); kernels loaded when first used (less to instrument)
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1", CUDA_MODULE_LOADING="LAZY")
    runs, rows, errors = [], [], []
    shares = {"memcheck": 0.6, "racecheck": 1.0}  # memcheck first, with the larger share of the part's time
    for name, share in shares.items():
        if runs and runs[-1]["result"] == "unsupported here":
            rows.append([name, "-", "-", "skip: compute-sanitizer does not run here (memcheck)"])
            continue
        budget = (ctx.left() - 3) * share
        if budget < 10:
            rows.append([name, "-", "-", f"skip: {ctx.left():.0f} s left"])
            continue
        cmd = [tool, "--tool", name, "--error-exitcode", "86", "--print-limit", "20", sys.executable, SCRIPT,
               "--sanitize-case"]
        rc, out, secs = run_cmd(cmd, timeout=budget, env=env, cwd=REPO)
        print(_tail(out, 5000))
        summary = [ln.strip() for ln in out.splitlines() if "SUMMARY" in ln]
        unsupported = any(s in out for s in ("Device not supported", "not supported on this", "error 999",
                                             "Unable to find injection library"))
        result = f"timeout after {budget:.0f} s" if rc is None else ("ok" if rc == 0 else f"exit {rc}")
        if rc not in (0, None) and unsupported:
            result = "unsupported here"
        runs.append({"tool": name, "exit": rc, "seconds": secs, "summary": summary, "result": result,
                     "command": " ".join(map(str, cmd))})
        rows.append([name, result, secs, "; ".join(summary) or _tail(out, 300)])
        res.put("runs", runs)
        if rc not in (0, None) and not unsupported:  # a report, a failed case, or a crash
            errors.append(f"{name}: {result}: {'; '.join(summary) or _tail(out, 200)}")
    res.table("compute-sanitizer", ["tool", "result", "seconds", "summary"], rows, gpu=ctx.gpu,
              precision="float16, bfloat16",
              shapes="; ".join(f"{label}: D{c[0]} B{c[1]} H{c[7]} {c[2]}x{c[3]} C{c[4]} M{c[5]}"
                               for label, c in SANITIZE_CASES),
              command=ctx.command("sanitizer"), wall_s=round(sum(r["seconds"] for r in runs), 1))
    if errors:
        return "fail", "; ".join(errors)
    results = {r["tool"]: r for r in runs}
    if results.get("memcheck", {}).get("result") != "ok":
        why = results["memcheck"]["result"] if "memcheck" in results else rows[0][3]
        raise Skip(f"memcheck did not complete ({why}); nothing wrong was reported")
    return "pass", "; ".join(f"{r['tool']}: {'; '.join(r['summary']) or r['result']}" for r in runs)


# =============================================================================================================
# part: profile
# =============================================================================================================
KERNEL_KINDS = (  # (kind, substrings of the lower-cased kernel name), first match wins
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax")),
    ("GEMM", ("gemm", "cutlass", "xmma", "nvjet", "matmul", "cublas", "wgmma", "splitk")),
    ("convolution", ("conv", "implicit", "winograd", "cudnn")),
    ("copies and fills", ("memcpy", "memset", "copy", "fill", "cat")),
    ("normalisation", ("norm", "welford", "reduce")),
)


def kernel_kind(name: str) -> str:
    n = name.lower()
    for kind, keys in KERNEL_KINDS:
        if any(k in n for k in keys):
            return kind
    return "elementwise and other"


def _stage_label(name: str, args, kwargs, t_land: float) -> str:
    if name != "dit_step":
        return {"encode_audio": "audio encoder", "encode_video": "VAE encoder (condition)",
                "decode": "VAE decoder"}[name]
    t = float(args[1] if len(args) > 1 else kwargs["t"])
    return "DiT step 1 (t = 1)" if t == 1.0 else (f"DiT step 2 (t = {t_land:g})" if t == t_land else
                                                    "DiT cache pass (t = 0; reference writes too)")


# the host's parts of a chunk the profile names: (label, class path, method), each called on the stream's
# thread (a chunk's pastes may run on the composite threads inside composite_many: timed as one wall time)
HOST_TIMERS = (
    ("crop and mouth mask of each frame", "lipforce_sdk.session:FramePreparer", "__call__"),
    ("frames and mask for the model (float, masked)", "lipforce_sdk.session:ChunkRenderer", "_pixels"),
    ("frames and mask for the model (float, masked)", "lipforce_sdk.session:ChunkRenderer", "_mask"),
    ("noise", "lipforce_sdk.session:ChunkRenderer", "noise"),
    ("paste into the frames, through the mouth exemplars", "lipforce_sdk.session:ChunkRenderer", "composite_many"),
)
_PASTE = HOST_TIMERS[4][0]


@contextlib.contextmanager
def _host_timers(parts: dict):
    """Times the host's named parts of a stream (``HOST_TIMERS``) into ``parts`` (label -> [seconds, calls])
    by wrapping the classes' methods for the duration (restored after)."""
    import importlib

    saved = []
    for label, where, meth in HOST_TIMERS:
        mod, cls_name = where.split(":")
        cls = getattr(importlib.import_module(mod), cls_name)
        fn = cls.__dict__[meth]

        def wrapped(*a, _fn=fn, _label=label, **k):
            s0 = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                p = parts.setdefault(_label, [0.0, 0])
                p[0] += time.perf_counter() - s0
                p[1] += 1

        saved.append((cls, meth, fn))
        setattr(cls, meth, wrapped)
    try:
        yield parts
    finally:
        for cls, meth, fn in reversed(saved):
            setattr(cls, meth, fn)


def _host_rows(parts: dict, host: float, wall: float, chunks: int) -> list:
    """Rows for the host's time: its named parts (label -> [seconds, calls]), then the rest (mel,
    transfers, Python)."""
    rows = [[f"host: {k}", v[1], v[0] * 1e3, v[0] * 1e3 / chunks, 100 * v[0] / wall] for k, v in parts.items()]
    rest = host - sum(v[0] for v in parts.values())
    rows.append(["host: the rest (mel, transfers, Python)", "-", rest * 1e3, rest * 1e3 / chunks, 100 * rest / wall])
    return rows


def part_profile(ctx: Ctx, res: PartResult):
    ctx.need_cuda()
    torch = ctx.torch
    import latency

    from lipforce_sdk import Engine
    from lipforce_sdk.backends.torch_backend import TorchBackend
    from lipforce_sdk.cli import SAMPLE_DIR

    cfg = ctx.stream_config()
    resolution, precision, dev = cfg.stream.resolution, ctx.args.precision, ctx.device
    # the stages are timed over the stream part's clip (its first 2 s gather the mouth exemplars, then the
    # steady state); torch.profiler records a 2 s clip (its events take longer to sum up than to record)
    seconds = min(2.0, ctx.args.stream_seconds)
    speech = read_speech(SAMPLE_DIR / "speech.wav")
    frames, audio = latency.make_clip(speech, seconds, resolution, cfg.audio.sample_rate, cfg.stream.fps)
    frames_t, audio_t = latency.make_clip(speech, ctx.args.stream_seconds, resolution, cfg.audio.sample_rate,
                                          cfg.stream.fps)
    t0 = time.perf_counter()
    model = seeded_model(ctx, cfg.name, resolution)
    be = TorchBackend(model, device=dev, precision=precision)
    engine = Engine(be)
    latency.stream_once(engine, frames[:2 * cfg.video_frames_per_chunk], audio)  # warm-up
    ctx.sync()
    def shapes(clip_s: float, n: int) -> str:
        return (f"{cfg.name}: dim {cfg.dit.dim}, {cfg.dit.num_layers} layers; {resolution}x{resolution} crop, "
                f"chunk {cfg.video_frames_per_chunk} video frames; clip {clip_s:g} s ({n} frames)")

    context = dict(gpu=ctx.gpu, precision=precision, shapes=shapes(seconds, len(frames)),
                   command=ctx.command("profile"))
    context_t = dict(context, shapes=shapes(ctx.args.stream_seconds, len(frames_t)))

    # 1. each backend stage timed with a synchronisation around it (the stages then cannot overlap the host)
    stages: dict[str, list] = {}
    t_land = cfg.schedule.t_land

    def timed(name, fn):
        def run(*a, **k):
            ctx.sync()
            s0 = time.perf_counter()
            out = fn(*a, **k)
            ctx.sync()
            st = stages.setdefault(_stage_label(name, a, k, t_land), [0.0, 0])
            st[0] += time.perf_counter() - s0
            st[1] += 1
            return out
        return run

    names = ("encode_audio", "encode_video", "dit_step", "decode")
    for n in names:
        setattr(be, n, timed(n, getattr(be, n)))
    host_parts: dict[str, list] = {}
    try:
        with _host_timers(host_parts):
            stats, wall = latency.stream_once(engine, frames_t, audio_t)
        ctx.sync()
    finally:
        for n in names:
            delattr(be, n)  # the class's methods again
    chunks = max(1, stats.chunks)
    rows = [[k, v[1], v[0] * 1e3, v[0] * 1e3 / chunks, 100 * v[0] / wall] for k, v in sorted(stages.items())]
    host = wall - sum(v[0] for v in stages.values())
    rows += _host_rows(host_parts, host, wall, chunks)
    rows.append(["whole stream", chunks, wall * 1e3, wall * 1e3 / chunks, 100.0])
    res.put("stages", {k: {"calls": v[1], "s": v[0]} for k, v in stages.items()} | {"host_s": host, "wall_s": wall,
                                                                                     "chunks": chunks,
                                                                                     "frames": len(frames_t)})
    res.put("host", {k: {"calls": v[1], "s": v[0]} for k, v in host_parts.items()})
    res.table("A chunk's stages (each synchronised)", ["stage", "calls", "total ms", "ms per chunk", "% of wall"],
              rows, **context_t, wall_s=round(time.perf_counter() - t0, 1),
              timing="synchronised around every backend call, so stage times add up; the stream runs slower "
                     "than unsynchronised (the stream part's figures); the host's rows are parts of its time "
                     "(not synchronised: host code only)")

    # 2. the same stream under torch.profiler, no synchronisation added
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    with profile(activities=acts) as prof:
        p0 = time.perf_counter()
        stats2, _ = latency.stream_once(engine, frames, audio)
        ctx.sync()
        pwall = time.perf_counter() - p0
    chunks2 = max(1, stats2.chunks)
    events = prof.key_averages()

    def self_dev_us(e):
        return float(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) or 0)

    dev_type = getattr(torch.autograd, "DeviceType", None)
    kernels = [e for e in events if dev_type is not None and getattr(e, "device_type", None) == dev_type.CUDA
               and self_dev_us(e) > 0]
    gpu_us = sum(self_dev_us(e) for e in kernels)
    launches = sum(int(e.count) for e in kernels)
    kinds: dict[str, list] = {}
    for e in kernels:
        k = kinds.setdefault(kernel_kind(e.key), [0.0, 0])
        k[0] += self_dev_us(e)
        k[1] += int(e.count)
    krows = [[k, v[1] / chunks2, v[0] / 1e3 / chunks2, 100 * v[0] / gpu_us if gpu_us else None]
             for k, v in sorted(kinds.items(), key=lambda kv: -kv[1][0])]
    krows.append(["all kernels", launches / chunks2, gpu_us / 1e3 / chunks2, 100.0 if gpu_us else None])
    busy = 100 * gpu_us / 1e6 / pwall if ctx.cuda else None
    res.put("profile", {"wall_s": pwall, "chunks": chunks2, "gpu_kernel_s": gpu_us / 1e6, "launches": launches,
                        "gpu_busy_pct": busy, "kinds": kinds})
    res.table("Kernels by kind (under torch.profiler)", ["kind", "launches per chunk", "GPU ms per chunk",
                                                         "% of kernel time"], krows, **context,
              wall_s=round(time.perf_counter() - t0, 1),
              timing=(f"profiled stream {pwall * 1e3 / chunks2:.1f} ms per chunk of wall (profiler on); kernels "
                      f"{gpu_us / 1e3 / chunks2:.1f} ms per chunk: the GPU busy "
                      f"{'-' if busy is None else f'{busy:.0f}'} % of the wall" if ctx.cuda else
                      "no CUDA: no kernels (the CPU ops are in the next table)"))
    top = sorted(kernels, key=self_dev_us, reverse=True)[:12]
    trows = [[e.key[:70], int(e.count) / chunks2, self_dev_us(e) / 1e3 / chunks2,
              100 * self_dev_us(e) / gpu_us, kernel_kind(e.key)] for e in top]
    if trows:
        res.table("Top kernels", ["kernel", "launches per chunk", "GPU ms per chunk", "% of kernel time", "kind"],
                  trows, **context, wall_s=round(time.perf_counter() - t0, 1))
    cpu = sorted((e for e in events if getattr(e, "self_cpu_time_total", 0) > 0),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    crows = [[e.key[:70], int(e.count) / chunks2, e.self_cpu_time_total / 1e3 / chunks2,
              100 * e.self_cpu_time_total / 1e6 / pwall] for e in cpu]
    res.table("Top host ops (self CPU time)", ["op", "calls per chunk", "CPU ms per chunk", "% of wall"], crows,
              **context, wall_s=round(time.perf_counter() - t0, 1))
    if not stages or (ctx.cuda and not kernels):
        return "fail", "the profiled stream recorded no stages or no kernels"
    dit = sum(v[0] for k, v in stages.items() if k.startswith("DiT"))
    return "pass", (f"{wall * 1e3 / chunks:.0f} ms per chunk synchronised: DiT {100 * dit / wall:.0f} %, host "
                    f"{100 * host / wall:.0f} %" + (f"; profiled: kernels {gpu_us / 1e3 / chunks2:.0f} ms per chunk, "
                                                    f"GPU busy {busy:.0f} %, {launches / chunks2:.0f} launches per chunk"
                                                    if ctx.cuda else ""))


PART_FUNCS = {"env": part_env, "build": part_build, "kernels": part_kernels, "kernel_timing": part_kernel_timing,
              "stream": part_stream, "baseline": part_baseline, "sanitizer": part_sanitizer, "profile": part_profile}


def child_main(args) -> int:
    res = PartResult(Path(args.result), args.run_part)
    if os.environ.get(TEST_HANG_ENV) == args.run_part:
        time.sleep(3600)
    ctx = Ctx(args)
    try:
        status, reason = PART_FUNCS[args.run_part](ctx, res)
    except Skip as e:
        status, reason = "skip", str(e)
    except Exception as e:  # noqa: BLE001 - the part fails with its error; the run goes on
        traceback.print_exc()
        status, reason = "fail", f"{type(e).__name__}: {_tail(str(e), 600)}"
    res.finish(status, reason)
    print(f"part {args.run_part}: {status}: {reason}")
    return 0


# =============================================================================================================
# parent side: run the parts, write the report
# =============================================================================================================
def _run_part(spec: PartSpec, timeout: float, args, tmpdir: Path, log) -> dict:
    result = tmpdir / f"{spec.name}.json"
    cmd = [sys.executable, str(SCRIPT), "--run-part", spec.name, "--result", str(result),
           "--deadline", f"{time.time() + timeout - 2:.3f}"] + child_flags(args)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(Path(args.build_dir) / "csrc")]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    header = f"\n===== part {spec.name}: {spec.title} (limit {timeout:.0f} s) =====\n"
    log.write(header)
    print(header, end="", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", **_new_group())
    _RUNNING[0] = proc
    captured: list[str] = []

    def pump():
        for line in proc.stdout:
            captured.append(line)
            log.write(line)
            print(f"[{spec.name}] {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        rc = proc.wait()
    _RUNNING[0] = None
    reader.join(timeout=10)
    wall = time.perf_counter() - t0
    try:
        data = json.loads(result.read_text())
    except (OSError, ValueError):
        data = {"status": "running", "reason": "", "results": {}, "tables": []}
    status, reason = data.get("status"), data.get("reason", "")
    if timed_out:
        last = next((ln.strip() for ln in reversed(captured) if ln.strip()), "(no output)")
        status, reason = "fail", (f"timed out after {timeout:.0f} s (its limit); the figures saved before are "
                                  f"kept; last output: {_tail(last, 200)}")
    elif status not in STATUSES:
        status, reason = "fail", f"exited with code {rc} before reporting a status: {_tail(''.join(captured), 300)}"
    elif rc != 0 and status == "pass":
        status, reason = "fail", f"exit code {rc} after reporting pass"
    return {"name": spec.name, "title": spec.title, "status": status, "reason": reason, "wall_s": round(wall, 1),
            "limit_s": round(timeout, 1), "timed_out": timed_out, "exit_code": rc,
            "command": f"python samples/gpu_check.py --parts {spec.name}{' --dry-run' if args.dry_run else ''} "
                       f"--out {args.out}",
            "results": data.get("results", {}), "tables": data.get("tables", []),
            "log_tail": _tail("".join(captured), 2000)}


_RUNNING: list = [None]  # the part running now, killed with its process group if this run is terminated


def _on_terminate(signum, frame):
    proc = _RUNNING[0]
    if proc is not None and proc.poll() is None:
        _kill_group(proc)
    raise SystemExit(128 + signum)


def child_flags(args) -> list[str]:
    flags = ["--out", str(args.out), "--build-dir", str(args.build_dir), "--preset", args.preset,
             "--precision", args.precision, "--stream-seconds", str(args.stream_seconds),
             "--resolution", str(args.resolution or 0),
             "--baseline-seconds", args.baseline_seconds, "--steps", str(args.steps), "--cfg", str(args.cfg)]
    if args.arch:
        flags += ["--arch", args.arch]
    if args.dry_run:
        flags.append("--dry-run")
    return flags


def summarize(parts: dict) -> dict:
    """The headline figures: streaming FPS, the baseline, their ratio (against the paper), the kernels' speed."""
    s = {"paper": PAPER}
    variants = [v for v in parts.get("stream", {}).get("results", {}).get("variants", []) if v.get("ok")]
    eager = next((v for v in variants if v["variant"] == "eager"), None)
    best = max(variants, key=lambda v: v["fps"]) if variants else None
    clips = parts.get("baseline", {}).get("results", {}).get("clips", [])
    if eager:
        s["stream_eager"] = {k: eager.get(k) for k in ("fps", "ttff_ms", "p50_ms", "p95_ms", "p99_ms",
                                                        "session_alloc_mb", "stream_peak_mb")}
    if best:
        s["stream_best"] = {"variant": best["variant"], "fps": best["fps"], "p50_ms": best["p50_ms"],
                            "p95_ms": best["p95_ms"], "ttff_ms": best["ttff_ms"]}
    if clips:
        s["baseline"] = [{"clip_s": c["clip_s"], "fps": c["fps"], "seconds": c["seconds"]} for c in clips]
        s["ratios"] = [{"clip_s": c["clip_s"],
                        "eager": eager["fps"] / c["fps"] if eager else None,
                        "best": best["fps"] / c["fps"] if best else None} for c in clips]
    kt = [f for f in parts.get("kernel_timing", {}).get("results", {}).get("timings", [])
          if f["impl"].startswith("lipforce")]
    if kt:
        s["kernels"] = [{"dtype": f["dtype"], "median_us": f["median_us"], "vs_sdpa_no_mask": f.get("vs_sdpa_no_mask"),
                         "x_floor_here": f["median_us"] / f["floor_us"]["measured"]} for f in kt]
    return s


def render_overview(rep: dict) -> str:
    """Mode, command, machine, the parts table and the headline figures."""
    m = rep["machine"]
    lines = ["# lipforce GPU check", ""]
    mode = ("GPU run" if rep["mode"] == "gpu" else
            "**dry run**: the code paths at the tiny preset's sizes on the CPU; the figures are not GPU figures")
    lines += [f"- mode: {mode}", f"- command: `{rep['command']}`",
              f"- started {rep['started']}, wall {rep['wall_s']:.0f} s (budget {rep['budget_s']:.0f} s)",
              f"- GPU: {m.get('gpu', 'none')}" + (f" (sm_{m['capability'].replace('.', '')}, {m.get('sms')} SMs, "
                                                   f"{m.get('gpu_memory_gib')} GiB)" if m.get("capability") else ""),
              f"- driver / nvidia-smi: {m.get('nvidia_smi', '-')}",
              f"- torch {m.get('torch', '?')} (CUDA {m.get('torch_cuda')}), Python {m.get('python', '?')}, "
              f"kernel {m.get('kernel', '?')}, {m.get('cpus', '?')} CPUs",
              f"- preset {rep['options']['preset']}, precision {rep['options']['precision']}", "",
              "## Parts", "", "| part | status | wall s | limit s | note |", "|---|---|---|---|---|"]
    for p in rep["parts"]:
        note = p["reason"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {p['name']} | {p['status']} | {p['wall_s']:.1f} | {p['limit_s']:.0f} | {note} |")
    s = rep["summary"]
    lines += ["", "## Headline", "", "| figure | value | paper |", "|---|---|---|"]
    if "stream_eager" in s:
        e = s["stream_eager"]
        lines.append(f"| streaming FPS, eager (TTFF / p50 / p95 ms) | {_fmt(e['fps'], 1)} ({_fmt(e['ttff_ms'], 0)} / "
                     f"{_fmt(e['p50_ms'], 1)} / {_fmt(e['p95_ms'], 1)}) | {PAPER['fps']:g} FPS |")
    if "stream_best" in s:
        b = s["stream_best"]
        lines.append(f"| streaming FPS, best: {b['variant']} (p50 / p95 ms) | {_fmt(b['fps'], 1)} "
                     f"({_fmt(b['p50_ms'], 1)} / {_fmt(b['p95_ms'], 1)}) | {PAPER['fps']:g} FPS |")
    for c, r in zip(s.get("baseline", []), s.get("ratios", [])):
        lines.append(f"| bidirectional baseline ({rep['options']['steps']} steps, CFG), {c['clip_s']:g} s clip | "
                     f"{_fmt(c['fps'], 2)} FPS ({_fmt(c['seconds'], 1)} s) | |")
        lines.append(f"| streaming / bidirectional, {c['clip_s']:g} s clip (eager, best) | {_fmt(r['eager'], 1)}x, "
                     f"{_fmt(r['best'], 1)}x | {PAPER['ratio']:g}x |")
    for k in s.get("kernels", []):
        lines.append(f"| lipforce kernels, {k['dtype']} | {_fmt(k['median_us'], 0)} us, "
                     f"{_fmt(k['vs_sdpa_no_mask'], 2)}x SDPA (no mask), {_fmt(k['x_floor_here'], 1)}x floor | |")
    if lines[-1].startswith("|---"):
        lines.append("| (no headline figure in this run) | - | |")
    return "\n".join(lines) + "\n"


def render_markdown(rep: dict) -> str:
    """The report: the overview, then every part's tables with their context, then the notes."""
    lines = [render_overview(rep).rstrip("\n")]
    for p in rep["parts"]:
        lines += ["", f"## {p['name']}: {p['title']} ({p['status']})", ""]
        if p["reason"]:
            lines += [p["reason"], ""]
        for t in p["tables"]:
            c = t["context"]
            lines += [f"**{t['title']}** — GPU: {c.get('gpu', '-')}; precision: {c.get('precision', '-')}; "
                      f"shapes: {c.get('shapes', '-')}; command: `{c.get('command', p['command'])}`; "
                      f"wall: {_fmt(c.get('wall_s'), 1)} s", ""]
            for key in sorted(set(c) - {"gpu", "precision", "shapes", "command", "wall_s"}):
                if c[key]:
                    lines += [f"- {key}: {c[key]}"]
            if set(c) - {"gpu", "precision", "shapes", "command", "wall_s"}:
                lines.append("")
            lines += ["| " + " | ".join(str(h).replace("|", "/") for h in t["columns"]) + " |",
                      "|" + "---|" * len(t["columns"])]
            for r in t["rows"]:
                lines.append("| " + " | ".join(str(v).replace("|", "/").replace("\n", " ") for v in r) + " |")
            lines.append("")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in rep["notes"]]
    return "\n".join(lines) + "\n"


def orchestrate(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    selected = PART_NAMES if not args.parts else tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in selected if p not in PART_NAMES]
    if unknown:
        raise SystemExit(f"--parts {','.join(unknown)}: unknown; parts are {', '.join(PART_NAMES)}")
    overrides = {}
    for item in args.part_limit or []:
        name, _, secs = item.partition("=")
        if name not in PART_NAMES or not secs:
            raise SystemExit(f"--part-limit {item!r}: expected NAME=SECONDS with NAME one of {', '.join(PART_NAMES)}")
        overrides[name] = float(secs)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t_start = time.time()
    deadline = t_start + args.budget
    tmpdir = Path(tempfile.mkdtemp(prefix="lipforce_gpu_check_"))
    records = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_terminate)
    try:
        with open(out / "gpu_check.log", "w") as log:
            log.write(f"lipforce gpu_check: {' '.join(sys.argv)}\nstarted {started}\n")
            for i, spec in enumerate(PARTS):
                if spec.name not in selected:
                    records.append(_skipped(spec, "not selected (--parts)", args))
                    continue
                later = sum(p.reserve_s for p in PARTS[i + 1:] if p.name in selected)
                limit = overrides.get(spec.name, spec.dry_limit_s if args.dry_run else spec.limit_s)
                timeout = part_timeout(limit, time.time(), deadline, later)
                if timeout < min(spec.reserve_s, limit):
                    records.append(_skipped(spec, f"time budget spent ({timeout:.0f} s left for it, needs "
                                                  f"{spec.reserve_s:.0f} s)", args))
                    continue
                rec = _run_part(spec, timeout, args, tmpdir, log)
                records.append(rec)
                line = f"== {spec.name}: {rec['status']} in {rec['wall_s']:.1f} s: {rec['reason']}"
                log.write(line + "\n")
                log.flush()
                print(line, flush=True)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    by_name = {r["name"]: r for r in records}
    machine = by_name.get("env", {}).get("results", {}).get("machine", {})
    rep = {"schema": 1, "mode": "dry-run" if args.dry_run else "gpu", "command": " ".join(["python"] + sys.argv),
           "device_command": DEVICE_COMMAND, "started": started, "wall_s": round(time.time() - t_start, 1),
           "budget_s": args.budget, "machine": machine,
           "options": {k: getattr(args, k) for k in ("preset", "resolution", "precision", "stream_seconds",
                                                     "baseline_seconds",
                                                     "steps", "cfg", "build_dir", "arch")},
           "parts": records, "summary": summarize(by_name), "notes": NOTES}
    rep["options"]["build_dir"] = str(rep["options"]["build_dir"])
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=_json_default))
    md = render_markdown(rep)
    (out / "report.md").write_text(md)
    print("\n" + render_overview(rep))
    print(f"report: {out / 'report.md'}, {out / 'report.json'}, log {out / 'gpu_check.log'}")
    return 1 if any(r["status"] == "fail" for r in records) else 0


def _skipped(spec: PartSpec, reason: str, args) -> dict:
    return {"name": spec.name, "title": spec.title, "status": "skip", "reason": reason, "wall_s": 0.0,
            "limit_s": 0.0, "timed_out": False, "exit_code": None,
            "command": f"python samples/gpu_check.py --parts {spec.name}{' --dry-run' if args.dry_run else ''} "
                       f"--out {args.out}", "results": {}, "tables": [], "log_tail": ""}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=f"device command: {DEVICE_COMMAND}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "build" / "gpu_check_report"),
                    help="folder for report.md, report.json and gpu_check.log")
    ap.add_argument("--dry-run", action="store_true",
                    help="no CUDA: the same code paths at the tiny preset's sizes on the CPU")
    ap.add_argument("--parts", default="", help=f"comma-separated subset of: {', '.join(PART_NAMES)}")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 390; dry run 300)")
    ap.add_argument("--part-limit", action="append", metavar="NAME=SECONDS", help="override one part's own limit")
    ap.add_argument("--preset", default=None, help="model preset (default 1.3b; dry run: tiny)")
    ap.add_argument("--resolution", type=int, default=None,
                    help="streaming/baseline crop size (default: the preset's; dry run: the smallest valid >= 64)")
    ap.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"],
                    help="streaming and baseline precision (default bf16; dry run fp32)")
    ap.add_argument("--stream-seconds", type=float, default=None, help="streamed clip (default 6; dry run 1)")
    ap.add_argument("--baseline-seconds", default=None,
                    help="baseline clip lengths, the later ones only if predicted to fit (default 2,4; dry run 0.5,1)")
    ap.add_argument("--steps", type=int, default=None, help="baseline Euler steps (default 50; dry run 4)")
    ap.add_argument("--cfg", type=float, default=4.5, help="baseline guidance scale")
    ap.add_argument("--build-dir", default=str(REPO / "build" / "gpu_check"), help="CMake build folder of _kvattn")
    ap.add_argument("--arch", default=None, help="CUDA architecture to build (default: the GPU's, e.g. 90)")
    ap.add_argument("--run-part", choices=PART_NAMES, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sanitize-case", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    dry = args.dry_run
    args.budget = args.budget if args.budget is not None else (300.0 if dry else 390.0)
    args.preset = args.preset or ("tiny" if dry else "1.3b")
    args.precision = args.precision or ("fp32" if dry else "bf16")
    args.stream_seconds = args.stream_seconds if args.stream_seconds is not None else (1.0 if dry else 6.0)
    args.baseline_seconds = args.baseline_seconds or ("0.5,1" if dry else "2,4")
    args.steps = args.steps if args.steps is not None else (4 if dry else 50)
    args.out = str(Path(args.out).resolve())
    args.build_dir = str(Path(args.build_dir).resolve())
    if args.deadline is None:
        args.deadline = time.time() + args.budget
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.sanitize_case:
        return sanitize_case_main(args.dry_run)
    if args.run_part:
        return child_main(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
