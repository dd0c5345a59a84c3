"""Checking an engine before it runs, and loading it.

``check_engine`` verifies, in order: the engine file's sha256 against its manifest entry (a
corrupted or replaced file), the running TensorRT flavour and version against the one that built
it (engines are not portable across versions), the ONNX hash the engine was built from against the
model manifest's (a stale engine), the plugin libraries it needs, and, where there is a GPU, the
GPU's compute capability against the engine's targets. Then it deserializes the engine, which
needs a CUDA device with either TensorRT (TensorRT-RTX 1.7's ``deserialize_cuda_engine`` fails with
``cudaErrorInsufficientDriver`` on a machine without one): without a GPU the check stops there and
says so in ``EngineCheck.skipped``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EngineError
from .flavour import RTX_COMPUTE_CAPABILITIES, TensorRTFlavour, detect_tensorrt
from .gpu import GpuInfo, local_gpu
from .manifest import (MANIFEST_NAME, PLUGIN_LIBRARY_NAME, default_plugin_library, read_engine_manifest,
                       read_model_manifest)
from .onnx_graph import file_sha256

__all__ = ["EngineCheck", "LoadedEngine", "check_engine", "load_engine"]

_REBUILD = "rebuild with `lipforce build`"


@dataclass
class EngineCheck:
    """What ``check_engine`` verified for one graph's engine."""

    graph: str
    engine_path: Path
    flavour: str
    version: str
    passed: list[str] = field(default_factory=list)
    gpu: str | None = None
    deserialized: bool = False
    skipped: str | None = None  # why deserialization (or the GPU check) did not run


@dataclass
class LoadedEngine:
    """A deserialized engine with what keeps it alive (runtime, logger) and its manifest entry."""

    graph: str
    entry: dict
    manifest: dict
    flavour: TensorRTFlavour
    runtime: object
    engine: object
    logger: object
    check: EngineCheck
    engine_dir: Path


def _entry(manifest: dict, engine_dir: Path, graph: str) -> dict:
    engines = manifest["engines"]
    if graph not in engines:
        raise EngineError(f"{engine_dir / MANIFEST_NAME} has no engine for graph {graph!r} (it has "
                          f"{sorted(engines)}); {_REBUILD}")
    return engines[graph]


def _resolve_plugin(path: str) -> Path | None:
    p = Path(path)
    if p.is_file():
        return p
    if p.name == PLUGIN_LIBRARY_NAME:
        return default_plugin_library()
    return None


def _gpu_fits(entry: dict, gpu: GpuInfo, flavour: TensorRTFlavour) -> None:
    target = entry.get("target") or {}
    if flavour.is_rtx:
        sms = target.get("compute_capabilities") or []
        if gpu.sm not in sms:
            extra = "" if gpu.sm in RTX_COMPUTE_CAPABILITIES else " (not a TensorRT-RTX target: use full TensorRT)"
            raise EngineError(f"engine {entry['file']} was built for {', '.join(sms) or '?'} and this GPU is "
                              f"{gpu.name} ({gpu.sm}){extra}; {_REBUILD} (target='current' or one including {gpu.sm})")
        return
    built = target.get("compute_capability")
    if target.get("hardware_compatibility") == "ampere_plus":
        if gpu.compute_capability < (8, 0):
            raise EngineError(f"engine {entry['file']} is Ampere+ compatible and this GPU is {gpu.name} ({gpu.sm}); "
                              f"{_REBUILD} on this GPU")
        return
    if built != gpu.sm:
        raise EngineError(f"engine {entry['file']} was built on {target.get('gpu', '?')} ({built}) and this GPU is "
                          f"{gpu.name} ({gpu.sm}); full TensorRT engines run on the GPU they were built for: "
                          f"{_REBUILD} on this GPU")


