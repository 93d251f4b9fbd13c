"""Client of a ``WorldModelServer``: reset a streaming session with context, then step it frame by frame."""

from __future__ import annotations

import numpy as np

from worldsim.bridge.connection import ClientConfig, Connection, ServerError, ServerInfo


class WorldModelClient:
    """Drives one server-side streaming session (the server keeps one per client)."""

    def __init__(self, address: str, config: ClientConfig | None = None) -> None:
        self.connection = Connection(address, "world_model", config)

    @property
    def info(self) -> ServerInfo:
        if self.connection.info is None:
            raise RuntimeError("not connected yet: call connect()")
        return self.connection.info

    def connect(self, timeout_s: float | None = None) -> ServerInfo:
        return self.connection.connect(timeout_s)

    def reset(self, context_obs: np.ndarray, context_actions: np.ndarray, timeout_s: float | None = None) -> None:
        """Start the stream from ``context_obs [T, *obs_shape]`` and ``context_actions [T', *action_shape]``."""
        arrays = {"context_obs": np.asarray(context_obs), "context_actions": np.asarray(context_actions)}
        self.connection.request("reset", arrays, timeout_s=timeout_s)

    def step(self, action: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """The next observation after ``action``."""
        reply = self.connection.request("step", {"action": np.asarray(action)}, timeout_s=timeout_s)
        obs = reply.arrays.get("obs")
        space = self.info.observation_space
        if obs is None or obs.shape != space.shape or obs.dtype != space.dtype:
            raise ServerError("malformed", "server sent no observation of the announced shape")
        return obs

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> WorldModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
