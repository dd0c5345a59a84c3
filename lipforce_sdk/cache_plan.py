"""Host-side bookkeeping of the KV cache: which frame slot each chunk frame is written to,
and at which cache-relative position every slot is read.

The cache of one layer holds ``M = sink + window + chunk`` frame slots, allocated once:

    slots [0, S)        sink: the first S frames of the stream, never evicted (identity anchor)
    slots [S, S + R)    ring of R = W + C slots: the last W committed frames + the chunk in flight

A chunk writes its keys/values into the C ring slots after the newest committed frame (those hold
the oldest frames, already out of the window), so the denoising passes can write freely and a
commit is only an index move: no copy, no growth. Keys are stored un-rotated and rotated on read at
positions relative to the cache: sink slot s at s, the committed frame of age a (1 = newest) at
``S + W - a``, chunk frame c at ``S + W + c``. Positions never exceed ``M - 1`` however long the
stream runs, and a chunk sees the same positions whatever its absolute index.

The plan is plain NumPy (int32) so every backend (torch, ONNX Runtime, TensorRT) shares it; the
graphs take it as inputs ``write_idx [C]``, ``q_pos [C]``, ``k_pos [M]``, ``k_valid [M]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CachePlan", "RingCachePlanner"]


@dataclass(frozen=True)
class CachePlan:
    write_idx: np.ndarray  # [C] int32: slot of chunk frame c
    q_pos: np.ndarray  # [C] int32: position of chunk frame c
    k_pos: np.ndarray  # [M] int32: position of slot m (RoPE on read)
    k_valid: np.ndarray  # [M] int32: 1 where slot m is attended

    def as_feeds(self) -> dict[str, np.ndarray]:
        return {"write_idx": self.write_idx, "q_pos": self.q_pos, "k_pos": self.k_pos, "k_valid": self.k_valid}


class RingCachePlanner:
    """Sink + ring-window slot planner for one stream (all layers share it)."""

    def __init__(self, sink_frames: int, window_frames: int, chunk_frames: int):
        if sink_frames < 0 or window_frames < 0 or chunk_frames < 1:
            raise ValueError(
                f"sink_frames={sink_frames}, window_frames={window_frames}, chunk_frames={chunk_frames}: "
                "need sink >= 0, window >= 0, chunk >= 1"
            )
        self.S, self.W, self.C = sink_frames, window_frames, chunk_frames
        self.R = window_frames + chunk_frames
        self.M = self.S + self.R
        self.reset()

    @classmethod
    def for_stream(cls, stream) -> "RingCachePlanner":
        """The planner of a ``StreamConfig`` (sink, window and chunk sizes in latent frames)."""
        return cls(stream.sink_frames, stream.window_frames, stream.chunk_frames)

    def reset(self) -> None:
        self.sink_filled = 0  # committed sink frames, 0..S
        self.head = 0  # ring slot (0..R-1) the next committed ring frame goes to
        self.ring_valid = 0  # committed frames in the window, 0..W

    def state(self) -> tuple[int, int, int]:
        return self.sink_filled, self.head, self.ring_valid

    def set_state(self, sink_filled: int, head: int, ring_valid: int) -> None:
        if not (0 <= sink_filled <= self.S and 0 <= head < self.R and 0 <= ring_valid <= self.W):
            raise ValueError(f"ring state ({sink_filled}, {head}, {ring_valid}) out of range for "
                             f"S={self.S}, R={self.R}, W={self.W}")
        if ring_valid and sink_filled < self.S:
            raise ValueError("ring frames exist only once the sink is full")
        self.sink_filled, self.head, self.ring_valid = sink_filled, head, ring_valid

    def _chunk_slots(self) -> list[int]:
        slots, j = [], 0
        for c in range(self.C):
            if self.sink_filled + c < self.S:
                slots.append(self.sink_filled + c)
            else:
                slots.append(self.S + (self.head + j) % self.R)
                j += 1
        return slots

    def plan(self) -> CachePlan:
        S, W, C, M = self.S, self.W, self.C, self.M
        k_pos = np.zeros(M, np.int32)
        k_valid = np.zeros(M, np.int32)
        k_pos[: self.sink_filled] = np.arange(self.sink_filled)
        k_valid[: self.sink_filled] = 1
        for a in range(1, self.ring_valid + 1):  # age 1 = newest committed
            slot = S + (self.head - a) % self.R
            k_pos[slot] = S + W - a
            k_valid[slot] = 1
        write_idx = np.asarray(self._chunk_slots(), np.int32)
        q_pos = np.arange(S + W, S + W + C, dtype=np.int32)
        k_pos[write_idx] = q_pos
        k_valid[write_idx] = 1
        return CachePlan(write_idx=write_idx, q_pos=q_pos, k_pos=k_pos, k_valid=k_valid)

    def commit(self) -> None:
        """The chunk's keys/values (written by its last pass) become part of the context."""
        for c in range(self.C):
            if self.sink_filled < self.S:
                self.sink_filled += 1
            else:
                self.head = (self.head + 1) % self.R
                self.ring_valid = min(self.ring_valid + 1, self.W)
