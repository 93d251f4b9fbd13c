"""The client side of one server connection: handshake, request ids, timeouts and reconnection.

A connection is a small state machine driven by the caller's own calls (no background thread): it sends
``hello`` and waits for the server's description; a request whose reply does not come within
``timeout_s`` means the server died, restarted or lost the reply, so the socket is thrown away (dropping
anything still queued for the old server) and a new one says ``hello`` again, every
``reconnect_interval_s`` until a server answers.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import zmq

from worldsim.bridge import protocol
from worldsim.bridge.protocol import Limits, Message, ProtocolError
from worldsim.bridge.security import CurveClientKeys, apply_client_keys
from worldsim.bridge.wire_spaces import ObservationSpace, box_from_wire, space_from_wire

_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


class ServerError(RuntimeError):
    """The server answered with an ``error`` reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"server error {code}: {message}")
        self.code = code
        self.message = message


class NotConnectedError(RuntimeError):
    """No server has answered ``hello`` yet (or the connection was lost and is being re-established)."""


@dataclass
class ClientConfig:
    """How a client talks to a server: its reply timeout and reconnect pace, its CURVE keys, and the message
    size limits it enforces on what it receives.

    ``curve``: the server's public key and this client's key pair (None: unencrypted, for servers that run
    without CURVE). ``limits``: the largest frames, arrays and headers accepted from the server.
    """

    timeout_s: float = 1.0
    """Longest wait for any reply; past it the request fails and the connection is renewed."""
    reconnect_interval_s: float = 0.1
    """Pause between two attempts to reach a server that does not answer."""
    curve: CurveClientKeys | None = None
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.reconnect_interval_s < 0:
            raise ValueError("timeout_s must be positive and reconnect_interval_s non-negative")


