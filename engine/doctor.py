"""``doctor()``: what this machine has for building and running lipforce engines."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import shutil
import subprocess
import sys

from .flavour import FLAVOURS, RTX_COMPUTE_CAPABILITIES, install_hint
from .gpu import cuda_runtime_module, cuda_versions, local_gpu
from .manifest import PLUGIN_LIBRARY_NAME, default_plugin_library

__all__ = ["doctor", "format_doctor"]


def _dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _run(cmd: list[str]) -> str | None:
    exe = shutil.which(cmd[0])
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"failed: {e}"
    return (r.stdout or r.stderr).strip()


def doctor() -> dict:
    """A report of Python, torch, ONNX Runtime, TensorRT, CUDA, the GPU and the plugin library.

    Imports nothing heavy that is not needed: torch is reported from its installed metadata, not
    imported. Every section is present; a missing component says so and how to get it.
    """
    rep: dict = {"python": {"version": platform.python_version(), "executable": sys.executable,
                            "platform": platform.platform()}}
    rep["numpy"] = _dist_version("numpy")
    torch_v = _dist_version("torch")
    rep["torch"] = torch_v or "not installed (only needed for export and the torch backend: pip install torch)"
    rep["onnx"] = _dist_version("onnx") or "not installed (needed to build engines: pip install onnx)"
    try:
        ort = importlib.import_module("onnxruntime")
        rep["onnxruntime"] = {"version": ort.__version__, "providers": list(ort.get_available_providers())}
    except Exception as e:
        rep["onnxruntime"] = {"error": f"{type(e).__name__}: {e} (pip install onnxruntime)"}

    trt = {}
    for name in FLAVOURS:
        try:
            mod = importlib.import_module(name)
            entry = {"version": str(getattr(mod, "__version__", "unknown"))}
            if not hasattr(mod, "Builder"):
                entry["error"] = "imports but has no Builder (placeholder package?)"
            trt[name] = entry
        except Exception as e:
            trt[name] = {"error": f"{type(e).__name__}: {e}"}
    usable = [n for n in FLAVOURS if "error" not in trt[n]]
    trt["usable"] = usable
    if not usable:
        trt["hint"] = install_hint()
    rep["tensorrt"] = trt

    cuda = {"cuda-python": _dist_version("cuda-python") or _dist_version("cuda-bindings")}
    if cuda_runtime_module() is not None:
        cuda.update(cuda_versions())
    else:
        cuda["note"] = "cuda-python is not installed (the TensorRT backend needs it: pip install cuda-python)"
    nvcc = _run(["nvcc", "--version"])
    if nvcc:
        cuda["nvcc"] = next((ln.strip() for ln in nvcc.splitlines() if "release" in ln), nvcc.splitlines()[-1])
    else:
        cuda["nvcc"] = None
    smi = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    cuda["nvidia_smi_driver"] = smi.splitlines()[0] if smi else None
    rep["cuda"] = cuda

    gpu = local_gpu()
    if gpu is None:
        rep["gpu"] = {"found": False, "note": "no CUDA GPU: TensorRT-RTX can still build engines here; running them "
                                             "needs a GPU"}
    else:
        rep["gpu"] = {"found": True, "name": gpu.name, "compute_capability": gpu.sm,
                      "memory_gib": round(gpu.memory_bytes / 2**30, 1) if gpu.memory_bytes else None,
                      "tensorrt_rtx_target": gpu.sm in RTX_COMPUTE_CAPABILITIES, "via": gpu.source}

    lib = default_plugin_library()
    rep["plugin_library"] = {"found": lib is not None, "path": str(lib) if lib else None,
                             "expected": f"lipforce_sdk/lib/{PLUGIN_LIBRARY_NAME}"}
    return rep


def format_doctor(report: dict | None = None) -> str:
    """``doctor()``'s report as aligned text lines (for ``lipforce doctor``)."""
    rep = doctor() if report is None else report
    lines = []

    def flat(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                flat(f"{prefix}.{k}" if prefix else k, x)
        else:
            if isinstance(v, list):
                v = ", ".join(map(str, v)) or "(none)"
            lines.append((prefix, "-" if v is None else str(v)))

    flat("", rep)
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)
