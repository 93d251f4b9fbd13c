"""Servers in background threads on free loopback ports, and clients that are always closed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import zmq

from worldsim.bridge import ClientConfig, PolicyClient, PolicyServer, ServerConfig
from worldsim.bridge.server import Server

LOOPBACK = "tcp://127.0.0.1:*"


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert not server.running, "server thread did not stop"


@pytest.fixture
def policy_server() -> Iterator[Callable[..., Server]]:
    """``policy_server(factory, **config)``: a started PolicyServer on a free loopback port."""
    with contextlib.ExitStack() as stack:
        yield lambda factory, **config: stack.enter_context(
            running(PolicyServer(factory, ServerConfig(address=LOOPBACK, **config)))
        )


@pytest.fixture
def policy_client() -> Iterator[Callable[..., PolicyClient]]:
    """``policy_client(address, **client_config)``: a PolicyClient closed after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda address, **config: stack.enter_context(PolicyClient(address, ClientConfig(**config)))


@pytest.fixture
def raw_dealer() -> Iterator[Callable[[str], zmq.Socket]]:
    """``raw_dealer(address)``: a bare DEALER socket for speaking (or breaking) the protocol by hand."""
    context = zmq.Context()
    sockets: list[zmq.Socket] = []

    def connect(address: str) -> zmq.Socket:
        socket = context.socket(zmq.DEALER)
        socket.linger = 0
        socket.rcvtimeo = 3000
        socket.connect(address)
        sockets.append(socket)
        return socket

    yield connect
    for socket in sockets:
        socket.close(linger=0)
    context.term()
