"""Convert MediaPipe's face models (TFLite) to ONNX, so the SDK runs them with ONNX Runtime.

Usage (writes the three ``.onnx`` files the SDK bundles under ``lipforce_sdk/assets/facemesh``)::

    python -m lipforce_sdk.facemesh.convert --wheel mediapipe-0.10.21-...whl --out lipforce_sdk/assets/facemesh

Without ``--wheel`` it runs ``pip download mediapipe==0.10.21 --no-deps`` into a temporary
folder (the models are identical in every platform's wheel); ``--tflite-dir
lipforce_sdk/assets/facemesh/tflite`` converts the copies kept in the repository instead
(same bytes out: the output depends only on the TFLite files). Needs the ``onnx`` package
(``pip install 'lipforce[facemesh-convert]'``); the TFLite file is read by the parser in
``_tflite.py`` (no TensorFlow, no MediaPipe).

The ONNX graph computes what the TFLite graph computes, op for op, with the same input and
outputs (NHWC image in, TFLite output shapes out): inside, activations are NCHW (ONNX's
layout), so weights are transposed once here and a ``Transpose`` sits at the input and at
any point where TFLite's NHWC memory order matters (``RESHAPE``, graph outputs). Constant
``DEQUANTIZE`` (fp16 weights) and ``DENSIFY`` (sparse weights) are folded: the weights are
stored as fp16 initializers followed by a ``Cast`` to float32 (exact; ONNX Runtime folds it
when the session loads), so the files stay as small as the TFLite ones.

Ops: ADD, AVERAGE_POOL_2D, CONCATENATION, CONV_2D, DEPTHWISE_CONV_2D, DEPTH_TO_SPACE,
DEQUANTIZE, DENSIFY, LOGISTIC, MAX_POOL_2D, MUL, PAD, PRELU, RELU, RELU6, RESHAPE,
RESIZE_BILINEAR, TANH (with fused RELU/RELU6/RELU_N1_TO_1/TANH activations). Anything else
raises ``NotImplementedError`` naming the op.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np

from . import _tflite

CONVERTER_VERSION = "1"
MEDIAPIPE_VERSION = "0.10.21"


@dataclass(frozen=True)
class ModelSpec:
    """One MediaPipe model to convert: where it is in the wheel, what it is called here."""

    wheel_path: str  # path inside the mediapipe wheel
    onnx_name: str  # file written under --out
    output_names: tuple[str, ...]  # ONNX names of the TFLite outputs, in TFLite order
    sha256: str  # of the .tflite in mediapipe 0.10.21


MODELS = (
    ModelSpec(
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "face_detection_short_range.onnx",
        ("boxes", "scores"),
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    ModelSpec(
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "face_detection_full_range_sparse.onnx",
        ("boxes", "scores"),
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    ModelSpec(
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "face_landmark.onnx",
        ("landmarks", "face_flag"),
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    ),
)

OPSET = 17
IR_VERSION = 8  # readable by every ONNX Runtime >= 1.14

# NHWC axis -> NCHW axis, and the permutations between the layouts
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
_TO_NCHW = [0, 3, 1, 2]
_TO_NHWC = [0, 2, 3, 1]

# ActivationFunctionType
_ACT_NONE, _ACT_RELU, _ACT_RELU_N1_TO_1, _ACT_RELU6, _ACT_TANH = 0, 1, 2, 3, 4


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "converting the face models needs the 'onnx' package: "
            "pip install 'lipforce[facemesh-convert]' (or pip install onnx)"
        ) from e
    return onnx, helper, numpy_helper


def _same_pads(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite SAME padding of one spatial axis: (before, after), the extra pixel after."""
    k_eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