def _verify(engine_dir, graph, *, model_dir, flavour, read_bytes: bool):
    engine_dir = Path(engine_dir)
    manifest = read_engine_manifest(engine_dir)
    entry = _entry(manifest, engine_dir, graph)
    path = engine_dir / entry["file"]
    if not path.is_file():
        raise EngineError(f"engine file {path} (graph {graph!r}) is missing; {_REBUILD}")

    # 1. the file is the one that was built
    blob = path.read_bytes() if read_bytes else None
    digest = hashlib.sha256(blob).hexdigest() if blob is not None else file_sha256(path)
    if digest != entry["sha256"]:
        raise EngineError(f"engine file {path} is corrupted or was replaced: its sha256 is {digest[:16]}... and the "
                          f"manifest records {entry['sha256'][:16]}...; {_REBUILD}")
    rec = EngineCheck(graph=graph, engine_path=path, flavour=entry["tensorrt"]["flavour"],
                      version=entry["tensorrt"]["version"], passed=["engine sha256"])

    # 2. the TensorRT that runs it is the one that built it
    built = entry["tensorrt"]
    label = {"tensorrt_rtx": "TensorRT-RTX", "tensorrt": "TensorRT"}.get(built["flavour"], built["flavour"])
    if flavour is not None:
        fl = detect_tensorrt(flavour)
        if fl.name != built["flavour"]:
            raise EngineError(f"engine {path.name} was built with {label} {built['version']} and {fl} was asked to "
                              f"run it; {_REBUILD} using {fl.label}")
    else:
        try:
            fl = detect_tensorrt(built["flavour"])
        except EngineError as e:
            raise EngineError(f"engine {path.name} was built with {label} {built['version']}, which does not import "
                              f"here ({e}); install {built['flavour'].replace('_', '-')}=={built['version']} or "
                              f"{_REBUILD}") from e
    if fl.version != built["version"]:
        raise EngineError(f"engine {path.name} was built with {label} {built['version']} and this is {fl.label} "
                          f"{fl.version}: engines do not move between versions; {_REBUILD} (or install "
                          f"{built['flavour'].replace('_', '-')}=={built['version']})")
    rec.passed.append(f"{fl.label} {fl.version}")

    # 3. the ONNX graph it was built from is the model's current one
    built_from = str(entry.get("onnx_sha256"))[:16]
    graph_sha = (manifest.get("graphs", {}).get(graph) or {}).get("sha256")
    if graph_sha is not None and graph_sha != entry.get("onnx_sha256"):
        raise EngineError(f"engine {path.name} is stale: built from ONNX sha256 {built_from}... "
                          f"but {engine_dir / MANIFEST_NAME} lists graph {graph!r} as {graph_sha[:16]}...; {_REBUILD}")
    if model_dir is not None:
        model = read_model_manifest(model_dir)
        msha = (model["graphs"].get(graph) or {}).get("sha256")
        if msha != entry.get("onnx_sha256"):
            raise EngineError(f"engine {path.name} is stale: built from ONNX sha256 {built_from}"
                              f"... but the model in {model_dir} has {str(msha)[:16]}... for graph {graph!r}; "
                              f"{_REBUILD} --model {model_dir}")
    rec.passed.append("onnx sha256")

    # 4. plugin libraries
    libs = []
    for lib in entry.get("plugin_libraries") or []:
        p = _resolve_plugin(lib["path"])
        if p is None:
            raise EngineError(f"engine {path.name} needs the plugin library {lib['path']} and it is not there; build "
                              "it (csrc/, CMake) or install the SDK wheel that ships it")
        if file_sha256(p) != lib["sha256"]:
            raise EngineError(f"plugin library {p} changed since engine {path.name} was built (sha256 differs); "
                              f"{_REBUILD}")
        libs.append(p)
    if libs:
        rec.passed.append("plugin libraries")

    # 5. the GPU
    gpu = local_gpu()
    if gpu is None:
        rec.skipped = (f"no CUDA GPU here: the compute-capability check and deserialization need one "
                       f"({fl} cannot deserialize an engine without a CUDA device)")
    else:
        _gpu_fits(entry, gpu, fl)
        rec.gpu = f"{gpu.name} ({gpu.sm})"
        rec.passed.append(f"GPU {gpu.sm}")
    return manifest, entry, fl, blob, libs, gpu, rec


def _deserialize(fl: TensorRTFlavour, blob: bytes, entry: dict, libs, path: Path):
    logger = fl.make_logger()
    runtime = fl.module.Runtime(logger)
    if libs:
        fl.load_plugin_libraries(runtime.get_plugin_registry(), libs)
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise EngineError(f"{fl} could not deserialize {path}: {'; '.join(logger.errors) or 'no message'}; "
                          f"{_REBUILD}, and run `lipforce doctor` if it persists")
    # The engine's I/O must be what the manifest (and so the runner) expects.
    got = {}
    for i in range(engine.num_io_tensors):
        n = engine.get_tensor_name(i)
        got[n] = (list(engine.get_tensor_shape(n)), fl.dtype_name(engine.get_tensor_dtype(n)))
    for t in entry["inputs"] + entry["outputs"]:
        g = got.get(t["name"])
        if g is None or g[1] != t["dtype"] or len(g[0]) != len(t["shape"]) or any(
                a >= 0 and a != b for a, b in zip(g[0], t["shape"])):
            raise EngineError(f"engine {path.name}: tensor {t['name']!r} is {g} in the engine but "
                              f"{t['dtype']}{t['shape']} in the manifest; {_REBUILD}")
    return runtime, engine, logger


def check_engine(engine_dir: str | Path, graph: str, *, model_dir: str | Path | None = None,
                 flavour: str | None = None, deserialize: bool = True) -> EngineCheck:
    """Verify ``engine_dir``'s engine for ``graph``; raise ``EngineError`` naming the problem and the fix.

    ``model_dir``: also compare with the model directory's current ONNX hashes. ``deserialize``:
    deserialize the engine as the last check (only where there is a GPU). Returns what passed.
    """
    manifest, entry, fl, _, libs, gpu, rec = _verify(engine_dir, graph, model_dir=model_dir, flavour=flavour,
                                                     read_bytes=False)
    if deserialize and gpu is not None:
        _deserialize(fl, rec.engine_path.read_bytes(), entry, libs, rec.engine_path)
        rec.deserialized = True
        rec.passed.append("deserialized")
    elif not deserialize and rec.skipped is None:
        rec.skipped = "deserialization not asked for"
    return rec


def load_engine(engine_dir: str | Path, graph: str, *, model_dir: str | Path | None = None,
                flavour: str | None = None) -> LoadedEngine:
    """``check_engine`` then deserialize; needs a CUDA GPU."""
    manifest, entry, fl, blob, libs, gpu, rec = _verify(engine_dir, graph, model_dir=model_dir, flavour=flavour,
                                                        read_bytes=True)
    if gpu is None:
        raise EngineError(f"cannot load engine {rec.engine_path}: {rec.skipped}. Run on a machine with a CUDA GPU, or "
                          "use the onnxruntime backend")
    runtime, engine, logger = _deserialize(fl, blob, entry, libs, rec.engine_path)
    rec.deserialized = True
    rec.passed.append("deserialized")
    return LoadedEngine(graph=graph, entry=entry, manifest=manifest, flavour=fl, runtime=runtime, engine=engine,
                        logger=logger, check=rec, engine_dir=Path(engine_dir))
