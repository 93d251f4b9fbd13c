"""worldsim's one policy recipe: every setting a task does not state is derived from its env and its data.

The same command trains any task: ``train_policy`` completes the policy config from the env's spaces
(shapes, bounds, Dict keys) and from the demonstrations (discrete ±1 dimensions, the statistics of
observations and actions), and records the RTI options the offline rule chooses. Each derivation is a
small pure function, tested on synthetic spaces and data.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

from worldsim.core.angles import angle_dims
from worldsim.core.episodes import Episode, flatten_dict_observations
from worldsim.envs.tasks import TaskSpec
from worldsim.policies.config import DERIVED_FIELDS, TASK_FIELDS, DiffusionPolicyConfig


def _is_image(space: gym.spaces.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8


def observation_layout(space: gym.spaces.Space) -> dict:
    """The policy's view of an observation space: ``obs_type``, ``obs_shape``, ``obs_keys``, ``state_dim`` and
    the flat bounds. A Dict of one uint8 image and one state vector is a camera with proprioception."""
    if isinstance(space, gym.spaces.Dict):
        keys = tuple(space.spaces)
        parts = [space.spaces[k] for k in keys]
        images = [k for k, p in zip(keys, parts, strict=True) if _is_image(p)]
        if images:
            states = [k for k in keys if k not in images]
            if len(images) != 1 or len(states) != 1 or len(space.spaces[states[0]].shape) != 1:
                raise ValueError(f"a camera's Dict observations must hold one image and one state vector, got {space}")
            image = observation_layout(space.spaces[images[0]])
            state = space.spaces[states[0]]
            return image | {
                "obs_keys": (images[0], states[0]), "state_dim": int(state.shape[0]), **_bounds(state.low, state.high)
            }  # fmt: skip
        if not all(isinstance(p, gym.spaces.Box) and p.dtype != np.uint8 for p in parts):
            raise ValueError(f"Dict observations must hold float Boxes (state vectors) to be flattened, got {space}")
        low = np.concatenate([p.low.reshape(-1) for p in parts])
        high = np.concatenate([p.high.reshape(-1) for p in parts])
        return {"obs_type": "state", "obs_shape": (len(low),), "obs_keys": keys, **_bounds(low, high)}
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"policies take Box or Dict-of-Box observations, got {space}")
    if space.dtype == np.uint8:
        if len(space.shape) != 3 or space.shape[-1] != 3:
            raise ValueError(f"uint8 observations must be [H, W, 3] images, got shape {space.shape}")
        return {"obs_type": "pixels", "obs_shape": tuple(space.shape), "obs_keys": (), "obs_low": (), "obs_high": ()}
    if len(space.shape) != 1:
        raise ValueError(f"state observations must be flat vectors, got shape {space.shape}")
    return {"obs_type": "state", "obs_shape": tuple(space.shape), "obs_keys": (), **_bounds(space.low, space.high)}


def _bounds(low: np.ndarray, high: np.ndarray) -> dict:
    """Flat bounds as config tuples; fully unbounded spaces record none."""
    if np.isinf(low).all() and np.isinf(high).all():
        return {"obs_low": (), "obs_high": ()}
    return {"obs_low": tuple(float(v) for v in low), "obs_high": tuple(float(v) for v in high)}


def policy_observations(episode: Episode, config: DiffusionPolicyConfig) -> np.ndarray | dict[str, np.ndarray]:
    """An episode's observations as the policy sees them: Dict observations flattened in ``obs_keys`` order
    (a state policy), or ``{"pixels", "state"}`` (a camera with proprioception)."""
    return as_policy_observation(episode.observations, config, history=True)


def as_policy_observation(obs, config: DiffusionPolicyConfig, *, history: bool):
    """One observation, or a sequence of them (``history``), as the policy's arrays; see
    :func:`policy_observations`. A one-line error when its kind does not fit ``config``."""
    keys = config.obs_keys
    if not keys:
        if isinstance(obs, dict):
            raise ValueError(f"this policy takes array observations, got a dict with keys {sorted(obs)}")
        return np.asarray(obs)
    if not isinstance(obs, dict) or set(keys) - set(obs):
        got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
        raise ValueError(f"this policy takes dict observations with keys {list(keys)}, got {got}")
    if config.multipart:
        return {"pixels": np.asarray(obs[keys[0]]), "state": np.asarray(obs[keys[1]], dtype=np.float32)}
    lead = (len(np.asarray(obs[keys[0]])),) if history else ()
    return np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(*lead, -1) for k in keys], axis=-1)


def policy_episodes(episodes: list[Episode], config: DiffusionPolicyConfig) -> list[Episode]:
    """Episodes whose observations are as the policy sees them (:func:`policy_observations`)."""
    if not config.obs_keys:
        return episodes
    return [dataclasses.replace(e, observations=policy_observations(e, config)) for e in episodes]


def bounds_the_data_respects(layout: dict, episodes: list[Episode]) -> dict:
    """The declared observation bounds, dropped (made infinite) in each dimension where the env's own
    demonstrations leave them: a bound the env itself breaks (gym-pusht's block can be pushed past its
    declared table) is no bound, and checking it would refuse the env's own observations."""
    observations = np.concatenate([_state_of(e.observations, layout) for e in episodes])
    low, high = np.array(layout["obs_low"], np.float64), np.array(layout["obs_high"], np.float64)
    broken = (observations.min(0) < low) | (observations.max(0) > high)
    low[broken], high[broken] = -np.inf, np.inf
    return {"obs_low": tuple(float(v) for v in low), "obs_high": tuple(float(v) for v in high)}


