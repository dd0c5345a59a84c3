"""ONNX export of the causal two-step student: one function per graph, and ``export_model``.

Installed as ``lipforce_sdk.export``. Nothing runs at import. State tensors are named graph
inputs/outputs (``kv_k_{i}`` -> ``kv_k_out_{i}``, ``enc_cache_{j}`` -> ``enc_cache_out_{j}``,
``dec_cache_{j}`` -> ``dec_cache_out_{j}``); the cache plan (``write_idx``, ``q_pos``, ``k_pos``,
``k_valid``) is an input. ``manifest.json`` beside the graphs is all the runtime reads.

Flavours of the DiT step's attention:

* ``decomposed``: opset 18, attention as MatMul/Softmax; every TensorRT 10.x and ONNX Runtime run it.
* ``onnx_attention``: opset 23 ``Attention`` op; ONNX Runtime runs it, TensorRT 10.14+ and
  TensorRT-RTX map it to a fused attention layer (fp16/bf16).
* ``plugin``: one ``lipforce::KVCacheAttention`` node per layer (cache write + RoPE + attention),
  for the lipforce TensorRT plugin (JetPack 6's TensorRT 10.3).

``max_batch`` (default 1): with ``B > 1`` every tensor gets a dynamic leading batch axis 1..B and the
DiT's cache plan is per element (``lipforce_sdk.contract``), so that ``Engine.load(...,
max_batch=B)`` runs several sessions' calls at once (``lipforce_sdk.batching``). The portable
flavours take it; the plugin is batch 1 only.
"""

from .exporter import (
    ATTENTION_FLAVOURS,
    ExportError,
    export_audio_encoder,
    export_dit_step,
    export_model,
    export_vae_decoder,
    export_vae_encoder,
)

__all__ = [
    "ATTENTION_FLAVOURS", "ExportError", "export_audio_encoder", "export_dit_step", "export_model",
    "export_vae_decoder", "export_vae_encoder",
]
