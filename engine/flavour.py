"""Which TensorRT: TensorRT-RTX (``tensorrt_rtx``) or full TensorRT (``tensorrt``), one code path.

Both modules expose the same builder/parser/runtime API; the differences the SDK meets are kept
here, on ``TensorRTFlavour``:

====================  ==========================================  ==============================
                      TensorRT-RTX (1.x)                          TensorRT (10.x)
====================  ==========================================  ==============================
build without a GPU   yes (ahead of time, CPU only)               no: builds for the local GPU
target selection      ``config.set_compute_capability`` (SM75,    the local GPU; optionally
                      SM80, SM86, SM89, SM120, SM121)              Ampere+ hardware compatibility
precision             strongly typed only: the ONNX types          strongly typed network (same
                                                                   flag), so one ONNX = one precision
timing cache          a no-op (deprecated since 1.2); kernels     ``create_timing_cache`` /
                      are compiled at run time and kept in the     ``set_timing_cache``, saved to a file
                      *runtime* cache (``IRuntimeConfig``)
plugins               none from Python (its ONNX parser aborts     ``get_plugin_registry().load_library``
                      the process on a Python plugin creator)
deserialize           needs a CUDA device                          needs a CUDA device
====================  ==========================================  ==============================
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Iterable, Sequence

from .errors import EngineError
from .gpu import GpuInfo

__all__ = [
    "FLAVOURS",
    "PRECISIONS",
    "RTX_COMPUTE_CAPABILITIES",
    "RTX_DEFAULT_TARGETS",
    "FP8_COMPUTE_CAPABILITY",
    "TensorRTFlavour",
    "detect_tensorrt",
    "parse_compute_capability",
    "install_hint",
]

log = logging.getLogger("lipforce.engine")

FLAVOURS = ("tensorrt_rtx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "fp8")
# Every compute capability TensorRT-RTX 1.x can target, and the set it targets when told nothing
# (its documented default: Ampere and later, no Turing, which needs an engine of its own).
RTX_COMPUTE_CAPABILITIES = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")
RTX_DEFAULT_TARGETS = ("sm80", "sm86", "sm89", "sm120", "sm121")
FP8_COMPUTE_CAPABILITY = (8, 9)  # Ada SM89, Hopper SM90, Blackwell SM100/SM120
BF16_COMPUTE_CAPABILITY = (8, 0)

_ALIASES = {
    "tensorrt_rtx": "tensorrt_rtx", "tensorrt-rtx": "tensorrt_rtx", "rtx": "tensorrt_rtx", "trt-rtx": "tensorrt_rtx",
    "tensorrt": "tensorrt", "trt": "tensorrt", "full": "tensorrt",
}
_LABEL = {"tensorrt_rtx": "TensorRT-RTX", "tensorrt": "TensorRT"}
_LOADED_PLUGIN_LIBRARIES: dict[str, object] = {}  # resolved path -> handle, process-wide like the registry


def install_hint() -> str:
    return ("install TensorRT-RTX (`pip install tensorrt-rtx`; RTX GPUs SM75-SM121, builds engines on a "
            "machine without a GPU) or TensorRT (`pip install tensorrt`, or JetPack on Jetson; "
            "Jetson Orin and datacenter GPUs, builds on the target GPU)")


def parse_compute_capability(value) -> str:
    """``86``, ``"8.6"``, ``"sm86"``, ``"SM_86"``, ``(8, 6)`` -> ``"sm86"``; ``120`` / ``"12.0"`` -> ``"sm120"``."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"sm{int(value[0])}{int(value[1])}"
    s = str(value).strip().lower().replace("_", "")
    if s.startswith("sm"):
        s = s[2:]
    try:
        if "." in s:
            major, minor = s.split(".")
            return f"sm{int(major)}{int(minor)}"
        n = int(s)
    except ValueError:
        raise EngineError(f"target compute capability {value!r} is not understood; "
                          "write it as 'sm86', '8.6' or 86") from None
    return f"sm{n}"


