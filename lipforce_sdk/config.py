"""Model and stream configuration: small dataclasses with ``validate()`` and a preset registry.

NumPy-free and torch-free: the runtime reads these from a model directory's manifest, the
PyTorch reference builds modules from them. Every size the runtime uses comes from here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

__all__ = [
    "ConfigError",
    "DiTConfig",
    "VAEConfig",
    "AudioConfig",
    "StreamConfig",
    "ScheduleConfig",
    "ModelConfig",
    "PRESETS",
    "from_name",
]


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and the value."""


def _check(cond: bool, where: str, name: str, value, expect: str) -> None:
    if not cond:
        raise ConfigError(f"{where}.{name}={value!r} is invalid: {expect}")


@dataclass(frozen=True)
class DiTConfig:
    """Wan2.1-style DiT sizes. ``in_dim`` = latent + masked-source latent + mask channels."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_theta: float = 10000.0
    eps: float = 1e-6
    # what the head's output is added to: "flow" = Wan's velocity, x0 = x_t - t * v; "source" = a
    # correction of the masked-source latents, x0 = cond + out. A head narrower than its patch
    # (tiny: 128-dim tokens for 4x4 patches of 16 channels) cannot express every direction of x_t,
    # and the flow form passes those directions of the noise into x0; the source form never reads
    # x_t into its output, and takes what the head cannot express from the source
    output: str = "flow"

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def validate(self) -> "DiTConfig":
        w = "dit"
        _check(self.dim > 0, w, "dim", self.dim, "must be > 0")
        _check(self.num_heads > 0 and self.dim % self.num_heads == 0, w, "num_heads", self.num_heads,
               f"must divide dim={self.dim}")
        hd = self.dim // max(self.num_heads, 1)
        _check(hd % 2 == 0 and hd >= 12, w, "head_dim", hd,
               "dim/num_heads must be even and >= 12 (3-D RoPE splits it over frame/height/width)")
        _check(self.num_layers > 0, w, "num_layers", self.num_layers, "must be > 0")
        _check(self.ffn_dim > 0, w, "ffn_dim", self.ffn_dim, "must be > 0")
        _check(self.freq_dim > 0 and self.freq_dim % 2 == 0, w, "freq_dim", self.freq_dim, "must be even and > 0")
        _check(tuple(self.patch_size)[0] == 1 and len(self.patch_size) == 3, w, "patch_size", self.patch_size,
               "must be (1, ph, pw): frames are never patched together (block-causal chunks)")
        _check(self.rope_theta > 1, w, "rope_theta", self.rope_theta, "must be > 1")
        _check(self.output in ("flow", "source"), w, "output", self.output, "must be 'flow' or 'source'")
        return self


@dataclass(frozen=True)
class VAEConfig:
    """The video autoencoder behind the DiT.

    ``kind="streaming"``: Wan's layout, 8x spatial and ``temporal_compression``x temporal
    compression (4 video frames per latent frame), causal in time (the 1.3b/14b presets).
    ``kind="frame"``: one latent frame per video frame (``temporal_compression=1``) and 4x
    spatial compression, with a causal temporal conv in the decoder: for small face crops, where
    8x loses the lips and packing 4 frames into one latent ghosts them (the tiny preset).
    """

    z_dim: int = 16
    base_channels: int = 32
    spatial_compression: int = 8
    temporal_compression: int = 4
    kind: str = "streaming"

    def validate(self) -> "VAEConfig":
        w = "vae"
        _check(self.kind in ("streaming", "frame"), w, "kind", self.kind,
               "must be 'streaming' (Wan layout, 8x spatial) or 'frame' (per-frame, 4x spatial)")
        _check(self.z_dim > 0, w, "z_dim", self.z_dim, "must be > 0")
        _check(self.base_channels > 0, w, "base_channels", self.base_channels, "must be > 0")
        if self.kind == "streaming":
            _check(self.spatial_compression == 8, w, "spatial_compression", self.spatial_compression,
                   "must be 8 for kind='streaming' (three stride-2 stages, as in Wan's VAE)")
            _check(self.temporal_compression >= 1, w, "temporal_compression", self.temporal_compression,
                   "must be >= 1")
        else:
            _check(self.spatial_compression in (4, 8), w, "spatial_compression", self.spatial_compression,
                   "must be 4 or 8 for kind='frame'")
            _check(self.temporal_compression == 1, w, "temporal_compression", self.temporal_compression,
                   "must be 1 for kind='frame' (one latent frame per video frame)")
        return self


@dataclass(frozen=True)
class AudioConfig:
    """Log-mel front end and the per-frame audio encoder.

    16 kHz mono; hop 160 samples (10 ms), so a 25 fps video frame owns 640 samples = 4 mel frames.
    The encoder sees, for video frame i, the mel frames of video frames
    ``[i - context_frames, i + lookahead_frames]``; ``lookahead_frames`` adds to the algorithmic latency.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    context_frames: int = 2
    lookahead_frames: int = 2
    tokens_per_frame: int = 4
    token_dim: int = 256
    hidden_dim: int = 512

    def validate(self, fps: float = 25.0) -> "AudioConfig":
        w = "audio"
        _check(self.sample_rate == 16000, w, "sample_rate", self.sample_rate, "the model runs at 16000 Hz")
        spf = self.sample_rate / fps
        _check(abs(spf - round(spf)) < 1e-9 and round(spf) % self.hop_length == 0, w, "hop_length", self.hop_length,
               f"must divide the samples per video frame ({spf:g} at fps={fps:g})")
        _check(self.n_fft >= self.hop_length, w, "n_fft", self.n_fft, f"must be >= hop_length={self.hop_length}")
        _check(self.n_mels > 0, w, "n_mels", self.n_mels, "must be > 0")
        _check(self.context_frames >= 0, w, "context_frames", self.context_frames, "must be >= 0")
        _check(self.lookahead_frames >= 0, w, "lookahead_frames", self.lookahead_frames, "must be >= 0")
        _check(self.tokens_per_frame > 0, w, "tokens_per_frame", self.tokens_per_frame, "must be > 0")
        _check(self.token_dim > 0, w, "token_dim", self.token_dim, "must be > 0")
        return self

    def mels_per_video_frame(self, fps: float) -> int:
        return int(round(self.sample_rate / fps)) // self.hop_length

    def window_video_frames(self) -> int:
        return self.context_frames + 1 + self.lookahead_frames


