"""The control-facing policy interface every worldsim policy implements (torch, ONNX, or your own).

It follows LeRobot: ``reset()`` at episode start, ``select_action(obs)`` once per control tick (the
policy keeps its own observation and action queues), ``predict_chunk(obs_history)`` for a whole chunk.
Inputs and outputs are numpy arrays for one environment (no batch axis), so servers, control loops and
runners never need torch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class Policy(Protocol):
    """What every worldsim policy offers a control loop: spaces, horizons, reset, select_action, predict_chunk."""

    observation_space: gym.spaces.Space
    action_space: gym.spaces.Box
    obs_horizon: int
    """Observations per prediction (the history ``predict_chunk`` takes)."""
    horizon: int
    """Actions per predicted chunk."""
    n_action_steps: int
    """Actions ``select_action`` executes from each chunk before predicting again."""

    def reset(self) -> None:
        """Forget everything about the previous episode (queues, warm starts)."""

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        """The action for this control tick, shape ``action_space.shape``."""

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        """A chunk ``[horizon, *action_space.shape]`` from ``obs_history [obs_horizon, *obs_shape]``."""
