"""The recipe's stages: the pieces that must agree with the runtime, and a few-step smoke of all."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

from lipforce_sdk.config import from_name  # noqa: E402
from lipforce_sdk.model.checkpoint import LipSyncModel  # noqa: E402

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def cfg():
    return from_name("tiny")


def _ref(cfg, b, g):
    """A random reference of ``sink_frames`` latent frames (what the runtime's sink holds)."""
    from distill.teacher import Ref

    h, w = cfg.latent_hw
    r = cfg.stream.sink_frames
    return Ref(torch.randn(b, cfg.latent_channels, r, h, w, generator=g), torch.randn(b, cfg.latent_channels, r, h, w, generator=g),
               (torch.rand(b, cfg.mask_channels, r, h, w, generator=g) > 0.5).float())


@pytest.mark.parametrize("guidance,region", [(1.0, "lips"), (2.5, "lips"), (2.5, "crop"), (2.5, "mouth")])
def test_rollout_equals_the_runtime_two_step_schedule(cfg, guidance, region):
    """The student's training rollout is the runtime's computation: the reference written into the
    sink, then the same cache plan and the same passes per chunk (with step 2's audio guidance)."""
    from distill.student import renoiser, rollout
    from lipforce_sdk.backends.torch_backend import TorchBackend
    from lipforce_sdk.cache_plan import RingCachePlanner
    from lipforce_sdk.sampler import audio_guided, two_step_sample
    from lipforce_sdk.session import ChunkRenderer

    m = LipSyncModel.from_preset("tiny", seed=3)
    g = torch.Generator().manual_seed(0)
    c = cfg.stream.chunk_frames
    n = (cfg.num_slots + 3) * c  # wraps the ring
    h, w = cfg.latent_hw
    cond = torch.randn(1, cfg.latent_channels, n, h, w, generator=g)
    mask = (torch.rand(1, cfg.mask_channels, n, h, w, generator=g) > 0.5).float()
    tc = cfg.vae.temporal_compression
    tok = torch.randn(1, n * tc, cfg.audio.tokens_per_frame, cfg.audio.token_dim, generator=g)
    noise, eps2 = torch.randn(2, 1, cfg.latent_channels, n, h, w, generator=g)
    ref = _ref(cfg, 1, g)
    t_land = 0.375
    sched = cfg.replace(schedule={"t_land": t_land}).schedule
    with torch.no_grad():
        got = rollout(m.dit, cfg, cond, mask, tok, noise, renoiser(eps2, t_land, c), t_land, ref=ref,
                      guidance=guidance, guidance_region=region)

    be = TorchBackend(m, device="cpu")
    state = be.new_state()
    planner = RingCachePlanner.for_stream(cfg.stream)
    renderer = ChunkRenderer(be, cfg.replace(schedule={"guidance_region": region}), 0)  # its fill, its guidance region
    assert cfg.stream.fill == "reference"
    renderer._fill = ref.x0[:, :, :1]
    null = torch.zeros(1, c * tc, cfg.audio.tokens_per_frame, cfg.audio.token_dim)
    for k in range(0, cfg.stream.sink_frames, c):  # as ChunkRenderer.write_reference
        sl = slice(k, k + c)
        be.dit_step(ref.x0[:, :, sl], 0.0, renderer._filled(ref.cond[:, :, sl], ref.mask[:, :, sl].numpy()),
                    ref.mask[:, :, sl], null, planner.plan(), state)
        planner.commit()
    want = []
    for k in range(0, n, c):
        plan = planner.plan()
        sl = slice(k, k + c)
        cond_k = renderer._filled(cond[:, :, sl], mask[:, :, sl].numpy())

        def step(x, t, sl=sl, k=k, plan=plan, cond_k=cond_k, null=False):
            a = null if null is not False else tok[:, k * tc:(k + c) * tc]
            return be.dit_step(x, t, cond_k, mask[:, :, sl], a, plan, state)

        guided = audio_guided(step, lambda x, t, step=step: step(x, t, null=null), guidance, t_land,
                              renderer.guidance_region)
        want.append(two_step_sample(guided, noise[:, :, sl], eps2[:, :, sl], sched))
        planner.commit()
    want = torch.cat(want, dim=2)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), float((got - want).abs().max())


