"""The optimiser set-up shared by the recipe's stages."""

from __future__ import annotations

import math

import torch

__all__ = ["adamw_cosine", "optimizer_step"]


def adamw_cosine(params, lr: float, steps: int, warmup: int = 50, weight_decay: float = 0.0):
    """AdamW with a linear warm-up over ``min(warmup, steps // 10)`` steps, then cosine decay to 5%."""
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)
    wu = max(1, min(warmup, steps // 10))

    def factor(i: int) -> float:
        if i < wu:
            return (i + 1) / wu
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (i - wu) / max(1, steps - wu))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def optimizer_step(loss: torch.Tensor, opt, sched, params, max_norm: float = 1.0) -> None:
    """Backward ``loss``, clip the gradient norm of ``params`` to ``max_norm``, step, schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    sched.step()
