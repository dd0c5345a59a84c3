"""The backend interface shared by every backend; the graphs' tensor names and shapes are the
contract in ``lipforce_sdk.contract``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping, Protocol, Sequence

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

    # A runner of a batched graph (``max_batch > 1`` in the manifest) also has
    # ``run_batch(calls: Sequence[tuple[feeds, state]]) -> list[outputs]``: one call for several
    # streams, each feed and state with its batch axis of 1; each state is updated as ``run`` would.


class Backend(ABC):
    """One loaded model. Shared by many sessions: it holds no per-stream data; ``new_state``
    returns everything a stream owns (caches).

    Each of the four graph methods builds the graph's feeds (``lipforce_sdk.contract`` names) and
    runs them through ``run_graph`` (one stream), or, where the engine batches
    (``lipforce_sdk.batching``: ``batcher`` is set), hands them to the scheduler, which runs the
    calls of several streams as one ``run_batch``."""

    name: str = "?"
    config: ModelConfig
    max_batch: int | None = 1  # the most streams one run_batch takes; None: any number
    batcher: Any = None  # a lipforce_sdk.batching.BatchScheduler, set by Engine.load(max_batch > 1)

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

    # ---- one graph call, or several streams' calls at once (the scheduler's entry points) ----
    def feed_specs(self, graph: str) -> dict[str, tuple[tuple[int, ...], str]]:
        """One stream's non-state feeds of ``graph``: name -> (shape, dtype name)."""
        raise BackendError(f"backend {self.name!r} does not describe its feeds, so it cannot batch; "
                           "load the engine with max_batch=1")

    def run_graph(self, graph: str, feeds: Mapping[str, Any], state: Any) -> dict[str, Any]:
        """Run ``graph`` for one stream (``state``: the stream's ``new_state()``, or None for the
        audio encoder); returns the non-state outputs by name."""
        raise BackendError(f"backend {self.name!r} runs its graphs only through encode_audio/encode_video/"
                           "dit_step/decode; load the engine with max_batch=1")

    def run_batch(self, graph: str, calls: Sequence[tuple[Mapping[str, Any], Any]]) -> list[dict[str, Any]]:
        """Run ``graph`` once for several streams: ``calls`` holds each stream's (feeds, state) as
        ``run_graph`` takes them. The states are gathered along the batch axis and each stream's
        next state is written back into its own state; returns each stream's outputs, in order."""
        raise BackendError(f"backend {self.name!r} cannot run a batch; load the engine with max_batch=1")

    def _dispatch(self, graph: str, feeds: dict[str, Any], state: Any) -> dict[str, Any]:
        if self.batcher is not None:
            return self.batcher.submit(graph, feeds, state)
        return self.run_graph(graph, feeds, state)

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
