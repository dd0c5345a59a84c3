"""A backend over four exported graphs, each run by a ``GraphRunner`` (ONNX Runtime or TensorRT).

No torch: arrays are NumPy on the host side; the runners keep the state (KV cache, conv caches)
wherever they run (host for ONNX Runtime, device for TensorRT).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

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
        # batched graphs (lipforce_sdk.contract): every tensor has a batch axis (-1 in the manifest)
        # and the DiT's plan is per element, so one stream's plan goes in as [1, C] / [1, M]
        self.max_batch = int(manifest.get("max_batch", 1))
        self._specs = {g: {t["name"]: (tuple(1 if d < 0 else int(d) for d in t["shape"]), t["dtype"])
                           for t in spec["inputs"] if t["name"] not in (spec.get("state") or {})}
                       for g, spec in manifest["graphs"].items()}

    def new_state(self) -> dict[str, Any]:
        return {g: r.new_state() for g, r in self.runners.items()}

    def reset_state(self, state) -> None:
        for g, r in self.runners.items():
            r.reset_state(state[g])

    def asarray(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=self.dtype)

    def encode_audio(self, mel: np.ndarray):
        return self._dispatch("audio_encoder", {"mel": self.asarray(mel)}, None)["audio_tokens"]

    def encode_video(self, frames: np.ndarray, state):
        return self._dispatch("vae_encoder", {"frames": self.asarray(frames)}, state)["latents"]

    def dit_step(self, x_t, t: float, cond, mask, audio_tokens, plan: CachePlan, state):
        p = plan.as_feeds()
        if self.max_batch > 1:
            p = {k: v[None] for k, v in p.items()}
        feeds = {"x_t": self.asarray(x_t), "t": np.full((1,), t, self.dtype), "cond": cond, "mask": mask,
                 "audio_tokens": audio_tokens, **p}
        return self._dispatch("dit_step", feeds, state)["x0"]

    def decode(self, latents, state) -> np.ndarray:
        out = self._dispatch("vae_decoder", {"latents": self.asarray(latents)}, state)["frames"]
        return out.astype(np.float32, copy=False)

    # ---- the scheduler's entry points ----
    def feed_specs(self, graph: str) -> dict[str, tuple[tuple[int, ...], str]]:
        return self._specs[graph]

    def run_graph(self, graph: str, feeds, state) -> dict[str, np.ndarray]:
        return self.runners[graph].run(feeds, None if state is None else state[graph])

    def run_batch(self, graph: str, calls: Sequence) -> list[dict[str, np.ndarray]]:
        runner = self.runners[graph]
        if len(calls) > self.max_batch:
            raise BackendError(f"{graph}: a batch of {len(calls)} streams, and this model directory takes at most "
                               f"{self.max_batch} per call; re-export with `lipforce export --max-batch {len(calls)}`"
                               " (and rebuild TensorRT engines from it)")
        if not hasattr(runner, "run_batch"):
            raise BackendError(f"{graph}: the {self.name} runner {type(runner).__name__} cannot run a batch; "
                               "load the engine with max_batch=1")
        return runner.run_batch([(f, None if s is None else s[graph]) for f, s in calls])
