"""ONNX -> TensorRT engine, for one graph (``build_engine``) or a model directory (``build_model``)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .errors import EngineError
from .flavour import PRECISIONS, TensorRTFlavour, detect_tensorrt
from .gpu import local_gpu
from .manifest import (MANIFEST_NAME, default_plugin_library, read_model_manifest, write_json_atomic)
from .onnx_graph import check_graph_precision, file_sha256, inspect_onnx
from .progress import BuildProgress

__all__ = ["build_engine", "build_model", "infer_state_mapping"]

log = logging.getLogger("lipforce.engine")

_STATE_IN = re.compile(r"^(?P<head>.+)_(?P<idx>\d+)$")


def infer_state_mapping(input_names: Iterable[str], output_names: Iterable[str]) -> dict[str, str]:
    """``{"kv_k_0": "kv_k_out_0", ...}``: inputs ``<head>_<i>`` whose ``<head>_out_<i>`` is an output."""
    outs = set(output_names)
    mapping = {}
    for name in input_names:
        m = _STATE_IN.match(name)
        if m and f"{m['head']}_out_{m['idx']}" in outs:
            mapping[name] = f"{m['head']}_out_{m['idx']}"
    return mapping


def _parse_errors(parser, onnx_path: Path) -> str:
    lines = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        where = ""
        try:
            node, name, op = e.node(), e.node_name(), e.node_operator()
            if node >= 0 or name:
                where = f"node {node} {name!r} ({op}): "
        except AttributeError:  # older parsers: no node name/operator
            where = f"node {e.node()}: "
        lines.append(f"  {where}{e.desc()} [{e.code()}]")
    return f"TensorRT could not parse {onnx_path}:\n" + "\n".join(lines)


def _static_profile(builder, config, network, shapes: Mapping[str, Sequence[int]] | None, onnx_path: Path,
                    batch: tuple[int, int, int] | None = None) -> dict:
    """One optimization profile pinning every dynamic input to its static shape; returns them.

    ``batch = (min, opt, max)``: a leading axis given as -1 in ``shapes`` is the batch axis of a
    batched model; the profile spans it from min to max (tuned at opt) and it stays dynamic in
    the engine (not returned as pinned)."""
    pinned = {}
    dynamic = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if any(d < 0 for d in t.shape):
            dynamic.append(t)
    if not dynamic:
        return pinned
    profile = builder.create_optimization_profile()
    for t in dynamic:
        want = (shapes or {}).get(t.name)
        if want is None:
            raise EngineError(f"input {t.name!r} of {onnx_path.name} has a dynamic shape {tuple(t.shape)}: pass its "
                              f"static shape (shapes={{{t.name!r}: [...]}}; the model manifest lists it)")
        want = tuple(int(d) for d in want)
        if len(want) != len(t.shape) or any(g >= 0 and g != w for g, w in zip(t.shape, want)):
            raise EngineError(f"shape {list(want)} for input {t.name!r} does not fit its graph shape {tuple(t.shape)} "
                              f"in {onnx_path.name}")
        if t.is_shape_tensor:
            raise EngineError(f"input {t.name!r} of {onnx_path.name} is a shape tensor; the lipforce graphs have "
                              "static shapes: re-export without dynamic axes")
        if batch is not None and want and want[0] < 0 and all(d >= 0 for d in want[1:]):
            lo, opt, hi = batch
            profile.set_shape(t.name, (lo, *want[1:]), (opt, *want[1:]), (hi, *want[1:]))
            continue
        if any(d < 0 for d in want):
            raise EngineError(f"input {t.name!r} of {onnx_path.name} has the dynamic shape {list(want)}: the engines "
                              "are static except for the batch axis of a model exported with max_batch > 1; "
                              "re-export the model (`lipforce export`)")
        profile.set_shape(t.name, want, want, want)
        pinned[t.name] = list(want)
    config.add_optimization_profile(profile)
    return pinned


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str,
                 timing_cache: str | Path | None = None, plugin_libraries: Sequence[str | Path] = (),
                 target=None, progress: bool | BuildProgress = True, workspace: int | None = None,
                 flavour: str | TensorRTFlavour | None = None, shapes: Mapping[str, Sequence[int]] | None = None,
                 state: Mapping[str, str] | None = None, max_batch: int = 1, opt_batch: int | None = None) -> dict:
    """Build one TensorRT engine from one ONNX graph; returns its engine manifest entry.

    ``precision``: ``"fp32"``, ``"fp16"``, ``"bf16"`` (must be the graph's own precision: the network is
    strongly typed) or ``"fp8"`` (only for a graph with FP8 Q/DQ nodes, on SM89+).
    ``timing_cache``: a file read before and written after the build (full TensorRT; a no-op in
    TensorRT-RTX, which compiles kernels at run time). ``plugin_libraries``: shared libraries loaded
    before parsing (full TensorRT only). ``target``: see ``TensorRTFlavour.configure_target``.
    ``progress``: True for tqdm bars, False for none, or a ``BuildProgress`` to keep its record.
    ``workspace``: builder workspace limit in bytes. ``flavour``: ``"tensorrt_rtx"``/``"tensorrt"``
    (default: what imports). ``shapes``: static shapes for dynamic inputs. ``state``: state input ->
    output names (default: inferred from the ``<name>_<i>`` -> ``<name>_out_<i>`` convention).
    ``max_batch``: > 1 for a batched graph (``lipforce export --max-batch``): inputs whose leading
    axis is -1 in ``shapes`` get the optimization profile 1 / ``opt_batch`` (default ``max_batch``)
    / ``max_batch`` on it.
    """
    t0 = time.perf_counter()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if precision not in PRECISIONS:
        raise EngineError(f"precision={precision!r} is not supported; expected one of {', '.join(PRECISIONS)}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise EngineError(f"max_batch={max_batch!r} must be an integer >= 1")
    opt_batch = max_batch if opt_batch is None else opt_batch
    if not 1 <= opt_batch <= max_batch:
        raise EngineError(f"opt_batch={opt_batch} must lie in 1..max_batch={max_batch}")
    batch = (1, opt_batch, max_batch) if max_batch > 1 else None
    if not onnx_path.is_file():
        raise EngineError(f"ONNX file {onnx_path} does not exist; export the model first (lipforce export)")
    fl = detect_tensorrt(flavour)
    trt = fl.module

    info = inspect_onnx(onnx_path)
    check_graph_precision(info, precision)
    plugin_libraries = [Path(p) for p in plugin_libraries]
    if plugin_libraries and not fl.supports_plugins:
        raise EngineError(f"{fl} has no custom-plugin path from Python, so the plugin libraries "
                          f"{[str(p) for p in plugin_libraries]} cannot be used: export the portable flavour "
                          "(attention as standard ONNX ops) or build with full TensorRT")
    if info.custom_ops and not fl.supports_plugins:
        ops = ", ".join(sorted({f"{d}::{op}" for d, op, _ in info.custom_ops}))
        raise EngineError(f"{onnx_path.name} has custom-domain nodes ({ops}) that need the lipforce TensorRT plugin, "
                          f"and {fl} has no plugin path from Python: export the portable flavour, or build with full "
                          "TensorRT")

    gpu = local_gpu()
    logger = fl.make_logger()
    try:
        builder = trt.Builder(logger)
    except Exception as e:
        raise EngineError(f"{fl} could not create a builder ({e}); run `lipforce doctor`") from e
    if builder is None:
        raise EngineError(f"{fl} could not create a builder: {'; '.join(logger.errors) or 'no CUDA GPU?'}; "
                          "run `lipforce doctor`")
    loaded_libs = fl.load_plugin_libraries(builder.get_plugin_registry(), plugin_libraries)

    network = fl.create_network(builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineError(_parse_errors(parser, onnx_path) + "\nfix the exporter for these nodes, or run "
                          "`lipforce doctor` to check the TensorRT version")

    config = builder.create_builder_config()
    if workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    target_rec = fl.configure_target(config, target, precision=precision, gpu=gpu)
    preview = fl.enable_plugin_features(config) if loaded_libs else []
    pinned = _static_profile(builder, config, network, shapes, onnx_path, batch)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_loaded = 0
    if cache_path is not None and cache_path.is_file() and fl.supports_timing_cache:
        cache_loaded = cache_path.stat().st_size
    timing = fl.attach_timing_cache(config, cache_path)  # must outlive the build

    own_progress = not isinstance(progress, BuildProgress)
    sink = BuildProgress(disable=not progress, label=onnx_path.stem) if own_progress else progress
    monitor = fl.progress_monitor(sink) if (progress is not False) else None
    if monitor is not None:
        config.progress_monitor = monitor
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if own_progress:
            sink.close()
    if sink.cancelled:
        raise EngineError(f"the build of {onnx_path.name} was cancelled")
    if serialized is None:
        errs = "\n  ".join(logger.errors) or "(no message from TensorRT)"
        raise EngineError(f"{fl} failed to build {onnx_path.name} (precision={precision}, target={target_rec}):\n  "
                          f"{errs}\nrun `lipforce doctor`; an unsupported op or precision for the target is the "
                          "usual cause")

    blob = memoryview(serialized)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, engine_path)
    engine_sha = hashlib.sha256(blob).hexdigest()
    cache_saved = fl.save_timing_cache(config, cache_path) if timing is not None else 0

    def io(t, shape=None):
        return {"name": t.name, "shape": list(shape if shape is not None else t.shape), "dtype": fl.dtype_name(t.dtype)}

    inputs = [io(t, pinned.get(t.name)) for t in (network.get_input(i) for i in range(network.num_inputs))]
    outputs = [io(t) for t in (network.get_output(i) for i in range(network.num_outputs))]
    if state is None:
        state = infer_state_mapping([t["name"] for t in inputs], [t["name"] for t in outputs])
    in_names, out_names = {t["name"] for t in inputs}, {t["name"] for t in outputs}
    for s_in, s_out in state.items():
        if s_in not in in_names or s_out not in out_names:
            raise EngineError(f"state mapping {s_in!r} -> {s_out!r} does not name an input and an output of "
                              f"{onnx_path.name} (inputs {sorted(in_names)}, outputs {sorted(out_names)})")

    if cache_path is None:
        cache_rec = None
    elif fl.supports_timing_cache:
        cache_rec = {"path": str(cache_path), "loaded_bytes": cache_loaded, "saved_bytes": cache_saved}
    else:
        cache_rec = {"path": None, "note": f"{fl.label} has no timing cache (kernels compile at run time; "
                                           "the runtime cache keeps them)"}
    entry = {
        "file": engine_path.name,
        "sha256": engine_sha,
        "bytes": len(blob),
        "tensorrt": fl.describe(),
        "target": target_rec,
        "precision": precision,
        "onnx_file": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        # weights stored beside the graph: the ONNX hash does not cover them
        "onnx_external_data": [{"file": f, "sha256": file_sha256(onnx_path.parent / f)}
                               for f in info.external_data if (onnx_path.parent / f).is_file()],
        "inputs": inputs,
        "outputs": outputs,
        "io_source": "network definition (checked against the engine when it is loaded)",
        "state": dict(state),
        "plugin_libraries": [{"path": str(p), "sha256": file_sha256(p)} for p in loaded_libs],
        "preview_features": preview,
        "timing_cache": cache_rec,
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    if batch is not None:
        entry["max_batch"] = max_batch
        entry["batch_profile"] = {"min": batch[0], "opt": batch[1], "max": batch[2]}
    log.info("built %s (%s, %s, %d bytes) in %.2f s", engine_path, fl, precision, len(blob), entry["build_seconds"])
    return entry


def _compare_io(graph: str, what: str, want: list, got: list) -> None:
    w = {t["name"]: t for t in want}
    g = {t["name"]: t for t in got}
    if set(w) != set(g):
        raise EngineError(f"graph {graph!r}: the engine's {what} {sorted(g)} differ from the model manifest's "
                          f"{sorted(w)}; the manifest and the ONNX file disagree: re-export the model")
    for name, wt in w.items():
        gt = g[name]
        shape_ok = len(wt["shape"]) == len(gt["shape"]) and all(
            gd < 0 or gd == wd for gd, wd in zip(gt["shape"], wt["shape"]))
        if not shape_ok or wt["dtype"] != gt["dtype"]:
            raise EngineError(f"graph {graph!r}: {what[:-1]} {name!r} is {gt['dtype']}{list(gt['shape'])} in the "
                              f"engine but {wt['dtype']}{list(wt['shape'])} in the model manifest; re-export the model")


def build_model(model_dir: str | Path, out_dir: str | Path, *, precision: str | None = None,
                flavour: str | TensorRTFlavour | None = None, target=None, timing_cache: str | Path | None = None,
                plugin_libraries: Sequence[str | Path] | None = None, graphs: Sequence[str] | None = None,
                progress: bool = True, workspace: int | None = None, opt_batch: int | None = None) -> dict:
    """Build an engine per graph of the model directory ``model_dir`` into ``out_dir``.

    Writes ``out_dir/<graph>.engine`` and ``out_dir/manifest.json`` (the model manifest plus
    ``"backend": "tensorrt"`` and ``"engines"``) and returns that manifest; an enrolled avatar's
    mouth exemplars (``lipforce_sdk.exemplars``) are copied along. Nothing else is copied: the
    engine directory is all the TensorRT backend reads. ``precision`` defaults to the model's;
    ``plugin_libraries`` defaults, for a ``"plugin"``-flavour model under full TensorRT, to
    ``lipforce_sdk/lib/liblipforce_trt_plugins.so``. ``graphs`` builds a subset (default: all).
    A model exported with ``max_batch`` B > 1 gets engines with the profile 1 / ``opt_batch``
    (default B) / B on the batch axis. Other options as in ``build_engine``.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    manifest = read_model_manifest(model_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise EngineError(f"out_dir {out_dir} is the model directory: the engine manifest would replace the model's "
                          "manifest.json; build into another directory")
    fl = detect_tensorrt(flavour)
    model_precision = manifest.get("precision")
    precision = precision or model_precision
    if precision is None:
        raise EngineError(f"{model_dir / MANIFEST_NAME} states no precision; pass precision='fp16' (or fp32/bf16)")
    if model_precision and precision != model_precision and precision != "fp8":
        raise EngineError(f"precision={precision!r} was asked but the model in {model_dir} was exported in "
                          f"{model_precision!r} (TensorRT builds strongly typed: the graph's types are the "
                          f"precision); build with precision={model_precision!r} or re-export in {precision}")

    model_flavour = manifest.get("flavour", "portable")
    libs = list(plugin_libraries or [])
    if model_flavour == "plugin":
        if not fl.supports_plugins:
            raise EngineError(f"{model_dir} holds the 'plugin' flavour (attention as a lipforce plugin node) and "
                              f"{fl} has no custom-plugin path from Python (its ONNX parser would abort on the plugin "
                              "node): export the portable flavour for TensorRT-RTX, or build with full TensorRT")
        if not libs:
            default = default_plugin_library()
            if default is None:
                raise EngineError("the 'plugin' flavour needs the lipforce TensorRT plugin library and "
                                  "lipforce_sdk/lib/liblipforce_trt_plugins.so was not found: build it (csrc/, CMake) "
                                  "or pass plugin_libraries=[path]")
            libs = [default]
    elif libs and not fl.supports_plugins:
        raise EngineError(f"plugin libraries {[str(p) for p in libs]} were given but {fl} cannot load plugins; "
                          "drop them (the portable flavour needs none)")
    if manifest.get("attention") == "onnx_attention":
        if not fl.has_native_attention:
            raise EngineError(f"{model_dir} was exported with the opset-23 Attention op, which {fl} has no layer for "
                              "(native attention needs TensorRT 10.14+): re-export with `lipforce export --attention "
                              f"{fl.recommended_attention(precision)}` (or --attention auto)")
        if precision == "fp32":
            raise EngineError(f"{model_dir} uses the opset-23 Attention op in fp32, which TensorRT's fused attention "
                              "does not build: export fp16/bf16 graphs, or --attention decomposed for fp32")

    names = list(manifest["graphs"]) if graphs is None else list(graphs)
    unknown = [g for g in names if g not in manifest["graphs"]]
    if unknown:
        raise EngineError(f"graphs {unknown} are not in {model_dir / MANIFEST_NAME}; it lists "
                          f"{list(manifest['graphs'])}")

    out_dir.mkdir(parents=True, exist_ok=True)
    engines = {}
    for g in names:
        gm = manifest["graphs"][g]
        onnx_path = model_dir / gm["file"]
        if not onnx_path.is_file():
            raise EngineError(f"{onnx_path} (graph {g!r}) is missing from the model directory; re-export the model")
        digest = file_sha256(onnx_path)
        if digest != gm["sha256"]:
            raise EngineError(f"{onnx_path} has sha256 {digest[:16]}... but {model_dir / MANIFEST_NAME} records "
                              f"{gm['sha256'][:16]}...: the ONNX file changed after export; re-export the model")
        shapes = {t["name"]: t["shape"] for t in gm["inputs"]}
        entry = build_engine(onnx_path, out_dir / f"{g}.engine", precision=precision, timing_cache=timing_cache,
                             plugin_libraries=libs, target=target, progress=progress, workspace=workspace,
                             flavour=fl, shapes=shapes, state=gm.get("state") or None,
                             max_batch=int(manifest.get("max_batch", 1)), opt_batch=opt_batch)
        _compare_io(g, "inputs", gm["inputs"], entry["inputs"])
        _compare_io(g, "outputs", gm["outputs"], entry["outputs"])
        engines[g] = entry

    out = dict(manifest)
    if graphs is not None:
        out["graphs"] = {g: manifest["graphs"][g] for g in names}
    out["backend"] = "tensorrt"
    out["engines"] = engines
    from lipforce_sdk.exemplars import copy_exemplars

    copy_exemplars(model_dir, out_dir)  # an enrolled avatar's mouth exemplars (out names them, as the model did)
    write_json_atomic(out_dir / MANIFEST_NAME, out)
    return out
