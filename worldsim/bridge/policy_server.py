"""Serves any object with the policy API (``worldsim.policies.base.Policy``): one instance per client.

The server never imports torch itself; it only calls the policy's numpy methods, so serving an ONNX
runner keeps the process torch-free.

A policy's observations are a ``Box``, sent as one array ``obs_history``, or a ``Dict`` of Boxes (a camera
with proprioception), sent as one array ``obs_history.<key>`` per key and handed to ``predict_chunk`` as a
dict of arrays under the same keys (docs/protocol.md).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.bridge.protocol import Limits, Message, ProtocolError
from worldsim.bridge.server import Reply, Server, ServerConfig
from worldsim.bridge.wire_spaces import (
    ArraySpec,
    box_to_wire,
    expect_names,
    require_box,
    require_observation_space,
    space_to_wire,
)

_POLICY_INTS = ("obs_horizon", "horizon", "n_action_steps")


def check_policy(policy: Any) -> None:
    """Raise ``TypeError`` unless ``policy`` has the attributes and methods the server calls."""
    for name in ("reset", "predict_chunk"):
        if not callable(getattr(policy, name, None)):
            raise TypeError(f"{type(policy).__name__} has no method {name}(); it does not implement the Policy API")
    for name in _POLICY_INTS:
        value = getattr(policy, name, None)
        if type(value) is not int or value < 1:
            raise TypeError(f"{type(policy).__name__}.{name} must be a positive int, got {value!r}")
    require_observation_space(getattr(policy, "observation_space", None), "policy.observation_space")
    require_box(getattr(policy, "action_space", None), "policy.action_space")


@functools.cache
def _keywords(policy_type: type) -> frozenset[str]:
    """The keyword arguments ``policy_type.predict_chunk`` takes."""
    return frozenset(inspect.signature(policy_type.predict_chunk).parameters)


class PolicyServer(Server):
    """Answers ``infer`` (an observation history) with ``action`` (a chunk), and ``reset``.

    Args:
        make_policy: builds one policy per client, so per-episode state (queues, an RTI warm start) is never
            shared; it may return objects that share weights. It is called once at construction to read the
            spaces and sizes announced in ``hello``; every instance must agree with that first one.
        config: address, limits, keys.
    """

    model_kind = "policy"

    def __init__(self, make_policy: Callable[[], Any], config: ServerConfig | None = None) -> None:
        super().__init__(config)
        self._make_policy = make_policy
        prototype = make_policy()
        check_policy(prototype)
        self.observation_space = prototype.observation_space
        self.action_space = prototype.action_space
        self.obs_horizon, self.horizon, self.n_action_steps = (getattr(prototype, n) for n in _POLICY_INTS)
        space = self.observation_space
        if isinstance(space, gym.spaces.Dict):
            _check_fits(space, self.config.limits)
            self._obs_history = None
            # (key, array name, its check) per entry, in the space's key order: the dict predict_chunk gets.
            self._obs_entries = tuple(
                (key, f"obs_history.{key}", ArraySpec(box.dtype, (self.obs_horizon, *box.shape)))
                for key, box in space.spaces.items()
            )
            self._obs_names = frozenset(name for _, name, _ in self._obs_entries)
            self._infer_names = self._obs_names | {"prefix"}
        else:
            self._obs_history = ArraySpec(space.dtype, (self.obs_horizon, *space.shape))
        self._chunk_shape = (self.horizon, *self.action_space.shape)
        self._spare: Any = prototype  # handed to the first client instead of being thrown away
        self._action_dtype = self.action_space.dtype

    def describe(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        obs_body, obs_arrays = space_to_wire(self.observation_space, "observation_space")
        act_body, act_arrays = box_to_wire(self.action_space, "action_space")
        body = {
            "observation_space": obs_body,
            "action_space": act_body,
            "obs_horizon": self.obs_horizon,
            "horizon": self.horizon,
            "n_action_steps": self.n_action_steps,
        }
        return body, {**obs_arrays, **act_arrays}

    def open_session(self) -> Any:
        policy, self._spare = self._spare, None
        if policy is None:
            policy = self._make_policy()
            check_policy(policy)
            if policy.observation_space != self.observation_space or policy.action_space != self.action_space:
                raise TypeError("make_policy() returned a policy whose spaces differ from the first one's")
        return policy

    def handle(self, policy: Any, message: Message) -> Reply:
        if message.type == "infer":
            if self._obs_history is None:
                obs = self._dict_history(message)
            else:
                if len(message.arrays) != 1 and message.arrays.keys() != {"obs_history", "prefix"}:
                    expect_names(message.arrays, {"obs_history"}, message.request_id)
                obs = self._obs_history.take(message.arrays, "obs_history", message.request_id)
            chunk = policy.predict_chunk(obs, **self._timing(policy, message))
            if type(chunk) is not np.ndarray:
                chunk = np.asarray(chunk)
            if chunk.shape != self._chunk_shape:
                raise RuntimeError(f"policy returned a chunk of shape {chunk.shape}, expected {self._chunk_shape}")
            if chunk.dtype != self._action_dtype:
                chunk = chunk.astype(self._action_dtype)
            return "action", {"actions": chunk}, None
        if message.type == "reset":
            expect_names(message.arrays, set(), message.request_id)
            policy.reset()
            return "reset", None, None
        raise ProtocolError("bad_request", f"a policy server does not answer {message.type!r}", message.request_id)

    def _dict_history(self, message: Message) -> dict[str, np.ndarray]:
        """The observation history of an ``infer`` to a Dict-observation policy: one checked array
        ``obs_history.<key>`` per key (``prefix`` besides them is optional, any other name is refused)."""
        arrays, request_id = message.arrays, message.request_id
        if not arrays.keys() <= self._infer_names:
            raise ProtocolError(
                "bad_request",
                f"expected arrays {sorted(self._obs_names)} and optionally 'prefix', got {sorted(arrays)}",
                request_id,
            )
        return {key: spec.take(arrays, name, request_id) for key, name, spec in self._obs_entries}

    def _timing(self, policy: Any, message: Message) -> dict[str, Any]:
        """The optional ``prefix`` array and ``executed_steps`` field of an ``infer``, checked, as keyword
        arguments for ``predict_chunk``: only those it takes (a policy without them ignores the delay, as
        naive switching does)."""
        kwargs: dict[str, Any] = {}
        steps = message.body.get("executed_steps")
        if steps is not None:
            if type(steps) is not int or steps < 0:
                raise ProtocolError(
                    "bad_request", f"executed_steps must be an int >= 0, got {steps!r}", message.request_id
                )
            kwargs["executed_steps"] = steps
        prefix = message.arrays.get("prefix")
        if prefix is not None:
            shape = (self.horizon, *self.action_space.shape)
            if prefix.dtype != self._action_dtype or prefix.shape[1:] != shape[1:] or not 0 < len(prefix) < shape[0]:
                raise ProtocolError(
                    "bad_array",
                    f"array 'prefix' is {prefix.dtype.str}{list(prefix.shape)}, expected {self._action_dtype.str}"
                    f"[d, {', '.join(map(str, shape[1:]))}] with 0 < d < {shape[0]}",
                    message.request_id,
                )
            if not np.isfinite(prefix).all():
                raise ProtocolError("bad_array", "array 'prefix' contains NaN or infinite values", message.request_id)
            kwargs["prefix"] = prefix
        accepted = _keywords(type(policy))
        return {name: value for name, value in kwargs.items() if name in accepted}


def _check_fits(space: gym.spaces.Dict, limits: Limits) -> None:
    """Raise ``ValueError`` unless the arrays of a Dict observation space fit the server's ``limits``: its
    ``hello`` carries two bounds per key (plus the action space's two), an ``infer`` one array per key (plus
    ``prefix``), and each name must be short enough. A client with the default limits needs the same."""
    keys = list(space.spaces)
    arrays = 2 * len(keys) + 2
    if arrays > limits.max_arrays:
        raise ValueError(
            f"a Dict observation space of {len(keys)} keys needs {arrays} arrays in hello, more than "
            f"Limits.max_arrays={limits.max_arrays}"
        )
    longest = max((f"observation_space.{key}.high" for key in keys), key=len)
    if len(longest) > limits.max_name_length:
        raise ValueError(
            f"array name {longest!r} is longer than Limits.max_name_length={limits.max_name_length}: shorten the key"
        )
