import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lipforce_sdk.config import ConfigError, DiTConfig, ModelConfig, ScheduleConfig, StreamConfig, from_name
from lipforce_sdk.model import LipSyncModel, load_model, save_model
from lipforce_sdk.model.checkpoint import CheckpointError

WAN_KEYS = [
    "patch_embedding.weight", "time_embedding.0.weight", "time_embedding.2.weight", "time_projection.1.weight",
    "blocks.0.self_attn.q.weight", "blocks.0.self_attn.k.bias", "blocks.0.self_attn.o.weight",
    "blocks.0.self_attn.norm_q.weight", "blocks.0.self_attn.norm_k.weight", "blocks.0.cross_attn.q.weight",
    "blocks.0.cross_attn.norm_k.weight", "blocks.0.norm3.weight", "blocks.0.ffn.0.weight", "blocks.0.ffn.2.weight",
    "blocks.0.modulation", "blocks.1.self_attn.v.weight", "head.head.weight", "head.modulation",
]


def test_wan_named_round_trip(tmp_path):
    m = LipSyncModel.from_preset("tiny", seed=3)
    save_model(m, tmp_path)
    sd = load_file(str(tmp_path / "dit.safetensors"))
    for k in WAN_KEYS:
        assert k in sd, f"Wan2.1 key {k!r} missing from dit.safetensors"
    assert sd["blocks.0.modulation"].shape == (1, 6, 128) and sd["patch_embedding.weight"].shape == (128, 33, 1, 4, 4)
    m2 = load_model(tmp_path)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["config"]["name"] == "tiny" and man["weights"]["dit"] == "dit.safetensors"


def test_seeded_weights_are_fixed():
    a = LipSyncModel.from_preset("tiny", seed=0).dit.state_dict()
    b = LipSyncModel.from_preset("tiny", seed=0).dit.state_dict()
    c = LipSyncModel.from_preset("tiny", seed=1).dit.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.self_attn.q.weight"], c["blocks.0.self_attn.q.weight"])


def test_bundled_default_is_the_trained_student():
    """The bundled default is the recipe's student: its manifest says how it was trained, its
    schedule lands where the teacher analysis put it, and its weights are not the seeded init."""
    from lipforce_sdk import default_model_dir

    d = default_model_dir()
    man = json.loads((d / "manifest.json").read_text())
    tr = man["training"]
    assert tr["recipe"] == "python -m distill.recipe" and tr["t_land"] == man["config"]["schedule"]["t_land"]
    assert (d / "MODEL_CARD.md").is_file()
    m = load_model(d)
    ref = LipSyncModel.from_preset("tiny", seed=0)
    assert not torch.equal(m.dit.blocks[0].self_attn.q.weight, ref.dit.blocks[0].self_attn.q.weight)