def _cc_tuple(sm: str) -> tuple[int, int]:
    digits = sm[2:]
    return int(digits[:-1]), int(digits[-1])


@dataclass
class TensorRTFlavour:
    """One importable TensorRT module and what it can do."""

    name: str  # "tensorrt_rtx" | "tensorrt"
    module: ModuleType = field(repr=False)
    version: str = ""

    # ---- what it supports ----
    @property
    def label(self) -> str:
        return _LABEL[self.name]

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def builds_without_gpu(self) -> bool:
        return self.is_rtx

    @property
    def supports_timing_cache(self) -> bool:
        return not self.is_rtx

    @property
    def supports_plugins(self) -> bool:
        return not self.is_rtx

    def _version_at_least(self, major: int, minor: int) -> bool:
        try:
            parts = tuple(int(x) for x in self.version.split(".")[:2])
        except ValueError:
            return False
        return parts >= (major, minor)

    @property
    def has_native_attention(self) -> bool:
        """A fused attention layer the ONNX parser maps the opset-23 ``Attention`` op to
        (TensorRT 10.14+ ``IAttention``; TensorRT-RTX)."""
        return hasattr(self.module, "IAttention") or self.is_rtx or self._version_at_least(10, 14)

    @property
    def has_native_kv_cache_update(self) -> bool:
        """``IKVCacheUpdateLayer`` / ``IRotaryEmbeddingLayer`` (TensorRT 10.15+)."""
        return hasattr(self.module, "IKVCacheUpdateLayer") or (not self.is_rtx and self._version_at_least(10, 15))

    def recommended_attention(self, precision: str) -> str:
        """The export flavour of the DiT step's attention for this TensorRT and precision.

        ``onnx_attention`` where a native fused attention layer exists (fp16/bf16; it has no fp32
        kernels); ``plugin`` on full TensorRT without one (JetPack 6's 10.3: the lipforce plugin is
        the only fused path); ``decomposed`` otherwise (fp32, or no plugin path).
        """
        if self.has_native_attention:
            return "onnx_attention" if precision in ("fp16", "bf16") else "decomposed"
        return "plugin" if self.supports_plugins else "decomposed"

    def describe(self) -> dict:
        return {"flavour": self.name, "version": self.version}

    def __str__(self) -> str:
        return f"{self.label} {self.version}"

    # ---- objects ----
    def make_logger(self, name: str = "lipforce.engine"):
        """A TensorRT logger that forwards to Python logging and keeps the error messages."""
        trt = self.module
        pylog = logging.getLogger(name)
        sev = trt.ILogger.Severity
        label = self.label

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                try:
                    if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                        self.errors.append(msg)
                        pylog.error("%s: %s", label, msg)
                    elif severity == sev.WARNING:
                        pylog.warning("%s: %s", label, msg)
                    else:
                        pylog.debug("%s: %s", label, msg)
                except Exception:  # never let an exception cross into TensorRT
                    pass

        return _Logger()

    def create_network(self, builder):
        """A strongly typed network: the precision of every tensor is the ONNX graph's."""
        flag = 1 << int(self.module.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return builder.create_network(flag)

    def progress_monitor(self, sink):
        """Wrap a plain ``BuildProgress``-like ``sink`` in this flavour's ``IProgressMonitor``."""
        base = self.module.IProgressMonitor

        class _Monitor(base):
            def __init__(self):
                base.__init__(self)

            def phase_start(self, phase_name, parent_phase, num_steps):
                try:
                    sink.phase_start(phase_name, parent_phase, num_steps)
                except Exception:  # pragma: no cover - a progress bar must never break a build
                    log.debug("progress monitor failed", exc_info=True)

            def step_complete(self, phase_name, step):
                try:
                    return bool(sink.step_complete(phase_name, step))
                except Exception:  # pragma: no cover
                    log.debug("progress monitor failed", exc_info=True)
                    return True

            def phase_finish(self, phase_name):
                try:
                    sink.phase_finish(phase_name)
                except Exception:  # pragma: no cover
                    log.debug("progress monitor failed", exc_info=True)

        return _Monitor()

    def dtype_name(self, dt) -> str:
        """A TensorRT ``DataType`` -> the manifest's dtype spelling (``"float16"``)."""
        DT = self.module.DataType
        table = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
                 "INT8": "int8", "UINT8": "uint8", "BOOL": "bool", "FP8": "float8e4m3fn", "INT4": "int4",
                 "FP4": "float4e2m1", "E8M0": "float8e8m0"}
        for key, name in table.items():
            if hasattr(DT, key) and dt == getattr(DT, key):
                return name
        return str(dt).rsplit(".", 1)[-1].lower()

    # ---- plugins ----
    def load_plugin_libraries(self, registry, paths: Iterable[str | Path]) -> list[Path]:
        """Load plugin libraries into ``registry`` (a builder's or runtime's plugin registry)."""
        paths = [Path(p) for p in paths]
        if not paths:
            return []
        if not self.supports_plugins:
            raise EngineError(
                f"{self} has no custom-plugin path from Python, so the plugin libraries "
                f"{[str(p) for p in paths]} cannot be used: export the portable flavour "
                "(attention as standard ONNX ops) or build with full TensorRT")
        loaded = []
        for p in paths:
            rp = p.resolve()
            if not rp.is_file():
                raise EngineError(f"plugin library {str(p)!r} does not exist: build it (CMake target of csrc/) "
                                  "or pass the right path")
            if str(rp) in _LOADED_PLUGIN_LIBRARIES:
                loaded.append(rp)
                continue
            handle = registry.load_library(str(rp))
            if handle is None:
                raise EngineError(f"{self} could not load the plugin library {str(rp)!r} (a plugin of the same name "
                                  "and version may already be registered, or the library was built against another "
                                  "TensorRT version); see the TensorRT log above")
            _LOADED_PLUGIN_LIBRARIES[str(rp)] = handle
            loaded.append(rp)
        return loaded

    def enable_plugin_features(self, config) -> list[str]:
        """Preview features a plugin graph needs: aliased plugin I/O (the KV-cache plugin writes the cache in
        place; TensorRT >= 10.3). Returns the names enabled."""
        enabled = []
        for name in ("ALIASED_PLUGIN_IO_10_03",):
            feature = getattr(self.module.PreviewFeature, name, None)
            if feature is not None:
                config.set_preview_feature(feature, True)
                enabled.append(name)
        return enabled

    # ---- timing cache ----
    def attach_timing_cache(self, config, path: str | Path | None):
        """Load (or start) the timing cache at ``path`` into ``config``; returns the cache object or None."""
        if path is None:
            return None
        if not self.supports_timing_cache:
            log.info("%s: the timing cache is a no-op (kernels are compiled at run time and kept in the runtime "
                     "cache); %s is neither read nor written", self, path)
            return None
        p = Path(path)
        blob = p.read_bytes() if p.is_file() else b""
        cache = config.create_timing_cache(blob)
        if cache is None or not config.set_timing_cache(cache, False):
            if not blob:
                raise EngineError(f"{self} could not create a timing cache")
            log.warning("timing cache %s does not fit this GPU/TensorRT; starting a new one", p)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
        return cache

    def save_timing_cache(self, config, path: str | Path | None) -> int:
        """Write the config's timing cache to ``path``; returns the bytes written (0 when unsupported)."""
        if path is None or not self.supports_timing_cache:
            return 0
        cache = config.get_timing_cache()
        if cache is None:
            return 0
        blob = cache.serialize()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
        tmp.replace(p)
        return p.stat().st_size

    # ---- target GPUs ----
    def configure_target(self, config, target, *, precision: str, gpu: GpuInfo | None) -> dict:
        """Point ``config`` at the GPUs the engine must run on; returns the manifest's ``target`` record.

        TensorRT-RTX: ``target`` is ``None`` (the local GPU when there is one it supports, else the
        portable set ``RTX_DEFAULT_TARGETS``), ``"portable"``, ``"current"`` (needs a GPU), or one or
        more compute capabilities (``"sm86"``, ``"8.6,8.9"``, ``["sm86", 89]``).
        TensorRT: the engine is built for the local GPU; ``target`` is ``None``/``"current"``, that
        GPU's compute capability, or ``"ampere_plus"`` (hardware compatibility with Ampere and later).
        """
        if self.is_rtx:
            return self._configure_rtx_target(config, target, precision=precision, gpu=gpu)
        return self._configure_full_target(config, target, precision=precision, gpu=gpu)

    def _configure_rtx_target(self, config, target, *, precision, gpu) -> dict:
        CC = self.module.ComputeCapability
        if target is None:
            if gpu is not None and gpu.sm in RTX_COMPUTE_CAPABILITIES:
                sms, why = [gpu.sm], f"local GPU ({gpu.name})"
            else:
                if gpu is not None:
                    log.warning("the local GPU %s (%s) is not a TensorRT-RTX target; building the portable set %s",
                                gpu.name, gpu.sm, ", ".join(RTX_DEFAULT_TARGETS))
                sms, why = list(RTX_DEFAULT_TARGETS), "default portable set"
                if precision == "fp8":
                    sms = [s for s in sms if _cc_tuple(s) >= FP8_COMPUTE_CAPABILITY]
                    why += " (fp8: SM89 and later)"
        elif isinstance(target, str) and target.lower() == "portable":
            sms, why = list(RTX_DEFAULT_TARGETS), "requested portable set"
            if precision == "fp8":
                sms = [s for s in sms if _cc_tuple(s) >= FP8_COMPUTE_CAPABILITY]
        elif isinstance(target, str) and target.lower() == "current":
            if gpu is None:
                raise EngineError("target='current' needs a CUDA GPU and none was found; name the compute "
                                  "capabilities instead (e.g. target='sm89'; supported: "
                                  f"{', '.join(RTX_COMPUTE_CAPABILITIES)})")
            sms, why = [gpu.sm], f"current GPU ({gpu.name})"
        else:
            items = _target_items(target)
            sms = []
            for t in items:
                sm = parse_compute_capability(t)
                if sm not in RTX_COMPUTE_CAPABILITIES:
                    raise EngineError(f"target {t!r} ({sm}) is not a TensorRT-RTX target; supported: "
                                      f"{', '.join(RTX_COMPUTE_CAPABILITIES)} (Jetson Orin SM87 and Hopper SM90 "
                                      "need full TensorRT)")
                if sm not in sms:
                    sms.append(sm)
            why = "requested"
        _check_precision_on(sms, precision, self)
        config.num_compute_capabilities = len(sms)
        for i, sm in enumerate(sms):
            if not config.set_compute_capability(getattr(CC, sm.upper()), i):
                raise EngineError(f"{self} refused target compute capability {sm}")
        return {"compute_capabilities": sms, "selected_by": why}

    def _configure_full_target(self, config, target, *, precision, gpu) -> dict:
        if gpu is None:
            raise EngineError(f"{self} builds engines on the GPU they will run on and no CUDA GPU was found; "
                              "build on the target device, or use TensorRT-RTX (`pip install tensorrt-rtx`) to "
                              "build for RTX GPUs on a machine without one")
        rec = {"gpu": gpu.name, "compute_capability": gpu.sm, "hardware_compatibility": "none"}
        if target is None or (isinstance(target, str) and target.lower() == "current"):
            pass
        elif isinstance(target, str) and target.lower().replace("+", "_plus").replace("-", "_") == "ampere_plus":
            level = self.module.HardwareCompatibilityLevel.AMPERE_PLUS
            config.hardware_compatibility_level = level
            rec["hardware_compatibility"] = "ampere_plus"
        else:
            sms = {parse_compute_capability(t) for t in _target_items(target)}
            if sms != {gpu.sm}:
                raise EngineError(f"{self} builds for the GPU it runs on ({gpu.name}, {gpu.sm}), not for "
                                  f"{', '.join(sorted(sms))}: build on the target device, use target='ampere_plus', "
                                  "or use TensorRT-RTX for RTX GPUs")
        _check_precision_on([gpu.sm], precision, self)
        return rec


