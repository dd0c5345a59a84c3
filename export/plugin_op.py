"""Plugin flavour: the DiT step's cache attention as one ``lipforce::KVCacheAttention`` node per
layer (cache write + RoPE on read + attention), the node the lipforce TensorRT plugin implements.

A torch custom op stands for the whole function while tracing; its ONNX translation emits the
custom-domain node with the plugin's attributes (names from ``lipforce_sdk.kvattn``, which mirrors
the plugin's YAML spec). Eagerly, the op runs the PyTorch reference, so the traced module computes
the same thing as the portable graph.
"""

from __future__ import annotations

import torch

from lipforce_sdk import kvattn
from lipforce_sdk.config import ModelConfig
from lipforce_sdk.model.attention import Rope3D, kv_cache_attention

__all__ = ["plugin_cache_attention", "plugin_translation_table"]


@torch.library.custom_op("lipforce::kv_cache_attention", mutates_args=())
def _kv_cache_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                           v_cache: torch.Tensor, write_idx: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
                           k_valid: torch.Tensor, grid_h: int, grid_w: int,
                           rope_theta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rope = Rope3D(q.shape[-1], grid_h, grid_w, rope_theta).to(q.device)
    out, kc, vc = kv_cache_attention(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, rope, inplace=False)
    return out.contiguous(), kc.contiguous(), vc.contiguous()


@_kv_cache_attention_op.register_fake
def _(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, grid_h, grid_w, rope_theta):
    return torch.empty_like(q), torch.empty_like(k_cache), torch.empty_like(v_cache)


def plugin_cache_attention(rope: Rope3D):
    """A drop-in for ``kv_cache_attention`` (same signature) that traces to the custom op."""
    theta = float(rope.theta)

    def fn(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, rope_=None, inplace=False):
        return _kv_cache_attention_op(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid,
                                      rope.grid_h, rope.grid_w, theta)

    return fn


def _op_schema():
    """The node's ONNX schema (inputs, outputs, attributes), as in kvCacheAttention.yaml."""
    from onnx.defs import OpSchema

    fp = OpSchema.FormalParameter
    floats = ("q", "k", "v", "k_cache", "v_cache")
    inputs = [fp(n, "T") if n in floats else fp(n, "tensor(int32)") for n in kvattn.INPUT_NAMES]
    attrs = [OpSchema.Attribute(n, OpSchema.AttrType.INT, n) for n in kvattn.INT_ATTRIBUTE_NAMES]
    attrs += [OpSchema.Attribute("rope_theta", OpSchema.AttrType.FLOAT, "RoPE base")]
    attrs += [OpSchema.Attribute(n, OpSchema.AttrType.STRING, n) for n in kvattn.TRT_PARSER_ATTRIBUTES]
    return OpSchema(kvattn.OP_TYPE, kvattn.DOMAIN, kvattn.OP_VERSION, doc="lipforce KV-cache attention",
                    inputs=inputs, outputs=[fp(n, "T") for n in kvattn.OUTPUT_NAMES],
                    type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float")],
                    attributes=attrs)


def plugin_translation_table(cfg: ModelConfig) -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: the op -> one ``lipforce`` node."""
    import onnxscript

    domain = onnxscript.values.Opset(kvattn.DOMAIN, kvattn.OP_VERSION)
    node_op = onnxscript.values.Op(domain, kvattn.OP_TYPE, op_schema=_op_schema())
    attrs = {"num_heads": cfg.dit.num_heads, "head_dim": cfg.dit.head_dim, "num_slots": cfg.num_slots,
             "chunk_frames": cfg.stream.chunk_frames, **kvattn.TRT_PARSER_ATTRIBUTES}

    def translate(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid, grid_h, grid_w, rope_theta):
        return node_op(q, k, v, k_cache, v_cache, write_idx, q_pos, k_pos, k_valid,
                                               grid_h=grid_h, grid_w=grid_w, rope_theta=float(rope_theta),
                                               _outputs=3, **attrs)

    return {torch.ops.lipforce.kv_cache_attention.default: translate}
