"""The graph I/O contract: what the exporter writes, the engine builder reads and every backend runs.

A model is four graphs (DESIGN.md §1). Their tensor names are fixed here and written into the
model manifest by the exporter (``lipforce_sdk.manifest``); the torch reference modules take the
same inputs and return the same outputs. Nothing here imports a backend.

=============  ============================================================  ========================
graph          inputs -> outputs                                             state (in -> out)
=============  ============================================================  ========================
audio_encoder  mel [1, Fv, Wm, n_mels] -> audio_tokens [1, Fv, A, Da]        none
vae_encoder    frames [1, 3, Fv, H, W] -> latents [1, z, C, h, w]            enc_cache_{j} -> enc_cache_out_{j}
dit_step       x_t [1, z, C, h, w], t [1], cond [1, z, C, h, w],             kv_k_{i} -> kv_k_out_{i},
               mask [1, Tc, C, h, w], audio_tokens [1, Fv, A, Da],           kv_v_{i} -> kv_v_out_{i}
               write_idx [C], q_pos [C], k_pos [M], k_valid [M] (int32)
               -> x0 [1, z, C, h, w]
vae_decoder    latents [1, z, C, h, w] -> frames [1, 3, Fv, H, W]            dec_cache_{j} -> dec_cache_out_{j}
=============  ============================================================  ========================

Fv = C * Tc video frames per chunk (Tc = temporal compression), frames are float32 RGB in [-1, 1].
State tensors start at zero (``reset``) and every graph call returns the next state.

**Batched graphs** (``export_model(..., max_batch=B)`` with ``B > 1``; the manifest records
``"max_batch": B`` and each tensor's batch axis as ``-1``): the same names, and every input, output
and state tensor has a leading batch axis ``b`` in ``1..B`` (element ``i`` is one stream). The
leading ``1`` above becomes ``b``, and the DiT's cache plan is per element, since streams in one
call are at different positions (their ring-buffer slots, positions and valid slots differ):

=============  ============================================================
dit_step       t [b], write_idx [b, C], q_pos [b, C], k_pos [b, M], k_valid [b, M]
=============  ============================================================

Element ``i`` of a batched call computes exactly what a batch-1 call of stream ``i`` computes
(each writes its own cache slots, is rotated at its own positions and masked by its own valid
slots). A batch-1 model directory (``max_batch`` absent, the default) has the table above as it is.
"""

from __future__ import annotations

__all__ = ["GRAPHS", "STATE_OUT_SUFFIX", "PLAN_INPUTS", "state_out_name", "feed_shapes", "BackendError"]

GRAPHS = ("audio_encoder", "vae_encoder", "dit_step", "vae_decoder")
STATE_OUT_SUFFIX = "_out_"
PLAN_INPUTS = ("write_idx", "q_pos", "k_pos", "k_valid")  # the DiT's cache plan (int32)


def feed_shapes(cfg, graph: str, batched: bool = False) -> dict[str, tuple[int, ...]]:
    """One stream's non-state inputs of ``graph`` and their shapes, from a ``ModelConfig``.

    ``batched=False``: the batch-1 graphs (the plan ``[C]``/``[M]``). ``batched=True``: one element
    of a batched graph (every tensor with its batch axis of 1, the plan ``[1, C]``/``[1, M]``)."""
    c, tc = cfg.stream.chunk_frames, cfg.vae.temporal_compression
    fv, z, (h, w), a = c * tc, cfg.latent_channels, cfg.latent_hw, cfg.audio
    if graph == "audio_encoder":
        return {"mel": (1, fv, a.window_video_frames() * a.mels_per_video_frame(cfg.stream.fps), a.n_mels)}
    if graph == "vae_encoder":
        return {"frames": (1, 3, fv, cfg.stream.resolution, cfg.stream.resolution)}
    if graph == "vae_decoder":
        return {"latents": (1, z, c, h, w)}
    if graph == "dit_step":
        lead = (1,) if batched else ()
        m = cfg.num_slots
        return {"x_t": (1, z, c, h, w), "t": (1,), "cond": (1, z, c, h, w), "mask": (1, cfg.mask_channels, c, h, w),
                "audio_tokens": (1, fv, a.tokens_per_frame, a.token_dim), "write_idx": lead + (c,),
                "q_pos": lead + (c,), "k_pos": lead + (m,), "k_valid": lead + (m,)}
    raise ValueError(f"unknown graph {graph!r}; expected one of {GRAPHS}")


def state_out_name(name: str) -> str:
    """``kv_k_3`` -> ``kv_k_out_3``; ``enc_cache_0`` -> ``enc_cache_out_0``."""
    head, _, idx = name.rpartition("_")
    return f"{head}{STATE_OUT_SUFFIX}{idx}"


class BackendError(RuntimeError):
    """A backend cannot run here or cannot load the given model; the message says why and what to do."""