def _target_items(target) -> list:
    """``"8.6,8.9"`` / ``"sm86"`` / ``86`` / ``["sm86", 89]`` -> a list of items."""
    if isinstance(target, str):
        return [t for t in (s.strip() for s in target.split(",")) if t]
    if isinstance(target, int):
        return [target]
    return list(target)


def _check_precision_on(sms: Sequence[str], precision: str, flavour: TensorRTFlavour) -> None:
    if not sms:
        raise EngineError(f"no target compute capability left for precision={precision!r}")
    if precision == "fp8":
        low = [s for s in sms if _cc_tuple(s) < FP8_COMPUTE_CAPABILITY]
        if low:
            raise EngineError(f"precision='fp8' runs on Ada (SM89), Hopper (SM90) and Blackwell (SM100/SM120) GPUs, "
                              f"not on {', '.join(low)}: pick targets SM89 or later, or build fp16/bf16")
    if precision == "bf16":
        low = [s for s in sms if _cc_tuple(s) < BF16_COMPUTE_CAPABILITY]
        if low:
            raise EngineError(f"precision='bf16' needs Ampere (SM80) or later, not {', '.join(low)} (Turing): "
                              "build an fp16 engine for Turing")


def _import(name: str) -> TensorRTFlavour:
    mod = importlib.import_module(name)
    version = str(getattr(mod, "__version__", "") or "unknown")
    # A placeholder wheel can import without the API.
    if not hasattr(mod, "Builder"):
        raise ImportError(f"{name} {version} imports but has no Builder (a placeholder package?)")
    return TensorRTFlavour(name=name, module=mod, version=version)


