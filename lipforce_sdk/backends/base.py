"""The backend interface and the graph I/O contract shared by every backend.

A model is four graphs (DESIGN.md §1). Their tensor names are fixed here and written into the
model manifest by the exporter; the torch reference modules take the same inputs and return
the same outputs.

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

from abc import ABC, abstractmethod
from typing import Any, Mapping, Protocol

import numpy as np

from ..cache_plan import CachePlan
from ..config import ModelConfig

__all__ = ["GRAPHS", "STATE_OUT_SUFFIX", "state_out_name", "Backend", "GraphRunner", "BackendError", "host_array"]

GRAPHS = ("audio_encoder", "vae_encoder", "dit_step", "vae_decoder")
STATE_OUT_SUFFIX = "_out_"


def state_out_name(name: str) -> str:
    """``kv_k_3`` -> ``kv_k_out_3``; ``enc_cache_0`` -> ``enc_cache_out_0``."""
    head, _, idx = name.rpartition("_")
    return f"{head}{STATE_OUT_SUFFIX}{idx}"


class BackendError(RuntimeError):
    """A backend cannot run here or cannot load the given model; the message says why and what to do."""


class GraphRunner(Protocol):
    """Runs one exported graph with its state kept by the runner (on the device for TensorRT)."""

    def new_state(self) -> Any:
        """Zero-initialised state for one stream."""

    def reset_state(self, state: Any) -> None:
        """Zero the state in place (no reallocation)."""

    def run(self, feeds: Mapping[str, np.ndarray], state: Any) -> dict[str, np.ndarray]:
        """Run with the non-state ``feeds``; update ``state`` (state inputs -> outputs); return the
        non-state outputs as host arrays."""


class Backend(ABC):
    """One loaded model. Shared by many sessions: it holds no per-stream data; ``new_state``
    returns everything a stream owns (caches)."""

    name: str = "?"
    config: ModelConfig

    @abstractmethod
    def new_state(self) -> Any: ...

    @abstractmethod
    def reset_state(self, state: Any) -> None: ...

    @abstractmethod
    def encode_audio(self, mel: np.ndarray) -> Any:
        """mel [1, Fv, Wm, n_mels] float32 -> audio tokens (backend array)."""

    @abstractmethod
    def encode_video(self, frames: np.ndarray, state: Any) -> Any:
        """frames [1, 3, Fv, H, W] float32 in [-1, 1] (mouth masked) -> latents (backend array)."""

    @abstractmethod
    def dit_step(self, x_t: Any, t: float, cond: Any, mask: Any, audio_tokens: Any, plan: CachePlan,
                 state: Any) -> Any:
        """One denoising pass of the chunk: writes its K/V into the chunk's cache slots and
        returns the predicted clean latents x0 (backend array)."""

    @abstractmethod
    def decode(self, latents: Any, state: Any) -> np.ndarray:
        """latents -> frames [1, 3, Fv, H, W] float32 in [-1, 1] (host array)."""

    @abstractmethod
    def asarray(self, x: np.ndarray) -> Any:
        """Host array -> the backend's array type (for noise and the mask)."""

    def close(self) -> None:  # pragma: no cover - optional
        pass


def host_array(x: Any) -> np.ndarray:
    """A backend array (torch tensor or NumPy array) as a host NumPy array."""
    if hasattr(x, "detach"):  # torch, without importing it
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(x)
