"""The control-facing half of a chunk policy, shared by the torch policy and the onnxruntime runner.

Observation and action queues, strategy switching, input checks and the conversion of sampled chunks
back to raw actions live here, free of torch; a subclass only says how to sample a normalized chunk.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import deque

import gymnasium as gym
import numpy as np

from worldsim.core.array_ops import all_finite
from worldsim.policies.action_codec import ActionCodec
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.strategies import Strategy, make_strategy


class ChunkPolicy:
    """``reset()``, ``select_action(obs)``, ``predict_chunk(obs_history)`` over any chunk sampler."""

    config: DiffusionPolicyConfig
    codec: ActionCodec
    strategy: Strategy
    calls_last_prediction: int

    @abstractmethod
    def _sample_chunk(self, obs_history: np.ndarray, executed_steps: int):
        """A normalized chunk ``[B, horizon, action_dim]`` (any array kind) for raw histories ``[B, ...]``, and
        the reference its relative actions were sampled at (``codec.reference``, the same kind; or None)."""

    @property
    def obs_horizon(self) -> int:
        return self.config.obs_horizon

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def n_action_steps(self) -> int:
        return self.strategy.n_action_steps or self.config.n_action_steps

    @property
    def observation_space(self) -> gym.spaces.Box:
        if self.config.obs_type == "pixels":
            return gym.spaces.Box(0, 255, self.config.obs_shape, np.uint8)
        return gym.spaces.Box(-np.inf, np.inf, self.config.obs_shape, np.float32)

    @property
    def action_space(self) -> gym.spaces.Box:
        c = self.config
        low = np.asarray(c.action_low or [-np.inf] * c.action_dim, np.float32)
        high = np.asarray(c.action_high or [np.inf] * c.action_dim, np.float32)
        return gym.spaces.Box(low, high, dtype=np.float32)

    def set_strategy(self, strategy: Strategy | str, **kwargs) -> None:
        """Swap the inference strategy (by object or name); resets the episode state."""
        self.strategy = make_strategy(strategy, **kwargs) if isinstance(strategy, str) else strategy
        self.reset()

    def reset(self) -> None:
        """Start a new episode: empty queues and forget the strategy's warm start."""
        self._obs_queue: deque[np.ndarray] = deque(maxlen=self.config.obs_horizon)
        self._action_queue: deque[np.ndarray] = deque()
        self._executed_since_prediction = 0
        self.strategy.reset()
        self.calls_last_prediction = 0

    def check_obs_history(self, obs, *, batched: bool) -> None:
        lead = 2 if batched else 1
        expected = (self.config.obs_horizon, *self.config.obs_shape)
        if obs.ndim != len(expected) + lead - 1 or tuple(obs.shape[lead - 1 :]) != expected:
            what = "[batch, " if batched else "["
            raise ValueError(
                f"observation history must have shape {what}{', '.join(map(str, expected))}], got {tuple(obs.shape)}"
            )
        # On the array's own namespace: a training batch may be a CUDA tensor, which numpy cannot read.
        if not all_finite(obs):
            raise ValueError("observation history contains NaN or infinite values")

    def predict_chunk(self, obs_history: np.ndarray, *, executed_steps: int | None = None) -> np.ndarray:
        """Raw actions ``[horizon, action_dim]`` from ``obs_history [obs_horizon, *obs_shape]``.

        ``executed_steps``: actions executed since the previous prediction (how far a warm start shifts);
        defaults to ``n_action_steps``.
        """
        obs_history = np.asarray(obs_history)
        self.check_obs_history(obs_history, batched=False)
        steps = self.n_action_steps if executed_steps is None else executed_steps
        chunk, reference = self._sample_chunk(obs_history[None], steps)
        actions = self.codec.from_model(chunk, reference)[0]
        return np.asarray(actions.cpu() if hasattr(actions, "cpu") else actions, dtype=np.float32)

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        """The action for this tick; predicts a new chunk when the queue of planned actions runs out."""
        obs = np.asarray(obs)
        if tuple(obs.shape) != self.config.obs_shape:
            raise ValueError(f"observation must have shape {self.config.obs_shape}, got {tuple(obs.shape)}")
        if not self._obs_queue:
            self._obs_queue.extend([obs] * self.config.obs_horizon)  # pad the start, as in training
        else:
            self._obs_queue.append(obs)
        if not self._action_queue:
            chunk = self.predict_chunk(np.stack(self._obs_queue), executed_steps=self._executed_since_prediction)
            self._action_queue.extend(chunk[: self.n_action_steps])
            self._executed_since_prediction = 0
        else:
            self.calls_last_prediction = 0
        self._executed_since_prediction += 1
        return self._action_queue.popleft()
