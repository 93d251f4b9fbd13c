"""Held-out one-step error of a world model against the copy-last-frame baseline (training-time check)."""

from __future__ import annotations

import torch

from worldsim.core.array_ops import randn_like
from worldsim.core.plans import frozen_prefix
from worldsim.core.sampling import denoise
from worldsim.world_model.model import WorldModel


@torch.no_grad()
def one_step_error(
    model: WorldModel, data: dict[str, torch.Tensor], *, steps: int = 2, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Mean squared error (in normalized token space) of the last frame of each window.

    The model sees the window's earlier frames clean and generates the last one from noise in ``steps``
    DDIM steps (a frozen-prefix plan, without a cache); ``copy_last`` predicts the previous frame.
    ``data`` is ``{"frames": [M, T, P, D], "cond": [M, T, C]}`` as made by ``WorldModel.training_data``.
    """
    device = next(model.parameters()).device
    frames, cond = data["frames"].to(device), data["cond"].to(device)
    m, t, p, d = frames.shape
    config = model.config
    target = frames[:, -1]
    x = frames.reshape(m, t * p, d).clone()
    x[:, -p:] = randn_like(x[:, -p:], generator)
    plan = frozen_prefix(t * p, (t - 1) * p, steps)

    def denoiser(x_t, level, c):
        return model.denoiser(x_t, level, c, attention_window=(config.sink_frames, config.window_frames))

    sample = denoise(
        denoiser, x, plan, model.schedule, parameterization=config.parameterization,
        cond=cond.repeat_interleave(p, dim=1), generator=generator,
    )  # fmt: skip
    predicted = sample[:, -p:].reshape(m, p, d)
    return {
        "one_step_mse": float((predicted - target).pow(2).mean()),
        "copy_last_mse": float((frames[:, -2] - target).pow(2).mean()),
    }
