"""The model directory's ``manifest.json``: what the runtime reads instead of hard-coding sizes.

A model directory holds ``manifest.json`` and, depending on who wrote it, PyTorch weights
(``weights``: safetensors files, for the torch backend), ONNX graphs (``graphs``, written by
``lipforce export``) and TensorRT engines (``engines``, written by ``lipforce build``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .config import ModelConfig

__all__ = ["FORMAT", "FORMAT_VERSION", "SDK_VERSION", "ManifestError", "read_manifest", "write_manifest", "sha256_file"]

FORMAT = "lipforce-model"
FORMAT_VERSION = 1
SDK_VERSION = "0.1.0"


class ManifestError(ValueError):
    """The model directory or its manifest is missing or malformed; the message says what to do."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(model_dir: str | Path) -> tuple[dict, ModelConfig]:
    d = Path(model_dir)
    p = d / "manifest.json"
    if not d.is_dir():
        raise ManifestError(f"model directory {str(d)!r} does not exist; pass a directory written by "
                            "lipforce_sdk.model.save_model, `lipforce export` or `lipforce build`")
    if not p.is_file():
        raise ManifestError(f"{str(p)!r} not found: {str(d)!r} is not a lipforce model directory")
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{str(p)!r} is not valid JSON ({e}); re-export the model") from e
    if m.get("format") != FORMAT:
        raise ManifestError(f"{str(p)!r} has format={m.get('format')!r}, expected {FORMAT!r}")
    if m.get("format_version", 0) > FORMAT_VERSION:
        raise ManifestError(f"{str(p)!r} has format_version={m.get('format_version')}, newer than this SDK "
                            f"reads ({FORMAT_VERSION}); upgrade lipforce")
    return m, ModelConfig.from_dict(m["config"])


def write_manifest(model_dir: str | Path, cfg: ModelConfig, **sections) -> dict:
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / "manifest.json"
    m = json.loads(p.read_text()) if p.is_file() else {}
    m.update({"format": FORMAT, "format_version": FORMAT_VERSION, "sdk_version": SDK_VERSION, "config": cfg.to_dict()})
    m.update(sections)
    p.write_text(json.dumps(m, indent=2, sort_keys=False) + "\n")
    return m
