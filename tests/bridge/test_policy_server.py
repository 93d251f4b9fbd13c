"""PolicyServer and PolicyClient over loopback TCP: metadata, per-client state, session lifetime, bad set-ups."""

from __future__ import annotations

import re
import threading
import time

import gymnasium as gym
import msgpack
import numpy as np
import pytest
import zmq

from tests.bridge.policies import CountingPolicy, IntegratorSession, TickPolicy
from worldsim.bridge import (
    ClientConfig,
    PolicyServer,
    ProtocolError,
    ServerConfig,
    ServerError,
    WorldModelClient,
    WorldModelServer,
    protocol,
)


def obs(value: float) -> np.ndarray:
    return np.full((2, 3), value, np.float32)


def test_hello_announces_the_policy(policy_server, policy_client):
    server = policy_server(CountingPolicy)
    info = policy_client(server.address).connect()
    assert (info.model_kind, info.protocol_version, info.server_id) == ("policy", 1, server.server_id)
    assert info.observation_space == CountingPolicy.observation_space
    assert info.action_space == CountingPolicy.action_space
    assert {k: info.body[k] for k in ("obs_horizon", "horizon", "n_action_steps")} == {
        "obs_horizon": 2,
        "horizon": 4,
        "n_action_steps": 2,
    }


def test_two_clients_at_once_keep_independent_state(policy_server, policy_client):
    server = policy_server(CountingPolicy)
    clients = [policy_client(server.address) for _ in range(2)]
    references = [CountingPolicy() for _ in range(2)]
    inputs = [[obs(v) for v in (1.0, -2.0, 0.5, 3.0)], [obs(v) for v in (4.0, 4.0, -1.0, 0.0)]]
    results: list[list[np.ndarray]] = [[], []]

    def drive(index: int) -> None:
        for x in inputs[index]:
            results[index].append(np.array(clients[index].infer(x)))

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for index in range(2):
        expected = [references[index].predict_chunk(x) for x in inputs[index]]
        np.testing.assert_array_equal(np.stack(results[index]), np.stack(expected))
    assert server.session_count == 2
    # A reset reaches only the client that sent it.
    clients[0].reset()
    np.testing.assert_array_equal(clients[0].infer(obs(1.0)), CountingPolicy().predict_chunk(obs(1.0)))
    np.testing.assert_array_equal(clients[1].infer(obs(2.0)), references[1].predict_chunk(obs(2.0)))


def test_an_idle_client_is_forgotten_after_the_session_timeout(policy_server, policy_client):
    server = policy_server(CountingPolicy, session_timeout_s=0.2)
    client = policy_client(server.address)
    client.infer(obs(1.0))
    assert server.session_count == 1
    deadline = time.monotonic() + 5
    while server.session_count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.session_count == 0 and server.stats.sessions_expired == 1
    # Coming back later starts from a fresh policy.
    np.testing.assert_array_equal(client.infer(obs(1.0)), CountingPolicy().predict_chunk(obs(1.0)))


def test_closing_a_client_frees_its_session(policy_server, policy_client):
    server = policy_server(CountingPolicy)
    client = policy_client(server.address)
    client.infer(obs(1.0))
    client.close()
    deadline = time.monotonic() + 5
    while server.session_count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.session_count == 0 and server.stats.sessions_expired == 0


def test_a_full_server_says_busy(policy_server, policy_client):
    server = policy_server(CountingPolicy, max_sessions=1)
    policy_client(server.address).infer(obs(1.0))
    with pytest.raises(ServerError, match="busy"):
        policy_client(server.address).infer(obs(1.0))


def test_client_checks_observation_shape_before_sending(policy_server, policy_client):
    client = policy_client(policy_server(CountingPolicy).address)
    client.connect()
    with pytest.raises(ValueError, match="obs_history must be"):
        client.infer(np.zeros((3,), np.float32))
    with pytest.raises(ValueError, match="float32"):
        client.infer(np.zeros((2, 3), np.float64))


