"""PyTorch reference backend (CPU or GPU); the only backend that imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..cache_plan import CachePlan
from .base import Backend, BackendError

__all__ = ["TorchBackend"]

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchBackend(Backend):
    name = "torch"

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
        with self.torch.inference_mode():
            return self.model.audio_encoder(self.asarray(mel))

    def encode_video(self, frames: np.ndarray, state):
        with self.torch.inference_mode():
            lat, new = self.model.vae.encode(self.asarray(frames), state["enc"])
            for c, n in zip(state["enc"], new):
                c.copy_(n)
            return lat

    def dit_step(self, x_t, t: float, cond, mask, audio_tokens, plan: CachePlan, state):
        torch = self.torch
        with torch.inference_mode():
            idx = [torch.from_numpy(a).to(self.device) for a in (plan.write_idx, plan.q_pos, plan.k_pos, plan.k_valid)]
            tt = torch.full((x_t.shape[0],), float(t), device=self.device, dtype=self.dtype)
            x0, _ = self.model.dit.step(x_t, tt, cond, mask, audio_tokens, *idx, state["kv"].layers(), inplace=True)
            return x0

    def decode(self, latents, state) -> np.ndarray:
        with self.torch.inference_mode():
            out, new = self.model.vae.decode(latents, state["dec"])
            for c, n in zip(state["dec"], new):
                c.copy_(n)
            return out.float().cpu().numpy()

    def state_nbytes(self, state) -> int:
        return state["kv"].nbytes + sum(c.numel() * c.element_size() for c in state["enc"] + state["dec"])
