"""Recorded episodes and the training windows cut from them, in numpy: the data both models learn from.

An :class:`Episode` is what a demonstration dataset holds; :func:`policy_windows` cuts a diffusion
policy's (observation history, action chunk) pairs from episodes and :func:`sequence_windows` a world
model's frame sequences. Nothing here knows an environment or a model, so every room can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldsim.core.array_ops import tree_map


@dataclass(frozen=True)
class Episode:
    """One demonstration: ``observations`` has one more entry than ``actions`` (the final observation).

    ``observations`` is an array ``[N+1, ...]`` or, for Dict observation spaces, a dict of such arrays.
    ``success`` is the recorded ``is_success`` info where there is one (worldsim's datasets), else whether
    the episode terminated.
    """

    observations: np.ndarray | dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    success: bool

    def __len__(self) -> int:
        return len(self.actions)


def observations_of(episode: Episode, key: str | None) -> np.ndarray:
    obs = episode.observations
    if isinstance(obs, dict):
        if key is None or key not in obs:
            raise ValueError(f"observations are a dict with keys {sorted(obs)}; pass obs_key=one of them")
        return np.asarray(obs[key])
    if key is not None:
        raise ValueError(f"obs_key={key!r} given but observations are a single array")
    return np.asarray(obs)


def policy_windows(
    episodes: list[Episode], obs_horizon: int = 2, action_horizon: int = 16, *, obs_key: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion Policy training windows, one per executed step of every episode.

    For step ``t`` of an episode (``0 <= t < N``): ``obs`` holds observations ``t - obs_horizon + 1 .. t``
    and ``actions`` holds actions ``t .. t + action_horizon - 1``, so ``actions[m, 0]`` is the action taken
    after seeing ``obs[m, -1]``. Indices before the start repeat the first observation and indices past
    the end repeat the last action (Diffusion Policy's padding). The final observation of an episode, which
    no action follows, starts no window.

    Returns:
        ``obs [M, obs_horizon, *obs_shape]`` and ``actions [M, action_horizon, act_dim]`` with
        ``M = sum(len(episode))``. Dict observations without ``obs_key`` (a camera frame with
        proprioception) give a dict of such windows, one per key.
    """
    if obs_horizon < 1 or action_horizon < 1:
        raise ValueError(f"horizons must be >= 1, got obs_horizon={obs_horizon}, action_horizon={action_horizon}")
    if not episodes:
        raise ValueError("no episodes given")
    obs_windows, action_windows = [], []
    for episode in episodes:
        whole = isinstance(episode.observations, dict) and obs_key is None
        observations = episode.observations if whole else observations_of(episode, obs_key)
        actions = episode.actions
        steps = np.arange(len(actions))
        obs_index = np.clip(steps[:, None] + np.arange(-obs_horizon + 1, 1), 0, None)
        action_index = np.clip(steps[:, None] + np.arange(action_horizon), None, len(actions) - 1)
        obs_windows.append(tree_map(lambda values, index=obs_index: np.asarray(values)[index], observations))
        action_windows.append(actions[action_index])
    if isinstance(obs_windows[0], dict):
        return {key: np.concatenate([w[key] for w in obs_windows]) for key in obs_windows[0]}, np.concatenate(
            action_windows
        )
    return np.concatenate(obs_windows), np.concatenate(action_windows)


def sequence_windows(
    episodes: list[Episode], length: int, *, obs_key: str | None = None, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """World-model training sequences: ``length`` transitions cut from the episodes without padding.

    Window ``m`` starting at step ``s`` holds ``frames[m] = observations[s .. s + length]`` and
    ``actions[m] = actions[s .. s + length - 1]`` (action ``k`` leads from frame ``k`` to frame ``k + 1``).
    Starts are ``0, stride, 2 * stride, ...``; episodes shorter than ``length`` contribute nothing.

    Returns:
        ``frames [M, length + 1, *obs_shape]`` and ``actions [M, length, act_dim]``.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got length={length}, stride={stride}")
    frame_windows, action_windows = [], []
    for episode in episodes:
        observations, actions = observations_of(episode, obs_key), episode.actions
        starts = np.arange(0, len(actions) - length + 1, stride)
        if len(starts) == 0:
            continue
        frame_windows.append(observations[starts[:, None] + np.arange(length + 1)])
        action_windows.append(actions[starts[:, None] + np.arange(length)])
    if not frame_windows:
        longest = max((len(episode) for episode in episodes), default=0)
        raise ValueError(f"no episode has {length} steps (longest: {longest})")
    return np.concatenate(frame_windows), np.concatenate(action_windows)


def flatten_dict_observations(observations: dict, keys) -> np.ndarray:
    """Dict observations ``{key: [N, ...]}`` as one array ``[N, D]``: each key's values flattened, in ``keys``
    order (Gymnasium's ``flatten`` order for a Dict space of Boxes)."""
    missing = [k for k in keys if k not in observations]
    if missing:
        raise ValueError(f"observations lack the key(s) {missing}; they have {sorted(observations)}")
    parts = [np.asarray(observations[k]) for k in keys]
    n = len(parts[0])
    return np.concatenate([p.reshape(n, -1).astype(np.float32) for p in parts], axis=1)
