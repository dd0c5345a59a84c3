"""The backend interface shared by every backend; the graphs' tensor names and shapes are the
contract in ``lipforce_sdk.contract``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping, Protocol

import numpy as np

from ..cache_plan import CachePlan
from ..config import ModelConfig
from ..contract import GRAPHS, STATE_OUT_SUFFIX, BackendError, state_out_name

__all__ = ["GRAPHS", "STATE_OUT_SUFFIX", "state_out_name", "Backend", "GraphRunner", "BackendError", "host_array"]


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
