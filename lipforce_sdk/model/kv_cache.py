"""Per-layer KV-cache tensors of one stream, allocated once at full size, written in place.

Slot bookkeeping (which slot a chunk writes, positions, validity) lives in
``lipforce_sdk.cache_plan.RingCachePlanner`` and is shared by every backend.
"""

from __future__ import annotations

import torch

__all__ = ["KVCache"]


class KVCache:
    def __init__(self, num_layers: int, shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device | str):
        # shape [B, T = slots * tokens_per_frame, H, D]
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(self.k, self.v))

    def reset(self) -> None:
        for t in self.k + self.v:
            t.zero_()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def data_ptrs(self) -> list[int]:
        return [t.data_ptr() for t in self.k + self.v]
