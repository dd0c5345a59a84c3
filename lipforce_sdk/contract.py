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
"""

from __future__ import annotations

__all__ = ["GRAPHS", "STATE_OUT_SUFFIX", "state_out_name", "BackendError"]

GRAPHS = ("audio_encoder", "vae_encoder", "dit_step", "vae_decoder")
STATE_OUT_SUFFIX = "_out_"


def state_out_name(name: str) -> str:
    """``kv_k_3`` -> ``kv_k_out_3``; ``enc_cache_0`` -> ``enc_cache_out_0``."""
    head, _, idx = name.rpartition("_")
    return f"{head}{STATE_OUT_SUFFIX}{idx}"


class BackendError(RuntimeError):
    """A backend cannot run here or cannot load the given model; the message says why and what to do."""
