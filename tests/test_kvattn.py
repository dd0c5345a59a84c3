"""KV-cache attention op: C++ CPU reference, NumPy reference, ONNX Runtime custom op, CUDA launcher.

The NumPy float64 reference is itself checked against an independent PyTorch implementation that applies
RoPE the way Wan2.1 does (complex multiplication with ``torch.polar`` frequencies); that PyTorch reference
is also the one the GPU tests compare with at the 1.3b shape.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from lipforce_sdk import kvattn

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "csrc" / "kvCacheAttention" / "kvCacheAttention.yaml"


def _load_native():
    try:
        return kvattn.native_module()
    except ImportError:
        return None


native = _load_native()
needs_native = pytest.mark.skipif(
    native is None, reason="lipforce_sdk._kvattn is not built (pip install . or a CMake build on PYTHONPATH)")


# ---- tolerances (one place) ---------------------------------------------------------------------------------
TOLERANCES = {
    "float32": dict(atol=1e-5, rtol=1e-4),  # fp32 CPU reference vs float64 NumPy
    "float16": dict(atol=3e-3, rtol=1e-2),  # CUDA fp16 (fp32 softmax/accumulation) vs fp32/fp64 reference
    "bfloat16": dict(atol=2e-2, rtol=3e-2),  # CUDA bf16
}


def assert_close(actual, expected, dtype: str, what: str, params) -> None:
    tol = TOLERANCES[dtype]
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               err_msg=f"{what} ({dtype}, atol={tol['atol']}, rtol={tol['rtol']}) for {params}",
                               **tol)


# ---- cases --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    head_dim: int
    batch: int
    grid_h: int
    grid_w: int
    chunk_frames: int
    num_slots: int
    positions: str = "relative"  # relative | large | random
    num_heads: int = 2
    seed: int = 0

    @property
    def tokens(self) -> int:
        return self.grid_h * self.grid_w

    def __str__(self) -> str:
        return (f"D{self.head_dim}-B{self.batch}-H{self.num_heads}-g{self.grid_h}x{self.grid_w}-C{self.chunk_frames}"
                f"-M{self.num_slots}-{self.positions}-s{self.seed}")


def make_inputs(case: Case) -> dict:
    """Random inputs; write slots are a random permutation, the chunk's slots are valid, others at random."""
    rng = np.random.default_rng(zlib.crc32(str(case).encode()))
    b, h, d, n, c, m = case.batch, case.num_heads, case.head_dim, case.tokens, case.chunk_frames, case.num_slots
    q, k, v = (rng.standard_normal((b, c * n, h, d)).astype(np.float32) for _ in range(3))
    k_cache, v_cache = (rng.standard_normal((b, m * n, h, d)).astype(np.float32) for _ in range(2))
    write_idx = rng.permutation(m)[:c].astype(np.int32)
    k_valid = rng.integers(0, 2, m).astype(np.int32)
    k_valid[write_idx] = 1
    if case.positions == "relative":  # the SDK: cache-relative frame positions, small
        k_pos = rng.permutation(m).astype(np.int32)
        q_pos = k_pos[write_idx].copy()
    elif case.positions == "large":  # absolute positions after many ring wraps
        k_pos = (123_457 + 7 * rng.permutation(m)).astype(np.int32)
        q_pos = k_pos[write_idx].copy()
    else:  # unrelated positions
        k_pos = rng.integers(0, 60, m).astype(np.int32)
        q_pos = rng.integers(0, 60, c).astype(np.int32)
    return dict(q=q, k=k, v=v, k_cache=k_cache, v_cache=v_cache, write_idx=write_idx, q_pos=q_pos, k_pos=k_pos,
                k_valid=k_valid, grid_h=case.grid_h, grid_w=case.grid_w)


