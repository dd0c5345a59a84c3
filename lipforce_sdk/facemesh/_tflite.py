"""A minimal read-only parser of TFLite model files (the FlatBuffer schema ``tflite/schema.fbs``).

Reads just what ``convert.py`` needs from the MediaPipe face models: tensors (shape, type,
constant data, sparsity), operators (builtin code, inputs, outputs, options) and the graph
inputs/outputs. No dependency beyond NumPy.

FlatBuffers in brief: a table starts with an ``int32`` offset back to its vtable; the vtable
holds ``uint16`` byte offsets of each field inside the table (0 = absent, use the default);
tables, vectors and strings are referenced by ``uint32`` offsets relative to where the offset
is stored; a vector is a ``uint32`` length followed by its elements (little endian throughout).
Field ids below are the order of fields in ``schema.fbs`` (a union takes two ids: type, value).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

# TensorType -> NumPy dtype
TENSOR_TYPES = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    6: np.bool_,
    7: np.int16,
    9: np.int8,
    10: np.float64,
}

# BuiltinOperator codes of the ops these models use (and a few neighbours, for messages)
BUILTIN_OPS = {
    0: "ADD",
    1: "AVERAGE_POOL_2D",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE",
    6: "DEQUANTIZE",
    9: "FULLY_CONNECTED",
    14: "LOGISTIC",
    17: "MAX_POOL_2D",
    18: "MUL",
    19: "RELU",
    21: "RELU6",
    22: "RESHAPE",
    23: "RESIZE_BILINEAR",
    28: "TANH",
    32: "CUSTOM",
    34: "PAD",
    54: "PRELU",
    97: "RESIZE_NEAREST_NEIGHBOR",
    117: "HARD_SWISH",
    124: "DENSIFY",
}


class _Table:
    """One FlatBuffer table at byte position ``pos`` of ``buf``."""

    __slots__ = ("buf", "pos", "_vt", "_vt_len")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        (soff,) = struct.unpack_from("<i", buf, pos)
        self._vt = pos - soff
        (self._vt_len,) = struct.unpack_from("<H", buf, self._vt)

    def _field(self, fid: int) -> int:
        """Byte offset of field ``fid`` inside the table, or 0 when absent."""
        at = 4 + 2 * fid
        if at >= self._vt_len:
            return 0
        (off,) = struct.unpack_from("<H", self.buf, self._vt + at)
        return off

    def scalar(self, fid: int, fmt: str, default=0):
        off = self._field(fid)
        if not off:
            return default
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0]

    def _target(self, fid: int) -> int | None:
        off = self._field(fid)
        if not off:
            return None
        p = self.pos + off
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, fid: int) -> "_Table | None":
        t = self._target(fid)
        return None if t is None else _Table(self.buf, t)

    def string(self, fid: int) -> str | None:
        t = self._target(fid)
        if t is None:
            return None
        (n,) = struct.unpack_from("<I", self.buf, t)
        return self.buf[t + 4 : t + 4 + n].decode("utf-8", "replace")

    def vector(self, fid: int, dtype) -> np.ndarray:
        """A vector of scalars (empty when absent)."""
        t = self._target(fid)
        if t is None:
            return np.zeros(0, dtype)
        (n,) = struct.unpack_from("<I", self.buf, t)
        return np.frombuffer(self.buf, np.dtype(dtype).newbyteorder("<"), n, t + 4).astype(dtype)

    def tables(self, fid: int) -> list["_Table"]:
        """A vector of tables (empty when absent)."""
        t = self._target(fid)
        if t is None:
            return []
        (n,) = struct.unpack_from("<I", self.buf, t)
        out = []
        for i in range(n):
            p = t + 4 + 4 * i
            out.append(_Table(self.buf, p + struct.unpack_from("<I", self.buf, p)[0]))
        return out


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None  # constant contents (dense, or the packed values when sparse)
    sparsity: "_Table | None" = None


@dataclass
class Operator:
    index: int
    op: str  # BUILTIN_OPS name, "CUSTOM:<code>" or "BUILTIN_<n>"
    inputs: list[int]  # tensor indices; -1 = optional input left out
    outputs: list[int]
    options: "_Table | None"  # the builtin options table (read with its field ids)


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    description: str = ""
    op_counts: dict[str, int] = field(default_factory=dict)


def read_model(data: bytes) -> Graph:
    """Parse a ``.tflite`` file's bytes (first subgraph only)."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(
            f"not a TFLite model (file identifier {data[4:8]!r}, expected b'TFL3'); pass a "
            ".tflite file such as mediapipe/modules/face_landmark/face_landmark.tflite"
        )
    (root,) = struct.unpack_from("<I", data, 0)
    model = _Table(data, root)
    codes = []
    for oc in model.tables(1):
        code = max(oc.scalar(0, "b", 0), oc.scalar(3, "i", 0))  # deprecated / new builtin code
        if code == 32:
            codes.append("CUSTOM:" + (oc.string(1) or ""))
        else:
            codes.append(BUILTIN_OPS.get(code, f"BUILTIN_{code}"))
    buffers = model.tables(4)
    subgraphs = model.tables(2)
    if not subgraphs:
        raise ValueError("the TFLite model has no subgraph")
    g = subgraphs[0]
    tensors = []
    for i, t in enumerate(g.tables(0)):
        ttype = t.scalar(1, "b", 0)
        if ttype not in TENSOR_TYPES:
            raise NotImplementedError(f"tensor {i} has TFLite type {ttype}, not supported")
        dtype = TENSOR_TYPES[ttype]
        shape = tuple(int(v) for v in t.vector(0, np.int32))
        bidx = t.scalar(2, "I", 0)
        arr = None
        if 0 < bidx < len(buffers):
            raw = buffers[bidx].vector(0, np.uint8)
            if buffers[bidx].scalar(1, "Q", 0):
                raise NotImplementedError(
                    "TFLite buffers stored outside the flatbuffer (> 2 GB models)"
                )
            if raw.size:
                arr = raw.view(np.dtype(dtype).newbyteorder("<")).astype(dtype)
        sparsity = t.table(6)
        if arr is not None and sparsity is None:
            arr = arr.reshape(shape)
        tensors.append(Tensor(i, t.string(3) or f"t{i}", shape, dtype, arr, sparsity))
    ops = []
    counts: dict[str, int] = {}
    for i, o in enumerate(g.tables(3)):
        name = codes[o.scalar(0, "I", 0)]
        counts[name] = counts.get(name, 0) + 1
        ops.append(
            Operator(
                i,
                name,
                [int(v) for v in o.vector(1, np.int32)],
                [int(v) for v in o.vector(2, np.int32)],
                o.table(4),
            )
        )
    return Graph(
        tensors,
        ops,
        [int(v) for v in g.vector(1, np.int32)],
        [int(v) for v in g.vector(2, np.int32)],
        model.string(3) or "",
        counts,
    )


