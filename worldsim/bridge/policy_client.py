"""Client of a ``PolicyServer``: blocking calls for scripts, ``submit``/``poll`` for a control loop.

An observation history is an array ``[obs_horizon, *obs_shape]`` for a server whose observation space is a
``Box``, and a dict of such arrays, one per key, for a ``Dict`` observation space (a camera with
proprioception): ``{"pixels": uint8 [obs_horizon, H, W, 3], "state": float32 [obs_horizon, n]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.bridge.connection import ClientConfig, Connection, NotConnectedError, ServerError, ServerInfo


@dataclass(frozen=True, slots=True)
class ChunkReply:
    """A chunk that answers the ``infer`` request ``request_id``."""

    request_id: int
    actions: np.ndarray
    """``[horizon, *action_shape]``, read-only."""
    compute_s: float
    """Time the policy spent on it inside the server (the reply's ``elapsed``)."""


class PolicyClient:
    """Talks to a served policy. The server keeps one policy instance per client.

    Blocking: ``connect()``, ``reset()``, ``infer(obs_history) -> chunk``, ``ping()``. Asynchronous (what
    ``ControlLoop`` uses): ``submit(obs_history) -> request id`` and ``poll(timeout_s) -> ChunkReply | None``.
    A request without reply within ``config.timeout_s`` renews the connection (see ``Connection``).
    """

    def __init__(self, address: str, config: ClientConfig | None = None) -> None:
        self.connection = Connection(address, "policy", config)
        self._expected_for: ServerInfo | None = None
        self._expected_cache: tuple = ()

    @property
    def info(self) -> ServerInfo:
        if self.connection.info is None:
            raise RuntimeError("not connected yet: call connect()")
        return self.connection.info

    @property
    def ready(self) -> bool:
        return self.connection.ready

    @property
    def obs_shape(self) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
        """The shape of an observation history, ``(obs_horizon, *obs_shape)``; for a Dict observation space a
        dict of them, one per key."""
        return self._expected()[0]

    @property
    def obs_dtype(self) -> np.dtype | dict[str, np.dtype]:
        """The dtype of an observation history; for a Dict observation space a dict of them, one per key."""
        return self._expected()[1]

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        return self._expected()[2]

    def _expected(self) -> tuple[Any, Any, tuple[int, ...], np.dtype, dict[str, str] | None]:
        """Shapes and dtypes of observation histories and chunks, worked out once per server ``hello``: the
        observation history's shape and dtype (dicts by key for a Dict observation space), the chunk's, and
        the array name of each key (None for a Box observation space, sent as ``obs_history``)."""
        info = self.connection.info
        if info is not self._expected_for:
            if info is None:
                raise RuntimeError("not connected yet: call connect()")
            horizon, space = info.body["obs_horizon"], info.observation_space
            if isinstance(space, gym.spaces.Dict):
                obs_shape: Any = {key: (horizon, *box.shape) for key, box in space.spaces.items()}
                obs_dtype: Any = {key: box.dtype for key, box in space.spaces.items()}
                names: dict[str, str] | None = {key: f"obs_history.{key}" for key in space.spaces}
            else:
                obs_shape, obs_dtype, names = (horizon, *space.shape), space.dtype, None
            self._expected_for = info
            self._expected_cache = (
                obs_shape,
                obs_dtype,
                (info.body["horizon"], *info.action_space.shape),
                info.action_space.dtype,
                names,
            )
        return self._expected_cache

    def connect(self, timeout_s: float | None = None) -> ServerInfo:
        return self.connection.connect(timeout_s)

    def reset(self, timeout_s: float | None = None) -> None:
        """Start a new episode on the server-side policy (clears its queues and warm start)."""
        self.connection.request("reset", timeout_s=timeout_s)

    def ping(self, timeout_s: float | None = None) -> None:
        self.connection.request("ping", timeout_s=timeout_s)

    def infer(self, obs_history: np.ndarray | Mapping[str, np.ndarray], timeout_s: float | None = None) -> np.ndarray:
        """The chunk ``[horizon, *action_shape]`` for ``obs_history [obs_horizon, *obs_shape]`` (for a Dict
        observation space: a dict of such arrays, one per key). Raises ``ValueError`` for a history of the
        wrong keys, dtype or shape before sending it."""
        if not self.connection.ready:
            self.connection.connect(timeout_s)
        reply = self.connection.request("infer", self._observation_arrays(obs_history), timeout_s=timeout_s)
        return self._actions(reply.arrays)

    def submit(
        self,
        obs_history: np.ndarray | Mapping[str, np.ndarray],
        *,
        prefix: np.ndarray | None = None,
        executed_steps: int | None = None,
    ) -> int:
        """Ask for a chunk without waiting; raises ``NotConnectedError`` while no server is reachable.
        ``obs_history`` as for ``infer``.

        ``prefix``: the actions ``[d, *action_shape]`` the robot executes before this chunk takes over (a
        delay-aware policy keeps them as the chunk's start); ``executed_steps``: actions executed since the
        previous request's observation (how far the policy shifts a warm start). See docs/protocol.md."""
        if not self.connection.ready:
            raise NotConnectedError(f"no policy server answers at {self.connection.address} (yet)")
        arrays = self._observation_arrays(obs_history)
        if prefix is not None:
            arrays["prefix"] = self._checked_prefix(prefix)
        body = None if executed_steps is None else {"executed_steps": int(executed_steps)}
        return self.connection.submit("infer", arrays, body)

    def poll(self, timeout_s: float) -> ChunkReply | None:
        """The next chunk that arrived within ``timeout_s``; raises ``ServerError`` for an error reply."""
        reply = self.connection.poll(timeout_s)
        if reply is None:
            return None
        if reply.type == "error":
            raise ServerError(str(reply.body.get("code")), str(reply.body.get("message")))
        return ChunkReply(reply.request_id, self._actions(reply.arrays), reply.elapsed)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _observation_arrays(self, obs_history: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The arrays of an ``infer`` that carry ``obs_history``, checked: ``obs_history``, or for a Dict
        observation space one ``obs_history.<key>`` per key."""
        names = self._expected()[4]
        if names is None:
            return {"obs_history": self._checked(obs_history)}
        if not isinstance(obs_history, Mapping):
            raise ValueError(
                f"obs_history must be a dict of arrays with the keys {sorted(names)} (the server's observation "
                f"space is a Dict), got {type(obs_history).__name__}"
            )
        return {names[key]: array for key, array in self._checked_dict(obs_history).items()}

    def _checked_dict(self, obs_history: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes, dtypes, _, _, names = self._expected()
        if obs_history.keys() != names.keys():
            missing = [key for key in names if key not in obs_history]
            if missing:
                raise ValueError(f"obs_history lacks the key {missing[0]!r} (it needs {sorted(names)})")
            extra = sorted(repr(key) for key in obs_history if key not in names)
            raise ValueError(f"obs_history has the unexpected key {extra[0]} (it needs {sorted(names)})")
        checked = {}
        for key in names:
            array = obs_history[key]
            if type(array) is not np.ndarray:
                array = np.asarray(array)
            shape, dtype = shapes[key], dtypes[key]
            if array.shape != shape or array.dtype != dtype:
                got = f"{array.dtype}{list(array.shape)}"
                raise ValueError(f"obs_history[{key!r}] must be {dtype}{list(shape)}, got {got}")
            checked[key] = array
        return checked

    def _checked(self, obs_history: np.ndarray) -> np.ndarray:
        if type(obs_history) is not np.ndarray:
            if isinstance(obs_history, Mapping):
                raise ValueError("obs_history must be one array: the server's observation space is a Box, not a Dict")
            obs_history = np.asarray(obs_history)
        shape, dtype, _, _, _ = self._expected()
        if obs_history.shape != shape or obs_history.dtype != dtype:
            raise ValueError(
                f"obs_history must be {dtype}{list(shape)}, got {obs_history.dtype}{list(obs_history.shape)}"
            )
        return obs_history

    def _checked_prefix(self, prefix: np.ndarray) -> np.ndarray:
        prefix = np.ascontiguousarray(prefix)
        _, _, shape, dtype, _ = self._expected()
        if prefix.ndim != len(shape) or prefix.shape[1:] != shape[1:] or not 0 < len(prefix) < shape[0]:
            action_shape = ", ".join(map(str, shape[1:]))
            raise ValueError(f"prefix must be [d, {action_shape}] with 0 < d < {shape[0]}, got {list(prefix.shape)}")
        return prefix.astype(dtype, copy=False)

    def _actions(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        actions = arrays.get("actions")
        _, _, shape, dtype, _ = self._expected()
        if actions is None or actions.shape != shape or actions.dtype != dtype:
            raise ServerError("malformed", f"server sent no {list(shape)} action chunk")
        return actions
