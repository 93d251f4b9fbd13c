"""WorldModelServer and WorldModelClient: a streaming session per client, context validation."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from tests.bridge.conftest import LOOPBACK, running
from tests.bridge.policies import IntegratorSession
from worldsim.bridge import ClientConfig, ServerConfig, ServerError, WorldModelClient, WorldModelServer


@pytest.fixture
def world():
    """(server, make_client): a WorldModelServer over IntegratorSession and a client factory."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            running(WorldModelServer(IntegratorSession, ServerConfig(address=LOOPBACK), max_context_frames=8))
        )
        yield server, lambda: stack.enter_context(WorldModelClient(server.address, ClientConfig(timeout_s=2.0)))


def context(value: float, frames: int = 3) -> tuple[np.ndarray, np.ndarray]:
    obs = np.full((frames, 4), value, np.float32)
    return obs, np.full((frames - 1, 4), value / 10, np.float32)


def test_reset_then_step_streams_the_sessions_frames(world):
    server, make_client = world
    client = make_client()
    assert client.connect().model_kind == "world_model"
    assert client.info.body["max_context_frames"] == 8
    reference = IntegratorSession()
    client.reset(*context(2.0))
    reference.reset(*context(2.0))
    for step in range(5):
        action = np.full(4, 0.1 * step, np.float32)
        np.testing.assert_array_equal(client.step(action), reference.step(action))


def test_two_clients_stream_independently(world):
    server, make_client = world
    first, second = make_client(), make_client()
    first.reset(*context(1.0))
    second.reset(*context(-4.0))
    action = np.zeros(4, np.float32)
    a, b = first.step(action), second.step(action)
    assert a[0] != b[0]
    expected = IntegratorSession()
    expected.reset(*context(1.0))
    expected.step(action)
    np.testing.assert_array_equal(first.step(action), expected.step(action))
    assert server.session_count == 2


def test_step_before_reset_and_bad_context_are_refused(world):
    server, make_client = world
    client = make_client()
    with pytest.raises(ServerError, match="bad_request.*reset"):
        client.step(np.zeros(4, np.float32))
    with pytest.raises(ServerError, match="bad_array.*1-8 frames"):
        client.reset(*context(1.0, frames=9))
    with pytest.raises(ServerError, match="bad_array"):
        client.reset(np.zeros((2, 5), np.float32), np.zeros((1, 4), np.float32))
    with pytest.raises(ServerError, match="rejected.*one action between"):  # the session's own check
        client.reset(np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ServerError, match="bad_request.*reset"):  # a failed reset leaves no steppable stream
        client.step(np.zeros(4, np.float32))
    client.reset(*context(1.0))
    with pytest.raises(ServerError, match="bad_array"):
        client.step(np.zeros(4, np.float64))
    with pytest.raises(ServerError, match="bad_request.*infer"):
        client.connection.request("infer")
    assert client.step(np.zeros(4, np.float32)).shape == (4,)


def test_a_policy_client_refuses_a_world_model_server(world, policy_client):
    server, _ = world
    with pytest.raises(ServerError, match="serves a world_model, not a policy"):
        policy_client(server.address).connect()