def _head_residual(dit, d: torch.Tensor) -> float:
    """The part of an output difference ``[B, z, F, H, W]`` outside the head's column space, per
    patch (relative): 0 where the difference comes from the head alone."""
    _, ph, pw = dit.patch
    b, z, f, hh, ww = d.shape
    patches = d.reshape(b, z, f, hh // ph, ph, ww // pw, pw).permute(0, 2, 3, 5, 4, 6, 1).reshape(-1, ph * pw * z)
    w = dit.head.head.weight.detach().double()  # [ph*pw*z, dim]
    coef = torch.linalg.lstsq(w, patches.double().T).solution
    return float((patches.double().T - w @ coef).norm() / patches.double().norm())


def test_source_head_keeps_the_noise_out_of_x0(cfg):
    """tiny's tokens (128) are narrower than its patches (16 channels x 4 x 4): a flow head
    (x0 = x_t - t v) passes the noise's directions that the head cannot express into x0; a source
    head (x0 = cond + out) never reads x_t into its output, so what two noises change lies in the
    head's column space."""
    from lipforce_sdk.model.dit import WanDiT

    g = torch.Generator().manual_seed(0)
    h, w = cfg.latent_hw
    cond = torch.randn(1, cfg.latent_channels, 2, h, w, generator=g)
    mask = torch.ones(1, cfg.mask_channels, 2, h, w)
    tok = torch.randn(1, 2 * cfg.vae.temporal_compression, cfg.audio.tokens_per_frame, cfg.audio.token_dim, generator=g)
    n1, n2 = torch.randn(2, *cond.shape, generator=g)
    t = torch.ones(1)
    res = {}
    for out in ("flow", "source"):
        torch.manual_seed(0)
        dit = WanDiT(cfg.replace(dit={"output": out})).eval()
        with torch.no_grad():
            d = dit.forward_full(n1, t, cond, mask, tok) - dit.forward_full(n2, t, cond, mask, tok)
        res[out] = _head_residual(dit, d)
    assert res["source"] < 1e-6, res
    assert res["flow"] > 0.5, res  # about half of each 256-number patch is noise the head cannot cancel


def test_as_student_starts_a_source_head_at_the_filled_source(cfg):
    """The teacher keeps a flow head and the unfilled source; a student of a source preset made
    from it returns its (filled) condition until it has learnt a correction."""
    import copy

    from distill.student import rollout, renoiser
    from distill.teacher import Teacher, as_student, teacher_config

    tcfg = teacher_config(cfg)
    assert (tcfg.dit.output, tcfg.stream.fill) == ("flow", "none")
    teacher = Teacher(tcfg).eval()
    student = as_student(copy.deepcopy(teacher), cfg)
    assert student.dit.cfg is cfg and teacher.dit.cfg.dit.output == "flow"
    g = torch.Generator().manual_seed(4)
    h, w = cfg.latent_hw
    c = cfg.stream.chunk_frames
    cond = torch.randn(1, cfg.latent_channels, 2 * c, h, w, generator=g)
    mask = (torch.rand(1, cfg.mask_channels, 2 * c, h, w, generator=g) > 0.5).float()
    tok = torch.randn(1, 2 * c * cfg.vae.temporal_compression, cfg.audio.tokens_per_frame, cfg.audio.token_dim, generator=g)
    noise, eps2 = torch.randn(2, *cond.shape, generator=g)
    ref = _ref(cfg, 1, g)
    with torch.no_grad():
        out = rollout(student.dit, cfg, cond, mask, tok, noise, renoiser(eps2, 0.5, c), 0.5, ref=ref)
        flow = rollout(teacher.dit, tcfg, cond, mask, tok, noise, renoiser(eps2, 0.5, c), 0.5, ref=ref)
    hole = mask.amax(1, keepdim=True)
    want = cond * (1 - hole) + ref.x0[:, :, :1] * hole
    assert torch.allclose(out, want, atol=1e-6, rtol=0)
    assert float((flow - want).abs().mean()) > 0.1


def test_teacher_reference_pass_equals_a_longer_causal_cache(cfg):
    """``forward_ref`` (reference at t=0 without audio, then the window with full attention) is
    independent of the batch and changes when the reference changes."""
    m = LipSyncModel.from_preset("tiny", seed=2).eval()
    g = torch.Generator().manual_seed(1)
    h, w = cfg.latent_hw
    x = torch.randn(2, cfg.latent_channels, 4, h, w, generator=g)
    cond = torch.randn_like(x)
    mask = torch.ones(2, cfg.mask_channels, 4, h, w)
    tok = torch.randn(2, 4 * cfg.vae.temporal_compression, cfg.audio.tokens_per_frame, cfg.audio.token_dim, generator=g)
    ref = _ref(cfg, 2, g)
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        both = m.dit.forward_ref(x, t, cond, mask, tok, ref.x0, ref.cond, ref.mask)
        one = m.dit.forward_ref(x[1:], t[1:], cond[1:], mask[1:], tok[1:], ref.x0[1:], ref.cond[1:], ref.mask[1:])
        other = m.dit.forward_ref(x[1:], t[1:], cond[1:], mask[1:], tok[1:], ref.x0[:1], ref.cond[:1], ref.mask[:1])
    assert torch.allclose(both[1:], one, atol=1e-5)
    assert float((one - other).abs().max()) > 1e-3, "the reference does not reach the window"


def test_rollout_gradient_reaches_only_the_exit_step(cfg):
    from distill.student import renoiser, rollout

    m = LipSyncModel.from_preset("tiny", seed=1)
    g = torch.Generator().manual_seed(2)
    h, w = cfg.latent_hw
    c = cfg.stream.chunk_frames
    n = 2 * c
    cond = torch.randn(2, cfg.latent_channels, n, h, w)
    mask = torch.zeros(2, cfg.mask_channels, n, h, w)
    tok = torch.randn(2, n * cfg.vae.temporal_compression, cfg.audio.tokens_per_frame, cfg.audio.token_dim)
    noise, eps2 = torch.randn(2, 2, cfg.latent_channels, n, h, w)
    ref = _ref(cfg, 2, g)
    for gs in (0, 1):
        m.zero_grad()
        out = rollout(m.dit, cfg, cond, mask, tok, noise, renoiser(eps2, 0.5, c), 0.5, grad_step=gs, ref=ref)
        out.pow(2).mean().backward()
        gnorm = sum(float(p.grad.abs().sum()) for p in m.dit.parameters() if p.grad is not None)
        assert gnorm > 0
    with torch.no_grad():
        a = rollout(m.dit, cfg, cond, mask, tok, noise, renoiser(eps2, 0.5, c), 0.5, grad_step=None, ref=ref)
    b = rollout(m.dit, cfg, cond, mask, tok, noise, renoiser(eps2, 0.5, c), 0.5, grad_step=1, ref=ref).detach()
    assert torch.allclose(a, b, atol=1e-6)


def _crop_set(cfg, frames):
    from distill.crops import CropClip, CropSet

    s = cfg.stream.resolution
    hard = np.zeros((frames[0].shape[0], s, s), np.uint8)
    hard[:, s // 4: 3 * s // 4, s // 4: 3 * s // 4] = 1
    clips = [CropClip(f"c{i}", "real", f, f, hard, f[:2], hard[:2], np.zeros(f.shape[0] * 640, np.float32))
             for i, f in enumerate(frames)]
    return CropSet.build(cfg, clips)


def test_latent_normalisation_is_exact(cfg):
    """Folding the latent scale into the VAE leaves reconstructions unchanged, latents at unit std."""
    from distill.autoencoder import decode_latents, encode_clip, normalize_latents
    from distill.crops import to_unit

    torch.manual_seed(0)
    m = LipSyncModel(cfg)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (8, 128, 128, 3), dtype=np.uint8) for _ in range(2)]
    x = to_unit(frames[0])
    before = decode_latents(m.vae, encode_clip(m.vae, x)[None])
    s = normalize_latents(m.vae, _crop_set(cfg, frames), clips=2)
    assert s > 0
    z = torch.cat([encode_clip(m.vae, to_unit(f)).flatten() for f in frames])
    assert abs(float(z.std()) - 1.0) < 1e-4
    after = decode_latents(m.vae, encode_clip(m.vae, x)[None])
    assert torch.allclose(before, after, atol=1e-4)


