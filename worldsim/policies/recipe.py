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
    angles = angle_dims([_state_of(e.observations, layout) for e in episodes]) if has_state else ()
    relative = task.relative_to_obs if task.relative_to_obs is not None else ()
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
