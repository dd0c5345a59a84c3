"""KV-cache attention op (``lipforce::KVCacheAttention``): references and the ONNX Runtime custom op.

One call attends a chunk's queries over a cache of frame slots (attention sink + ring-buffer window +
the chunk's own slots):

1. write, in place: ``k_cache[:, write_idx[c]*N + n] = k[:, c*N + n]`` (same for ``v``);
2. 3-D RoPE (Wan2.1 split of the head dim into frame/height/width axes) on the queries at ``q_pos`` and on
   the cache keys at ``k_pos`` (keys are stored un-rotated, rotated on read; values are not rotated);
3. softmax attention (scale ``1/sqrt(D)``) over the tokens of the slots with ``k_valid != 0``; a query that
   sees no valid slot gets zeros.

Shapes: ``q, k, v``: [B, Lc, H, D] with Lc = C*N, N = grid_h*grid_w; ``k_cache, v_cache``: [B, T, H, D] with
T = M*N; ``write_idx, q_pos``: [C] int32; ``k_pos, k_valid``: [M] int32.

Implementations of the same function:

- :func:`kv_cache_attention_numpy`: NumPy float64, independent of the native code (the test reference);
- :func:`kv_cache_attention_cpu`: the C++ CPU reference (``lipforce_sdk._kvattn``, fp32);
- the CUDA kernels and the TensorRT plugin (``csrc/kvCacheAttention``);
- :func:`register_ort_custom_op`: an ONNX Runtime custom op (onnxruntime-extensions) calling the C++ reference,
  so a plugin-flavour ONNX graph runs on a CPU.

The op's identity (domain, op type, plugin name/version, attribute names) is defined here once; the C++ side
defines the same values in ``csrc/kvCacheAttention/kvCacheAttentionParams.h`` (a test checks they agree).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

__all__ = [
    "DOMAIN",
    "OP_TYPE",
    "OP_VERSION",
    "PLUGIN_NAME",
    "PLUGIN_VERSION",
    "PLUGIN_NAMESPACE",
    "ORT_CONTRIB_DOMAIN",
    "ATTRIBUTE_NAMES",
    "INT_ATTRIBUTE_NAMES",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "DEFAULT_ROPE_THETA",
    "TRT_PARSER_ATTRIBUTES",
    "rope_dims",
    "kv_cache_attention_numpy",
    "kv_cache_attention_cpu",
    "native_module",
    "register_ort_custom_op",
    "to_ort_contrib_domain",
]

# ---- identity of the op (one place) -----------------------------------------------------------------------
DOMAIN = "lipforce"  # ONNX domain of the node
OP_TYPE = "KVCacheAttention"  # ONNX op type
OP_VERSION = 1  # opset version of DOMAIN
PLUGIN_NAME = OP_TYPE  # TensorRT plugin name (the ONNX parser looks plugins up by op type)
PLUGIN_VERSION = "1"  # TensorRT plugin version; bumped when the behaviour changes
PLUGIN_NAMESPACE = DOMAIN  # TensorRT plugin namespace (node attribute "plugin_namespace" for the parser)
ORT_CONTRIB_DOMAIN = "ai.onnx.contrib"  # where onnxruntime-extensions registers Python custom ops
INT_ATTRIBUTE_NAMES = ("num_heads", "head_dim", "grid_h", "grid_w", "num_slots", "chunk_frames")
ATTRIBUTE_NAMES = INT_ATTRIBUTE_NAMES + ("rope_theta",)
INPUT_NAMES = ("q", "k", "v", "k_cache", "v_cache", "write_idx", "q_pos", "k_pos", "k_valid")
OUTPUT_NAMES = ("out", "k_cache_out", "v_cache_out")
DEFAULT_ROPE_THETA = 10000.0

# Extra node attributes for TensorRT's ONNX parser, which maps an unknown op to the plugin named by its op type
# and reads version/namespace from these (it ignores the node's domain). The ORT custom op ignores them.
TRT_PARSER_ATTRIBUTES = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE}


def rope_dims(head_dim: int) -> tuple[int, int, int]:
    """Head-dim split of the 3-D RoPE (Wan2.1): (frame, height, width), e.g. 64 -> (24, 20, 20)."""
    if head_dim < 6 or head_dim % 2:
        raise ValueError(f"head_dim must be even and >= 6 for the 3-D RoPE, got {head_dim}")
    d_hw = 2 * (head_dim // 6)
    return head_dim - 2 * d_hw, d_hw, d_hw


# ---- NumPy reference (float64) ----------------------------------------------------------------------------
def _check_args(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, grid_h, grid_w):
    """Validates shapes and indices; returns (B, Lc, H, D, N, C, M, T)."""
    if q.ndim != 4:
        raise ValueError(f"q must be [B, Lc, H, D], got shape {q.shape}")
    b, lc, h, d = q.shape
    for name, a in (("k", k), ("v", v)):
        if a.shape != q.shape:
            raise ValueError(f"{name} must have the shape of q {q.shape}, got {a.shape}")
    for name, a in (("write_idx", write_idx), ("q_pos", q_pos), ("k_pos", k_pos), ("k_valid", k_valid)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    c, m = write_idx.shape[0], k_pos.shape[0]
    if q_pos.shape[0] != c:
        raise ValueError(f"q_pos must have len(write_idx)={c} entries, got {q_pos.shape[0]}")
    if k_valid.shape[0] != m:
        raise ValueError(f"k_valid must have len(k_pos)={m} entries, got {k_valid.shape[0]}")
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"grid_h and grid_w must be >= 1, got grid_h={grid_h}, grid_w={grid_w}")
    n = grid_h * grid_w
    if lc != c * n:
        raise ValueError(
            f"q has {lc} tokens but len(write_idx) * grid_h * grid_w = {c}*{grid_h}*{grid_w} = {c * n}"
        )
    t = m * n
    if k_cache.shape != (b, t, h, d):
        raise ValueError(
            f"k_cache must be [B, len(k_pos)*grid_h*grid_w, H, D] = {(b, t, h, d)}, got {k_cache.shape}"
        )
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache must have the shape of k_cache {k_cache.shape}, got {v_cache.shape}")
    rope_dims(d)
    seen = set()
    for i, w in enumerate(write_idx.tolist()):
        if not 0 <= w < m:
            raise ValueError(f"write_idx[{i}] = {w} is outside [0, num_slots={m})")
        if w in seen:
            raise ValueError(f"write_idx[{i}] = {w} repeats an earlier entry; chunk frames need distinct slots")
        seen.add(w)
    return b, lc, h, d, n, c, m, t


def _rope_angles(frame_pos: np.ndarray, grid_h: int, grid_w: int, head_dim: int, theta: float) -> np.ndarray:
    """Angles [F, N, D/2] (float64) for F frames at positions frame_pos."""
    d_f, d_h, d_w = rope_dims(head_dim)
    n = grid_h * grid_w
    tok = np.arange(n)
    axes = []
    for pos, d_a in ((frame_pos.astype(np.float64)[:, None], d_f),  # [F, 1]
                     ((tok // grid_w).astype(np.float64)[None, :], d_h),  # [1, N]
                     ((tok % grid_w).astype(np.float64)[None, :], d_w)):
        inv_freq = float(theta) ** (-(2.0 * np.arange(d_a // 2)) / d_a)  # [d_a/2]
        ang = pos[..., None] * inv_freq  # [F or 1, 1 or N, d_a/2]
        axes.append(np.broadcast_to(ang, (frame_pos.shape[0], n, d_a // 2)))
    return np.concatenate(axes, axis=-1)  # [F, N, D/2]


def _rope_apply(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """x: [B, F*N, H, D]; angles: [F, N, D/2]. Rotates the pairs (x[2j], x[2j+1])."""
    b, l, h, d = x.shape
    f, n, _ = angles.shape
    xp = x.reshape(b, f, n, h, d // 2, 2)
    cos = np.cos(angles)[None, :, :, None, :]  # [1, F, N, 1, D/2]
    sin = np.sin(angles)[None, :, :, None, :]
    x0, x1 = xp[..., 0], xp[..., 1]
    out = np.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
    return out.reshape(b, l, h, d)


def kv_cache_attention_numpy(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, grid_h, grid_w,
                             rope_theta=DEFAULT_ROPE_THETA):
    """The op in NumPy float64 (inputs are not modified).

    Returns ``(out [B, Lc, H, D], k_cache_out [B, T, H, D], v_cache_out [B, T, H, D])``, all float64.
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    k_cache_out = np.array(k_cache, dtype=np.float64, copy=True)
    v_cache_out = np.array(v_cache, dtype=np.float64, copy=True)
    write_idx, q_pos, k_pos, k_valid = (np.asarray(a).astype(np.int64) for a in (write_idx, q_pos, k_pos, k_valid))
    b, lc, h, d, n, c, m, t = _check_args(q, k, v, k_cache_out, v_cache_out, write_idx, q_pos, k_pos, k_valid,
                                          grid_h, grid_w)

    for ci, slot in enumerate(write_idx.tolist()):  # 1. write
        k_cache_out[:, slot * n:(slot + 1) * n] = k[:, ci * n:(ci + 1) * n]
        v_cache_out[:, slot * n:(slot + 1) * n] = v[:, ci * n:(ci + 1) * n]

    out = np.zeros((b, lc, h, d), dtype=np.float64)
    valid_tokens = np.nonzero(np.repeat(k_valid != 0, n))[0]  # cache token ids that are attended
    if valid_tokens.size == 0:
        return out, k_cache_out, v_cache_out

    q_rot = _rope_apply(q, _rope_angles(q_pos, grid_h, grid_w, d, rope_theta))  # 2. RoPE
    k_rot = _rope_apply(k_cache_out, _rope_angles(k_pos, grid_h, grid_w, d, rope_theta))[:, valid_tokens]
    v_sel = v_cache_out[:, valid_tokens]  # [B, Tv, H, D]

    scores = np.einsum("bihd,bjhd->bhij", q_rot, k_rot) / math.sqrt(d)  # 3. attention, [B, H, Lc, Tv]
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    out[...] = np.einsum("bhij,bjhd->bihd", p, v_sel)
    return out, k_cache_out, v_cache_out


