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

from worldsim.core.episodes import Episode, flatten_dict_observations, observations_of
from worldsim.envs.tasks import TaskSpec
from worldsim.policies.config import DERIVED_FIELDS, TASK_FIELDS, DiffusionPolicyConfig


def observation_layout(space: gym.spaces.Space) -> dict:
    """The policy's view of an observation space: ``obs_type``, ``obs_shape``, ``obs_keys`` and the flat bounds."""
    if isinstance(space, gym.spaces.Dict):
        keys = tuple(space.spaces)
        parts = [space.spaces[k] for k in keys]
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


def policy_observations(episode: Episode, keys: tuple[str, ...]) -> np.ndarray:
    """An episode's observations as the policy sees them: Dict observations flattened in ``keys`` order."""
    if keys:
        return flatten_dict_observations(episode.observations, keys)
    return observations_of(episode, None)


def flat_episodes(episodes: list[Episode], keys: tuple[str, ...]) -> list[Episode]:
    """Episodes whose Dict observations are flattened for the policy (array observations stay as they are)."""
    if not keys:
        return episodes
    return [dataclasses.replace(e, observations=policy_observations(e, keys)) for e in episodes]


def bounds_the_data_respects(layout: dict, episodes: list[Episode]) -> dict:
    """The declared observation bounds, dropped (made infinite) in each dimension where the env's own
    demonstrations leave them: a bound the env itself breaks (gym-pusht's block can be pushed past its
    declared table) is no bound, and checking it would refuse the env's own observations."""
    observations = np.concatenate([policy_observations(e, layout["obs_keys"]) for e in episodes])
    low, high = np.array(layout["obs_low"], np.float64), np.array(layout["obs_high"], np.float64)
    broken = (observations.min(0) < low) | (observations.max(0) > high)
    low[broken], high[broken] = -np.inf, np.inf
    return {"obs_low": tuple(float(v) for v in low), "obs_high": tuple(float(v) for v in high)}


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
    if layout["obs_type"] == "state" and layout["obs_low"]:
        layout |= bounds_the_data_respects(layout, episodes)
    actions = np.concatenate([e.actions for e in episodes])
    discrete = task.discrete_dims if task.discrete_dims is not None else discrete_action_dims(actions)
    relative = task.relative_to_obs if task.relative_to_obs is not None else ()
    return dataclasses.replace(
        policy,
        **layout,
        action_dim=int(env.action_space.shape[0]),
        action_low=tuple(float(v) for v in env.action_space.low),
        action_high=tuple(float(v) for v in env.action_space.high),
        discrete_dims=tuple(discrete),
        relative_to_obs=tuple(relative),
        n_action_steps=task.n_action_steps or policy.n_action_steps,
    )
