"""Walk any :class:`~worldsim.core.plans.Plan` with any denoiser: the one sampling loop of worldsim."""

from __future__ import annotations

from collections.abc import Callable

from worldsim.core.array_ops import as_array_like, namespace, randn_like
from worldsim.core.plans import Plan
from worldsim.core.schedules import NoiseSchedule, Parameterization
from worldsim.core.updates import step
from worldsim.core.validation import check_finite

Denoiser = Callable[..., object]
"""``pred = denoiser(x_t, level, cond)`` with ``x_t [B, T, ...]`` and ``level [B, T]``."""


def denoise(
    denoiser: Denoiser,
    x,
    plan: Plan,
    schedule: NoiseSchedule,
    *,
    parameterization: Parameterization,
    cond=None,
    eta: float = 0.0,
    clip_x0: float | None = None,
    generator=None,
):
    """Move ``x`` (``[B, T, ...]``, at the plan's first row) through every row of ``plan``.

    Pass pure noise for a plan that starts at level 1, a guess for a warm start. ``eta`` chooses the
    update (0 = DDIM/Euler, 1 = DDPM posterior); ``generator`` (torch or numpy) draws the noise for
    stochastic updates and re-noising. Works on torch tensors and numpy arrays alike.
    """
    if x.ndim < 2 or x.shape[1] != plan.num_tokens:
        raise ValueError(
            f"x must have shape [batch, {plan.num_tokens} tokens, ...] to follow this plan, got {tuple(x.shape)}"
        )
    check_finite("x", x)
    xp = namespace(x)
    batch_shape = tuple(x.shape[:2])
    for current, nxt in plan.transitions():
        level = xp.broadcast_to(as_array_like(current, x), batch_shape)
        next_level = xp.broadcast_to(as_array_like(nxt, x), batch_shape)
        pred = denoiser(x, level, cond) if (nxt < current).any() else None
        stochastic = (nxt > current).any() or (eta > 0 and (nxt < current).any())
        noise = randn_like(x, generator) if stochastic else None
        x = step(
            schedule, x, pred, level, next_level, parameterization, eta=eta, noise=noise, clip_x0=clip_x0
        ).prev_sample
    return x
