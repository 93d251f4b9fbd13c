"""The serving loop shared by the policy and world-model servers: one ROUTER socket, one session per client.

Requests are handled one at a time in the serving thread, in arrival order; each client (ZeroMQ routing
id) gets its own session object, created on its first message and freed after ``session_timeout_s``
without messages or on ``bye``. Nothing a client sends can stop the loop: protocol violations and model
exceptions become ``error`` replies.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from worldsim.bridge import protocol
from worldsim.bridge.protocol import Limits, Message, ProtocolError
from worldsim.bridge.security import CurveGuard, CurveServerKeys, is_local_endpoint

log = logging.getLogger(__name__)

Reply = tuple[str, dict[str, np.ndarray] | None, dict[str, Any] | None]


@dataclass
class ServerConfig:
    """Where and how a server listens.

    ``address`` is a ZeroMQ endpoint; ``tcp://127.0.0.1:*`` picks a free port (read ``server.address``).
    Without ``curve`` keys only local endpoints are accepted unless ``allow_insecure`` is set.
    """

    address: str = "tcp://127.0.0.1:5555"
    session_timeout_s: float = 30.0
    max_sessions: int = 16
    limits: Limits = field(default_factory=Limits)
    curve: CurveServerKeys | None = None
    allow_insecure: bool = False
    housekeeping_interval_s: float = 0.05
    """How often the loop looks up from the socket to honour ``stop()`` and expire idle sessions."""

    def __post_init__(self) -> None:
        if type(self.max_sessions) is not int or self.max_sessions <= 0:  # (True would pass as 1 otherwise)
            raise ValueError(f"max_sessions must be a positive int, got {self.max_sessions!r}")
        if not (self.session_timeout_s > 0 and self.housekeeping_interval_s > 0):
            raise ValueError("session_timeout_s and housekeeping_interval_s must be positive")
        if self.curve is None and not self.allow_insecure and not is_local_endpoint(self.address):
            raise ValueError(
                f"refusing to serve unencrypted on {self.address}: anyone on the network could drive the model. "
                "Bind to 127.0.0.1 / ipc, give CURVE keys, or set allow_insecure=True."
            )


@dataclass
class ServerStats:
    """Counters of a running server (``server.stats``), since it started."""

    messages: int = 0
    """Messages received (every request, answered or refused)."""
    errors: int = 0
    """``error`` replies sent: protocol violations, refused inputs and model exceptions."""
    sessions_opened: int = 0
    """Client sessions created (on a client's first ``reset`` / ``infer`` / ``step``)."""
    sessions_expired: int = 0
    """Sessions freed after ``session_timeout_s`` without a message (a ``bye`` is not counted)."""
    auth_rejected: int = 0
    """CURVE handshakes refused because the client's key is not allowed (0 without CURVE)."""


class _Session:
    __slots__ = ("state", "last_seen")

    def __init__(self, state: Any, now: float) -> None:
        self.state = state
        self.last_seen = now


class Server(ABC):
    """Base class: subclasses say what the model is (``hello``) and how a session answers a request."""

    model_kind: str

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.server_id = uuid.uuid4().hex
        self.stats = ServerStats()
        self._sessions: dict[bytes, _Session] = {}
        self._hello: tuple[dict[str, Any], dict[str, np.ndarray]] = ({}, {})
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._bound = threading.Event()
        self._bind_error: BaseException | None = None
        self.address: str | None = None

    # --- what subclasses provide -------------------------------------------------------------------
    @abstractmethod
    def describe(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Body fields and arrays of the ``hello`` reply (model kind and version are added here)."""

    @abstractmethod
    def open_session(self) -> Any:
        """A fresh per-client state (a policy instance, a world-model session)."""

    @abstractmethod
    def handle(self, state: Any, message: Message) -> Reply:
        """Answer ``reset`` / ``infer`` / ``step`` for one client; raise ``ProtocolError`` to refuse."""

    # --- running -------------------------------------------------------------------------------------
    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def start(self) -> Server:
        """Serve in a background thread; returns once bound (bind errors are raised here)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(
            target=self._serve_in_thread, name=f"worldsim-{self.model_kind}-server", daemon=True
        )
        self._thread.start()
        self._bound.wait()
        if self._bind_error is not None:
            self._thread.join()
            raise self._bind_error
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the background thread of ``start()`` to end (after ``stop()``)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve_in_thread(self) -> None:
        try:
            self.serve_forever()
        except BaseException as error:
            if error is not self._bind_error:  # a bind error is re-raised by start() in the caller's thread
                log.exception("the %s server stopped on an unexpected error", self.model_kind)

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` (from another thread) or KeyboardInterrupt."""
        context = zmq.Context()  # own context: the ZAP authenticator is per context
        guard = None
        socket = None
        try:
            try:
                self._hello = self._hello_reply()
                socket = context.socket(zmq.ROUTER)
                socket.linger = 0
                socket.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_frame_bytes)
                socket.rcvtimeo = max(1, round(self.config.housekeeping_interval_s * 1e3))
                if self.config.curve is not None:
                    guard = CurveGuard(context, self.config.curve)
                    guard.apply(socket)
                socket.bind(self.config.address)
                self.address = socket.getsockopt_string(zmq.LAST_ENDPOINT)
            except BaseException as error:
                self._bind_error = error
                raise
            finally:
                self._bound.set()
            if guard is None:
                log.warning(
                    "serving %s on %s without CURVE: unencrypted, local clients only", self.model_kind, self.address
                )
            else:
                log.info(
                    "serving %s on %s with CURVE (%d allowed clients)",
                    self.model_kind,
                    self.address,
                    len(self.config.curve.allowed_clients),
                )
            self._loop(socket, guard)
        finally:
            self._sessions.clear()
            if socket is not None:
                socket.close(linger=0)
            if guard is not None:
                guard.stop()
            context.term()

    def _loop(self, socket: zmq.Socket, guard: CurveGuard | None) -> None:
        next_housekeeping = time.monotonic()
        while not self._stopping.is_set():
            try:
                routing_id = socket.recv()
            except zmq.Again:
                routing_id = None
            except KeyboardInterrupt:
                break
            now = time.monotonic()
            if routing_id is not None:
                self._serve_one(socket, routing_id, now)
            if now >= next_housekeeping:
                next_housekeeping = now + self.config.housekeeping_interval_s
                self._expire(now)
                if guard is not None:
                    self.stats.auth_rejected = guard.rejected

    def _serve_one(self, socket: zmq.Socket, routing_id: bytes, now: float) -> None:
        self.stats.messages += 1
        try:
            reply = self._answer(socket, routing_id, now)
        except ProtocolError as error:
            self.stats.errors += 1
            reply = protocol.error_frames(error)
        except Exception as error:  # a bug in a model must not take the server down for every client
            self.stats.errors += 1
            log.exception("internal error while serving a request")
            reply = protocol.error_frames(ProtocolError("internal", f"{type(error).__name__}: {error}"))
        try:
            protocol.send(socket, reply, routing_id)
        except zmq.Again:  # (a ROUTER drops a reply to a full or gone peer itself; this only guards the call)
            log.warning("dropped a reply to a client whose queue is full")

    def _answer(self, socket: zmq.Socket, routing_id: bytes, now: float) -> list[Any]:
        # A ROUTER always delivers the routing id followed by a message of at least one part.
        message = protocol.receive(socket, self.config.limits, protocol.REQUEST_TYPES)
        request_id = message.request_id
        if request_id == 0:  # 0 marks an error reply to a message without a readable id: never a request's
            raise ProtocolError("malformed", "'id' 0 is reserved for replies to messages without an id; count from 1")
        session = self._sessions.get(routing_id)
        if session is not None:  # every request that passed the wire checks keeps its session alive
            session.last_seen = now
        try:
            if message.type in ("hello", "ping", "bye"):
                if message.arrays:
                    raise ProtocolError(
                        "bad_request", f"{message.type!r} carries no arrays, got {sorted(message.arrays)}"
                    )
                if message.type == "hello":
                    body, arrays = self._hello
                    return protocol.encode("hello", request_id, arrays, body)
                if message.type == "bye":
                    self._sessions.pop(routing_id, None)  # dropping the last reference frees the model's state
                return protocol.encode("pong" if message.type == "ping" else "bye", request_id)
            if session is None:
                if len(self._sessions) >= self.config.max_sessions:
                    raise ProtocolError("busy", f"all {self.config.max_sessions} sessions are taken")
                try:
                    state = self.open_session()
                except Exception as error:  # the server's own factory failed: not the client's doing
                    log.exception("could not open a session")
                    raise ProtocolError("internal", f"no session: {type(error).__name__}: {error}") from None
                session = _Session(state, now)
                self._sessions[routing_id] = session
                self.stats.sessions_opened += 1
            start = time.perf_counter()
            reply_type, arrays, body = self.handle(session.state, message)
            elapsed = time.perf_counter() - start
        except ProtocolError as error:
            error.request_id = request_id
            raise
        except (ValueError, TypeError) as error:  # the model refused this input
            raise ProtocolError("rejected", f"{type(error).__name__}: {error}", request_id) from None
        except Exception as error:
            log.exception("model error while serving %s", message.type)
            raise ProtocolError("internal", f"{type(error).__name__}: {error}", request_id) from None
        return protocol.encode(reply_type, request_id, arrays, body, elapsed)

    def _hello_reply(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        body, arrays = self.describe()
        body = {
            "model_kind": self.model_kind,
            "protocol_version": protocol.PROTOCOL_VERSION,
            "server_id": self.server_id,
            "session_timeout_s": self.config.session_timeout_s,
            **body,
        }
        return body, arrays

    def _expire(self, now: float) -> None:
        timeout = self.config.session_timeout_s
        for routing_id in [rid for rid, s in self._sessions.items() if now - s.last_seen > timeout]:
            del self._sessions[routing_id]
            self.stats.sessions_expired += 1