# ---- C++ CPU reference ------------------------------------------------------------------------------------
def native_module():
    """The compiled module: lipforce_sdk._kvattn (pip install), else a top-level _kvattn on sys.path (a CMake
    build directory, e.g. PYTHONPATH=build/csrc)."""
    try:
        from lipforce_sdk import _kvattn
    except ImportError as e:
        try:
            import _kvattn  # type: ignore[no-redef]
        except ImportError:
            _kvattn = None
        if _kvattn is not None:
            return _kvattn
        raise ImportError(
            "lipforce_sdk._kvattn (the compiled KV-cache attention op) is not available: "
            f"{e}. Build it with `pip install .` from the repository root (needs a C++17 compiler, CMake >= 3.24 "
            "and pybind11), or build with CMake (-DLIPFORCE_BUILD_PYTHON=ON) and put the build's csrc/ directory "
            "on PYTHONPATH."
        ) from e
    return _kvattn


def kv_cache_attention_cpu(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, grid_h, grid_w,
                           rope_theta=DEFAULT_ROPE_THETA, *, inplace=False):
    """The op on the C++ CPU reference (fp32).

    Same arguments and results as :func:`kv_cache_attention_numpy` (float32 results). With ``inplace=True``
    the caches must be float32 C-contiguous arrays; they are updated in place and returned as
    ``k_cache_out``/``v_cache_out``. Otherwise the inputs are left untouched.
    """
    native = native_module()
    if inplace:
        kc, vc = k_cache, v_cache
    else:
        kc = np.array(k_cache, dtype=np.float32, order="C", copy=True)
        vc = np.array(v_cache, dtype=np.float32, order="C", copy=True)
    out = native.kv_cache_attention(q, k, v, kc, vc, write_idx, q_pos, k_pos, k_valid, int(grid_h), int(grid_w),
                                    float(rope_theta))
    return out, kc, vc