def test_sync_reward_crop_matches_the_scorer_crop(cfg):
    """The reward's differentiable mouth crop (mouth latents only, soft-mask composite, torch area
    resize) is the scorer's crop of the runtime composite (full decode, paste into the frame, the
    aligned crop cut again, OpenCV area resize)."""
    from distill.analysis import latents_to_frames
    from distill.crops import procedural_clip
    from distill.evaluate import aligned_crops
    from distill.student import SyncReward, reward_inputs
    from distill.syncnet import SyncNet, mouth_crops

    torch.manual_seed(0)
    m = LipSyncModel(cfg)
    clip = procedural_clip(cfg, 0, "held_out", max_frames=8, keep_frames=True)
    n = 8 // cfg.vae.temporal_compression
    z = torch.randn(cfg.latent_channels, n, *cfg.latent_hw) * 0.5
    frames = latents_to_frames(m.vae, z, clip)
    want = mouth_crops(aligned_crops(frames, clip.extra["pair"]))
    cs = _crop_set(cfg, [clip.source])
    cs.clips[0].hard = clip.hard
    src, soft = reward_inputs(cs, [(0, 0)], n, cfg.vae.temporal_compression)
    rw = SyncReward(m.vae, SyncNet(), cfg)
    with torch.no_grad():
        got = rw.mouth_grey(z[None], src, soft)[0].numpy()
    # paste into the frame and cutting the crop again resamples twice; uint8 rounding and the two
    # area filters differ by a few levels; the zero-padded latent window differs only at its edge
    assert np.abs(got - want).mean() < 0.02, np.abs(got - want).mean()


