"""Diffusion Forcing's training loss: every token (or frame) gets its own noise level.

Options: a probability of sharing one level across a sequence (classic diffusion training), loss
weighting (uniform or min-SNR), and immiscible noise assignment, which re-pairs noise and data inside
the batch so each sample is diffused towards a nearby noise (linear assignment, or the cheaper KNN pick).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from worldsim.core.schedules import NoiseSchedule, Parameterization
from worldsim.core.validation import check_finite, check_levels

Weighting = Literal["none", "min_snr"]
Immiscible = Literal["assignment", "knn"]


def sample_levels(
    schedule: NoiseSchedule,
    batch_size: int,
    num_frames: int,
    *,
    shared_level_prob: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training levels ``[B, num_frames]`` in (0, 1]: independent per frame, or shared per sequence.

    A discrete-grid schedule draws from its training grid ``{1/K, ..., 1}``; a continuous one uniformly.
    """
    if not 0.0 <= shared_level_prob <= 1.0:
        raise ValueError(f"shared_level_prob must be in [0, 1], got {shared_level_prob}")
    steps = schedule.num_train_steps
    shape = (batch_size, num_frames)
    if steps:
        levels = torch.randint(1, steps + 1, shape, generator=generator, device=device).float() / steps
    else:
        levels = 1.0 - torch.rand(shape, generator=generator, device=device)
    shared = torch.rand((batch_size, 1), generator=generator, device=device) < shared_level_prob
    return torch.where(shared, levels[:, :1].expand(shape), levels)


def immiscible_noise(
    x0: torch.Tensor, noise: torch.Tensor, method: Immiscible, *, knn_k: int = 4, generator=None
) -> torch.Tensor:
    """Re-pair ``noise`` with ``x0`` so each sample gets a nearby noise (Immiscible Diffusion).

    ``assignment`` permutes the batch's noises by a minimum-total-distance linear assignment;
    ``knn`` draws ``knn_k`` candidate noises per sample and keeps the nearest (Improved Immiscible).
    """
    flat_x = x0.reshape(x0.shape[0], -1)
    if method == "assignment":
        from scipy.optimize import linear_sum_assignment

        cost = torch.cdist(flat_x.detach().float(), noise.reshape(noise.shape[0], -1).float()).cpu().numpy()
        _, columns = linear_sum_assignment(cost)
        return noise[torch.as_tensor(np.asarray(columns), device=noise.device)]
    if method == "knn":
        if knn_k < 1:
            raise ValueError(f"knn_k must be >= 1, got {knn_k}")
        candidates = torch.randn((knn_k, *noise.shape), generator=generator, dtype=noise.dtype, device=noise.device)
        candidates[0] = noise
        dist = (candidates.reshape(knn_k, noise.shape[0], -1) - flat_x[None]).pow(2).sum(-1)
        best = dist.argmin(0)
        return candidates[best, torch.arange(noise.shape[0], device=noise.device)]
    raise ValueError(f"unknown immiscible method {method!r}; use 'assignment' or 'knn'")


def _weights(schedule: NoiseSchedule, levels, parameterization: str, weighting: Weighting, gamma: float):
    if weighting == "none":
        return torch.ones_like(levels)
    if weighting == "min_snr":
        snr = schedule.snr(levels)
        clipped = torch.clamp(snr, max=gamma)
        # Min-SNR-gamma expressed for each regression target (Hang et al., 2023).
        if parameterization == "epsilon":
            return clipped / snr.clamp(min=1e-8)
        if parameterization == "sample":
            return clipped
        return clipped / (snr + 1)
    raise ValueError(f"unknown weighting {weighting!r}; use 'none' or 'min_snr'")


def diffusion_forcing_loss(
    model,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    parameterization: Parameterization = "epsilon",
    cond: torch.Tensor | None = None,
    tokens_per_frame: int = 1,
    levels: torch.Tensor | None = None,
    shared_level_prob: float = 0.0,
    weighting: Weighting = "none",
    min_snr_gamma: float = 5.0,
    immiscible: Immiscible | None = None,
    knn_k: int = 4,
    mask: torch.Tensor | None = None,
    element_weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **model_kwargs,
) -> torch.Tensor:
    """Mean squared error of ``model(x_t, level, cond)`` against the ``parameterization`` target.

    ``x0``: clean tokens ``[B, T, D]``. ``levels``: per-frame levels ``[B, T / tokens_per_frame]`` to use
    instead of sampling (e.g. clean or lightly noised context frames). ``mask``: ``[B, T]`` booleans,
    False for padding tokens that must not count. ``element_weights``: ``[B, T, D]``, each value's weight
    in its token's mean (e.g. the pixels that change, which a frame's mean would drown).
    """
    if x0.ndim != 3:
        raise ValueError(f"x0 must have shape [batch, tokens, dim], got {tuple(x0.shape)}")
    check_finite("x0", x0)
    b, t, _ = x0.shape
    if t % tokens_per_frame:
        raise ValueError(f"{t} tokens do not split into frames of {tokens_per_frame}")
    frames = t // tokens_per_frame
    if levels is None:
        levels = sample_levels(
            schedule, b, frames, shared_level_prob=shared_level_prob, generator=generator, device=x0.device
        )
    elif tuple(levels.shape) != (b, frames):
        raise ValueError(f"levels must have shape [batch, frames] = [{b}, {frames}], got {list(levels.shape)}")
    check_levels("levels", levels)
    token_levels = levels.to(x0.dtype).repeat_interleave(tokens_per_frame, dim=1)

    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    if immiscible is not None:
        noise = immiscible_noise(x0, noise, immiscible, knn_k=knn_k, generator=generator)
    x_t = schedule.add_noise(x0, noise, token_levels)
    target = schedule.target(x0, noise, token_levels, parameterization)
    pred = model(x_t, token_levels, cond, **model_kwargs)
    squared = (pred - target).pow(2)
    if element_weights is not None:
        if tuple(element_weights.shape) != tuple(x0.shape):
            raise ValueError(
                f"element_weights must have the shape of x0, {list(x0.shape)}, got {list(element_weights.shape)}"
            )
        squared = squared * element_weights
    per_token = squared.mean(-1) * _weights(schedule, token_levels, parameterization, weighting, min_snr_gamma)
    if mask is None:
        return per_token.mean()
    if tuple(mask.shape) != (b, t):
        raise ValueError(f"mask must have shape [batch, tokens] = [{b}, {t}], got {list(mask.shape)}")
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