# ---- ONNX Runtime custom op -------------------------------------------------------------------------------
_ort_op = None


def register_ort_custom_op() -> str:
    """Registers ``KVCacheAttention`` as an onnxruntime-extensions Python custom op (idempotent).

    The op runs the C++ CPU reference and returns ``(out, k_cache_out, v_cache_out)`` (float32). The node must
    carry all of :data:`ATTRIBUTE_NAMES` (ONNX Runtime custom ops have no optional attributes; other attributes,
    such as :data:`TRT_PARSER_ATTRIBUTES`, are ignored). Such ops live in the domain ``ai.onnx.contrib``: run a
    ``lipforce``-domain model through :func:`to_ort_contrib_domain`.
    Returns the custom-op library path for ``SessionOptions.register_custom_ops_library``.
    """
    global _ort_op
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as e:
        raise ImportError(
            "register_ort_custom_op needs onnxruntime-extensions: pip install 'lipforce[plugin-ort]' "
            f"(or pip install onnxruntime-extensions): {e}"
        ) from e
    native_module()  # fail here, with the build hint, rather than inside an ORT session
    if _ort_op is None:
        attrs: dict[str, Any] = {name: PyCustomOpDef.dt_int64 for name in INT_ATTRIBUTE_NAMES}
        attrs["rope_theta"] = PyCustomOpDef.dt_float

        @onnx_op(op_type=OP_TYPE,
                 inputs=[PyCustomOpDef.dt_float] * 5 + [PyCustomOpDef.dt_int32] * 4,
                 outputs=[PyCustomOpDef.dt_float] * 3,
                 attrs=attrs)
        def _kv_cache_attention_ort(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, **node_attrs):
            return _run_ort_node(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, node_attrs)

        _ort_op = _kv_cache_attention_ort
    return get_library_path()


