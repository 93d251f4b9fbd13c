"""Malformed, lying and random messages against a live PolicyServer: each gets an error reply, none crashes it."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from tests.bridge.policies import CountingPolicy
from worldsim.bridge import ServerError, protocol

OBS = np.ones((2, 3), np.float32)


def valid_infer(request_id: int = 1) -> list[bytes]:
    header, obs = protocol.encode("infer", request_id, {"obs_history": OBS})
    return [header, obs.tobytes()]


def reply(socket: zmq.Socket) -> protocol.Message:
    return protocol.receive(socket, protocol.Limits(), protocol.REPLY_TYPES)


def packed(**fields) -> bytes:
    base = {
        "version": 1,
        "type": "infer",
        "id": 5,
        "time": 0.0,
        "arrays": [{"name": "obs_history", "dtype": "<f4", "shape": [2, 3]}],
    }
    base.update(fields)
    return msgpack.packb(base)


CASES = {
    "random bytes": ([bytes(range(256)) * 3], "malformed"),
    "empty frame": ([b""], "malformed"),
    "wrong version": ([packed(version=0), OBS.tobytes()], "unsupported_version"),
    "wrong dtype": (
        [packed(arrays=[{"name": "obs_history", "dtype": "<f8", "shape": [2, 3]}]), OBS.astype(np.float64).tobytes()],
        "bad_array",
    ),
    "object dtype": (
        [packed(arrays=[{"name": "obs_history", "dtype": "|O", "shape": [2, 3]}]), b"\0" * 48],
        "bad_array",
    ),
    "lying shape": (
        [packed(arrays=[{"name": "obs_history", "dtype": "<f4", "shape": [200, 3]}]), OBS.tobytes()],
        "bad_array",
    ),
    "shape off the space": (
        [packed(arrays=[{"name": "obs_history", "dtype": "<f4", "shape": [3, 2]}]), OBS.tobytes()],
        "bad_array",
    ),
    "huge declared size": (
        [packed(arrays=[{"name": "obs_history", "dtype": "<f4", "shape": [2**40, 2**40]}])],
        "too_large",
    ),
    "missing buffer": ([packed()], "bad_array"),
    "wrong array name": (
        [packed(arrays=[{"name": "obs", "dtype": "<f4", "shape": [2, 3]}]), OBS.tobytes()],
        "bad_request",
    ),
    "nan observation": ([packed(), np.full((2, 3), np.nan, np.float32).tobytes()], "bad_array"),
    "world-model message": ([packed(type="step", arrays=[])], "bad_request"),
    "reply type as request": ([packed(type="action")], "unknown_type"),
    "negative id": ([packed(id=-3), OBS.tobytes()], "malformed"),
    "zero id": ([packed(id=0), OBS.tobytes()], "malformed"),
    "boolean version": ([packed(version=True), OBS.tobytes()], "malformed"),
    "boolean id": ([packed(id=True), OBS.tobytes()], "malformed"),
    "boolean time": ([packed(time=True), OBS.tobytes()], "malformed"),
    "boolean shape entry": (
        [packed(arrays=[{"name": "obs_history", "dtype": "<f4", "shape": [2, True]}]), OBS.tobytes()],
        "malformed",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_malformed_message_gets_an_error_reply(policy_server, raw_dealer, case):
    server = policy_server(CountingPolicy)
    socket = raw_dealer(server.address)
    frames, code = CASES[case]
    socket.send_multipart(frames)
    answer = reply(socket)
    assert (answer.type, answer.body["code"]) == ("error", code), answer.body
    socket.send_multipart(valid_infer(9))
    assert reply(socket).type == "action"
    assert server.running and server.stats.errors == 1


def test_random_mutations_of_a_valid_message_each_get_exactly_one_reply(policy_server, raw_dealer):
    server = policy_server(CountingPolicy)
    socket = raw_dealer(server.address)
    rng = np.random.default_rng(0)
    kinds = {"action": 0, "error": 0}
    for request in range(300):
        frames = valid_infer(request + 1)
        index = int(rng.integers(len(frames)))
        data = bytearray(frames[index])
        for _ in range(int(rng.integers(1, 4))):
            if data and rng.random() < 0.7:
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            else:
                del data[int(rng.integers(len(data) + 1)) :]
        frames[index] = bytes(data)
        if rng.random() < 0.1:
            frames.append(bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)))
        socket.send_multipart(frames)
        kinds[reply(socket).type] += 1
    assert sum(kinds.values()) == 300 and kinds["error"] > 100
    assert server.stats.messages == 300 and server.stats.errors == kinds["error"]
    socket.send_multipart(valid_infer(1000))
    assert reply(socket).type == "action" and server.running


def test_a_model_exception_is_an_error_reply_and_the_server_keeps_serving(policy_server, policy_client):
    class Exploding(CountingPolicy):
        def predict_chunk(self, obs_history):
            if obs_history[0, 0] < 0:
                raise ZeroDivisionError("boom")
            if obs_history[0, 0] > 5:
                raise ValueError("observation out of range")
            return super().predict_chunk(obs_history)

    server = policy_server(Exploding)
    client = policy_client(server.address)
    client.connect()
    with pytest.raises(ServerError, match="internal.*ZeroDivisionError: boom"):
        client.infer(-OBS)
    with pytest.raises(ServerError, match="rejected.*out of range"):
        client.infer(OBS * 9)
    assert client.infer(OBS).shape == (4, 2)


def test_a_frame_beyond_the_hard_limit_drops_that_peer_only(policy_server, raw_dealer, policy_client):
    server = policy_server(CountingPolicy, limits=protocol.Limits(max_header_bytes=1024, max_array_bytes=1024))
    attacker = raw_dealer(server.address)
    attacker.send_multipart([b"x" * 10_000])
    client = policy_client(server.address)
    client.connect()
    assert client.infer(OBS).shape == (4, 2)
    assert server.stats.messages == 2  # hello and infer: the oversized frame never reached the server loop
