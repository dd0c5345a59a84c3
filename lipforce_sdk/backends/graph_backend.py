"""A backend over four exported graphs, each run by a ``GraphRunner`` (ONNX Runtime or TensorRT).

No torch: arrays are NumPy on the host side; the runners keep the state (KV cache, conv caches)
wherever they run (host for ONNX Runtime, device for TensorRT).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..cache_plan import CachePlan
from ..config import ModelConfig
from .base import GRAPHS, Backend, BackendError, GraphRunner

__all__ = ["GraphBackend"]

_NP_DTYPES = {"fp32": np.float32, "fp16": np.float16}


class GraphBackend(Backend):
    def __init__(self, name: str, config: ModelConfig, manifest: dict, runners: Mapping[str, GraphRunner]):
        missing = [g for g in GRAPHS if g not in runners]
        if missing:
            raise BackendError(f"model directory lacks graph(s) {missing}; re-export it with `lipforce export`")
        self.name, self.config, self.manifest, self.runners = name, config, manifest, dict(runners)
        precision = manifest.get("precision", "fp32")
        if precision not in _NP_DTYPES:
            raise BackendError(f"precision {precision!r} graphs cannot be fed from NumPy here "
                               f"(supported: {sorted(_NP_DTYPES)}); export fp32 or fp16 graphs for this backend")
        self.dtype = _NP_DTYPES[precision]

    def new_state(self) -> dict[str, Any]:
        return {g: r.new_state() for g, r in self.runners.items()}

    def reset_state(self, state) -> None:
        for g, r in self.runners.items():
            r.reset_state(state[g])

    def asarray(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=self.dtype)

    def encode_audio(self, mel: np.ndarray):
        return self.runners["audio_encoder"].run({"mel": self.asarray(mel)}, None)["audio_tokens"]

    def encode_video(self, frames: np.ndarray, state):
        return self.runners["vae_encoder"].run({"frames": self.asarray(frames)}, state["vae_encoder"])["latents"]

    def dit_step(self, x_t, t: float, cond, mask, audio_tokens, plan: CachePlan, state):
        feeds = {"x_t": self.asarray(x_t), "t": np.full((1,), t, self.dtype), "cond": cond, "mask": mask,
                 "audio_tokens": audio_tokens, **plan.as_feeds()}
        return self.runners["dit_step"].run(feeds, state["dit_step"])["x0"]

    def decode(self, latents, state) -> np.ndarray:
        out = self.runners["vae_decoder"].run({"latents": self.asarray(latents)}, state["vae_decoder"])["frames"]
        return out.astype(np.float32, copy=False)