def test_latents_to_frames_follows_the_runtime_seam_switch(cfg, monkeypatch):
    """The evaluation's frames are pasted as the runtime pastes them: the seam matched to the frame
    by default, the crop as drawn with ``LIPFORCE_EDGE_MATCH=0``."""
    import distill.analysis as analysis
    from distill.crops import procedural_clip
    from lipforce_sdk.geometry import match_edge

    m = LipSyncModel(cfg)
    clip = procedural_clip(cfg, 0, "held_out", max_frames=8, keep_frames=True)
    n = 8 // cfg.vae.temporal_compression
    z = torch.zeros(cfg.latent_channels, n, *cfg.latent_hw)
    src, crops, masks = clip.extra["pair"].source, clip.extra["crops"], clip.extra["masks"]
    # decoded crops a few levels brighter than the frame's: what the seam match is for
    gen = np.stack([np.clip(crops[i].crop(src[i]).astype(np.int16) + 6, 0, 255).astype(np.uint8)
                    for i in range(8)])
    monkeypatch.setattr(analysis, "from_unit", lambda x: gen)
    drawn = np.stack([crops[i].paste(src[i], gen[i], masks[i].soft) for i in range(8)])
    matched = np.stack([crops[i].paste(src[i], match_edge(gen[i], crops[i].crop(src[i]), masks[i].hard),
                                       masks[i].soft) for i in range(8)])
    assert not np.array_equal(drawn, matched)
    monkeypatch.delenv("LIPFORCE_EDGE_MATCH", raising=False)
    monkeypatch.setenv("LIPFORCE_GREEN_LIMIT", "0")
    assert np.array_equal(analysis.latents_to_frames(m.vae, z, clip), matched)
    monkeypatch.setenv("LIPFORCE_EDGE_MATCH", "0")
    assert np.array_equal(analysis.latents_to_frames(m.vae, z, clip), drawn)


