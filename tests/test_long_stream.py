"""A thousand chunks and more: state memory stays where it was allocated, Python memory stays flat, and
the cache inputs stay bounded (nothing grows with the stream)."""

import gc
import sys

import numpy as np

from lipforce_sdk import Engine
from lipforce_sdk.backends.torch_backend import TorchBackend
from lipforce_sdk.model import LipSyncModel


def test_memory_flat_over_a_thousand_chunks(monkeypatch):
    from lipforce_sdk.session import SessionStats

    # the latency percentiles keep a bounded window; make it small so the run goes far past it
    monkeypatch.setattr(SessionStats, "LATENCY_WINDOW", 16)
    model = LipSyncModel.from_preset("tiny", stream={"resolution": 32})
    engine = Engine(TorchBackend(model, device="cpu"))
    fv = engine.config.video_frames_per_chunk
    s = engine.session(box=(0, 0, 32, 32))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(640 * fv)).astype(np.float32)
    ptrs0 = s.state["kv"].data_ptrs() + [t.data_ptr() for t in s.state["enc"] + s.state["dec"]]
    bytes0 = s.backend.state_nbytes(s.state)

    def run_chunks(n):
        for _ in range(n):
            for i in range(fv):
                s.push(audio[i * 640:(i + 1) * 640], frame)

    def heap():
        gc.collect()
        return sys.getallocatedblocks(), len(gc.get_objects())

    run_chunks(20)
    blocks0, objects0 = heap()
    run_chunks(1000)
    blocks1, objects1 = heap()
    assert s.stats.chunks == 1019  # the last chunk waits for its audio look-ahead
    # a leak of even one small object per chunk would add >= 1000 blocks / objects
    assert blocks1 - blocks0 < 500, f"Python heap grew by {blocks1 - blocks0} blocks over 1000 chunks"
    assert objects1 - objects0 < 200, f"{objects1 - objects0} more live objects after 1000 chunks"
    ptrs1 = s.state["kv"].data_ptrs() + [t.data_ptr() for t in s.state["enc"] + s.state["dec"]]
    assert ptrs1 == ptrs0, "a state tensor was reallocated"
    assert s.backend.state_nbytes(s.state) == bytes0
    assert len(s._pending) <= fv and len(s.mel._mels) <= engine.config.audio.window_video_frames() + fv
    p = s.planner.plan()
    assert int(p.k_pos.max()) == s.planner.M - 1 and int(p.q_pos.max()) == s.planner.M - 1
    assert all(np.isfinite(t.numpy()).all() for t in s.state["kv"].k)
    assert len(s.stats.chunk_latency_ms) <= s.stats.LATENCY_WINDOW