def detect_tensorrt(prefer: str | TensorRTFlavour | None = None, *, gpu: GpuInfo | None = None) -> TensorRTFlavour:
    """The TensorRT module to use.

    ``prefer`` names one (``"tensorrt_rtx"``/``"rtx"`` or ``"tensorrt"``/``"trt"``): it must import.
    With none named: the one that imports; when both do, TensorRT-RTX if there is no GPU or the GPU
    is a TensorRT-RTX target, else full TensorRT (Jetson Orin SM87, Hopper SM90, ...).
    """
    if isinstance(prefer, TensorRTFlavour):
        return prefer
    if prefer is not None:
        key = _ALIASES.get(str(prefer).lower())
        if key is None:
            raise EngineError(f"unknown TensorRT flavour {prefer!r}; expected 'tensorrt_rtx' or 'tensorrt'")
        try:
            return _import(key)
        except Exception as e:
            raise EngineError(f"{_LABEL[key]} was asked for but `import {key}` failed ({e}); {install_hint()}") from e
    found, errors = {}, {}
    for key in FLAVOURS:
        try:
            found[key] = _import(key)
        except Exception as e:  # ImportError, or OSError from a missing shared library
            errors[key] = f"{type(e).__name__}: {e}"
    if not found:
        raise EngineError("no TensorRT found: `import tensorrt_rtx` failed "
                          f"({errors['tensorrt_rtx']}) and `import tensorrt` failed ({errors['tensorrt']}); "
                          + install_hint())
    if len(found) == 1:
        return next(iter(found.values()))
    if gpu is None:
        from .gpu import local_gpu
        gpu = local_gpu()
    if gpu is None or gpu.sm in RTX_COMPUTE_CAPABILITIES:
        return found["tensorrt_rtx"]
    return found["tensorrt"]