def test_load_errors_name_the_problem(tmp_path):
    m = LipSyncModel.from_preset("tiny")
    save_model(m, tmp_path)
    sd = load_file(str(tmp_path / "dit.safetensors"))
    sd["blocks.0.self_attn.q.weight"] = torch.zeros(64, 128)
    save_file(sd, str(tmp_path / "dit.safetensors"))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.self_attn\.q\.weight.*\(64, 128\).*\(128, 128\)"):
        load_model(tmp_path)
    sd.pop("blocks.0.self_attn.q.weight")
    sd["blocks.0.attn.q.weight"] = torch.zeros(128, 128)
    save_file(sd, str(tmp_path / "dit.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 missing.*self_attn\.q\.weight.*1 unexpected.*attn\.q\.weight"):
        load_model(tmp_path)
    (tmp_path / "vae.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path)
    from lipforce_sdk.manifest import ManifestError

    with pytest.raises(ManifestError, match="does not exist"):
        load_model(tmp_path / "nope")


@pytest.mark.parametrize("make,match", [
    (lambda: from_name("2b"), r"unknown preset '2b'; available: tiny, 1\.3b, 14b"),
    (lambda: DiTConfig(dim=100, num_heads=3).validate(), r"dit\.num_heads=3 .*divide dim=100"),
    (lambda: DiTConfig(dim=64, num_heads=8).validate(), r"dit\.head_dim=8"),
    (lambda: DiTConfig(patch_size=(2, 2, 2)).validate(), r"dit\.patch_size=\(2, 2, 2\)"),
    (lambda: StreamConfig(resolution=100).validate(), r"stream\.resolution=100 .*multiple of 16"),
    (lambda: StreamConfig(chunk_frames=0).validate(), r"stream\.chunk_frames=0"),
    (lambda: ScheduleConfig(t_land=1.5).validate(), r"schedule\.t_land=1\.5 .*between 0 and 1"),
    (lambda: ScheduleConfig(cache_pass="none").validate(), r"schedule\.cache_pass='none'"),
    (lambda: from_name("tiny").replace(audio={"hop_length": 300}), r"audio\.hop_length=300"),
    (lambda: from_name("tiny").replace(foo={}), r"unknown config section 'foo'"),
    (lambda: from_name("tiny").replace(vae={"kind": "wan"}), r"vae\.kind='wan' .*'streaming' .*'frame'"),
    (lambda: from_name("tiny").replace(vae={"temporal_compression": 4}), r"vae\.temporal_compression=4 .*must be 1"),
    (lambda: from_name("1.3b").replace(vae={"spatial_compression": 4}), r"vae\.spatial_compression=4 .*must be 8"),
    (lambda: from_name("tiny").replace(stream={"sink_frames": 3}), r"stream\.sink_frames=3 .*multiple of chunk_frames=2"),
    (lambda: from_name("tiny").replace(stream={"sink": "first"}), r"stream\.sink='first'"),
    (lambda: from_name("tiny").replace(dit={"output": "eps"}), r"dit\.output='eps' .*'flow' or 'source'"),
    (lambda: from_name("tiny").replace(stream={"fill": "mean"}), r"stream\.fill='mean'"),
    (lambda: from_name("tiny").replace(stream={"silence": "quiet"}), r"stream\.silence='quiet' .*'still' or 'model'"),
    (lambda: from_name("tiny").replace(stream={"sink": "first_chunk"}), r"stream\.fill='reference' is invalid: 'reference' needs sink='reference'"),
])
def test_config_validation_messages(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_presets_and_derived_sizes():
    t, b13, b14 = from_name("tiny"), from_name("1.3b"), from_name("14b")
    assert (b13.dit.dim, b13.dit.num_layers, b13.dit.num_heads, b13.dit.ffn_dim) == (1536, 30, 12, 8960)
    assert (b14.dit.dim, b14.dit.num_layers, b14.dit.num_heads, b14.dit.ffn_dim) == (5120, 40, 40, 13824)
    # tiny: per-frame 4x VAE (16 + 16 + 1 input channels), patch 4 on 32x32 latents, 2-frame chunks
    assert t.in_dim == 33 and b13.in_dim == 36 and b13.tokens_per_frame == 1024 and t.tokens_per_frame == 64
    assert t.video_frames_per_chunk == 2 and t.num_slots == 2 + 8 + 2 and b13.video_frames_per_chunk == 4
    assert t.algorithmic_latency_ms() == pytest.approx(160.0) and b13.algorithmic_latency_ms() == pytest.approx(240.0)
    assert t.stream.sink == "reference" and t.vae.kind == "frame" and b13.vae.kind == "streaming"
    assert ModelConfig.from_dict(b13.to_dict()) == b13
    # the Wan presets keep Wan's flow head; tiny corrects the source filled with its reference's mouth
    assert (b13.dit.output, b13.stream.fill, t.dit.output, t.stream.fill) == ("flow", "none", "source", "reference")
    # a manifest written before these fields reads as the form it was trained in
    old = t.to_dict()
    del old["dit"]["output"], old["stream"]["fill"], old["stream"]["silence"]
    assert ModelConfig.from_dict(old).replace(dit={"output": "source"}, stream={"fill": "reference"}) == t
    assert (ModelConfig.from_dict(old).dit.output, ModelConfig.from_dict(old).stream.fill) == ("flow", "none")


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_latency_sample_makes_every_chunk_size_it_measures_by_default(chunk, tmp_path):
    """samples/latency.py's default chunk sizes (1, 2, 3 latent frames) on `tiny`, whose reference sink
    (2 frames) is written in whole chunks: the sink is rounded up to a whole number of chunks."""
    import argparse

    from conftest import load_sample

    lat = load_sample("latency")
    args = argparse.Namespace(preset="tiny", resolution=64, device="cpu", precision="fp32")
    engine = lat.make_engine(args, "torch", chunk, tmp_path)
    s = engine.config.stream
    assert s.chunk_frames == chunk and s.sink_frames % chunk == 0 and s.sink_frames >= 2
