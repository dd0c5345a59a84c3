"""What the builder needs to know about an ONNX file before TensorRT sees it.

Its hash, its I/O, its float precision (TensorRT-RTX and strongly typed TensorRT take every
tensor's type from the graph, so the graph *is* the precision), and any custom-domain nodes
(plugin ops). Reads the graph structure only: external weight data is never loaded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EngineError

__all__ = ["file_sha256", "GraphInfo", "TensorInfo", "inspect_onnx", "check_graph_precision", "PRECISION_DTYPES"]

# ONNX TensorProto element types (stable numbers; the onnx package is only needed to read the file).
_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
    17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz", 23: "float4e2m1",
}
_FLOAT_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_FP8 = {"float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz"}
PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp8": "float8e4m3fn"}
from lipforce_sdk.manifest import sha256_file

_STANDARD_DOMAINS = ("", "ai.onnx")


file_sha256 = sha256_file  # one hashing helper for model and engine manifests


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # ints, or str for a named dynamic dimension, or None for an unnamed one
    dtype: str

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d >= 0 for d in self.shape)

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphInfo:
    path: Path
    opset: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    weight_elements: dict = field(default_factory=dict)  # float dtype -> elements in initializers/constants
    precision: str | None = None  # "fp32" | "fp16" | "bf16": the dtype most weights have
    quantized: str | None = None  # "fp8" when the graph holds FP8 Q/DQ
    custom_ops: tuple[tuple[str, str, str], ...] = ()  # (domain, op_type, node name)
    external_data: tuple[str, ...] = ()  # files beside the graph holding its weights

    def describe_precision(self) -> str:
        parts = [f"{dt}: {n} elements" for dt, n in sorted(self.weight_elements.items(), key=lambda kv: -kv[1])]
        io = sorted({t.dtype for t in self.inputs + self.outputs if t.dtype in _FLOAT_PRECISION})
        s = f"weights ({', '.join(parts) or 'none'}), float I/O ({', '.join(io) or 'none'})"
        if self.quantized:
            s += f", {self.quantized} Q/DQ"
        return s


def _value_info(vi) -> TensorInfo:
    tt = vi.type.tensor_type
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    dtype = _ONNX_DTYPES.get(tt.elem_type, f"onnx_type_{tt.elem_type}")
    return TensorInfo(name=vi.name, shape=tuple(dims), dtype=dtype)


def inspect_onnx(path: str | Path) -> GraphInfo:
    """Read the structure of an ONNX file (not its external weights)."""
    try:
        import onnx
    except ImportError as e:
        raise EngineError("building engines reads the ONNX graphs with the `onnx` package: pip install onnx") from e
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise EngineError(f"{path} is not a readable ONNX file ({e}); re-export the model") from e
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in _STANDARD_DOMAINS), 0)
    init_names = {t.name for t in g.initializer}
    inputs = tuple(_value_info(v) for v in g.input if v.name not in init_names)
    outputs = tuple(_value_info(v) for v in g.output)

    weights: Counter = Counter()

    def count(t):
        dt = _ONNX_DTYPES.get(t.data_type)
        if dt in _FLOAT_PRECISION or dt in _FP8:
            n = 1
            for d in t.dims:
                n *= int(d)
            weights[dt] += n

    quantized = None
    custom = []
    external = []
    for t in g.initializer:
        count(t)
        if t.data_location == 1:  # TensorProto.EXTERNAL
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and loc not in external:
                external.append(loc)
    fp8_zero_points = {t.name for t in g.initializer if _ONNX_DTYPES.get(t.data_type) in _FP8}
    for node in g.node:
        if node.domain not in _STANDARD_DOMAINS:
            custom.append((node.domain, node.op_type, node.name))
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    count(a.t)
        if node.op_type == "QuantizeLinear" and node.domain in _STANDARD_DOMAINS:
            out_dt = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
            if _ONNX_DTYPES.get(out_dt) in _FP8 or (len(node.input) > 2 and node.input[2] in fp8_zero_points):
                quantized = "fp8"
    if any(dt in _FP8 for dt in weights):
        quantized = "fp8"

    floats = {dt: n for dt, n in weights.items() if dt in _FLOAT_PRECISION}
    if floats:
        precision = _FLOAT_PRECISION[max(floats, key=floats.get)]
    else:
        io = Counter(t.dtype for t in inputs + outputs if t.dtype in _FLOAT_PRECISION)
        precision = _FLOAT_PRECISION[io.most_common(1)[0][0]] if io else None
    return GraphInfo(path=path, opset=opset, inputs=inputs, outputs=outputs, weight_elements=dict(weights),
                     precision=precision, quantized=quantized, custom_ops=tuple(custom),
                     external_data=tuple(external))


def check_graph_precision(info: GraphInfo, precision: str) -> None:
    """Refuse to build ``precision`` from a graph of another precision (strongly typed builds)."""
    from .flavour import PRECISIONS

    if precision not in PRECISIONS:
        raise EngineError(f"precision={precision!r} is not supported; expected one of {', '.join(PRECISIONS)}")
    if precision == "fp8":
        if info.quantized != "fp8":
            raise EngineError(
                f"precision='fp8' needs a quantized (Q/DQ) graph: QuantizeLinear/DequantizeLinear pairs to "
                f"float8e4m3fn, e.g. from NVIDIA ModelOpt, and {info.path.name} has none "
                f"({info.describe_precision()}); fp8 runs on Ada (SM89), Hopper (SM90) and Blackwell (SM100/SM120) "
                "GPUs. Build fp16 or bf16 instead, or quantize the graph first")
        return
    if info.quantized == "fp8":
        raise EngineError(f"{info.path.name} is an fp8-quantized graph ({info.describe_precision()}); build it with "
                          f"precision='fp8', not {precision!r}")
    if info.precision is not None and info.precision != precision:
        raise EngineError(
            f"{info.path.name} is a {info.precision} graph ({info.describe_precision()}) but precision={precision!r} "
            f"was asked: TensorRT builds strongly typed, so the precision is the graph's. Build with "
            f"precision={info.precision!r}, or re-export the model in {precision}")
