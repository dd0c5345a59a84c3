"""The two-step schedule, written once for every backend's array type (torch, NumPy, CuPy).

Rectified flow ``x_t = (1 - t) x0 + t eps``: step 1 at ``t = 1`` predicts x0 from pure noise;
re-noise to ``t_land``; step 2 predicts the final x0; then (``cache_pass == "clean"``) one pass at
``t = 0`` on the clean chunk writes its keys/values into the cache (Self Forcing). Every pass writes
the chunk's cache slots, so with ``cache_pass == "last_step"`` the keys/values of step 2 stay.
With ``steps == 1`` step 1 is not run: its x0 is the chunk's filled condition.
"""

from __future__ import annotations

from typing import Any, Callable

from .config import ScheduleConfig

__all__ = ["audio_guided", "fill_hole", "hole_of", "renoise", "two_step_sample"]


def hole_of(mask: Any) -> Any:
    """The DiT's mask ``[B, Tc, C, h, w]`` -> ``[B, 1, C, h, w]``: 1 where any video frame of a latent
    pixel is masked (NumPy or torch)."""
    if hasattr(mask, "amax"):  # torch
        return mask.amax(1, keepdim=True)
    return mask.max(axis=1, keepdims=True)


def fill_hole(cond: Any, hole: Any, ref: Any) -> Any:
    """``stream.fill == "reference"``: the masked source's latents ``[B, z, C, h, w]`` with the hole
    ``[B, 1, C, h, w]`` taken from the reference frame's latents ``[B, z, 1, h, w]``."""
    return cond + hole * (ref - cond)


def renoise(x0: Any, eps: Any, t: float) -> Any:
    return x0 * (1.0 - t) + eps * t


def two_step_sample(step: Callable[[Any, float], Any], noise: Any, eps2: Any, schedule: ScheduleConfig,
                    finish: Callable[[Any], Any] | None = None, condition: Any = None) -> Any:
    """``step(x_t, t) -> x0`` runs one DiT pass of the current chunk; returns the chunk's x0.
    ``finish(x0) -> x0``: applied to the final x0 before the cache pass (the silence gate).
    ``condition``: the chunk's condition latents with the hole filled (``fill_hole``), step 1's x0
    where ``schedule.steps == 1``."""
    if schedule.steps == 2:
        x0 = step(noise, 1.0)
    elif condition is None:
        raise ValueError("schedule.steps == 1 starts step 2 from the filled condition: pass condition=")
    else:
        x0 = condition
    x0 = step(renoise(x0, eps2, schedule.t_land), schedule.t_land)
    if finish is not None:
        x0 = finish(x0)
    if schedule.cache_pass == "clean":
        step(x0, 0.0)
    return x0


def audio_guided(step: Callable[[Any, float], Any], null_step: Callable[[Any, float], Any], guidance: float,
                 t_guided: float, region: Any = None) -> Callable[[Any, float], Any]:
    """``step`` with audio guidance at ``t == t_guided`` (step 2, ``ScheduleConfig.guidance``):
    ``null_step(x_t, t)`` (the same pass given the null audio tokens) runs first, then ``step``
    (so the cache slots both write hold the audio pass's keys and values, as without guidance), and
    the x0 is ``x_null + guidance * (x_audio - x_null)``; with ``region`` (an array that broadcasts
    over x0, e.g. ``[1, 1, 1, h, w]``: ``geometry.lips_region``) ``x_audio + (guidance - 1) * region *
    (x_audio - x_null)``, the same where ``region`` is 1 and the audio pass alone where it is 0.
    ``guidance == 1``: ``step`` itself."""
    if guidance == 1.0:
        return step

    def guided(x_t: Any, t: float) -> Any:
        if t != t_guided:
            return step(x_t, t)
        x_null = null_step(x_t, t)
        x_audio = step(x_t, t)
        if region is None:
            return x_null + guidance * (x_audio - x_null)
        return x_audio + (guidance - 1.0) * region * (x_audio - x_null)

    return guided
