"""Held-out errors of a world model against copying the last frame: the training-time one-step check (in
the model's normalized token space), open-loop rollouts in the observation's raw units, the floor the
simulator's own randomness sets for any sampling model, and how far the simulator itself drifts from its
own recording after a tiny first-step difference (what open loop asks of a model on an unstable system)."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from worldsim.core.array_ops import randn_like
from worldsim.core.episodes import Episode
from worldsim.core.plans import frozen_prefix
from worldsim.core.sampling import denoise
from worldsim.world_model.data import flat_state_env
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
        ours = np.stack(model_sq[h])
        axes = tuple(range(1, ours.ndim))
        result[str(h)] = _beside_copy_last("model_mse", ours, copy_sq[h]) | {
            "model_mse_per_dim": ours.mean(0).tolist() if not pixels else None,
            "model_mse_median_episode": float(np.median(ours.mean(axis=axes))),
        }
    return result


def _beside_copy_last(name: str, squared, copy_squared) -> dict:
    """One horizon's mean squared error (as ``name``) beside copy-last's over the same episodes, their ratio
    and the episode count."""
    mse, copy_mse = float(np.mean(squared)), float(np.mean(copy_squared))
    return {name: mse, "copy_last_mse": copy_mse, "ratio": mse / max(copy_mse, 1e-12), "episodes": len(squared)}


def resampled_simulator_errors(
    env: gym.Env, episodes: list[Episode], horizons: tuple[int, ...] = (1, 10, 50), *, seed: int, resample_seed: int
) -> dict:
    """The simulator's own transition noise, in the units of :func:`open_loop_errors`: episode ``i`` (recorded
    from reset seed ``seed + i``, as ``collect_episodes`` records them; Dict observations flattened) is
    replayed action for action in ``env`` reset with the same seed and then given a fresh random generator
    (``resample_seed + i``), so only the randomness drawn while stepping (a lander's engine dispersion)
    differs. Its mean squared error to the recording is what a perfect *sampling* model scores (twice the
    transition variance at horizon 1); a deterministic env gives 0. Returns, per horizon, that error, the
    copy-last error of the same episodes and their ratio."""
    if not episodes:
        raise ValueError("resampled_simulator_errors needs at least one episode")

    def reseed(replay_env: gym.Env, index: int) -> None:
        replay_env.unwrapped.np_random, _ = gym.utils.seeding.np_random(resample_seed + index)

    return _replay_errors(env, episodes, horizons, seed=seed, after_reset=reseed)


def perturbed_simulator_errors(
    env: gym.Env, episodes: list[Episode], horizons: tuple[int, ...] = (1, 10, 50), *, seed: int,
    epsilon: float, direction_seed: int = 0,
) -> dict:  # fmt: skip
    """The simulator's own sensitivity, in the units of :func:`open_loop_errors`: episode ``i`` (recorded from
    reset seed ``seed + i``) is replayed action for action in ``env`` reset with the same seed, except that
    its **first** action is shifted by ``epsilon`` times the action's half-range, each dimension up or down
    at random (``direction_seed + i``; inwards where that would leave the space). Its error to the recording
    at horizon ``h`` is what a model scores that is exact in every step after an error that small in the
    first one: on a stable system it fades, on an unstable one (a balanced pendulum run open loop on the
    actions its feedback controller chose for the true states) it grows without bound, so no model can stay
    below copy-last there for long. Box actions only. Returns, per horizon, that error, copy-last's over the
    same episodes and their ratio."""
    if not episodes:
        raise ValueError("perturbed_simulator_errors needs at least one episode")
    space = env.action_space
    if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low) & np.isfinite(space.high)):
        raise ValueError(f"perturbed_simulator_errors shifts a bounded Box action, got {space}")
    if not epsilon > 0.0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    half_range = (space.high.astype(np.float64) - space.low) / 2.0

    def shift(action: np.ndarray, index: int) -> np.ndarray:
        step = (
            np.random.default_rng(direction_seed + index).choice((-1.0, 1.0), size=space.shape) * epsilon * half_range
        )
        shifted = action + step  # a shift past a bound goes the other way, so a saturated action is shifted too
        return np.where((shifted < space.low) | (shifted > space.high), action - step, shifted).astype(space.dtype)

    return _replay_errors(env, episodes, horizons, seed=seed, first_action=shift)


def _replay_errors(
    env: gym.Env, episodes: list[Episode], horizons: tuple[int, ...], *, seed: int,
    after_reset: Callable[[gym.Env, int], None] | None = None,
    first_action: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> dict:  # fmt: skip
    """Episode ``i`` replayed in ``env`` (flattened like the recording) from reset seed ``seed + i``, with
    ``after_reset(env, i)`` run after the reset and its first action replaced by ``first_action(action, i)``:
    per horizon, the replay's squared error to the recording beside copy-last's (the first observation
    held)."""
    replay_env = flat_state_env(env)
    squared: dict[int, list[np.ndarray]] = {h: [] for h in horizons}
    copy: dict[int, list[np.ndarray]] = {h: [] for h in horizons}
    for index, episode in enumerate(episodes):
        observations = np.asarray(episode.observations, dtype=np.float64)
        replay_env.reset(seed=seed + index)
        if after_reset is not None:
            after_reset(replay_env, index)
        for t in range(min(max(horizons), len(episode.actions))):
            action = episode.actions[t]
            if t == 0 and first_action is not None:
                action = first_action(np.asarray(action, dtype=np.float64), index)
            replayed = np.asarray(replay_env.step(action)[0], dtype=np.float64)
            if t + 1 in squared:
                squared[t + 1].append((replayed - observations[t + 1]) ** 2)
                copy[t + 1].append((observations[0] - observations[t + 1]) ** 2)
    return {str(h): _beside_copy_last("mse", squared[h], copy[h]) for h in horizons if squared[h]}