def _state_of(observations, layout: dict) -> np.ndarray:
    """The state vectors of recorded observations under ``layout`` (flattened keys, or a camera's state)."""
    keys = layout["obs_keys"]
    if layout.get("state_dim"):
        return np.asarray(observations[keys[1]])
    return flatten_dict_observations(observations, keys) if keys else np.asarray(observations)


TARGET_SHARE = 0.9
"""A position target explains nearly all of its state dimension's next change that the state's own momentum
leaves unexplained (at least this share): on the suite's demonstrations 0.984 for gym-pusht's pusher,
0.999 for worldsim's Push-T."""
TARGET_BALANCE = 0.1
"""...and the change depends on the *difference* target - position: the two coefficients cancel within this
fraction of the action's (gym-pusht 0.009, Push-T 0.001); torques, forces and displacements leave the
position's own coefficient near 0 (ratios 0.8-1.0 on Pusher, the pendulum and the Fetch arms)."""


TARGET_ROWS = 50_000
"""At most this many transitions are fitted (evenly spread over the demonstrations)."""


def position_target_dims(states: list[np.ndarray], actions: list[np.ndarray]) -> tuple[int, ...]:
    """For each action dimension, the state dimension it is a target position of, -1 for none; ``()`` when no
    action dimension is one (the recipe's ``relative_to_obs`` where the task leaves it open).

    A target moves its state towards it: the next change of state dimension ``j`` is fitted by least squares
    as ``alpha * a_i + beta * s_j + delta * (s_j - previous s_j) + c`` over the demonstrations (the momentum
    term takes up a controller that does not arrive within a step). Action ``i`` targets ``j`` when adding
    ``a_i`` and ``s_j`` to the momentum alone explains at least ``TARGET_SHARE`` of what it left, the action
    pulls (``0 < alpha <= 2``: at most an overshoot to the far side) and only the difference counts
    (``|alpha + beta| <= TARGET_BALANCE * alpha``: a state at its target stays). Each state dimension serves
    one action, the best fit first. ``states[k]`` holds ``len(actions[k]) + 1`` rows."""
    rows = []
    for state, action in zip(states, actions, strict=True):
        state, action = np.asarray(state, np.float64), np.asarray(action, np.float64)
        if len(state) != len(action) + 1:
            raise ValueError(f"an episode of {len(action)} actions needs {len(action) + 1} states, got {len(state)}")
        if len(action) >= 2:
            rows.append((action[1:], state[1:-1], state[:-2], state[2:]))
    if not rows:
        return ()
    act, now, before, after = (np.concatenate(part) for part in zip(*rows, strict=True))
    stride = -(-len(act) // TARGET_ROWS)  # evenly spread rows bound the fits' cost on a large dataset
    act, now, before, after = act[::stride], now[::stride], before[::stride], after[::stride]
    candidates = []
    for j in range(now.shape[1]):
        change = after[:, j] - now[:, j]
        momentum = np.stack([now[:, j] - before[:, j], np.ones(len(change))], axis=1)
        left = _residual(momentum, change)
        if left <= 1e-12 * len(change):
            continue  # a dimension that never moves, or moves by its momentum alone, is nobody's target
        for i in range(act.shape[1]):
            x = np.concatenate([np.stack([act[:, i], now[:, j]], axis=1), momentum], axis=1)
            coef = np.linalg.lstsq(x, change, rcond=None)[0]
            share = 1.0 - _residual(x, change) / left
            alpha, beta = float(coef[0]), float(coef[1])
            if share >= TARGET_SHARE and 0.0 < alpha <= 2.0 and abs(alpha + beta) <= TARGET_BALANCE * alpha:
                candidates.append((share, i, j))
    found = [-1] * act.shape[1]
    for _, i, j in sorted(candidates, reverse=True):
        if found[i] < 0 and j not in found:
            found[i] = j
    return tuple(found) if any(j >= 0 for j in found) else ()


def _residual(x: np.ndarray, y: np.ndarray) -> float:
    """The sum of squared residuals of ``y``'s least-squares fit on the columns of ``x``."""
    return float(((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2).sum())


def discrete_action_dims(actions: np.ndarray) -> tuple[int, ...]:
    """The action dimensions whose recorded values are all exactly -1 or +1 (a gripper command), both seen."""
    actions = np.asarray(actions).reshape(-1, np.asarray(actions).shape[-1])
    found = []
    for d in range(actions.shape[1]):
        values = np.unique(actions[:, d])
        if set(values.tolist()) == {-1.0, 1.0}:
            found.append(d)
    return tuple(found)


def complete_policy_config(
    policy: DiffusionPolicyConfig, task: TaskSpec, env: gym.Env, episodes: list[Episode]
) -> DiffusionPolicyConfig:
    """``policy`` with the env's shapes and bounds and the task's facts filled in (derived from the
    demonstrations where the task leaves them open).

    The env- and task-derived fields must be left unset in ``policy``: a value there would be a second
    place for a fact of the env or the task, so it is refused with a one-line error naming where it belongs.
    """
    defaults = DiffusionPolicyConfig()
    for name in DERIVED_FIELDS + TASK_FIELDS:
        if getattr(policy, name) != getattr(defaults, name):
            where = f"task.{name}" if name in TASK_FIELDS else "the env's spaces"
            raise ValueError(f"policy.{name} is not a policy setting: it comes from {where}; leave it unset")
    if not isinstance(env.action_space, gym.spaces.Box) or len(env.action_space.shape) != 1:
        raise ValueError(f"policies take flat Box actions, got {env.action_space}")
    layout = observation_layout(env.observation_space)
    if layout["obs_low"]:
        layout |= bounds_the_data_respects(layout, episodes)
    actions = np.concatenate([e.actions for e in episodes])
    discrete = task.discrete_dims if task.discrete_dims is not None else discrete_action_dims(actions)
    has_state = layout["obs_type"] == "state" or layout.get("state_dim")
    states = [_state_of(e.observations, layout) for e in episodes] if has_state else []
    angles = angle_dims(states) if has_state else ()
    if task.relative_to_obs is not None:
        relative = tuple(task.relative_to_obs)
    elif has_state:
        relative = position_target_dims(states, [e.actions for e in episodes])
    else:
        relative = ()
    return dataclasses.replace(
        policy,
        **layout,
        action_dim=int(env.action_space.shape[0]),
        action_low=tuple(float(v) for v in env.action_space.low),
        action_high=tuple(float(v) for v in env.action_space.high),
        discrete_dims=tuple(discrete),
        angle_dims=angles,
        relative_to_obs=tuple(relative),
        n_action_steps=task.n_action_steps or policy.n_action_steps,
    )