class _Builder:
    """Turns one TFLite graph into ONNX nodes; tracks each tensor's ONNX name and layout."""

    def __init__(self, g: _tflite.Graph, output_names: tuple[str, ...]) -> None:
        _, self.helper, self.numpy_helper = _import_onnx()
        self.g = g
        self.nodes = []
        self.inits = []
        self.names: dict[int, tuple[str, str]] = {}  # tensor -> (onnx name, "nchw" | "plain")
        self.consts: dict[int, np.ndarray] = {}  # folded constants (DEQUANTIZE, DENSIFY)
        self.output_names = output_names
        self._uid = 0

    # -- helpers ------------------------------------------------------------------------

    def _fresh(self, base: str) -> str:
        self._uid += 1
        return f"{base}__{self._uid}"

    def node(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        out = self._fresh(base)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def init(self, arr: np.ndarray, base: str) -> str:
        """An initializer; fp16 weights stay fp16 on disk and are cast to float32 in-graph."""
        name = self._fresh(base)
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        if arr.dtype == np.float16:
            return self.node("Cast", [name], base + "_f32", to=1)  # TensorProto.FLOAT
        return name

    def const(self, idx: int) -> np.ndarray | None:
        """The constant value of tensor ``idx`` (folded through DEQUANTIZE/DENSIFY), or None."""
        if idx in self.consts:
            return self.consts[idx]
        t = self.g.tensors[idx]
        if t.data is None:
            return None
        return _tflite.densify(t) if t.sparsity is not None else t.data

    def tname(self, idx: int) -> str:
        return self.g.tensors[idx].name.split(";")[0].replace("/", "_")[:60] or f"t{idx}"

    def shape(self, idx: int) -> tuple[int, ...]:
        return self.g.tensors[idx].shape

    def nchw(self, idx: int) -> str:
        """ONNX name of activation ``idx`` in NCHW layout (4D tensors)."""
        if idx not in self.names:
            c = self.const(idx)
            if c is None:
                raise ValueError(
                    f"tensor {idx} ({self.g.tensors[idx].name}) used before it is computed"
                )
            if c.ndim != 4:
                raise NotImplementedError(
                    f"constant {self.g.tensors[idx].name} of rank {c.ndim} as a 4D operand"
                )
            return self.init(c.transpose(_TO_NCHW), self.tname(idx))
        name, layout = self.names[idx]
        if layout == "nchw":
            return name
        if len(self.shape(idx)) != 4:
            raise NotImplementedError(
                f"rank-{len(self.shape(idx))} tensor {self.g.tensors[idx].name} used as an image"
            )
        return self.node("Transpose", [name], self.tname(idx) + "_nchw", perm=_TO_NCHW)

    def plain(self, idx: int) -> str:
        """ONNX name of tensor ``idx`` in TFLite's own layout (NHWC for 4D)."""
        if idx not in self.names:
            c = self.const(idx)
            if c is None:
                raise ValueError(
                    f"tensor {idx} ({self.g.tensors[idx].name}) used before it is computed"
                )
            return self.init(c, self.tname(idx))
        name, layout = self.names[idx]
        if layout == "plain":
            return name
        return self.node("Transpose", [name], self.tname(idx) + "_nhwc", perm=_TO_NHWC)

    def nchw_broadcast(self, c: np.ndarray, base: str) -> str:
        """A constant that broadcasts against an NHWC tensor, re-laid out for NCHW."""
        c4 = c.reshape((1,) * (4 - c.ndim) + c.shape)
        return self.init(c4.transpose(_TO_NCHW), base)

    def activation(self, x: str, act: int, base: str) -> str:
        if act == _ACT_NONE:
            return x
        if act == _ACT_RELU:
            return self.node("Relu", [x], base + "_relu")
        if act == _ACT_RELU6:
            return self.node(
                "Clip",
                [x, self.init(np.float32(0), "zero"), self.init(np.float32(6), "six")],
                base + "_relu6",
            )
        if act == _ACT_RELU_N1_TO_1:
            return self.node(
                "Clip",
                [x, self.init(np.float32(-1), "m1"), self.init(np.float32(1), "p1")],
                base + "_relun1",
            )
        if act == _ACT_TANH:
            return self.node("Tanh", [x], base + "_tanh")
        raise NotImplementedError(f"fused activation {act} is not supported")

    def spatial_pads(
        self, idx_in: int, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, padding: int
    ) -> list[int]:
        if padding == 1:  # VALID
            return [0, 0, 0, 0]
        _, h, w, _ = self.shape(idx_in)
        t, b = _same_pads(h, kh, sh, dh)
        l, r = _same_pads(w, kw, sw, dw)
        return [t, l, b, r]

    # -- ops ----------------------------------------------------------------------------

    def convert(self) -> None:
        for op in self.g.operators:
            handler = getattr(self, "op_" + op.op.lower(), None)
            if handler is None:
                raise NotImplementedError(
                    f"TFLite op {op.op} (operator {op.index}) has no ONNX mapping in "
                    "lipforce_sdk.facemesh.convert; supported: "
                    + ", ".join(sorted(k[3:].upper() for k in dir(self) if k.startswith("op_")))
                )
            handler(op)

    def set(self, op: _tflite.Operator, name: str, layout: str) -> None:
        self.names[op.outputs[0]] = (name, layout)

    def op_dequantize(self, op):
        c = self.const(op.inputs[0])
        if c is None:
            x = self.plain(op.inputs[0])
            self.set(
                op,
                self.node("Cast", [x], self.tname(op.outputs[0]), to=1),
                self.names[op.inputs[0]][1],
            )
            return
        if self.g.tensors[op.inputs[0]].dtype not in (np.float16, np.float32):
            raise NotImplementedError(
                f"DEQUANTIZE of {self.g.tensors[op.inputs[0]].dtype} (integer-quantized) weights"
            )
        self.consts[op.outputs[0]] = c  # fp16 kept; cast in-graph when used

    def op_densify(self, op):
        c = self.const(op.inputs[0])
        if c is None:
            raise NotImplementedError("DENSIFY of a computed tensor")
        self.consts[op.outputs[0]] = c

    def _conv(self, op, depthwise: bool):
        o = op.options
        x = self.nchw(op.inputs[0])
        w = self.const(op.inputs[1])
        if w is None:
            raise NotImplementedError(f"operator {op.index}: convolution with computed weights")
        if depthwise:
            padding, sw, sh = o.scalar(0, "b", 0), o.scalar(1, "i", 1), o.scalar(2, "i", 1)
            mult, act = o.scalar(3, "i", 1), o.scalar(4, "b", 0)
            dw, dh = o.scalar(5, "i", 1), o.scalar(6, "i", 1)
            cin = self.shape(op.inputs[0])[3]
            _, kh, kw, cout = w.shape
            if cout != cin * mult:
                raise ValueError(
                    f"operator {op.index}: depthwise weights {w.shape} vs {cin} channels x {mult}"
                )
            wk = w.reshape(kh, kw, cout).transpose(2, 0, 1)[:, None]  # [C*m, 1, kh, kw]
            group = cin
        else:
            padding, sw, sh, act = (
                o.scalar(0, "b", 0),
                o.scalar(1, "i", 1),
                o.scalar(2, "i", 1),
                o.scalar(3, "b", 0),
            )
            dw, dh = o.scalar(4, "i", 1), o.scalar(5, "i", 1)
            cout, kh, kw, cin_w = w.shape
            wk = w.transpose(0, 3, 1, 2)  # [O, I, kh, kw]
            group = self.shape(op.inputs[0])[3] // cin_w
        base = self.tname(op.outputs[0])
        ins = [x, self.init(wk, base + "_w")]
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            ins.append(self.init(self.const(op.inputs[2]).reshape(-1), base + "_b"))
        pads = self.spatial_pads(op.inputs[0], kh, kw, sh, sw, dh, dw, padding)
        y = self.node(
            "Conv",
            ins,
            base,
            kernel_shape=[kh, kw],
            strides=[sh, sw],
            dilations=[dh, dw],
            pads=pads,
            group=group,
        )
        self.set(op, self.activation(y, act, base), "nchw")

    def op_conv_2d(self, op):
        self._conv(op, depthwise=False)

    def op_depthwise_conv_2d(self, op):
        self._conv(op, depthwise=True)

    def _pool(self, op, onnx_op: str):
        o = op.options
        padding, sw, sh = o.scalar(0, "b", 0), o.scalar(1, "i", 1), o.scalar(2, "i", 1)
        fw, fh, act = o.scalar(3, "i", 1), o.scalar(4, "i", 1), o.scalar(5, "b", 0)
        pads = self.spatial_pads(op.inputs[0], fh, fw, sh, sw, 1, 1, padding)
        base = self.tname(op.outputs[0])
        extra = {"count_include_pad": 0} if onnx_op == "AveragePool" else {}
        y = self.node(
            onnx_op,
            [self.nchw(op.inputs[0])],
            base,
            kernel_shape=[fh, fw],
            strides=[sh, sw],
            pads=pads,
            **extra,
        )
        self.set(op, self.activation(y, act, base), "nchw")

    def op_max_pool_2d(self, op):
        self._pool(op, "MaxPool")

    def op_average_pool_2d(self, op):
        self._pool(op, "AveragePool")

    def _binary(self, op, onnx_op: str, act: int):
        a, b = op.inputs[:2]
        base = self.tname(op.outputs[0])
        ca, cb = self.const(a), self.const(b)
        out_rank = len(self.shape(op.outputs[0]))
        if out_rank == 4 and (ca is None or cb is None):
            xa = self.nchw(a) if ca is None else self.nchw_broadcast(ca, base + "_a")
            xb = self.nchw(b) if cb is None else self.nchw_broadcast(cb, base + "_b")
            layout = "nchw"
        else:
            xa, xb, layout = self.plain(a), self.plain(b), "plain"
        y = self.node(onnx_op, [xa, xb], base)
        self.set(op, self.activation(y, act, base), layout)

    def op_add(self, op):
        self._binary(op, "Add", op.options.scalar(0, "b", 0) if op.options else 0)

    def op_mul(self, op):
        self._binary(op, "Mul", op.options.scalar(0, "b", 0) if op.options else 0)

    def _unary(self, op, onnx_op: str, **attrs):
        idx = op.inputs[0]
        name, layout = (
            (self.nchw(idx), "nchw") if len(self.shape(idx)) == 4 else (self.plain(idx), "plain")
        )
        self.set(op, self.node(onnx_op, [name], self.tname(op.outputs[0]), **attrs), layout)

    def op_relu(self, op):
        self._unary(op, "Relu")

    def op_relu6(self, op):
        idx = op.inputs[0]
        name, layout = (
            (self.nchw(idx), "nchw") if len(self.shape(idx)) == 4 else (self.plain(idx), "plain")
        )
        self.set(op, self.activation(name, _ACT_RELU6, self.tname(op.outputs[0])), layout)

    def op_logistic(self, op):
        self._unary(op, "Sigmoid")

    def op_tanh(self, op):
        self._unary(op, "Tanh")

    def op_prelu(self, op):
        alpha = self.const(op.inputs[1])
        if alpha is None or len(self.shape(op.inputs[0])) != 4:
            raise NotImplementedError(
                f"operator {op.index}: PRELU with computed slopes or a non-4D input"
            )
        base = self.tname(op.outputs[0])
        y = self.node(
            "PRelu", [self.nchw(op.inputs[0]), self.nchw_broadcast(alpha, base + "_alpha")], base
        )
        self.set(op, y, "nchw")

    def op_pad(self, op):
        p = self.const(op.inputs[1])
        if p is None:
            raise NotImplementedError(f"operator {op.index}: PAD with computed paddings")
        p = np.asarray(p, np.int64).reshape(-1, 2)
        base = self.tname(op.outputs[0])
        if len(p) == 4:
            p = p[_TO_NCHW]
            x, layout = self.nchw(op.inputs[0]), "nchw"
        else:
            x, layout = self.plain(op.inputs[0]), "plain"
        pads = np.concatenate([p[:, 0], p[:, 1]])
        y = self.node("Pad", [x, self.init(pads, base + "_pads")], base, mode="constant")
        self.set(op, y, layout)

    def op_reshape(self, op):
        base = self.tname(op.outputs[0])
        shape = np.asarray(self.shape(op.outputs[0]), np.int64)
        y = self.node(
            "Reshape", [self.plain(op.inputs[0]), self.init(shape, base + "_shape")], base
        )
        self.set(op, y, "plain")

    def op_concatenation(self, op):
        axis, act = op.options.scalar(0, "i", 0), op.options.scalar(1, "b", 0)
        rank = len(self.shape(op.outputs[0]))
        axis %= rank
        base = self.tname(op.outputs[0])
        all_nchw = rank == 4 and all(self.names.get(i, ("", ""))[1] == "nchw" for i in op.inputs)
        if all_nchw:
            y = self.node(
                "Concat", [self.nchw(i) for i in op.inputs], base, axis=_NHWC_TO_NCHW_AXIS[axis]
            )
        else:
            y = self.node("Concat", [self.plain(i) for i in op.inputs], base, axis=axis)
        self.set(op, self.activation(y, act, base), "nchw" if all_nchw else "plain")

    def op_resize_bilinear(self, op):
        o = op.options
        align = bool(o.scalar(2, "B", 0)) if o else False
        half = bool(o.scalar(3, "B", 0)) if o else False
        mode = "align_corners" if align else ("half_pixel" if half else "asymmetric")
        n, oh, ow, c = self.shape(op.outputs[0])
        base = self.tname(op.outputs[0])
        sizes = self.init(np.array([n, c, oh, ow], np.int64), base + "_sizes")
        y = self.node(
            "Resize",
            [self.nchw(op.inputs[0]), "", "", sizes],
            base,
            mode="linear",
            coordinate_transformation_mode=mode,
        )
        self.set(op, y, "nchw")

    def op_depth_to_space(self, op):
        bs = op.options.scalar(0, "i", 0)
        y = self.node(
            "DepthToSpace",
            [self.nchw(op.inputs[0])],
            self.tname(op.outputs[0]),
            blocksize=bs,
            mode="DCR",
        )
        self.set(op, y, "nchw")


def convert_tflite(
    data: bytes,
    output_names: tuple[str, ...] | None = None,
    *,
    graph_name: str = "model",
    metadata: dict | None = None,
):
    """An ``onnx.ModelProto`` computing what the TFLite model in ``data`` computes.

    The ONNX input is ``image`` with the TFLite input's shape (NHWC float32); the outputs
    have the TFLite outputs' shapes, named ``output_names`` (default ``output_0``, ...).
    """
    onnx, helper, _ = _import_onnx()
    g = _tflite.read_model(data)
    if len(g.inputs) != 1:
        raise NotImplementedError(f"models with {len(g.inputs)} inputs (expected 1)")
    if output_names is None:
        output_names = tuple(f"output_{i}" for i in range(len(g.outputs)))
    if len(output_names) != len(g.outputs):
        raise ValueError(f"{len(output_names)} output names given for {len(g.outputs)} outputs")
    b = _Builder(g, output_names)
    (inp,) = g.inputs
    in_shape = g.tensors[inp].shape
    b.names[inp] = ("image", "plain")
    b.convert()
    for idx, name in zip(g.outputs, output_names):
        b.nodes.append(helper.make_node("Identity", [b.plain(idx)], [name], name=name))
    graph = helper.make_graph(
        b.nodes,
        graph_name,
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, list(in_shape))],
        [
            helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(g.tensors[i].shape))
            for n, i in zip(output_names, g.outputs)
        ],
        b.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="lipforce_sdk.facemesh.convert",
        producer_version=CONVERTER_VERSION,
    )
    model.ir_version = IR_VERSION
    meta = {"tflite_ops": ", ".join(f"{k} x{v}" for k, v in sorted(g.op_counts.items()))}
    meta.update(metadata or {})
    helper.set_model_props(model, {k: str(v) for k, v in meta.items()})
    onnx.checker.check_model(model, full_check=True)
    return model


