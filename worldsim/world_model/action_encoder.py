"""The torch-free half of a world model's interface: its action encoder and its observation space in JSON.

Both the torch model and the onnxruntime runner use them, so actions are encoded and checked by one
piece of code. torch is only imported by the two methods that hand tensors to the torch model.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from worldsim.core.normalizer import Normalizer


def box_to_dict(space: gym.spaces.Box) -> dict:
    """A JSON description of an observation space (uint8 images keep their bounds implicit)."""
    image = space.dtype == np.uint8
    return {
        "low": 0 if image else space.low.tolist(),
        "high": 255 if image else space.high.tolist(),
        "shape": list(space.shape),
        "dtype": str(space.dtype),
    }


def box_from_dict(meta: dict) -> gym.spaces.Box:
    dtype = np.dtype(meta["dtype"])
    low = np.asarray(meta["low"], dtype) if dtype != np.uint8 else 0
    high = np.asarray(meta["high"], dtype) if dtype != np.uint8 else 255
    return gym.spaces.Box(low, high, tuple(meta["shape"]), dtype)


class ActionEncoder:
    """Actions to conditioning vectors ``[N, cond_dim]``: ``[normalized action | one-hot, 1]``.

    ``encode(None rows)`` is not a thing: use :meth:`no_action` for a frame that no action led to.
    """

    def __init__(self, action_space: gym.spaces.Space, normalizer: Normalizer | None = None):
        if isinstance(action_space, gym.spaces.Box):
            if normalizer is None or normalizer.shape != action_space.shape or len(action_space.shape) != 1:
                raise ValueError("a Box action space needs a flat action Normalizer of the same shape")
            self.action_dim = action_space.shape[0]
        elif isinstance(action_space, gym.spaces.Discrete):
            self.action_dim = int(action_space.n)
        else:
            raise ValueError(f"world models support Box and Discrete action spaces, got {action_space}")
        self.action_space = action_space
        self.normalizer = normalizer
        self.cond_dim = self.action_dim + 1

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)

    def check(self, actions: np.ndarray) -> np.ndarray:
        """Validate a batch of actions ``[N, *action_shape]``; raise a clear ValueError otherwise."""
        actions = np.asarray(actions)
        space = self.action_space
        if self.discrete:
            if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
                raise ValueError(f"discrete actions must be integers of shape [N], got {actions.dtype} {actions.shape}")
            if ((actions < space.start) | (actions >= space.start + space.n)).any():
                raise ValueError(
                    f"discrete actions must lie in [{space.start}, {space.start + space.n}), got {actions}"
                )
            return actions
        if actions.ndim != 2 or actions.shape[1:] != space.shape:
            raise ValueError(f"actions must have shape [N, {space.shape[0]}], got {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("actions contain NaN or infinite values")
        return actions

    def conditions(self, actions) -> np.ndarray:
        """``[N, *action_shape]`` to float32 ``[N, cond_dim]`` (Box actions are clipped to the space first)."""
        actions = self.check(np.asarray(actions))
        if self.discrete:
            body = np.eye(self.action_dim, dtype=np.float32)[actions - self.action_space.start]
        else:
            clipped = np.clip(actions, self.action_space.low, self.action_space.high).astype(np.float32)
            body = self.normalizer.normalize(clipped)
        return np.concatenate([body, np.ones((len(actions), 1), np.float32)], axis=1)

    def no_action_conditions(self, n: int = 1) -> np.ndarray:
        """The conditioning of ``n`` frames that no action led to (the first frame of a stream)."""
        return np.zeros((n, self.cond_dim), np.float32)

    def encode(self, actions):
        """:meth:`conditions` as a torch tensor."""
        import torch

        return torch.from_numpy(self.conditions(actions))

    def no_action(self, n: int = 1):
        """:meth:`no_action_conditions` as a torch tensor."""
        import torch

        return torch.from_numpy(self.no_action_conditions(n))

    def tensors(self) -> dict:
        return {} if self.normalizer is None else self.normalizer.state_dict("action")

    def config(self) -> dict:
        space = self.action_space
        if self.discrete:
            return {"kind": "discrete", "n": int(space.n), "start": int(space.start)}
        return {
            "kind": "box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "mode": self.normalizer.mode,
        }

    @classmethod
    def from_tensors(cls, tensors: dict, config: dict) -> ActionEncoder:
        if config["kind"] == "discrete":
            return cls(gym.spaces.Discrete(config["n"], start=config["start"]))
        space = gym.spaces.Box(np.asarray(config["low"], np.float32), np.asarray(config["high"], np.float32))
        return cls(space, Normalizer.from_state_dict(tensors, "action", config["mode"]))
