"""Serves a streaming world model: per client, ``reset`` with context frames, then ``step`` with actions.

The served object is a streaming session (``reset(context_obs, context_actions)``, ``step(action) ->
next_obs``, plus ``observation_space`` / ``action_space``); each client gets its own, so caches never mix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from worldsim.bridge.protocol import Message, ProtocolError
from worldsim.bridge.server import Reply, Server, ServerConfig
from worldsim.bridge.wire_spaces import ArraySpec, box_to_wire, expect_names, require_box


def check_session(session: Any) -> None:
    """Raise ``TypeError`` unless ``session`` has the streaming-session API the server calls."""
    for name in ("reset", "step"):
        if not callable(getattr(session, name, None)):
            raise TypeError(f"{type(session).__name__} has no method {name}(); it is not a world-model session")
    require_box(getattr(session, "observation_space", None), "session.observation_space")
    require_box(getattr(session, "action_space", None), "session.action_space")


class _Client:
    __slots__ = ("session", "started")

    def __init__(self, session: Any) -> None:
        self.session = session
        self.started = False


class WorldModelServer(Server):
    """Answers ``reset`` (context frames and actions) and ``step`` (an action) with ``frame`` (the next obs).

    Args:
        make_session: builds one streaming session per client (sessions may share the model's weights).
            Called once at construction to read the spaces announced in ``hello``.
        config: address, limits, keys.
        max_context_frames: the most context frames a ``reset`` may carry.
    """

    model_kind = "world_model"

    def __init__(
        self, make_session: Callable[[], Any], config: ServerConfig | None = None, *, max_context_frames: int = 64
    ) -> None:
        super().__init__(config)
        if type(max_context_frames) is not int or max_context_frames < 1:  # (True would pass as 1 otherwise)
            raise ValueError(f"max_context_frames must be an int >= 1, got {max_context_frames!r}")
        self._make_session = make_session
        prototype = make_session()
        check_session(prototype)
        self.observation_space = prototype.observation_space
        self.action_space = prototype.action_space
        self._action = ArraySpec(self.action_space.dtype, self.action_space.shape)
        self.max_context_frames = max_context_frames
        self._spare: Any = prototype

    def describe(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        obs_body, obs_arrays = box_to_wire(self.observation_space, "observation_space")
        act_body, act_arrays = box_to_wire(self.action_space, "action_space")
        body = {"observation_space": obs_body, "action_space": act_body, "max_context_frames": self.max_context_frames}
        return body, {**obs_arrays, **act_arrays}

    def open_session(self) -> _Client:
        session, self._spare = self._spare, None
        if session is None:
            session = self._make_session()
            check_session(session)
        return _Client(session)

    def handle(self, client: _Client, message: Message) -> Reply:
        rid = message.request_id
        if message.type == "reset":
            # Any refused reset leaves no stream to step, also one refused before the session saw it: a client
            # that sent a reset meant to leave the old stream, and must not step on from it by mistake.
            client.started = False
            expect_names(message.arrays, {"context_obs", "context_actions"}, rid)
            obs, actions = message.arrays["context_obs"], message.arrays["context_actions"]
            frames, steps = (obs.shape[0] if obs.ndim else 0), (actions.shape[0] if actions.ndim else 0)
            if not 1 <= frames <= self.max_context_frames or steps > self.max_context_frames:
                raise ProtocolError(
                    "bad_array",
                    f"context must hold 1-{self.max_context_frames} frames and at most "
                    f"as many actions, got {frames} frames and {steps} actions",
                    rid,
                )
            obs_space, act_space = self.observation_space, self.action_space
            ArraySpec(obs_space.dtype, (frames, *obs_space.shape)).take(message.arrays, "context_obs", rid)
            ArraySpec(act_space.dtype, (steps, *act_space.shape)).take(message.arrays, "context_actions", rid)
            client.session.reset(obs, actions)
            client.started = True
            return "reset", None, None
        if message.type == "step":
            if not client.started:
                raise ProtocolError("bad_request", "send reset with context frames before step", rid)
            expect_names(message.arrays, {"action"}, rid)
            action = self._action.take(message.arrays, "action", rid)
            next_obs = np.asarray(client.session.step(action))
            if next_obs.shape != self.observation_space.shape:
                raise RuntimeError(
                    f"session returned an observation of shape {next_obs.shape}, "
                    f"expected {self.observation_space.shape}"
                )
            return "frame", {"obs": next_obs.astype(self.observation_space.dtype, copy=False)}, None
        raise ProtocolError("bad_request", f"a world-model server does not answer {message.type!r}", rid)