def densify(t: Tensor) -> np.ndarray:
    """The dense contents of a sparse constant (TFLite ``SparsityParameters``, no blocks).

    Follows TFLite's ``FormatConverter``: dimensions are visited in ``traversal_order``; a
    DENSE level enumerates ``0..dense_size-1``, a SPARSE_CSR level enumerates
    ``indices[segments[p] : segments[p + 1]]`` where ``p`` is the position reached so far.
    """
    sp = t.sparsity
    if sp is None or t.data is None:
        raise ValueError(f"tensor {t.name!r} is not a sparse constant")
    order = [int(v) for v in sp.vector(0, np.int32)]
    if sp.vector(1, np.int32).size:
        raise NotImplementedError(f"tensor {t.name!r}: block-sparse tensors are not supported")
    rank = len(t.shape)
    if sorted(order) != list(range(rank)):
        raise ValueError(f"tensor {t.name!r}: traversal order {order} does not match rank {rank}")
    levels = []
    vec_types = {1: np.int32, 2: np.uint16, 3: np.uint8}  # Int32Vector, Uint16Vector, Uint8Vector
    for dm in sp.tables(2):
        if dm.scalar(0, "b", 0) == 0:  # DENSE
            levels.append(("dense", dm.scalar(1, "i", 0), None, None))
        else:
            seg_t, idx_t = dm.scalar(2, "B", 0), dm.scalar(4, "B", 0)
            seg = dm.table(3).vector(0, vec_types[seg_t]).astype(np.int64)
            idx = dm.table(5).vector(0, vec_types[idx_t]).astype(np.int64)
            levels.append(("csr", 0, seg, idx))
    dense = np.zeros(t.shape, t.dtype)
    src = t.data.reshape(-1)
    # enumerate coordinates level by level (vectorised): cur = [n, level] coords, pos = [n]
    coords = np.zeros((1, 0), np.int64)
    pos = np.zeros(1, np.int64)
    for kind, size, seg, idx in levels:
        if kind == "dense":
            coords = np.concatenate(
                [np.repeat(coords, size, 0), np.tile(np.arange(size), len(pos))[:, None]], 1
            )
            pos = (pos[:, None] * size + np.arange(size)[None, :]).reshape(-1)
        else:
            starts, ends = seg[pos], seg[pos + 1]
            counts = ends - starts
            child = (
                np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
                if len(pos)
                else np.zeros(0, np.int64)
            )
            coords = np.concatenate([np.repeat(coords, counts, 0), idx[child][:, None]], 1)
            pos = child
    if coords.shape[0] != src.size:
        raise ValueError(
            f"tensor {t.name!r}: sparsity metadata gives {coords.shape[0]} values, buffer has {src.size}"
        )
    orig = np.empty_like(coords)
    orig[:, order] = coords
    dense[tuple(orig.T)] = src
    return dense