def _run_ort_node(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, node_attrs):
    b, lc, h, d = q.shape
    m, c = k_pos.shape[0], write_idx.shape[0]
    actual = {"num_heads": h, "head_dim": d, "num_slots": m, "chunk_frames": c}
    for name, value in actual.items():
        if int(node_attrs[name]) != value:
            raise ValueError(f"{OP_TYPE} attribute {name}={node_attrs[name]} does not match the inputs ({value})")
    return kv_cache_attention_cpu(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid,
                                  int(node_attrs["grid_h"]), int(node_attrs["grid_w"]), float(node_attrs["rope_theta"]))


def to_ort_contrib_domain(model):
    """A copy of an ONNX ModelProto whose ``lipforce``-domain nodes and opset import use ``ai.onnx.contrib``
    (where onnxruntime-extensions registers Python custom ops). The input model is not modified."""
    model = copy.deepcopy(model)
    graphs = [model.graph] + [f for f in model.functions]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            if node.domain == DOMAIN:
                node.domain = ORT_CONTRIB_DOMAIN
            for attr in node.attribute:  # sub-graphs (If / Loop / Scan bodies)
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    opsets = {imp.domain: imp.version for imp in model.opset_import}
    if DOMAIN in opsets:
        version = opsets.pop(DOMAIN)
        opsets[ORT_CONTRIB_DOMAIN] = max(version, opsets.get(ORT_CONTRIB_DOMAIN, version))
        del model.opset_import[:]
        for dom, ver in opsets.items():
            model.opset_import.add(domain=dom, version=ver)
    return model