def download_wheel(dest: str) -> str:
    """``pip download mediapipe==0.10.21 --no-deps`` into ``dest``; the wheel's path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"mediapipe=={MEDIAPIPE_VERSION}",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        dest,
    ]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    wheels = [f for f in os.listdir(dest) if f.startswith("mediapipe-") and f.endswith(".whl")]
    if not wheels:
        raise FileNotFoundError(f"pip download left no mediapipe wheel in {dest}")
    return os.path.join(dest, wheels[0])


def convert_models(
    read, out_dir: str | os.PathLike, *, strict: bool = True, where: str = ""
) -> list[str]:
    """Convert the three face models, ``read(spec) -> bytes`` giving each ``.tflite``;
    returns the written paths. The output depends only on the TFLite bytes (same files from
    the wheel or from a folder).

    With ``strict`` (the default) a model whose sha256 differs from mediapipe 0.10.21's is
    refused (the SDK's decoding constants are those of that release's models).
    """
    onnx, _, _ = _import_onnx()
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for spec in MODELS:
        data = read(spec)
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            msg = f"{spec.wheel_path} from {where} has sha256 {digest}, not mediapipe {MEDIAPIPE_VERSION}'s {spec.sha256}"
            if strict:
                raise ValueError(
                    msg
                    + "; use the mediapipe 0.10.21 models (or strict=False / --any-version to convert anyway)"
                )
            print("warning:", msg, file=sys.stderr)
        model = convert_tflite(
            data,
            spec.output_names,
            graph_name=os.path.splitext(spec.onnx_name)[0],
            metadata={
                "source": f"PyPI wheel mediapipe=={MEDIAPIPE_VERSION}: {spec.wheel_path}",
                "source_sha256": digest,
                "license": "Apache-2.0 (Google LLC, MediaPipe)",
                "converter": f"lipforce_sdk.facemesh.convert {CONVERTER_VERSION}",
            },
        )
        path = os.path.join(os.fspath(out_dir), spec.onnx_name)
        onnx.save(model, path)
        written.append(path)
        print(
            f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB) from {spec.wheel_path}",
            flush=True,
        )
    return written


def convert_wheel(
    wheel: str | os.PathLike, out_dir: str | os.PathLike, *, strict: bool = True
) -> list[str]:
    """Convert the three face models inside a mediapipe wheel (see ``convert_models``)."""
    wheel = os.fspath(wheel)
    if not os.path.isfile(wheel):
        raise FileNotFoundError(
            f"wheel {wheel!r} not found; pass the path of mediapipe-{MEDIAPIPE_VERSION}-*.whl or leave --wheel out to download it"
        )
    with zipfile.ZipFile(wheel) as zf:

        def read(spec: ModelSpec) -> bytes:
            try:
                return zf.read(spec.wheel_path)
            except KeyError:
                raise FileNotFoundError(
                    f"{spec.wheel_path} is not in {wheel}; use the mediapipe {MEDIAPIPE_VERSION} wheel"
                ) from None

        return convert_models(read, out_dir, strict=strict, where=os.path.basename(wheel))


def convert_dir(
    tflite_dir: str | os.PathLike, out_dir: str | os.PathLike, *, strict: bool = True
) -> list[str]:
    """Convert the three ``.tflite`` files found (by their wheel file names) in a folder,
    e.g. the copies kept in ``lipforce_sdk/assets/facemesh/tflite``."""

    def read(spec: ModelSpec) -> bytes:
        path = os.path.join(os.fspath(tflite_dir), os.path.basename(spec.wheel_path))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found; copy it out of the mediapipe {MEDIAPIPE_VERSION} wheel ({spec.wheel_path}) or use --wheel"
            )
        with open(path, "rb") as fh:
            return fh.read()

    return convert_models(read, out_dir, strict=strict, where=os.fspath(tflite_dir))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lipforce_sdk.facemesh.convert", description=__doc__.split("\n\n")[0]
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument(
        "--wheel", help=f"mediapipe-{MEDIAPIPE_VERSION} wheel (default: pip download it)"
    )
    src.add_argument(
        "--tflite-dir",
        help="a folder holding the three .tflite files instead (e.g. lipforce_sdk/assets/facemesh/tflite)",
    )
    ap.add_argument("--out", required=True, help="output folder, e.g. lipforce_sdk/assets/facemesh")
    ap.add_argument(
        "--any-version",
        action="store_true",
        help="convert models whose hash differs from mediapipe 0.10.21's",
    )
    args = ap.parse_args(argv)
    if args.wheel:
        convert_wheel(args.wheel, args.out, strict=not args.any_version)
    elif args.tflite_dir:
        convert_dir(args.tflite_dir, args.out, strict=not args.any_version)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            convert_wheel(download_wheel(tmp), args.out, strict=not args.any_version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
