"""The sink + ring-window cache equals full attention over the whole history with the
equivalent block-causal, windowed mask; nothing depends on the absolute chunk index."""

import numpy as np
import pytest
import torch

from lipforce_sdk.cache_plan import RingCachePlanner
from lipforce_sdk.model.attention import Rope3D, attention, kv_cache_attention

TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4)}


def reference_positions(n_chunk: int, S: int, W: int, C: int):
    """For query chunk n over the logical history (frames 0 .. nC+C-1 in stream order):
    per-frame key positions and the mask, from the definition (no ring arithmetic)."""
    total = n_chunk * C + C
    pos = np.zeros(total, np.int64)
    mask = np.zeros(total, bool)
    committed = n_chunk * C
    for j in range(total):
        if j >= committed:  # the chunk itself
            pos[j], mask[j] = S + W + (j - committed), True
        elif j < S:  # sink
            pos[j], mask[j] = j, True
        else:
            age = committed - j
            if age <= W:
                pos[j], mask[j] = S + W - age, True
    return pos, mask


@pytest.mark.parametrize("S,W,C", [(1, 6, 1), (0, 3, 1), (2, 4, 2), (1, 5, 3), (0, 0, 1), (3, 2, 2), (1, 2, 2)])
def test_ring_cache_equals_full_attention_with_mask(S, W, C):
    torch.manual_seed(0)
    B, H, D, gh, gw = 2, 2, 24, 2, 3
    N = gh * gw
    rope = Rope3D(D, gh, gw)
    planner = RingCachePlanner(S, W, C)
    M = planner.M
    kc = torch.zeros(B, M * N, H, D)
    vc = torch.zeros(B, M * N, H, D)
    ks, vs = [], []
    n_chunks = 4 * (planner.R + S) + 37  # the ring wraps many times
    for n in range(n_chunks):
        q, k, v = (torch.randn(B, C * N, H, D) for _ in range(3))
        p = planner.plan()
        out, _, _ = kv_cache_attention(q, k, v, kc, vc, *(torch.from_numpy(a) for a in (p.write_idx, p.q_pos, p.k_pos, p.k_valid)), rope)
        planner.commit()
        ks.append(k)
        vs.append(v)
        pos, mask = reference_positions(n, S, W, C)
        K = torch.cat(ks, 1)  # [B, (n+1)*C*N, H, D] the whole history in stream order
        V = torch.cat(vs, 1)
        qpos = torch.arange(S + W, S + W + C)
        ref = attention(rope(q, qpos), rope(K, torch.from_numpy(pos)), V, torch.from_numpy(mask).repeat_interleave(N))
        torch.testing.assert_close(out, ref, **TOL[torch.float32],
                                   msg=lambda m: f"S={S} W={W} C={C} chunk={n} head={planner.head}: {m}")
        assert int(p.k_pos.max()) <= M - 1, f"S={S} W={W} C={C}: position {p.k_pos.max()} outside the cache"


def test_planner_positions_are_periodic_and_bounded():
    S, W, C = 1, 5, 2
    pl = RingCachePlanner(S, W, C)
    plans = []
    for _ in range(5000):
        plans.append(pl.plan())
        pl.commit()
    # after the window is full, the multiset of (position, valid) pairs is the same for every chunk
    steady = sorted(zip(plans[10].k_pos.tolist(), plans[10].k_valid.tolist()))
    for p in plans[10::97]:
        assert sorted(zip(p.k_pos.tolist(), p.k_valid.tolist())) == steady
        assert p.q_pos.tolist() == [S + W, S + W + 1]
    assert max(int(p.k_pos.max()) for p in plans) == S + W + C - 1


def _rotate_ring(t: torch.Tensor, S: int, R: int, N: int, shift: int) -> torch.Tensor:
    """Move the content of ring slot r to slot (r + shift) % R (sink untouched)."""
    out = t.clone()
    ring = t[:, S * N:].reshape(t.shape[0], R, N, *t.shape[2:])
    out[:, S * N:] = torch.roll(ring, shifts=shift, dims=1).reshape(t.shape[0], R * N, *t.shape[2:])
    return out


def test_dit_step_independent_of_absolute_chunk_index():
    """The same logical cache content at another ring phase (as after many wraps) gives the same
    output: the chunk index only moves where things are stored."""
    from lipforce_sdk.model import KVCache, LipSyncModel

    m = LipSyncModel.from_preset("tiny", stream={"resolution": 32}).eval()
    cfg = m.cfg
    S, W, C = cfg.stream.sink_frames, cfg.stream.window_frames, cfg.stream.chunk_frames
    h, w = cfg.latent_hw
    N = cfg.tokens_per_frame
    torch.manual_seed(1)
    kv = KVCache(len(m.dit.blocks), m.dit.cache_shape(1), torch.float32, "cpu")
    pl = RingCachePlanner(S, W, C)

    z, tc = cfg.latent_channels, cfg.vae.temporal_compression

    def inputs():
        return (torch.randn(1, z, C, h, w), torch.ones(1), torch.randn(1, z, C, h, w), torch.ones(1, cfg.mask_channels, C, h, w),
                torch.randn(1, C * tc, cfg.audio.tokens_per_frame, cfg.audio.token_dim))

    def run(planner, cache, x):
        p = planner.plan()
        with torch.no_grad():
            y, _ = m.dit.step(*x, *(torch.from_numpy(a) for a in (p.write_idx, p.q_pos, p.k_pos, p.k_valid)), cache.layers())
        return y

    for _ in range(S + W + 3):  # fill sink and window, wrap once
        run(pl, kv, inputs())
        pl.commit()
    x = inputs()
    sink, head, valid = pl.state()
    for shift in (1, 3, 1000 * pl.R + 2):
        kv2 = KVCache(len(m.dit.blocks), m.dit.cache_shape(1), torch.float32, "cpu")
        for a, b in zip(kv2.k + kv2.v, kv.k + kv.v):
            a.copy_(_rotate_ring(b, S, pl.R, N, shift % pl.R))
        pl2 = RingCachePlanner(S, W, C)
        pl2.set_state(sink, (head + shift) % pl.R, valid)
        kv_copy = KVCache(len(m.dit.blocks), m.dit.cache_shape(1), torch.float32, "cpu")
        for a, b in zip(kv_copy.k + kv_copy.v, kv.k + kv.v):
            a.copy_(b)
        torch.testing.assert_close(run(pl2, kv2, x), run(pl, kv_copy, x), atol=1e-5, rtol=1e-5,
                                   msg=lambda msg: f"ring shift {shift}: {msg}")
