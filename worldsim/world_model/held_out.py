"""Held-out errors of a world model against copying the last frame: the training-time one-step check (in
the model's normalized token space) and open-loop rollouts in the observation's raw units."""

from __future__ import annotations

import numpy as np
import torch

from worldsim.core.array_ops import randn_like
from worldsim.core.episodes import Episode
from worldsim.core.plans import frozen_prefix
from worldsim.core.sampling import denoise
from worldsim.world_model.model import WorldModel
from worldsim.world_model.session import StreamingSession
from worldsim.world_model.streaming import SessionConfig


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
    frames, cond = model.window_tokens(data["frames"].to(device)), data["cond"].to(device)
    m, t, p, d = frames.shape
    config = model.config
    target = frames[:, -1]
    x = frames.reshape(m, t * p, d).clone()
    x[:, -p:] = randn_like(x[:, -p:], generator)
    plan = frozen_prefix(t * p, (t - 1) * p, steps)
    sample = denoise(
        model.sequence_denoiser(), x, plan, model.schedule, parameterization=config.parameterization,
        cond=cond.repeat_interleave(p, dim=1), generator=generator,
    )  # fmt: skip
    predicted = sample[:, -p:].reshape(m, p, d)
    return {
        "one_step_mse": float((predicted - target).pow(2).mean()),
        "copy_last_mse": float((frames[:, -2] - target).pow(2).mean()),
    }


def open_loop_errors(
    model: WorldModel,
    episodes: list[Episode],
    horizons: tuple[int, ...] = (1, 10, 50),
    *,
    session: SessionConfig | None = None,
    seed: int = 0,
) -> dict:
    """Open-loop prediction error in the observation's **raw units**, beside copying the last observation.

    Each episode starts a stream from its first observation; the model then generates the next
    ``max(horizons)`` observations from the recorded actions alone (never seeing a true frame again).
    Returns, per horizon ``h``, the mean squared error over episodes and dimensions of the model's
    prediction of observation ``h`` and of the copy-last baseline (the first observation held), their ratio,
    and the per-dimension model error, all raw (pixels: in [0, 1] units). Episodes shorter than a horizon do
    not count at it.
    """
    if not episodes:
        raise ValueError("open_loop_errors needs at least one episode")
    longest = max(horizons)
    pixels = model.observation_space.dtype == np.uint8
    scale = 255.0 if pixels else 1.0
    model_sq: dict[int, list[np.ndarray]] = {h: [] for h in horizons}
    copy_sq: dict[int, list[np.ndarray]] = {h: [] for h in horizons}
    for index, episode in enumerate(episodes):
        observations = np.asarray(episode.observations)
        steps = min(longest, len(episode.actions))
        stream = StreamingSession(model, session, seed=seed + index)
        stream.reset(observations[:1])
        first = observations[0].astype(np.float64) / scale
        for t in range(steps):
            predicted = stream.step(episode.actions[t]).astype(np.float64) / scale
            if t + 1 in model_sq:
                truth = observations[t + 1].astype(np.float64) / scale
                model_sq[t + 1].append((predicted - truth) ** 2)
                copy_sq[t + 1].append((first - truth) ** 2)
    result = {}
    for h in horizons:
        if not model_sq[h]:
            continue
        ours, copy = np.stack(model_sq[h]), np.stack(copy_sq[h])
        axes = tuple(range(1, ours.ndim))
        result[str(h)] = {
            "model_mse": float(ours.mean()),
            "copy_last_mse": float(copy.mean()),
            "ratio": float(ours.mean() / max(copy.mean(), 1e-12)),
            "episodes": len(ours),
            "model_mse_per_dim": ours.mean(0).tolist() if not pixels else None,
            "model_mse_median_episode": float(np.median(ours.mean(axis=axes))),
        }
    return result
