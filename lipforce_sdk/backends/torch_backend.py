"""PyTorch reference backend (CPU or GPU); the only backend that imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cache_plan import CachePlan
from ..contract import PLAN_INPUTS, feed_shapes
from .base import Backend, BackendError

__all__ = ["TorchBackend"]

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchBackend(Backend):
    """The reference model run eagerly. Batches of any size (``run_batch``): the DiT takes a cache
    plan per batch element, so streams at different positions share one call."""

    name = "torch"
    max_batch = None

    def __init__(self, model, device: str | None = None, precision: str = "fp32"):
        import torch

        if precision not in _DTYPES:
            raise BackendError(f"precision={precision!r} is not one of {sorted(_DTYPES)}")
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = getattr(torch, _DTYPES[precision])
        self.precision = precision
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.config = model.cfg

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None, precision: str = "fp32") -> "TorchBackend":
        try:
            import torch  # noqa: F401
        except ImportError as e:
            raise BackendError("backend='torch' needs PyTorch: pip install 'lipforce[torch]' (or torch), "
                               "or load an exported directory with backend='onnxruntime'") from e
        from ..model import load_model

        return cls(load_model(model_dir), device=device, precision=precision)

    # ---- state ----
    def new_state(self) -> dict[str, Any]:
        from ..model import KVCache

        m, t = self.model, self.torch
        shapes = m.vae.cache_shapes(1)
        return {
            "kv": KVCache(len(m.dit.blocks), m.dit.cache_shape(1), self.dtype, self.device),
            "enc": [t.zeros(s, dtype=self.dtype, device=self.device) for s in shapes["enc"]],
            "dec": [t.zeros(s, dtype=self.dtype, device=self.device) for s in shapes["dec"]],
        }

    def reset_state(self, state) -> None:
        state["kv"].reset()
        for c in state["enc"] + state["dec"]:
            c.zero_()

    # ---- graphs ----
    def asarray(self, x: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(x)).to(device=self.device, dtype=self.dtype)

    def encode_audio(self, mel: np.ndarray):
        return self._dispatch("audio_encoder", {"mel": self.asarray(mel)}, None)["audio_tokens"]

    def encode_video(self, frames: np.ndarray, state):
        return self._dispatch("vae_encoder", {"frames": self.asarray(frames)}, state)["latents"]

    def dit_step(self, x_t, t: float, cond, mask, audio_tokens, plan: CachePlan, state):
        torch = self.torch
        feeds = {"x_t": x_t, "t": torch.full((x_t.shape[0],), float(t), device=self.device, dtype=self.dtype),
                 "cond": cond, "mask": mask, "audio_tokens": audio_tokens}
        feeds.update({k: torch.from_numpy(v).to(self.device) for k, v in plan.as_feeds().items()})
        return self._dispatch("dit_step", feeds, state)["x0"]

    def decode(self, latents, state) -> np.ndarray:
        return self._dispatch("vae_decoder", {"latents": latents}, state)["frames"].float().cpu().numpy()

    # ---- the scheduler's entry points ----
    def feed_specs(self, graph: str) -> dict[str, tuple[tuple[int, ...], str]]:
        fp = str(self.dtype).removeprefix("torch.")
        return {n: (shape, "int32" if n in PLAN_INPUTS else fp) for n, shape in feed_shapes(self.config, graph).items()}

    def run_graph(self, graph: str, feeds, state) -> dict[str, Any]:
        """One stream; the caches are updated in place."""
        m = self.model
        with self.torch.inference_mode():
            if graph == "audio_encoder":
                return {"audio_tokens": m.audio_encoder(feeds["mel"])}
            if graph in ("vae_encoder", "vae_decoder"):
                return self._vae(graph, feeds, [state])[0]
            if graph == "dit_step":
                x0, _ = m.dit.step(*(feeds[n] for n in _DIT_FEEDS), state["kv"].layers(), inplace=True)
                return {"x0": x0}
        raise BackendError(f"unknown graph {graph!r}")

    def run_batch(self, graph: str, calls: Sequence) -> list[dict[str, Any]]:
        """Several streams in one call: feeds concatenated along the batch axis (the DiT's plans
        stacked into one per element), the caches gathered, and each stream's slice of the new
        caches copied back into its own tensors (which keep their storage)."""
        torch, m = self.torch, self.model
        b = len(calls)
        feeds = {n: (torch.stack if n in PLAN_INPUTS else torch.cat)([f[n] for f, _ in calls]) for n in calls[0][0]}
        states = [s for _, s in calls]
        with torch.inference_mode():
            if graph == "audio_encoder":
                outs = {"audio_tokens": m.audio_encoder(feeds["mel"])}
            elif graph in ("vae_encoder", "vae_decoder"):
                return self._vae(graph, feeds, states)
            elif graph == "dit_step":
                kv = [st["kv"] for st in states]
                layers = [(torch.cat([c.k[i] for c in kv]), torch.cat([c.v[i] for c in kv])) for i in range(len(kv[0].k))]
                x0, new = m.dit.step(*(feeds[n] for n in _DIT_FEEDS), layers, inplace=True)
                for j, c in enumerate(kv):
                    for i, (kc, vc) in enumerate(new):
                        c.k[i].copy_(kc[j:j + 1])
                        c.v[i].copy_(vc[j:j + 1])
                outs = {"x0": x0}
            else:
                raise BackendError(f"unknown graph {graph!r}")
        return [{k: v[j:j + 1] for k, v in outs.items()} for j in range(b)]

    def _vae(self, graph: str, feeds, states) -> list[dict[str, Any]]:
        """The VAE encoder or decoder for ``len(states)`` streams (feeds already concatenated)."""
        torch, vae = self.torch, self.model.vae
        key, fn, inp, out = (("enc", vae.encode, "frames", "latents") if graph == "vae_encoder"
                             else ("dec", vae.decode, "latents", "frames"))
        caches = ([torch.cat([st[key][j] for st in states]) for j in range(len(states[0][key]))] if len(states) > 1
                  else states[0][key])
        y, new = fn(feeds[inp], caches)
        for j, st in enumerate(states):
            for c, n in zip(st[key], new):
                c.copy_(n[j:j + 1])
        return [{out: y[j:j + 1]} for j in range(len(states))] if len(states) > 1 else [{out: y}]

    def state_nbytes(self, state) -> int:
        return state["kv"].nbytes + sum(c.numel() * c.element_size() for c in state["enc"] + state["dec"])


_DIT_FEEDS = ("x_t", "t", "cond", "mask", "audio_tokens", *PLAN_INPUTS)