def test_a_silent_address_times_out(policy_client):
    client = policy_client("tcp://127.0.0.1:9", timeout_s=0.2)
    with pytest.raises(TimeoutError, match="no policy server"):
        client.infer(obs(1.0))


def test_serving_something_that_is_not_a_policy_fails_early():
    class NoChunks:
        observation_space = action_space = gym.spaces.Box(-1, 1, (2,))
        obs_horizon = horizon = n_action_steps = 1

        def reset(self):
            pass

    with pytest.raises(TypeError, match="predict_chunk"):
        PolicyServer(NoChunks)

    class DictObs(CountingPolicy):
        observation_space = gym.spaces.Dict({"a": gym.spaces.Discrete(3)})

    with pytest.raises(TypeError, match="observation_space must be a gymnasium.spaces.Box"):
        PolicyServer(DictObs)

    class ZeroHorizon(CountingPolicy):
        horizon = 0

    with pytest.raises(TypeError, match="horizon must be a positive int"):
        PolicyServer(ZeroHorizon)


def test_a_policy_returning_the_wrong_chunk_shape_is_an_internal_error(policy_server, policy_client):
    class Short(CountingPolicy):
        def predict_chunk(self, obs_history):
            return super().predict_chunk(obs_history)[:2]

    client = policy_client(policy_server(Short).address)
    with pytest.raises(ServerError, match="internal.*shape"):
        client.infer(obs(1.0))


@pytest.mark.parametrize("address", ["tcp://0.0.0.0:5555", "tcp://192.168.1.4:5555", "tcp://eth0:5555"])
def test_without_keys_only_local_addresses_are_served(address):
    with pytest.raises(ValueError, match="refusing to serve unencrypted"):
        ServerConfig(address=address)
    assert ServerConfig(address=address, allow_insecure=True).address == address


def test_a_bind_error_is_raised_by_start(policy_server):
    server = policy_server(CountingPolicy)
    with pytest.raises(zmq.ZMQError, match="Address already in use"):
        PolicyServer(CountingPolicy, ServerConfig(address=server.address)).start()


def test_a_failing_factory_is_an_internal_error_for_that_client_only(policy_server, policy_client):
    built = []

    def flaky_factory() -> CountingPolicy:
        built.append(1)
        if len(built) == 3:
            raise MemoryError("no room for another policy")
        return CountingPolicy()

    server = policy_server(flaky_factory)  # instance 1: the server's prototype, handed to the first client
    first = policy_client(server.address)
    first.infer(obs(1.0))
    policy_client(server.address).infer(obs(1.0))  # instance 2
    with pytest.raises(ServerError, match="internal.*MemoryError"):
        policy_client(server.address).infer(obs(1.0))  # instance 3 fails
    assert first.infer(obs(1.0)).shape == (4, 2) and server.session_count == 2


def test_ping_keeps_an_idle_session_alive(policy_server, policy_client):
    server = policy_server(CountingPolicy, session_timeout_s=1.0)
    client = policy_client(server.address)
    client.infer(obs(1.0))
    for _ in range(20):  # 2 s of pings, twice the session timeout
        client.ping()
        time.sleep(0.1)
    assert server.session_count == 1 and server.stats.sessions_expired == 0