SIZES = [(1, 1, 1, 1), (2, 3, 1, 4), (3, 4, 2, 6), (4, 4, 3, 12)]  # (grid_h, grid_w, C, M)
SWEEP = [
    Case(head_dim=d, batch=b, grid_h=gh, grid_w=gw, chunk_frames=c, num_slots=m, positions=pos,
         num_heads=3 if d == 64 else 2)
    for d in (64, 128) for b in (1, 2) for (gh, gw, c, m) in SIZES for pos in ("relative", "large", "random")
]


# ---- an independent PyTorch reference (Wan2.1-style complex RoPE) ------------------------------------------
def wan_rope_params(max_pos: int, dim: int, theta: float):
    """Wan2.1 rope_params: complex128 [max_pos, dim/2] = polar(1, pos * theta^(-2i/dim))."""
    import torch
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float64),
                        1.0 / torch.pow(theta, torch.arange(0, dim, 2).to(torch.float64).div(dim)))
    return torch.polar(torch.ones_like(freqs), freqs)


def torch_reference(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, grid_h, grid_w,
                    rope_theta=10000.0):
    """The op in PyTorch float64 on the tensors' device (written independently of kvattn.py)."""
    import torch
    q, k, v, k_cache, v_cache = (x.to(torch.float64) for x in (q, k, v, k_cache, v_cache))
    b, lc, h, d = q.shape
    n = grid_h * grid_w
    c = 2 * (d // 6)
    dims = [d - 2 * c, c, c]
    write_idx, q_pos, k_pos, k_valid = (x.long().cpu() for x in (write_idx, q_pos, k_pos, k_valid))
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    for ci, slot in enumerate(write_idx.tolist()):
        k_cache[:, slot * n:(slot + 1) * n] = k[:, ci * n:(ci + 1) * n]
        v_cache[:, slot * n:(slot + 1) * n] = v[:, ci * n:(ci + 1) * n]
    max_pos = int(max(q_pos.max(), k_pos.max(), grid_h, grid_w)) + 1
    ff, fh, fw = (wan_rope_params(max_pos, dim, rope_theta).to(q.device) for dim in dims)

    def rope(x, frame_pos):  # x: [B, F*N, H, D]
        f = frame_pos.numel()
        freqs = torch.cat([
            ff[frame_pos.to(q.device)].view(f, 1, 1, -1).expand(f, grid_h, grid_w, -1),
            fh[:grid_h].view(1, grid_h, 1, -1).expand(f, grid_h, grid_w, -1),
            fw[:grid_w].view(1, 1, grid_w, -1).expand(f, grid_h, grid_w, -1),
        ], dim=-1).reshape(1, f * n, 1, -1)
        xc = torch.view_as_complex(x.reshape(*x.shape[:3], -1, 2).contiguous())
        return torch.view_as_real(xc * freqs).flatten(3)

    qr = rope(q, q_pos)
    kr = rope(k_cache, k_pos)
    valid = torch.nonzero(k_valid.repeat_interleave(n) != 0).flatten().to(q.device)
    out = torch.zeros_like(q)
    if valid.numel():
        for hh in range(h):  # one head at a time keeps the score matrix small at the 1.3b shape
            s = torch.einsum("bid,bjd->bij", qr[:, :, hh], kr[:, valid, hh]) / math.sqrt(d)
            out[:, :, hh] = torch.einsum("bij,bjd->bid", torch.softmax(s, dim=-1), v_cache[:, valid, hh])
    return out, k_cache, v_cache


# ---- the NumPy reference is right ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", [Case(64, 2, 3, 4, 2, 6, "random"), Case(128, 1, 4, 4, 3, 12, "relative"),
                                  Case(64, 1, 2, 5, 1, 3, "large")], ids=str)