def test_latents_to_frames_follows_the_runtime_green_limit(cfg, monkeypatch):
    """The evaluation's frames keep the mouth no greener than the frame's, as the runtime does
    (``geometry.limit_green``), and as drawn with ``LIPFORCE_GREEN_LIMIT=0``."""
    import distill.analysis as analysis
    from distill.crops import procedural_clip
    from lipforce_sdk.geometry import GreenLimit, limit_green

    m = LipSyncModel(cfg)
    clip = procedural_clip(cfg, 0, "held_out", max_frames=8, keep_frames=True)
    n = 8 // cfg.vae.temporal_compression
    z = torch.zeros(cfg.latent_channels, n, *cfg.latent_hw)
    src, crops, masks, kps = (clip.extra[k] for k in ("pair", "crops", "masks", "keypoints"))
    src = src.source
    gen = []
    for i in range(8):  # the frame's crop with a grey-green band across the mouth
        g = crops[i].crop(src[i]).copy()
        c = kps[i].map(crops[i].to_crop_affine()).mouth_corners.mean(0).astype(int)
        g[c[1] - 2:c[1] + 2, c[0] - 10:c[0] + 10] = (120, 180, 160)
        gen.append(g)
    gen = np.stack(gen)
    monkeypatch.setattr(analysis, "from_unit", lambda x: gen)
    monkeypatch.setenv("LIPFORCE_EDGE_MATCH", "0")
    drawn = np.stack([crops[i].paste(src[i], gen[i], masks[i].soft) for i in range(8)])
    gl, limited = GreenLimit(), []
    for i in range(8):  # one stream: the limit pools the clip's crops in frame order
        image, kc = crops[i].crop(src[i]), kps[i].map(crops[i].to_crop_affine())
        limited.append(crops[i].paste(src[i], limit_green(gen[i], kc, gl.see(image, kc)), masks[i].soft))
    limited = np.stack(limited)
    assert not np.array_equal(drawn, limited)
    monkeypatch.delenv("LIPFORCE_GREEN_LIMIT", raising=False)
    assert np.array_equal(analysis.latents_to_frames(m.vae, z, clip), limited)
    monkeypatch.setenv("LIPFORCE_GREEN_LIMIT", "0")
    assert np.array_equal(analysis.latents_to_frames(m.vae, z, clip), drawn)


def test_data_pairs_are_the_real_windows_and_their_renoised_state(cfg):
    """The init's data pairs: x0 = the real latents of a window, step 2's input = those latents
    re-noised to ``t_land`` with noise other than step 1's (as the runtime re-noises), and the
    window's own condition, audio, mask and reference."""
    from distill.student import data_pairs
    from distill.teacher import LatentSet

    g = torch.Generator().manual_seed(0)
    h, w = cfg.latent_hw
    z = [torch.randn(16, 12, h, w, generator=g) for _ in range(3)]
    ls = LatentSet(z, [x + 1 for x in z], [torch.ones(1, 12, h, w)] * 3, [torch.randn(12, 20, 80, generator=g) for _ in z],
                   [x[:, :2] for x in z], [x[:, :2] + 1 for x in z], [torch.ones(1, 2, h, w)] * 3, 1, 128)
    p = data_pairs(ls, 5, 4, 0.5, seed=3)
    assert p["x0"].shape == (5, 16, 4, h, w) and p["ref_x0"].shape == (5, 16, 2, h, w)
    for b in range(5):  # every x0 is a window of one clip, with that window's condition
        hits = [(i, s) for i in range(3) for s in range(9) if torch.equal(p["x0"][b], z[i][:, s:s + 4])]
        assert len(hits) == 1
        i, s = hits[0]
        assert torch.equal(p["cond"][b], z[i][:, s:s + 4] + 1) and torch.equal(p["mel"][b], ls.mel[i][s:s + 4])
        assert torch.equal(p["ref_x0"][b], z[i][:, :2])
    eps2 = (p["x_land"] - 0.5 * p["x0"]) / 0.5
    assert abs(float(eps2.std()) - 1.0) < 0.1 and not torch.allclose(eps2, p["noise"], atol=0.1)


def test_choose_window_finds_the_band_and_lands_inside():
    from distill.analysis import choose_window

    ts = [1.0 - i / 16 for i in range(16)]
    gain = [0.0, 0.01, 0.02, 0.05, 0.12, 0.2, 0.22, 0.18, 0.12, 0.05, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0]
    rows = [{"t": t, "sync_gain": g} for t, g in zip(ts, gain)]
    window, t_land = choose_window(rows, 16)
    assert window == (ts[8], ts[4])  # gains >= 0.11 (half of 0.22) around the peak
    assert window[0] <= t_land <= window[1] and abs(t_land * 16 - round(t_land * 16)) < 1e-9
    none, half = choose_window([{"t": t, "sync_gain": -0.1} for t in ts], 16)
    assert none is None and half == 0.5


