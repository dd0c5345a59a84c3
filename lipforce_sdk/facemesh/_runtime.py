"""Loading the bundled face models into ONNX Runtime."""

from __future__ import annotations

import os
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "facemesh"


def model_path(name: str, model_dir: str | os.PathLike | None = None) -> Path:
    """Path of a converted face model, with the fix in the message when it is missing."""
    folder = Path(model_dir) if model_dir is not None else MODEL_DIR
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"face model {path} not found; it ships with lipforce under "
            "lipforce_sdk/assets/facemesh/ (re-install lipforce), or rebuild it with "
            f"python -m lipforce_sdk.facemesh.convert --out {folder}"
        )
    return path


def make_session(path: Path, threads: int | None, providers: list | None):
    """An ``onnxruntime.InferenceSession`` on ``path`` (CPU unless ``providers`` says)."""
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - onnxruntime is a base dependency
        raise ImportError(
            "the face landmark tracker needs ONNX Runtime: pip install 'onnxruntime>=1.20'"
        ) from e
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(
            f"threads must be None (ONNX Runtime's default) or an int >= 1, got {threads!r}"
        )
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(
        os.fspath(path), so, providers=list(providers) if providers else ["CPUExecutionProvider"]
    )
