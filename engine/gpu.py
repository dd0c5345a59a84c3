"""The local CUDA GPU, if any: name, compute capability, driver. No torch.

Asked through cuda-python when it is installed (``cuda.bindings.runtime``, or ``cuda.cudart`` on
cuda-python < 12.6), else through ``nvidia-smi``. Both may be missing on a CPU-only build machine,
which TensorRT-RTX supports; then ``local_gpu()`` is ``None``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["GpuInfo", "local_gpu", "cuda_runtime_module", "cuda_versions"]


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]  # (8, 9) for an RTX 4090
    memory_bytes: int | None = None
    source: str = "cuda-python"

    @property
    def sm(self) -> str:
        """``"sm89"``: the spelling engine manifests use for compute capabilities."""
        major, minor = self.compute_capability
        return f"sm{major}{minor}"


def cuda_runtime_module():
    """cuda-python's runtime module, or ``None`` when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # older cuda-python
        return cudart
    except ImportError:
        return None


def cuda_versions() -> dict:
    """CUDA driver and runtime versions as cuda-python reports them (``"13.0"``), or why not."""
    cudart = cuda_runtime_module()
    if cudart is None:
        return {"error": "cuda-python is not installed (pip install cuda-python)"}
    out = {}
    for key, fn in (("driver", cudart.cudaDriverGetVersion), ("runtime", cudart.cudaRuntimeGetVersion)):
        err, v = fn()
        ok = int(err) == 0
        # The driver reports 0 when no driver is installed.
        out[key] = f"{v // 1000}.{(v % 1000) // 10}" if ok and v else None
    return out


def _from_cuda_python(device: int) -> GpuInfo | None:
    cudart = cuda_runtime_module()
    if cudart is None:
        return None
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count <= device:
        return None
    err, prop = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        return None
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name=name, compute_capability=(int(prop.major), int(prop.minor)),
                   memory_bytes=int(prop.totalGlobalMem), source="cuda-python")


def _from_nvidia_smi(device: int) -> GpuInfo | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    if res.returncode != 0 or len(lines) <= device:
        return None
    try:
        name, cc, mem = (p.strip() for p in lines[device].split(","))
        major, minor = (int(x) for x in cc.split("."))
        mem_bytes = int(float(mem)) * 1024 * 1024
    except ValueError:
        return None
    return GpuInfo(name=name, compute_capability=(major, minor), memory_bytes=mem_bytes, source="nvidia-smi")


def local_gpu(device: int = 0) -> GpuInfo | None:
    """The GPU engines would run on here, or ``None`` when there is none (or no way to ask)."""
    return _from_cuda_python(device) or _from_nvidia_smi(device)