@dataclass(frozen=True)
class ServerInfo:
    """What a server said about itself in ``hello``."""

    model_kind: str
    server_id: str
    protocol_version: int
    observation_space: ObservationSpace
    """A Box, or a Dict of Boxes (a camera policy's frames and proprioception)."""
    action_space: gym.spaces.Box
    session_timeout_s: float
    body: dict[str, Any]
    """Every field of the ``hello`` body, including the model kind's own (``horizon``, ...)."""

    @classmethod
    def from_message(cls, message: Message) -> ServerInfo:
        """The description in a ``hello`` reply; ``ProtocolError`` (``malformed``) if a field is missing or of
        the wrong type (a msgpack boolean where the protocol says int is refused, as everywhere)."""
        body = message.body
        try:
            model_kind, server_id = _text(body, "model_kind"), _text(body, "server_id")
            timeout = body.get("session_timeout_s")
            if type(timeout) not in (int, float) or not 0 < timeout < math.inf:
                raise ValueError(f"'session_timeout_s' must be a positive number, got {timeout!r}")
            for key in _KIND_INTS.get(model_kind, ()):
                _count(body, key)
            return cls(
                model_kind=model_kind,
                server_id=server_id,
                protocol_version=_count(body, "protocol_version"),
                observation_space=space_from_wire(body, message.arrays, "observation_space"),
                action_space=box_from_wire(body, message.arrays, "action_space"),
                session_timeout_s=float(timeout),
                body=body,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ProtocolError("malformed", f"incomplete hello from server: {error}") from None


# The hello fields each model kind adds, all counts >= 1 (docs/protocol.md, "hello").
_KIND_INTS = {"policy": ("obs_horizon", "horizon", "n_action_steps"), "world_model": ("max_context_frames",)}


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if type(value) is not str:
        raise ValueError(f"{key!r} must be a string, got {value!r}")
    return value


def _count(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if type(value) is not int or value < 1:  # ``type``, not isinstance: msgpack true/false decode to bool
        raise ValueError(f"{key!r} must be an integer >= 1, got {value!r}")
    return value


class Connection:
    """A DEALER connection to one server that answers ``expected_kind`` models.

    Blocking use: ``request``. Asynchronous use: ``submit`` then ``poll``. Both renew the connection as
    needed; ``reconnects`` counts the renewals and ``timeouts`` the requests that got no reply.
    """

    def __init__(self, address: str, expected_kind: str, config: ClientConfig | None = None) -> None:
        self.address = address
        self.expected_kind = expected_kind
        self.config = config or ClientConfig()
        self.info: ServerInfo | None = None
        self.reconnects = 0
        self.timeouts = 0
        self._context = zmq.Context()
        self._socket: zmq.Socket | None = None
        self._rcvtimeo_ms = -1
        self._next_id = 1
        self._hello_id = 0
        self._hello_deadline = 0.0
        self._next_attempt = 0.0
        self._pending: dict[int, float] = {}  # request id -> deadline of the asynchronous requests
        self._completed: collections.deque[Message] = collections.deque()
        self._closed = False

    @property
    def ready(self) -> bool:
        """Whether a server has answered ``hello`` on the current socket."""
        return self._socket is not None and self._hello_id == 0 and self.info is not None

    # --- blocking ------------------------------------------------------------------------------------
    def connect(self, timeout_s: float | None = None) -> ServerInfo:
        """Block until a server answers ``hello``; raises ``TimeoutError``."""
        deadline = time.monotonic() + (self.config.timeout_s if timeout_s is None else timeout_s)
        while not self.ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {self.expected_kind} server answered at {self.address}")
            self._wait(remaining)
        return self.info

    def request(
        self,
        msg_type: str,
        arrays: dict[str, np.ndarray] | None = None,
        body: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Message:
        """Send a request and wait for its reply; raises ``TimeoutError`` or ``ServerError``."""
        timeout_s = self.config.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        if not self.ready:
            self.connect(timeout_s)
        request_id = self._send(msg_type, arrays, body)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._socket is None:
                self.timeouts += 1
                self._renew()
                raise TimeoutError(f"no reply to {msg_type!r} from {self.address} within {timeout_s} s")
            reply = self._wait(remaining, wanted=request_id)
            if reply is not None:
                return _raise_error(reply)

    # --- asynchronous --------------------------------------------------------------------------------
    def submit(
        self, msg_type: str, arrays: dict[str, np.ndarray] | None = None, body: dict[str, Any] | None = None
    ) -> int:
        """Send a request without waiting; its reply comes out of ``poll``. Raises ``NotConnectedError``."""
        if not self.ready:
            raise NotConnectedError(f"not connected to {self.address}")
        request_id = self._send(msg_type, arrays, body)
        self._pending[request_id] = time.monotonic() + self.config.timeout_s
        return request_id

    def poll(self, timeout_s: float) -> Message | None:
        """The next reply to a ``submit``-ted request, waiting at most ``timeout_s``; ``None`` if none came.

        Also keeps the connection alive: expired requests are dropped (``timeouts``) and the connection is
        renewed. Error replies are returned as messages of type ``error``.
        """
        deadline = time.monotonic() + timeout_s
        while not self._completed:
            self._expire_pending()
            remaining = deadline - time.monotonic()
            self._wait(max(remaining, 0.0))
            if remaining <= 0:
                break
        return self._completed.popleft() if self._completed else None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Say ``bye`` (best effort, so the server frees our session now) and release the sockets."""
        if self._closed:
            return
        self._closed = True
        linger_ms = 0
        if self.ready:
            try:
                protocol.send(self._socket, protocol.encode("bye", self._take_id()))
                linger_ms = 100  # long enough to hand the bye to the kernel, short if the server is gone
            except zmq.ZMQError:
                pass
        if self._socket is not None:
            self._socket.close(linger=linger_ms)
            self._socket = None
        self._context.term()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------------------
    def _take_id(self) -> int:
        request_id = self._next_id
        self._next_id += 1
        return request_id

    def _send(self, msg_type: str, arrays: dict[str, np.ndarray] | None, body: dict[str, Any] | None) -> int:
        request_id = self._take_id()
        try:
            protocol.send(self._socket, protocol.encode(msg_type, request_id, arrays, body))
        except zmq.Again:  # queue to the server is full: it is not reading, treat as lost
            self.timeouts += 1
            self._renew()
            raise NotConnectedError(f"cannot send to {self.address}: the server is not reading") from None
        return request_id

    def _open(self, now: float) -> None:
        if self._closed:
            raise RuntimeError("connection is closed")
        socket = self._context.socket(zmq.DEALER)
        socket.linger = 0
        socket.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_frame_bytes)
        socket.setsockopt(zmq.RECONNECT_IVL, max(1, round(self.config.reconnect_interval_s * 1e3)))
        if self.config.curve is not None:
            apply_client_keys(socket, self.config.curve)
        socket.connect(self.address)
        self._socket = socket
        self._rcvtimeo_ms = -1
        self._hello_id = self._take_id()
        self._hello_deadline = now + self.config.timeout_s
        protocol.send(socket, protocol.encode("hello", self._hello_id))

    def _renew(self) -> None:
        """Drop the socket (and whatever it still queues) and everything in flight; reconnect later."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
            self.reconnects += 1
        self._pending.clear()
        self._hello_id = 0
        self._next_attempt = time.monotonic() + self.config.reconnect_interval_s

    def _maintain(self, now: float) -> float:
        """Open or retry the handshake when due; returns how long until something is due."""
        if self._socket is None:
            if now < self._next_attempt:
                return self._next_attempt - now
            self._open(now)
        if self._hello_id and now >= self._hello_deadline:
            self.timeouts += 1
            self._renew()
            return self.config.reconnect_interval_s
        return self._hello_deadline - now if self._hello_id else float("inf")

    def _expire_pending(self) -> None:
        if not self._pending:
            return
        now = time.monotonic()
        if any(deadline <= now for deadline in self._pending.values()):
            self.timeouts += 1
            self._renew()

    def _wait(self, timeout_s: float, wanted: int = 0) -> Message | None:
        """Wait up to ``timeout_s`` for replies and handle what arrives; returns reply ``wanted`` if it came."""
        now = time.monotonic()
        wait_s = min(timeout_s, self._maintain(now))
        socket = self._socket
        if socket is None:
            time.sleep(max(wait_s, 0.0))
            return None
        # A blocking receive with RCVTIMEO is much cheaper than zmq_poll, but counts whole milliseconds:
        # sleep off a sub-millisecond rest instead, so that a control loop never wakes late.
        wait_ms = int(wait_s * 1e3)
        if wait_ms == 0 and not socket.get(_EVENTS) & _POLLIN:
            if wait_s > 0:
                time.sleep(wait_s)
            if not socket.get(_EVENTS) & _POLLIN:
                return None
        if wait_ms != self._rcvtimeo_ms:
            socket.rcvtimeo = self._rcvtimeo_ms = wait_ms
        try:
            message = protocol.receive(socket, self.config.limits, protocol.REPLY_TYPES)
        except zmq.Again:
            return None
        found = self._dispatch(message, wanted)
        while found is None and self._socket is not None and self._socket.get(_EVENTS) & _POLLIN:
            found = self._dispatch(protocol.receive(socket, self.config.limits, protocol.REPLY_TYPES), wanted)
        return found

    def _dispatch(self, message: Message, wanted: int) -> Message | None:
        if message.request_id == self._hello_id and self._hello_id:
            self._accept_hello(message)
        elif wanted and message.request_id == wanted:
            return message
        elif self._pending.pop(message.request_id, None) is not None:
            self._completed.append(message)
        # anything else answers a request that was given up on: drop it
        return None

    def _accept_hello(self, message: Message) -> None:
        info = ServerInfo.from_message(_raise_error(message))
        if info.model_kind != self.expected_kind:
            raise ServerError("wrong_kind", f"{self.address} serves a {info.model_kind}, not a {self.expected_kind}")
        if info.protocol_version != protocol.PROTOCOL_VERSION:
            raise ServerError("unsupported_version", f"server speaks protocol {info.protocol_version}")
        self.info = info
        self._hello_id = 0


def _raise_error(message: Message) -> Message:
    if message.type == "error":
        raise ServerError(str(message.body.get("code")), str(message.body.get("message")))
    return message
