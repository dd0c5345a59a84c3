"""PyTorch reference of the causal two-step lip-sync student (optional dependency: torch)."""

from .attention import Rope3D, kv_cache_attention
from .audio_encoder import AudioEncoder
from .checkpoint import LipSyncModel, load_model, save_model
from .dit import WanDiT
from .kv_cache import KVCache
from .vae import FrameVAE, StreamingVAE, VideoVAE, make_vae

__all__ = [
    "AudioEncoder", "KVCache", "LipSyncModel", "Rope3D", "StreamingVAE", "FrameVAE", "VideoVAE", "WanDiT",
    "make_vae",
    "kv_cache_attention", "load_model", "save_model",
]
