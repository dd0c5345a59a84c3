"""The whole model (audio encoder + VAE + DiT) and its safetensors checkpoint in a model directory.

``dit.safetensors`` uses Wan2.1 key names with no prefix, so a Wan-based student's DiT weights
load as they are; the VAE and audio encoder have files of their own.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..config import ModelConfig, from_name
from ..manifest import ManifestError, read_manifest, write_manifest
from .audio_encoder import AudioEncoder
from .dit import WanDiT
from .vae import make_vae

__all__ = ["LipSyncModel", "save_model", "load_model", "CheckpointError"]

WEIGHT_FILES = {"dit": "dit.safetensors", "vae": "vae.safetensors", "audio_encoder": "audio_encoder.safetensors"}


class CheckpointError(ValueError):
    pass


class LipSyncModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.audio_encoder = AudioEncoder(cfg)
        self.vae = make_vae(cfg)
        self.dit = WanDiT(cfg)

    @classmethod
    def from_preset(cls, name: str, seed: int = 0, **overrides) -> "LipSyncModel":
        """A model of preset ``name`` with fixed seeded weights (``overrides`` as ``ModelConfig.replace``)."""
        cfg = from_name(name)
        if overrides:
            cfg = cfg.replace(**overrides)
        g = torch.random.fork_rng(devices=[])
        with g:
            torch.manual_seed(seed)
            return cls(cfg)


def save_model(model: LipSyncModel, model_dir: str | Path, **manifest_sections) -> Path:
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    for part, fname in WEIGHT_FILES.items():
        sd = {k: v.detach().contiguous().cpu() for k, v in getattr(model, part).state_dict().items()}
        save_file(sd, str(d / fname), metadata={"format": "pt", "part": part, "naming": "wan2.1" if part == "dit" else "lipforce"})
    write_manifest(d, model.cfg, weights=dict(WEIGHT_FILES), **manifest_sections)
    return d


def _load_part(module: nn.Module, path: Path, part: str, preset: str) -> None:
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} is missing: the model directory has no {part} weights")
    sd = load_file(str(path))
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{part} weights in {str(path)!r} do not match preset {preset!r}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
            "check the manifest's preset and the key naming (Wan2.1: blocks.N.self_attn.q.weight, ...)"
        )
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{part} weight {k!r} has shape {tuple(v.shape)}, the config expects "
                                  f"{tuple(own[k].shape)}; the weights are of another model size than {preset!r}")
    module.load_state_dict(sd, strict=True)


def load_model(model_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LipSyncModel:
    m, cfg = read_manifest(model_dir)
    if "weights" not in m:
        raise ManifestError(f"{str(model_dir)!r} holds no PyTorch weights (manifest has no 'weights'); "
                            "use backend='onnxruntime' or 'tensorrt' for exported directories")
    model = LipSyncModel(cfg)
    for part, fname in m["weights"].items():
        _load_part(getattr(model, part), Path(model_dir) / fname, part, cfg.name)
    return model.to(device=device, dtype=dtype).eval()
