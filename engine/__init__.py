"""ONNX -> TensorRT engines for lipforce models (installed as ``lipforce_sdk.engine``).

One code path for TensorRT-RTX (``tensorrt_rtx``: RTX PCs, builds ahead of time on a machine
without a GPU) and full TensorRT (``tensorrt``: Jetson Orin, datacenter GPUs); the differences
live in ``flavour.TensorRTFlavour``. Importing this package imports no TensorRT, no torch.

    build_model(model_dir, out_dir)        # every graph of an exported model -> out_dir/*.engine + manifest.json
    build_engine(onnx, engine, precision=) # one graph
    check_engine(out_dir, graph)           # hashes, TensorRT version, staleness, GPU; raises EngineError
    doctor()                               # what this machine has (dict); format_doctor() as text
"""

from .build import build_engine, build_model, infer_state_mapping
from .check import EngineCheck, LoadedEngine, check_engine, load_engine
from .doctor import doctor, format_doctor
from .errors import EngineError
from .flavour import (FLAVOURS, PRECISIONS, RTX_COMPUTE_CAPABILITIES, RTX_DEFAULT_TARGETS, TensorRTFlavour,
                      detect_tensorrt, parse_compute_capability)
from .gpu import GpuInfo, local_gpu
from .manifest import read_engine_manifest, read_model_manifest
from .onnx_graph import GraphInfo, check_graph_precision, inspect_onnx
from .progress import BuildProgress

__all__ = [
    "build_engine",
    "build_model",
    "check_engine",
    "load_engine",
    "doctor",
    "format_doctor",
    "EngineError",
    "EngineCheck",
    "LoadedEngine",
    "BuildProgress",
    "TensorRTFlavour",
    "detect_tensorrt",
    "parse_compute_capability",
    "inspect_onnx",
    "check_graph_precision",
    "GraphInfo",
    "GpuInfo",
    "local_gpu",
    "read_model_manifest",
    "read_engine_manifest",
    "infer_state_mapping",
    "FLAVOURS",
    "PRECISIONS",
    "RTX_COMPUTE_CAPABILITIES",
    "RTX_DEFAULT_TARGETS",
]