def answer_hello_with(body_change: dict, make_server=lambda config: PolicyServer(CountingPolicy, config)):
    """A raw ROUTER that answers one ``hello`` with a real server's description, altered by ``body_change``."""
    body, arrays = make_server(ServerConfig(address="tcp://127.0.0.1:*"))._hello_reply()
    body = {**body, **body_change}
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.linger, router.rcvtimeo = 0, 5000
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def serve() -> None:
        routing_id, header = router.recv_multipart()
        request_id = msgpack.unpackb(header)["id"]
        router.send_multipart([routing_id, *protocol.encode("hello", request_id, arrays, body)])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"tcp://127.0.0.1:{port}", lambda: (thread.join(5), router.close(linger=0), context.term())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"obs_horizon": True}, "'obs_horizon' must be an integer >= 1, got True"),
        ({"horizon": False}, "'horizon' must be an integer >= 1, got False"),
        ({"n_action_steps": True}, "'n_action_steps' must be an integer >= 1, got True"),
        ({"protocol_version": True}, "'protocol_version' must be an integer >= 1, got True"),
        ({"session_timeout_s": True}, "'session_timeout_s' must be a positive number, got True"),
    ],
)
def test_a_hello_with_a_boolean_where_an_int_belongs_is_refused(change, message, policy_client):
    """The client holds the server's hello to the same rule as the server holds requests: true is not 1."""
    address, close = answer_hello_with(change)
    try:
        with pytest.raises(ProtocolError, match=f"malformed: .*{re.escape(message)}"):
            policy_client(address, timeout_s=3.0).connect()
    finally:
        close()


@pytest.mark.parametrize(("size", "accepted"), [(1, True), (True, False)])
def test_a_hello_space_shape_must_hold_ints_not_booleans(size, accepted, policy_client):
    """TickPolicy's spaces have shape (1,), and [True] == [1] in Python: only the type tells them apart."""
    space = {"type": "box", "dtype": "<f4", "shape": [size]}
    address, close = answer_hello_with({"action_space": space}, lambda config: PolicyServer(TickPolicy, config))
    try:
        client = policy_client(address, timeout_s=3.0)
        if accepted:
            assert client.connect().action_space.shape == (1,)
        else:
            with pytest.raises(ProtocolError, match="'action_space': bounds disagree"):
                client.connect()
    finally:
        close()


def test_a_world_model_hello_with_a_boolean_frame_count_is_refused(policy_client):
    address, close = answer_hello_with(
        {"max_context_frames": True}, lambda config: WorldModelServer(IntegratorSession, config)
    )
    try:
        with (
            WorldModelClient(address, ClientConfig(timeout_s=3.0)) as client,
            pytest.raises(ProtocolError, match="'max_context_frames' must be an integer >= 1, got True"),
        ):
            client.connect()
    finally:
        close()


def test_infer_carries_a_frozen_prefix_and_executed_steps(policy_server, policy_client):
    """A policy that takes them gets them; bad ones are refused with the reason; a policy that takes
    neither (TickPolicy) is handed neither and still answers."""
    from tests.bridge.policies import PrefixTickPolicy

    served = PrefixTickPolicy()
    client = policy_client(policy_server(lambda: served).address)
    client.connect()
    prefix = np.array([[7.0], [8.0]], np.float32)
    client.submit(np.array([[5.0]], np.float32), prefix=prefix, executed_steps=3)
    reply = client.poll(5.0)
    assert reply.actions[:2, 0].tolist() == [7.0, 8.0] and reply.actions[2, 0] == 502.0
    assert served.requests[-1][0] == 3 and served.requests[-1][1][:, 0].tolist() == [7.0, 8.0]
    with pytest.raises(ValueError, match=r"prefix must be \[d, 1\] with 0 < d < 8"):
        client.submit(np.array([[5.0]], np.float32), prefix=np.zeros((8, 1), np.float32))
    raw = client.connection
    raw.submit("infer", {"obs_history": np.array([[5.0]], np.float32), "prefix": np.full((2, 1), np.nan, np.float32)})
    with pytest.raises(ServerError, match="'prefix' contains NaN"):
        client.poll(5.0)
    raw.submit("infer", {"obs_history": np.array([[5.0]], np.float32)}, {"executed_steps": -1})
    with pytest.raises(ServerError, match="executed_steps must be an int >= 0"):
        client.poll(5.0)
    plain = policy_client(policy_server(TickPolicy).address)
    plain.connect()
    plain.submit(np.array([[5.0]], np.float32), prefix=np.ones((3, 1), np.float32), executed_steps=2)
    assert plain.poll(5.0).actions[:3, 0].tolist() == [5.0, 6.0, 7.0]
