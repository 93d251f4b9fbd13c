"""One update of every token from its current noise level to its next one, elementwise over ``[B, T]``.

A token whose next level is lower is denoised (DDIM when ``eta = 0``, which is Euler for flow matching;
the DDPM posterior when ``eta = 1``); an equal level leaves it untouched; a higher level re-noises it
by forward diffusion (a warm start that begins from a clean guess). Works on numpy and torch alike.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from worldsim.core.array_ops import clip, namespace
from worldsim.core.schedules import NoiseSchedule, Parameterization, _expand, _safe


class StepOutput(NamedTuple):
    """What one update returns, as diffusers' schedulers do: the tokens at their next levels and the clean
    estimate the network's prediction implies (after ``clip_x0``; None when no prediction was given)."""

    prev_sample: Any
    pred_original_sample: Any


def step(
    schedule: NoiseSchedule,
    x_t,
    pred,
    level,
    next_level,
    parameterization: Parameterization,
    *,
    eta: float = 0.0,
    noise=None,
    clip_x0: float | None = None,
) -> StepOutput:
    """Return ``x`` at ``next_level`` and the clean estimate ``x0`` of every token (:class:`StepOutput`).

    ``x_t``/``pred``: ``[B, T, ...]``; ``level``/``next_level``: ``[B, T]`` (or ``[T]``). ``pred`` is the
    network output at ``x_t``; it may be ``None`` when no token is denoised. ``noise`` (standard normal,
    shaped like ``x_t``) is needed when ``eta > 0`` or when any token is re-noised. ``clip_x0`` clamps
    the predicted clean sample to ``[-clip_x0, clip_x0]`` as Diffusion Policy's ``clip_sample`` does.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (0 = DDIM, 1 = DDPM posterior), got {eta}")
    xp = namespace(x_t)
    down, up = next_level < level, next_level > level
    any_down, any_up = bool(down.any()), bool(up.any())
    if noise is None and (any_up or (eta > 0 and any_down)):
        raise ValueError("step needs `noise` to re-noise tokens or to take a stochastic (eta > 0) update")
    if pred is None and any_down:
        raise ValueError("step needs the network prediction `pred` to denoise tokens")

    a_t, s_t = _expand(schedule.alpha(level), x_t), _expand(schedule.sigma(level), x_t)
    a_s, s_s = _expand(schedule.alpha(next_level), x_t), _expand(schedule.sigma(next_level), x_t)
    out, x0 = x_t, None
    if pred is not None:
        x0, eps = schedule.split(pred, x_t, level, parameterization)
        if clip_x0 is not None:
            x0 = clip(x0, -clip_x0, clip_x0)
            eps = (x_t - a_t * x0) / _safe(s_t)
    if any_down:
        if eta == 0:
            denoised = a_s * x0 + s_s * eps
        else:
            # Variance of the posterior q(x_s | x_t, x0) of a Gaussian path; eta scales its std.
            var = s_s * s_s - (a_t * a_t * s_s**4) / _safe(a_s * a_s * s_t * s_t)
            c = eta * xp.sqrt(clip(var, 0.0))
            denoised = a_s * x0 + xp.sqrt(clip(s_s * s_s - c * c, 0.0)) * eps + c * noise
        out = xp.where(_expand(down, x_t), denoised, out)
    if any_up:
        ratio = a_s / _safe(a_t)
        renoised = ratio * x_t + xp.sqrt(clip(s_s * s_s - ratio * ratio * s_t * s_t, 0.0)) * noise
        out = xp.where(_expand(up, x_t), renoised, out)
    return StepOutput(out, x0)