SILENCE_MODES = ("still", "model")  # what a session does while the audio is silent (lipforce_sdk.silence)


@dataclass(frozen=True)
class StreamConfig:
    """Chunking and cache sizes, in latent frames; resolution of the face crop in pixels."""

    fps: float = 25.0
    resolution: int = 128
    chunk_frames: int = 1
    window_frames: int = 6
    sink_frames: int = 1
    # what the sink slots hold: "reference" = clean frames of the person, written by a t=0 pass
    # before the first chunk (the identity anchor the model copies lips, teeth and skin from);
    # "first_chunk" = the stream's first generated chunk (models written before references)
    sink: str = "first_chunk"
    # what the DiT's condition holds inside the masked mouth: "none" = the masked source's own
    # latents; "reference" = the first reference frame's latents (a closed, sharp mouth of the same
    # person, eye-aligned like every crop), so that a "source" head corrects a real mouth
    fill: str = "none"
    # what a session does while the audio is silent when the caller does not say (``Session``'s
    # ``silence``): "still" = hold the mouth (``lipforce_sdk.silence``), "model" = the model's output
    # throughout; None = "still" for models with fill "reference" (the general models it was measured
    # on), else "model". A model enrolled from a talking clip learned its person's own pauses and says
    # "model" (BENCHMARKS.md section 8).
    silence: str | None = None

    def validate(self, vae: VAEConfig | None = None, dit: DiTConfig | None = None) -> "StreamConfig":
        w = "stream"
        _check(self.fps > 0, w, "fps", self.fps, "must be > 0")
        _check(self.chunk_frames >= 1, w, "chunk_frames", self.chunk_frames, "must be >= 1 latent frame")
        _check(self.window_frames >= 0, w, "window_frames", self.window_frames, "must be >= 0")
        _check(self.sink_frames >= 0, w, "sink_frames", self.sink_frames, "must be >= 0")
        _check(self.sink in ("reference", "first_chunk"), w, "sink", self.sink, "must be 'reference' or 'first_chunk'")
        if self.sink == "reference":
            _check(self.sink_frames >= 1 and self.sink_frames % self.chunk_frames == 0, w, "sink_frames",
                   self.sink_frames, f"must be a positive multiple of chunk_frames={self.chunk_frames} with "
                   "sink='reference' (the reference is written in whole chunks)")
        _check(self.fill in ("none", "reference"), w, "fill", self.fill, "must be 'none' or 'reference'")
        _check(self.fill == "none" or self.sink == "reference", w, "fill", self.fill,
               "'reference' needs sink='reference' (the fill is the sink's first reference frame)")
        _check(self.silence in (None, *SILENCE_MODES), w, "silence", self.silence,
               f"must be None, {' or '.join(map(repr, SILENCE_MODES))}")
        mult = 16
        if vae is not None and dit is not None:
            mult = vae.spatial_compression * dit.patch_size[1]
        _check(self.resolution > 0 and self.resolution % mult == 0, w, "resolution", self.resolution,
               f"must be a positive multiple of {mult} (the VAE's spatial compression times the DiT patch)")
        return self


