"""Audio encoder: per video frame, a log-mel window (context + frame + look-ahead) -> audio tokens.

Stateless: the window carries the context. mel [B, Fv, Wm, n_mels] -> tokens [B, Fv, A, Da].
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ModelConfig

__all__ = ["AudioEncoder"]


class AudioEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        a = cfg.audio
        self.win = a.window_video_frames() * a.mels_per_video_frame(cfg.stream.fps)
        self.n_mels, self.tokens, self.token_dim = a.n_mels, a.tokens_per_frame, a.token_dim
        # a 1-D conv over the window's time axis, then an MLP to the tokens
        self.conv = nn.Conv1d(a.n_mels, a.hidden_dim // 4, kernel_size=3, padding=1)
        self.mlp = nn.Sequential(
            nn.GELU(approximate="tanh"),
            nn.Linear(self.win * (a.hidden_dim // 4), a.hidden_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(a.hidden_dim, a.tokens_per_frame * a.token_dim),
        )
        self.norm = nn.LayerNorm(a.token_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        b, f, wm, nm = mel.shape
        x = self.conv(mel.reshape(b * f, wm, nm).transpose(1, 2))  # [B*F, hid/4, Wm]
        x = self.mlp(x.flatten(1))  # [B*F, A*Da]
        return self.norm(x.reshape(b, f, self.tokens, self.token_dim))
