"""Model and engine manifests: reading, validating, writing.

A *model directory* (written by the exporter) holds ``manifest.json`` and one ONNX file per graph.
An *engine directory* (written by ``build_model``) holds ``manifest.json`` = the model manifest plus
``"backend": "tensorrt"`` and ``"engines": {graph: entry}``, and one ``<graph>.engine`` per graph.
An engine entry::

    {"file": "dit_step.engine", "sha256": "...", "bytes": 123,
     "tensorrt": {"flavour": "tensorrt_rtx", "version": "1.7.1.116"},
     "target": {"compute_capabilities": ["sm86"], "selected_by": "requested"}      # TensorRT-RTX
             | {"gpu": "NVIDIA H100", "compute_capability": "sm90", "hardware_compatibility": "none"},
     "precision": "fp16", "onnx_file": "dit_step.onnx", "onnx_sha256": "...",
     "onnx_external_data": [{"file": "dit_step.onnx.data", "sha256": "..."}],
     "inputs": [{"name", "shape", "dtype"}], "outputs": [...], "state": {"kv_k_0": "kv_k_out_0"},
     "plugin_libraries": [{"path", "sha256"}], "preview_features": [],
     "timing_cache": {...} | null, "build_seconds": 0.4}
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from lipforce_sdk.manifest import FORMAT as MODEL_FORMAT
from lipforce_sdk.manifest import FORMAT_VERSION as MODEL_FORMAT_VERSION

from .errors import EngineError

__all__ = [
    "MANIFEST_NAME",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "PLUGIN_LIBRARY_NAME",
    "read_model_manifest",
    "read_engine_manifest",
    "write_json_atomic",
    "default_plugin_library",
]

MANIFEST_NAME = "manifest.json"
PLUGIN_LIBRARY_NAME = "liblipforce_trt_plugins.so"


def _load(path: Path, what: str, fix: str) -> dict:
    if not path.is_file():
        raise EngineError(f"{path} does not exist: {what} has no manifest; {fix}")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"{path} is not valid JSON ({e}); {fix}") from e
    if not isinstance(m, dict):
        raise EngineError(f"{path} holds {type(m).__name__}, not a manifest object; {fix}")
    return m


def read_model_manifest(model_dir: str | Path) -> dict:
    """The exporter's manifest, checked for the fields the engine builder uses."""
    d = Path(model_dir)
    fix = "re-export the model (lipforce export)"
    m = _load(d / MANIFEST_NAME, f"model directory {d}", fix)
    if m.get("format") != MODEL_FORMAT:
        raise EngineError(f"{d / MANIFEST_NAME}: format={m.get('format')!r}, expected {MODEL_FORMAT!r}; {fix}")
    fv = m.get("format_version")
    if not isinstance(fv, int) or fv > MODEL_FORMAT_VERSION:
        raise EngineError(f"{d / MANIFEST_NAME}: format_version={fv!r}, this SDK reads up to "
                          f"{MODEL_FORMAT_VERSION}; upgrade lipforce or {fix}")
    graphs = m.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        raise EngineError(f"{d / MANIFEST_NAME}: no graphs listed; {fix}")
    for name, g in graphs.items():
        for key in ("file", "sha256", "inputs", "outputs"):
            if key not in g:
                raise EngineError(f"{d / MANIFEST_NAME}: graph {name!r} has no {key!r}; {fix}")
    return m


def read_engine_manifest(engine_dir: str | Path) -> dict:
    """``build_model``'s manifest (model manifest + engines), checked."""
    d = Path(engine_dir)
    fix = "rebuild the engines with `lipforce build`"
    m = _load(d / MANIFEST_NAME, f"engine directory {d}", fix)
    if m.get("backend") != "tensorrt" or not isinstance(m.get("engines"), dict):
        raise EngineError(f"{d / MANIFEST_NAME} is not a TensorRT engine manifest (backend={m.get('backend')!r}, "
                          f"no 'engines'); point to the directory `lipforce build` wrote, or {fix}")
    return m


def write_json_atomic(path: str | Path, obj) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, p)


def default_plugin_library() -> Path | None:
    """``lipforce_sdk/lib/liblipforce_trt_plugins.so`` when it has been built, else None."""
    spec = importlib.util.find_spec("lipforce_sdk")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / "lib" / PLUGIN_LIBRARY_NAME
        if p.is_file():
            return p
    return None