def test_flow_matching_loss_is_zero_for_the_truth_and_positive_otherwise():
    from distill.teacher import flow_matching_loss

    z = torch.randn(2, 4, 2, 4, 4)
    t = torch.tensor([0.3, 0.9])
    eps = torch.randn_like(z)
    w = torch.ones(1, 1, 1, 4, 4)
    assert float(flow_matching_loss(lambda x, tt: z, z, t, eps, w)) == 0.0
    assert float(flow_matching_loss(lambda x, tt: x, z, t, eps, w)) > 0.1


def test_recipe_smoke_runs_every_stage(tmp_path):
    """A few steps of each stage: data, VAE, teacher, analysis, four students, the table."""
    from distill.recipe import STAGES, STUDENT_VARIANTS, _stage_outputs, main
    from lipforce_sdk.session import Engine

    assert main(["--work", str(tmp_path), "--smoke", "--threads", "1"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    kinds = [r.get("kind") for r in res["rows"]]
    assert kinds.count("teacher") == 3 and all(k in kinds for k in STUDENT_VARIANTS)
    for r in res["rows"]:
        assert np.isfinite(r["sync_c"]) and r["gap_mae_px"] >= 0
    gt = res["rows"][0]
    assert gt["offset_exact"] == 1.0 and gt["gap_mae_px"] < 1.0  # the ground truth row measures truth
    assert (tmp_path / "analysis.svg").read_text().startswith("<svg")
    assert "t_land" in (tmp_path / "analysis.md").read_text()
    assert "| student, 2 steps" in (tmp_path / "results.md").read_text()
    # what --redo removes: every stage's skip markers, e.g. each student variant's weights
    for st in STAGES:
        assert _stage_outputs(tmp_path, st), st
    names = {p.name for p in _stage_outputs(tmp_path, "student")}
    assert {f"{v}.safetensors" for v in STUDENT_VARIANTS} | {f"init_t{res['t_land']:.4f}.safetensors"} <= names
    engine = Engine.load(tmp_path / "models" / "student")
    assert engine.config.schedule.t_land == pytest.approx(res["t_land"])


def test_vae_alone_command_scores_a_real_face_clip(capsys):
    """`python -m distill.autoencoder --clips DIR`: the bundled model's VAE (encode -> decode) on
    the eye-aligned crops of the bundled photo clip (a real face, no sound track)."""
    from distill.autoencoder import main

    assert main(["--clips", str(REPO / "lipforce_sdk" / "assets" / "photo"), "--seconds", "1"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| face@")]
    assert len(rows) == 1
    crop, lower, mask = (float(v) for v in rows[0].strip("| ").split(" | ")[1:])
    assert lower >= 30.0 and crop >= 30.0 and mask >= 30.0, rows[0]  # measured 38.5 / 37.2 / 39.8


def test_data_description_counts_the_real_clips_trained_on(tmp_path):
    """The manifest's data line counts the clips ``train_clips`` reads (a video with speech, any
    container), not every .mp4 in the folder: a silent video is not trained on."""
    import shutil

    from distill.recipe import RecipeConfig, data_description

    photo = REPO / "lipforce_sdk" / "assets" / "photo"
    d = tmp_path / "clips"
    d.mkdir()
    shutil.copy(photo / "face.mp4", d / "a.mp4")
    shutil.copy(photo / "speech.wav", d / "a.wav")
    shutil.copy(photo / "face.mp4", d / "b.mov")
    shutil.copy(photo / "speech.wav", d / "b.wav")
    for name in ("silent.mp4", "silent2.mp4"):  # no sound of their own, none beside them
        shutil.copy(photo / "face.mp4", d / name)
    line = data_description(RecipeConfig(real_data=str(d)))
    assert "2 real talking-head clips" in line, line