GUIDANCE_REGIONS = ("lips", "mouth", "crop")  # ScheduleConfig.guidance_region
SCHEDULE_STEPS = (1, 2)  # ScheduleConfig.steps


@dataclass(frozen=True)
class ScheduleConfig:
    """Two-step rectified-flow schedule ``x_t = (1-t) x0 + t eps``.

    Step 1 at ``t=1``; re-noise to ``t_land`` (mid-trajectory, from the teacher analysis);
    step 2; then, if ``cache_pass == "clean"``, one more pass at ``t=0`` on the clean chunk writes
    the cache (Self Forcing). ``cache_pass == "last_step"`` keeps the keys/values of step 2 instead.

    ``guidance``: audio guidance of step 2, ``x0 = x0_null + guidance * (x0_audio - x0_null)`` with
    ``x0_null`` the same pass given the null (zero) audio tokens; 1 is off. Above 1 the mouth opens
    further where the model's regression draws an average, shut mouth, at the price of one more DiT
    pass per chunk (guiding step 1 as well was measured to change nothing: step 2 draws the mouth).
    ``guidance_region``: where it acts. ``"lips"`` (default): ``x0_audio + (guidance - 1) * L *
    (x0_audio - x0_null)`` with ``L`` the soft lips box of the crop (``geometry.lips_region``), so the
    chin and cheeks keep the unguided pass (guided over the whole crop, the widest mouths left grey
    smudges below the lower lip); ``"mouth"``: the same with ``L`` the box between the mouth corners
    (``geometry.mouth_region``), so the corners and the skin beside them keep the unguided pass too;
    ``"crop"``: the formula above over the whole crop.

    ``steps``: 2 (default) runs both steps. 1 takes step 1's x0 to be the chunk's condition latents
    with the mouth's hole filled from the reference (``stream.fill == "reference"`` only), re-noises
    that to ``t_land`` and runs step 2 alone: one DiT pass per chunk fewer (two of three with the
    clean cache pass). On the bundled default step 2 draws the mouth from the fill and the sound and
    hardly uses its input, so its real-face runs score as with two steps (BENCHMARKS.md section 2,
    "One denoising step").
    """

    t_land: float = 0.5
    cache_pass: str = "clean"
    seed: int = 0
    guidance: float = 1.0
    guidance_region: str = "lips"
    steps: int = 2

    def validate(self) -> "ScheduleConfig":
        w = "schedule"
        _check(isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps in SCHEDULE_STEPS, w,
               "steps", self.steps,
               "must be 2 (both steps) or 1 (step 2 alone, started from the filled condition)")
        _check(0.0 < self.t_land < 1.0, w, "t_land", self.t_land, "must be strictly between 0 and 1")
        _check(self.cache_pass in ("clean", "last_step"), w, "cache_pass", self.cache_pass,
               "must be 'clean' (a t=0 pass writes the cache) or 'last_step'")
        _check(isinstance(self.guidance, (int, float)) and not isinstance(self.guidance, bool)
               and math.isfinite(self.guidance) and self.guidance >= 0.0, w, "guidance", self.guidance,
               "must be a finite number >= 0 (1 = no audio guidance)")
        _check(self.guidance_region in GUIDANCE_REGIONS, w, "guidance_region", self.guidance_region,
               f"must be one of {', '.join(map(repr, GUIDANCE_REGIONS))}")
        return self

    @property
    def timesteps(self) -> tuple[float, ...]:
        return (1.0, self.t_land) if self.steps == 2 else (self.t_land,)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    dit: DiTConfig
    vae: VAEConfig = field(default_factory=VAEConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def validate(self) -> "ModelConfig":
        self.dit.validate()
        self.vae.validate()
        self.audio.validate(self.stream.fps)
        self.stream.validate(self.vae, self.dit)
        self.schedule.validate()
        _check(self.schedule.steps == 2 or self.stream.fill == "reference", "schedule", "steps", self.schedule.steps,
               "1 starts step 2 from the condition with the mouth filled from the reference: needs "
               f"stream.fill='reference' (this model: {self.stream.fill!r})")
        return self

    # ---- derived sizes (computed, never stored) ----
    @property
    def latent_channels(self) -> int:
        return self.vae.z_dim

    @property
    def mask_channels(self) -> int:
        return self.vae.temporal_compression

    @property
    def in_dim(self) -> int:  # noisy latents + masked-source latents + mask (Wan I2V style)
        return 2 * self.vae.z_dim + self.mask_channels

    @property
    def latent_hw(self) -> tuple[int, int]:
        s = self.stream.resolution // self.vae.spatial_compression
        return s, s

    @property
    def grid_hw(self) -> tuple[int, int]:
        h, w = self.latent_hw
        return h // self.dit.patch_size[1], w // self.dit.patch_size[2]

    @property
    def tokens_per_frame(self) -> int:
        gh, gw = self.grid_hw
        return gh * gw

    @property
    def video_frames_per_chunk(self) -> int:
        return self.stream.chunk_frames * self.vae.temporal_compression

    @property
    def num_slots(self) -> int:
        """Frame slots in the KV cache: sink + ring (window + the chunk being written)."""
        return self.stream.sink_frames + self.stream.window_frames + self.stream.chunk_frames

    @property
    def samples_per_video_frame(self) -> int:
        return int(round(self.audio.sample_rate / self.stream.fps))

    def algorithmic_latency_ms(self) -> float:
        """Chunk length in video frames plus the audio look-ahead, before any compute (the STFT
        windows end with their hop, so the features add no further wait)."""
        frames = self.video_frames_per_chunk + self.audio.lookahead_frames
        return 1000.0 * frames / self.stream.fps

    def replace(self, **sections) -> "ModelConfig":
        """``cfg.replace(stream={"resolution": 256})`` returns a validated copy with fields changed."""
        kw = {}
        for sec, changes in sections.items():
            if sec == "name":
                kw["name"] = changes
                continue
            if not hasattr(self, sec):
                raise ConfigError(f"unknown config section {sec!r}; expected one of dit, vae, audio, stream, schedule")
            kw[sec] = dataclasses.replace(getattr(self, sec), **changes)
        return dataclasses.replace(self, **kw).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        try:
            dit = dict(d["dit"])
            dit["patch_size"] = tuple(dit.get("patch_size", (1, 2, 2)))
            return cls(
                name=d["name"],
                dit=DiTConfig(**dit),
                vae=VAEConfig(**d.get("vae", {})),
                audio=AudioConfig(**d.get("audio", {})),
                stream=StreamConfig(**d.get("stream", {})),
                schedule=ScheduleConfig(**d.get("schedule", {})),
            ).validate()
        except (KeyError, TypeError) as e:
            raise ConfigError(f"model config is malformed ({e}); expected the dict written by ModelConfig.to_dict()") from e


PRESETS: dict[str, ModelConfig] = {
    # CI / CPU / the bundled default: a 128x128 eye-aligned mouth crop -> per-frame 32x32 latents (4x VAE, one
    # latent frame per video frame) -> 64 tokens per frame (patch 4); 2-frame chunks (80 ms + 80 ms look-ahead);
    # the sink holds 2 clean reference frames of the person; the head corrects the masked source whose
    # mouth is filled with the first reference frame's (dit.output="source", stream.fill="reference").
    "tiny": ModelConfig(
        name="tiny",
        dit=DiTConfig(dim=128, ffn_dim=384, num_heads=2, num_layers=3, freq_dim=64, patch_size=(1, 4, 4),
                      output="source"),
        vae=VAEConfig(z_dim=16, base_channels=32, spatial_compression=4, temporal_compression=1, kind="frame"),
        audio=AudioConfig(tokens_per_frame=2, token_dim=64, hidden_dim=128),
        stream=StreamConfig(resolution=128, chunk_frames=2, window_frames=8, sink_frames=2, sink="reference",
                            fill="reference"),
    ),
    # Wan2.1-1.3B sizes; 512x512 crop -> 64x64 latents -> 1024 tokens per latent frame.
    "1.3b": ModelConfig(
        name="1.3b",
        dit=DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, freq_dim=256),
        vae=VAEConfig(z_dim=16, base_channels=64),
        audio=AudioConfig(tokens_per_frame=4, token_dim=512, hidden_dim=1024),
        stream=StreamConfig(resolution=512, chunk_frames=1, window_frames=8, sink_frames=1, sink="reference"),
    ),
    # Wan2.1-14B sizes.
    "14b": ModelConfig(
        name="14b",
        dit=DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, freq_dim=256),
        vae=VAEConfig(z_dim=16, base_channels=96),
        audio=AudioConfig(tokens_per_frame=4, token_dim=1024, hidden_dim=2048),
        stream=StreamConfig(resolution=512, chunk_frames=1, window_frames=8, sink_frames=1, sink="reference"),
    ),
}


def from_name(name: str) -> ModelConfig:
    """Look up a preset (``tiny``, ``1.3b``, ``14b``) and return it validated."""
    try:
        return PRESETS[name.lower()].validate()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}") from None