def test_numpy_reference_matches_wan_style_torch_reference(case):
    torch = pytest.importorskip("torch")
    x = make_inputs(case)
    ref = kvattn.kv_cache_attention_numpy(**x)
    tx = {key: (torch.from_numpy(val) if isinstance(val, np.ndarray) else val) for key, val in x.items()}
    got = torch_reference(**tx)
    for name, a, e in zip(kvattn.OUTPUT_NAMES, got, ref):
        np.testing.assert_allclose(a.numpy(), e, atol=1e-10, rtol=1e-9, err_msg=f"{name} for {case}")


def test_rope_dims_follow_wan_split():
    assert kvattn.rope_dims(64) == (24, 20, 20)
    assert kvattn.rope_dims(128) == (44, 42, 42)
    for d in range(6, 258, 2):  # Wan splits D/2 pairs as [c - 2(c//3), c//3, c//3]
        c = d // 2
        assert tuple(x // 2 for x in kvattn.rope_dims(d)) == (c - 2 * (c // 3), c // 3, c // 3), d


def test_rope_matches_single_pair_formula():
    """One nonzero pair per axis: out = rotation by pos * theta^(-2i/d_axis) of that pair."""
    d, gh, gw, theta = 64, 3, 5, 10000.0
    d_f, d_h, d_w = kvattn.rope_dims(d)
    q = np.zeros((1, gh * gw, 1, d))
    token = 2 * gw + 3  # h = 2, w = 3
    for j in (1, d_f // 2 + 4, d_f // 2 + d_h // 2 + 7):  # pair 1 of frame axis, 4 of height, 7 of width
        q[0, token, 0, 2 * j:2 * j + 2] = (0.6, -0.8)
    angles = kvattn._rope_angles(np.array([9]), gh, gw, d, theta)
    rot = kvattn._rope_apply(q, angles)
    for j, pos, i, d_a in ((1, 9, 1, d_f), (d_f // 2 + 4, 2, 4, d_h), (d_f // 2 + d_h // 2 + 7, 3, 7, d_w)):
        a = pos * theta ** (-(2.0 * i) / d_a)
        expect = (0.6 * math.cos(a) + 0.8 * math.sin(a), 0.6 * math.sin(a) - 0.8 * math.cos(a))
        np.testing.assert_allclose(rot[0, token, 0, 2 * j:2 * j + 2], expect, atol=1e-12, err_msg=f"pair {j}")


# ---- C++ CPU reference == NumPy reference ------------------------------------------------------------------
@needs_native
@pytest.mark.parametrize("case", SWEEP, ids=str)
def test_cpu_reference_matches_numpy(case):
    x = make_inputs(case)
    out, k_cache_out, v_cache_out = kvattn.kv_cache_attention_cpu(**x)
    ref_out, ref_k, ref_v = kvattn.kv_cache_attention_numpy(**x)
    assert out.dtype == np.float32 and out.shape == x["q"].shape
    assert_close(out, ref_out, "float32", "out", case)
    # The cache write is a copy: exact.
    np.testing.assert_array_equal(k_cache_out, ref_k.astype(np.float32), err_msg=f"k_cache_out for {case}")
    np.testing.assert_array_equal(v_cache_out, ref_v.astype(np.float32), err_msg=f"v_cache_out for {case}")


@needs_native
def test_cpu_reference_tiny_model_shape():
    case = Case(head_dim=64, batch=1, grid_h=8, grid_w=8, chunk_frames=1, num_slots=8, num_heads=2)
    x = make_inputs(case)
    x["k_valid"][:] = 1
    out, _, _ = kvattn.kv_cache_attention_cpu(**x)
    ref_out, _, _ = kvattn.kv_cache_attention_numpy(**x)
    assert_close(out, ref_out, "float32", "out", case)


@needs_native
def test_cache_is_written_in_place_exactly():
    case = Case(64, 2, 3, 4, 2, 6)
    x = make_inputs(case)
    before_k, before_v = x["k_cache"].copy(), x["v_cache"].copy()
    k_cache, v_cache = x["k_cache"], x["v_cache"]
    out = native.kv_cache_attention(x["q"], x["k"], x["v"], k_cache, v_cache, x["write_idx"], x["q_pos"],
                                    x["k_pos"], x["k_valid"], case.grid_h, case.grid_w, 10000.0)
    assert out.shape == x["q"].shape
    n = case.tokens
    written = set(x["write_idx"].tolist())
    for slot in range(case.num_slots):
        rows = slice(slot * n, (slot + 1) * n)
        if slot in written:
            c = x["write_idx"].tolist().index(slot)
            src = slice(c * n, (c + 1) * n)
            np.testing.assert_array_equal(k_cache[:, rows], x["k"][:, src], err_msg=f"k slot {slot}")
            np.testing.assert_array_equal(v_cache[:, rows], x["v"][:, src], err_msg=f"v slot {slot}")
        else:
            np.testing.assert_array_equal(k_cache[:, rows], before_k[:, rows], err_msg=f"k slot {slot} untouched")
            np.testing.assert_array_equal(v_cache[:, rows], before_v[:, rows], err_msg=f"v slot {slot} untouched")
    # kv_cache_attention_cpu(inplace=True) returns the same arrays.
    y = make_inputs(case)
    _, kc, vc = kvattn.kv_cache_attention_cpu(**y, inplace=True)
    assert kc is y["k_cache"] and vc is y["v_cache"]


@needs_native
@pytest.mark.parametrize("impl", ["cpu", "numpy"])
def test_masked_slots_never_leak_even_nan(impl):
    """Garbage (NaN/inf) in masked slots must not reach the output: same result as with zeros there."""
    fn = kvattn.kv_cache_attention_cpu if impl == "cpu" else kvattn.kv_cache_attention_numpy
    case = Case(64, 2, 3, 3, 1, 5)
    x = make_inputs(case)
    x["k_valid"][:] = 1
    masked = [s for s in range(case.num_slots) if s not in x["write_idx"]][:2]
    x["k_valid"][masked] = 0
    n = case.tokens
    zeros, garbage = dict(x), dict(x)
    zeros["k_cache"], zeros["v_cache"] = x["k_cache"].copy(), x["v_cache"].copy()
    garbage["k_cache"], garbage["v_cache"] = x["k_cache"].copy(), x["v_cache"].copy()
    for s in masked:
        zeros["k_cache"][:, s * n:(s + 1) * n] = 0
        zeros["v_cache"][:, s * n:(s + 1) * n] = 0
        garbage["k_cache"][:, s * n:(s + 1) * n] = np.nan
        garbage["v_cache"][:, s * n:(s + 1) * n] = np.inf
    out_zero = fn(**zeros)[0]
    out_garbage = fn(**garbage)[0]
    assert np.isfinite(out_garbage).all(), f"{impl}: masked NaN/inf leaked for {case}, masked={masked}"
    np.testing.assert_array_equal(out_garbage, out_zero, err_msg=f"{impl} for {case}, masked={masked}")


@needs_native
@pytest.mark.parametrize("impl", ["cpu", "numpy"])
def test_fully_masked_rows_output_zeros(impl):
    fn = kvattn.kv_cache_attention_cpu if impl == "cpu" else kvattn.kv_cache_attention_numpy
    case = Case(128, 2, 2, 2, 2, 4)
    x = make_inputs(case)
    x["k_valid"][:] = 0
    out, k_cache_out, _ = fn(**x)
    np.testing.assert_array_equal(out, np.zeros_like(out), err_msg=f"{impl} for {case}")
    n = case.tokens
    slot = int(x["write_idx"][0])
    np.testing.assert_array_equal(k_cache_out[:, slot * n:(slot + 1) * n], x["k"][:, :n],
                                  err_msg=f"{impl}: the cache is still written when every slot is masked")


@needs_native
@pytest.mark.parametrize("shift", [1, 1000, 100_000])
def test_output_depends_only_on_relative_positions(shift):
    """RoPE is relative: shifting every frame position by the same amount leaves the output unchanged."""
    case = Case(128, 1, 3, 4, 2, 6)
    x = make_inputs(case)
    base = kvattn.kv_cache_attention_cpu(**x)[0]
    shifted = dict(x, q_pos=x["q_pos"] + shift, k_pos=x["k_pos"] + shift)
    assert_close(kvattn.kv_cache_attention_cpu(**shifted)[0], base, "float32", "shifted out",
                 dict(case=str(case), shift=shift))


@needs_native
def test_rope_theta_is_used():
    case = Case(64, 1, 3, 4, 2, 6, "random")
    x = make_inputs(case)
    a = kvattn.kv_cache_attention_cpu(**x)[0]
    b = kvattn.kv_cache_attention_cpu(**x, rope_theta=500.0)[0]
    assert np.abs(a - b).max() > 1e-3, "rope_theta had no effect"
    assert_close(b, kvattn.kv_cache_attention_numpy(**x, rope_theta=500.0)[0], "float32", "out", "rope_theta=500")


# ---- argument checks ----------------------------------------------------------------------------------------
def _bad(x, **changes):
    y = dict(x)
    y.update(changes)
    return y


@needs_native
@pytest.mark.parametrize("impl", ["cpu", "numpy"])
def test_invalid_arguments_are_rejected_with_the_value(impl):
    fn = kvattn.kv_cache_attention_cpu if impl == "cpu" else kvattn.kv_cache_attention_numpy
    x = make_inputs(Case(64, 1, 2, 2, 2, 4))
    cases = [
        (_bad(x, write_idx=np.array([0, 4], np.int32)), r"write_idx\[1\] = 4 is outside \[0, num_slots=4\)"),
        (_bad(x, write_idx=np.array([-1, 2], np.int32)), r"write_idx\[0\] = -1"),
        (_bad(x, write_idx=np.array([3, 3], np.int32)), r"write_idx\[1\] = 3 repeats"),
        (_bad(x, grid_w=3), r"q has 8 tokens"),
        (_bad(x, k_valid=np.ones(3, np.int32)), r"k_valid must have len\(k_pos\)=4"),
        (_bad(x, q_pos=np.zeros(1, np.int32)), r"q_pos must have len\(write_idx\)=2"),
        (_bad(x, v=x["v"][:, :, :1]), r"v must have the shape of q"),
        (_bad(x, k_cache=x["k_cache"][:, :8]), r"k_cache must be \[B, .*\]"),
    ]
    for bad, pattern in cases:
        before = bad["k_cache"].copy()
        with pytest.raises(ValueError, match=pattern):
            fn(**bad)
        np.testing.assert_array_equal(bad["k_cache"], before, err_msg=f"{impl}: cache changed by a rejected call")


@needs_native
def test_native_rejects_caches_it_cannot_update_in_place():
    x = make_inputs(Case(64, 1, 2, 2, 1, 3))
    args = [x[name] for name in kvattn.INPUT_NAMES]
    with pytest.raises(TypeError, match="k_cache must be float32"):
        native.kv_cache_attention(*args[:3], x["k_cache"].astype(np.float64), *args[4:], 2, 2)
    with pytest.raises(ValueError, match="v_cache must be C-contiguous"):
        fortran = np.asfortranarray(x["v_cache"])
        native.kv_cache_attention(*args[:4], fortran, *args[5:], 2, 2)
    readonly = x["k_cache"].copy()
    readonly.setflags(write=False)
    with pytest.raises(ValueError, match="k_cache must be writeable"):
        native.kv_cache_attention(*args[:3], readonly, *args[4:], 2, 2)


# ---- one definition of the op's identity --------------------------------------------------------------------
def _yaml_list(text: str, key: str) -> list[str]:
    """Items of the block list `key:` in the spec (plain `- item  # comment` lines)."""
    m = re.search(rf"^(\s+){key}:\s*\n((?:\1\s+- .*\n)+)", text, flags=re.M)
    assert m, f"{key} not found in {SPEC}"
    return [re.sub(r"#.*", "", line).strip()[2:].strip() for line in m.group(2).splitlines()]


def test_spec_yaml_matches_python_constants():
    text = SPEC.read_text()
    assert re.search(rf"^name: {kvattn.PLUGIN_NAME}$", text, flags=re.M)
    assert re.search(rf"^namespace: {kvattn.PLUGIN_NAMESPACE}$", text, flags=re.M)
    assert re.search(rf"^onnx_domain: {kvattn.DOMAIN}$", text, flags=re.M)
    assert re.search(rf'^\s+"{kvattn.PLUGIN_VERSION}":$', text, flags=re.M)
    assert tuple(_yaml_list(text, "inputs")) == kvattn.INPUT_NAMES
    assert tuple(_yaml_list(text, "outputs")) == kvattn.OUTPUT_NAMES
    assert tuple(_yaml_list(text, "attributes")) == kvattn.ATTRIBUTE_NAMES
    assert tuple(_yaml_list(text, "attributes_required")) == kvattn.INT_ATTRIBUTE_NAMES


@needs_native
def test_native_constants_match_python_constants():
    assert native.PLUGIN_NAME == kvattn.PLUGIN_NAME == kvattn.OP_TYPE
    assert native.PLUGIN_VERSION == kvattn.PLUGIN_VERSION
    assert native.PLUGIN_NAMESPACE == kvattn.PLUGIN_NAMESPACE
    assert tuple(native.ATTRIBUTE_NAMES) == kvattn.ATTRIBUTE_NAMES


def test_entry_points_take_the_same_arguments():
    def positional(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()
                if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert positional(kvattn.kv_cache_attention_cpu) == positional(kvattn.kv_cache_attention_numpy)
    assert [name for name, _ in positional(kvattn.kv_cache_attention_numpy)][:9] == list(kvattn.INPUT_NAMES)


# ---- ONNX Runtime custom op ---------------------------------------------------------------------------------
def _one_node_model(case: Case, with_trt_parser_attributes: bool):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    b, h, d, n, c, m = case.batch, case.num_heads, case.head_dim, case.tokens, case.chunk_frames, case.num_slots
    f, i32 = TensorProto.FLOAT, TensorProto.INT32
    shapes = dict(q=[b, c * n, h, d], k=[b, c * n, h, d], v=[b, c * n, h, d], k_cache=[b, m * n, h, d],
                  v_cache=[b, m * n, h, d], write_idx=[c], q_pos=[c], k_pos=[m], k_valid=[m], out=[b, c * n, h, d],
                  k_cache_out=[b, m * n, h, d], v_cache_out=[b, m * n, h, d])
    types = dict(write_idx=i32, q_pos=i32, k_pos=i32, k_valid=i32)
    inputs = [helper.make_tensor_value_info(name, types.get(name, f), shapes[name]) for name in kvattn.INPUT_NAMES]
    outputs = [helper.make_tensor_value_info(name, f, shapes[name]) for name in kvattn.OUTPUT_NAMES]
    extra = kvattn.TRT_PARSER_ATTRIBUTES if with_trt_parser_attributes else {}
    node = helper.make_node(kvattn.OP_TYPE, list(kvattn.INPUT_NAMES), list(kvattn.OUTPUT_NAMES),
                            domain=kvattn.DOMAIN, num_heads=h, head_dim=d, grid_h=case.grid_h, grid_w=case.grid_w,
                            num_slots=m, chunk_frames=c, rope_theta=10000.0, **extra)
    graph = helper.make_graph([node], "kv_cache_attention", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(kvattn.DOMAIN, kvattn.OP_VERSION)])
    onnx.checker.check_model(model)
    return model


@needs_native
@pytest.mark.parametrize("with_trt_parser_attributes", [False, True])
def test_onnx_node_runs_in_onnxruntime_through_the_custom_op(with_trt_parser_attributes):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxruntime_extensions")
    case = Case(64, 1, 3, 4, 2, 5, "relative")
    model = _one_node_model(case, with_trt_parser_attributes)
    original = model.SerializeToString()
    contrib = kvattn.to_ort_contrib_domain(model)
    assert model.SerializeToString() == original, "to_ort_contrib_domain modified its input"
    assert {node.domain for node in contrib.graph.node} == {kvattn.ORT_CONTRIB_DOMAIN}
    assert kvattn.DOMAIN not in {imp.domain for imp in contrib.opset_import}

    options = ort.SessionOptions()
    options.register_custom_ops_library(kvattn.register_ort_custom_op())
    assert kvattn.register_ort_custom_op() == kvattn.register_ort_custom_op()  # idempotent
    session = ort.InferenceSession(contrib.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = make_inputs(case)
    feeds = {name: x[name] for name in kvattn.INPUT_NAMES}
    got = session.run(list(kvattn.OUTPUT_NAMES), feeds)
    ref = kvattn.kv_cache_attention_numpy(**x)
    for name, a, e in zip(kvattn.OUTPUT_NAMES, got, ref):
        assert_close(a, e, "float32", name, dict(case=str(case), trt_attrs=with_trt_parser_attributes))
    np.testing.assert_array_equal(feeds["k_cache"], x["k_cache"])  # ORT inputs are not modified


# ---- build flags --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (shutil.which("nvcc") and os.environ.get("LIPFORCE_EXPECT_CUDA") == "1"),
                    reason="needs nvcc on PATH and LIPFORCE_EXPECT_CUDA=1")
def test_module_reports_cuda_compiled_where_expected():
    assert native is not None, "lipforce_sdk._kvattn is not built"
    assert native.cuda_compiled is True
    assert callable(native.kv_cache_attention_cuda)
    assert native.cuda_workspace_size(12, 128, 32, 32, 12, 3) > 0


# ---- CUDA launcher (GPU only) -------------------------------------------------------------------------------
def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


needs_gpu = pytest.mark.skipif(not _cuda_available(),
                               reason="needs a CUDA device (torch.cuda.is_available() is False)")
needs_cuda_build = pytest.mark.skipif(native is None or not getattr(native, "cuda_compiled", False),
                                      reason="lipforce_sdk._kvattn was built without CUDA")

GPU_CASES = [
    ("tiny", Case(64, 1, 8, 8, 1, 8, "relative", num_heads=2)),
    ("tiny-large-pos", Case(64, 2, 8, 8, 1, 8, "large", num_heads=2)),
    ("partial-tiles", Case(128, 2, 5, 7, 2, 5, "random", num_heads=3)),
    ("1.3b", Case(128, 1, 32, 32, 3, 12, "relative", num_heads=12)),
]


def run_cuda(x: dict, dtype: str, mask_garbage: bool = False):
    """Runs the launcher on torch CUDA tensors; returns (out, k_cache, v_cache) and the fp32 inputs it saw."""
    import torch
    tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    dev = torch.device("cuda")
    t = {name: torch.from_numpy(np.ascontiguousarray(x[name])).to(dev) for name in kvattn.INPUT_NAMES}
    for name in ("q", "k", "v", "k_cache", "v_cache"):
        t[name] = t[name].to(tdtype).contiguous()
    if mask_garbage:  # NaN in masked slots must not leak
        n = x["grid_h"] * x["grid_w"]
        for s in np.nonzero(x["k_valid"] == 0)[0].tolist():
            t["k_cache"][:, s * n:(s + 1) * n] = float("nan")
            t["v_cache"][:, s * n:(s + 1) * n] = float("nan")
    seen = {name: t[name].float().cpu().numpy() for name in ("q", "k", "v", "k_cache", "v_cache")}
    b, lc, h, d = t["q"].shape
    m, c = t["k_pos"].shape[0], t["write_idx"].shape[0]
    ws_bytes = native.cuda_workspace_size(h, d, x["grid_h"], x["grid_w"], m, c)
    workspace = torch.empty(ws_bytes, dtype=torch.uint8, device=dev)
    out = torch.empty_like(t["q"])
    stream = torch.cuda.current_stream()
    native.kv_cache_attention_cuda(
        t["q"].data_ptr(), t["k"].data_ptr(), t["v"].data_ptr(), t["k_cache"].data_ptr(), t["v_cache"].data_ptr(),
        t["write_idx"].data_ptr(), t["q_pos"].data_ptr(), t["k_pos"].data_ptr(), t["k_valid"].data_ptr(),
        out.data_ptr(), workspace.data_ptr(), ws_bytes, b, h, d, x["grid_h"], x["grid_w"], m, c, 10000.0, dtype,
        stream.cuda_stream)
    torch.cuda.synchronize()
    return (out, t["k_cache"], t["v_cache"]), seen


@pytest.mark.gpu
@needs_gpu
@needs_cuda_build
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name,case", GPU_CASES, ids=[n for n, _ in GPU_CASES])
def test_cuda_launcher_matches_reference(name, case, dtype):
    import torch
    x = make_inputs(case)
    (out, k_cache, v_cache), seen = run_cuda(x, dtype, mask_garbage=True)
    params = dict(shape=name, case=str(case), dtype=dtype)
    # Reference on the same (rounded) inputs; masked slots zeroed (their content must not matter).
    ref_in = dict(x, **seen)
    n = case.tokens
    for s in np.nonzero(x["k_valid"] == 0)[0].tolist():
        ref_in["k_cache"][:, s * n:(s + 1) * n] = 0.0
        ref_in["v_cache"][:, s * n:(s + 1) * n] = 0.0
    if name == "1.3b":  # the C++ CPU reference would take minutes; PyTorch float64 on the GPU
        tin = {key: (torch.from_numpy(val).cuda() if isinstance(val, np.ndarray) else val)
               for key, val in ref_in.items()}
        ref_out = torch_reference(**tin)[0].cpu().numpy()
    else:
        ref_out = kvattn.kv_cache_attention_cpu(**ref_in)[0]
    got = out.float().cpu().numpy()
    assert np.isfinite(got).all(), f"non-finite output for {params}"
    assert_close(got, ref_out, dtype, "out", params)
    # The cache write is a copy of the (rounded) chunk into its slots, untouched elsewhere.
    for ci, slot in enumerate(x["write_idx"].tolist()):
        for cache, src in ((k_cache, seen["k"]), (v_cache, seen["v"])):
            np.testing.assert_array_equal(cache[:, slot * n:(slot + 1) * n].float().cpu().numpy(),
                                          src[:, ci * n:(ci + 1) * n], err_msg=f"cache slot {slot} for {params}")
    untouched = [s for s in range(case.num_slots) if s not in x["write_idx"] and x["k_valid"][s]]
    for s in untouched:
        np.testing.assert_array_equal(k_cache[:, s * n:(s + 1) * n].float().cpu().numpy(),
                                      seen["k_cache"][:, s * n:(s + 1) * n], err_msg=f"slot {s} for {params}")


@pytest.mark.gpu
@needs_gpu
@needs_cuda_build
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_fully_masked_rows_are_zero(dtype):
    case = Case(64, 1, 8, 8, 1, 8, "relative", num_heads=2)
    x = make_inputs(case)
    x["k_valid"][:] = 0
    (out, _, _), _ = run_cuda(x, dtype, mask_garbage=True)
    got = out.float().cpu().numpy()
    np.testing.assert_array_equal(got, np.zeros_like(got), err_msg=f"{case} {dtype}")
