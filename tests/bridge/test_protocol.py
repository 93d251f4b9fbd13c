"""The wire format on real sockets: round trips, zero-copy sizes, and each validation rule."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from worldsim.bridge import protocol
from worldsim.bridge.protocol import Limits, ProtocolError


@pytest.fixture
def pipe():
    """A connected (sender, receiver) pair of sockets over inproc."""
    context = zmq.Context()
    receiver, sender = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    for socket in (receiver, sender):
        socket.linger = 0
        socket.rcvtimeo = 2000
    receiver.bind("inproc://protocol-test")
    sender.connect("inproc://protocol-test")
    yield sender, receiver
    sender.close(linger=0)
    receiver.close(linger=0)
    context.term()


DEFAULT_LIMITS = Limits()


def roundtrip(pipe, frames, limits=DEFAULT_LIMITS, types=protocol.REQUEST_TYPES):
    sender, receiver = pipe
    sender.send_multipart(frames)
    return protocol.receive(receiver, limits, types)


def header(**fields):
    base = {"version": 1, "type": "infer", "id": 7, "time": 1.5, "arrays": []}
    base.update(fields)
    return msgpack.packb({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "int64", "bool", "float16", "int8", "uint16"])
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 6), (200, 200)])  # (200, 200) crosses the zero-copy size
def test_arrays_roundtrip_exactly(pipe, dtype, shape):
    rng = np.random.default_rng(0)
    array = np.asarray(rng.standard_normal(shape) * 100).astype(dtype)
    frames = protocol.encode("infer", 42, {"obs": array, "other": np.arange(3)}, {"note": "x"})
    sender, _ = pipe
    protocol.send(sender, frames)
    message = protocol.receive(pipe[1], Limits(), protocol.REQUEST_TYPES)
    assert (message.type, message.request_id, message.body) == ("infer", 42, {"note": "x"})
    np.testing.assert_array_equal(message.arrays["obs"], array)
    assert message.arrays["obs"].dtype == array.dtype and message.arrays["obs"].shape == shape
    np.testing.assert_array_equal(message.arrays["other"], np.arange(3))


def test_non_contiguous_and_big_endian_input_is_sent_as_contiguous_little_endian(pipe):
    array = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    with pytest.raises(ValueError, match="dtype"):
        protocol.encode("infer", 1, {"obs": array})
    message = roundtrip(pipe, protocol.encode("infer", 1, {"obs": array.astype("<f4")}))
    np.testing.assert_array_equal(message.arrays["obs"], array)


def test_object_arrays_cannot_be_encoded():
    with pytest.raises(ValueError, match="dtype"):
        protocol.encode("infer", 1, {"obs": np.array([{"a": 1}], dtype=object)})


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"\xc1garbage"], "malformed"),
        ([msgpack.packb([1, 2, 3])], "malformed"),
        ([header(version=2)], "unsupported_version"),
        ([header(version=...)], "unsupported_version"),
        ([header(id=-1)], "malformed"),
        ([header(id="7")], "malformed"),
        ([header(type="launch")], "unknown_type"),
        ([header(type=["infer"]), b"x" * 8], "unknown_type"),  # unhashable: must not escape as a TypeError
        ([header(time="now")], "malformed"),
        ([header(body=[1])], "malformed"),
        ([header(extra=1)], "malformed"),
        ([header(arrays={"name": "obs"})], "malformed"),
        ([header(arrays=[{"name": "obs", "dtype": "|O", "shape": [1]}]), b"x" * 8], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": ["<f4"], "shape": [1]}]), b"x" * 4], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": ">f4", "shape": [1]}]), b"x" * 4], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": "<f4", "shape": [-1]}]), b""], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": "<f4", "shape": [1.5]}]), b""], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": "<f4", "shape": [1] * 9}]), b"xxxx"], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": "<f4", "shape": [2, 6]}]), b"x" * 10], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": "<f4", "shape": [2]}])], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": "<f4", "shape": [1]}]), b"xxxx", b"more"], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": "<f8", "shape": [10**12, 10**12]}]), b""], "too_large"),
        ([header(arrays=[{"name": "", "dtype": "<f4", "shape": [1]}]), b"xxxx"], "malformed"),
        ([header(arrays=[{"name": "a", "dtype": "<f4", "shape": [1]}] * 2), b"xxxx", b"xxxx"], "malformed"),
        ([header(arrays=[{"name": f"a{i}", "dtype": "<f4", "shape": [1]} for i in range(17)])], "too_large"),
        ([msgpack.packb({"version": 1, "blob": "x" * 70000})], "too_large"),
        ([msgpack.packb(msgpack.ExtType(5, b"\x00"))], "malformed"),
        ([header(time=msgpack.Timestamp(1))], "malformed"),
    ],
)
def test_malformed_messages_raise_protocol_errors_and_are_consumed_whole(pipe, frames, code):
    with pytest.raises(ProtocolError) as raised:
        roundtrip(pipe, frames)
    assert raised.value.code == code
    # The next message still parses: the refused one was consumed to its last frame.
    assert roundtrip(pipe, protocol.encode("ping", 3)).type == "ping"


def test_errors_carry_the_request_id_once_it_could_be_read(pipe):
    with pytest.raises(ProtocolError) as raised:
        roundtrip(pipe, [header(id=99, type="nope")])
    assert raised.value.request_id == 99
    frames = protocol.error_frames(raised.value)
    reply = roundtrip(pipe, frames, types=protocol.REPLY_TYPES)
    assert (reply.type, reply.request_id, reply.body["code"]) == ("error", 99, "unknown_type")


def test_message_level_size_limit(pipe):
    limits = Limits(max_array_bytes=1000)
    frames = protocol.encode("infer", 1, {"obs": np.zeros(251, np.float32)})
    with pytest.raises(ProtocolError, match="too_large"):
        roundtrip(pipe, frames, limits)
    assert roundtrip(pipe, protocol.encode("infer", 1, {"obs": np.zeros(250, np.float32)}), limits)


def test_received_arrays_are_read_only(pipe):
    message = roundtrip(pipe, protocol.encode("infer", 1, {"obs": np.zeros(4, np.float32)}))
    with pytest.raises(ValueError):
        message.arrays["obs"][0] = 1.0


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_arrays"):
        Limits(max_arrays=0)
