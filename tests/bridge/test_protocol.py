"""The wire format on real sockets: round trips, zero-copy sizes, and each validation rule."""

from __future__ import annotations

import struct

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
        ([header(version="1")], "malformed"),
        ([header(version=1.0)], "malformed"),
        ([header(id=...)], "malformed"),
        ([header(id=-(2**63))], "malformed"),
        ([header(id=-1)], "malformed"),
        ([header(id="7")], "malformed"),
        ([header(type="launch")], "unknown_type"),
        ([header(type=["infer"]), b"x" * 8], "unknown_type"),  # unhashable: must not escape as a TypeError
        ([header(time="now")], "malformed"),
        ([header(body=[1])], "malformed"),
        ([header(extra=1)], "malformed"),
        ([header(arrays={"name": "obs"})], "malformed"),
        ([header(arrays=[{"name": "obs", "dtype": "|O", "shape": [1]}]), b"x" * 8], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": ["<f4"], "shape": [1]}]), b"x" * 4], "malformed"),
        ([header(arrays=[{"name": "obs", "dtype": ">f4", "shape": [1]}]), b"x" * 4], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": "<f4", "shape": [-1]}]), b""], "bad_array"),
        ([header(arrays=[{"name": "obs", "dtype": "<f4", "shape": [1.5]}]), b""], "malformed"),
        ([header(arrays=[{"name": "obs", "dtype": "<f4", "shape": 4}]), b"x" * 16], "malformed"),
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
        ([header(body={"when": [1, {"t": msgpack.Timestamp(1)}]})], "malformed"),
        ([header(elapsed=-0.5)], "malformed"),
        ([header(elapsed=float("nan"))], "malformed"),
        ([header(elapsed="1 ms")], "malformed"),
    ],
)
def test_malformed_messages_raise_protocol_errors_and_are_consumed_whole(pipe, frames, code):
    with pytest.raises(ProtocolError, match=f"^{code}: ") as raised:
        roundtrip(pipe, frames)
    assert raised.value.code == code
    # The next message still parses: the refused one was consumed to its last frame.
    assert roundtrip(pipe, protocol.encode("ping", 3)).type == "ping"


def test_errors_carry_the_request_id_once_it_could_be_read(pipe):
    with pytest.raises(ProtocolError, match="unknown_type: message type 'nope'") as raised:
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
    with pytest.raises(ValueError, match="read-only"):
        message.arrays["obs"][0] = 1.0


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_arrays"):
        Limits(max_arrays=0)
    with pytest.raises(ValueError, match="Limits.max_ndim must be a positive int, got True"):
        Limits(max_ndim=True)


def _fields(message):
    return (message.type, message.request_id, message.time, message.body, message.elapsed, list(message.arrays))


@pytest.mark.parametrize("body", [None, {"compute_s": 0.25}, {"note": "x", "n": [1, 2]}])
def test_a_repeated_layout_decodes_exactly_as_the_full_checks_do(pipe, body):
    """The second message of a layout skips msgpack and the checks; it must come out the same."""
    obs = np.arange(6, dtype=np.float32).reshape(2, 3)
    limits = Limits()
    for request_id in (1, 2, 2**64 - 1):
        frames = protocol.encode("infer", request_id, {"obs": obs}, body, elapsed=0.5)
        remembered = roundtrip(pipe, frames, limits)  # the same Limits: from the second message on, known
        checked = roundtrip(pipe, frames, Limits())  # fresh Limits: always the full checks
        assert _fields(remembered) == _fields(checked)
        assert (remembered.request_id, remembered.elapsed) == (request_id, 0.5)
        np.testing.assert_array_equal(remembered.arrays["obs"], obs)


def test_a_known_layout_is_known_only_under_the_limits_that_checked_it(pipe):
    frames = protocol.encode("infer", 1, {"obs": np.zeros(64, np.float32)})
    roundtrip(pipe, frames)  # remembered under DEFAULT_LIMITS
    with pytest.raises(ProtocolError, match="too_large"):
        roundtrip(pipe, frames, Limits(max_array_bytes=100))
    with pytest.raises(ProtocolError, match="unknown_type"):
        roundtrip(pipe, frames, types=protocol.REPLY_TYPES)


def _negative_elapsed(header_bytes: bytes) -> bytes:
    at = header_bytes.index(b"\xa7elapsed\xcb") + 9
    return header_bytes[:at] + struct.pack(">d", -1.0) + header_bytes[at + 8 :]


@pytest.mark.parametrize(
    "alter",
    [
        lambda h: h[:-1],  # one byte short: the trailer is not where the layout has it
        lambda h: h.replace(b"\xa4time\xcb", b"\xa4tame\xcb"),  # an unknown key in the trailer
        lambda h: h.replace(b"\xa7elapsed\xcb", b"\xa7elapsed\xcf"),  # elapsed as a uint 64: valid, not the layout
        _negative_elapsed,  # the layout's bytes, a value the checks refuse
    ],
)
def test_a_known_layout_with_altered_bytes_decodes_as_the_full_checks_say(pipe, alter):
    obs = {"obs": np.zeros(3, np.float32)}
    roundtrip(pipe, protocol.encode("infer", 1, obs))  # the layout is now known under DEFAULT_LIMITS
    header_bytes, buffer = protocol.encode("infer", 2, obs)
    frames = [alter(header_bytes), buffer.tobytes()]
    outcomes = []
    for limits in (Limits(), DEFAULT_LIMITS):  # full checks, then the known layout's path
        try:
            outcomes.append(_fields(roundtrip(pipe, frames, limits)))
        except ProtocolError as error:
            outcomes.append(error.code)
    assert outcomes[0] == outcomes[1]


def test_a_known_body_layout_with_a_body_that_is_not_a_map_is_refused(pipe):
    roundtrip(pipe, protocol.encode("infer", 1, None, {"compute_s": 0.5}))  # remembered, with its body
    header_bytes = protocol.encode("infer", 2, None, {"compute_s": 0.5})[0]
    # Same length, same start: the body map {"compute_s": 0.5} (20 bytes) becomes a 20-byte string.
    body_at = header_bytes.index(b"\x81\xa9compute_s")
    altered = header_bytes[:body_at] + b"\xb3" + b"x" * 19 + header_bytes[body_at + 20 :]
    with pytest.raises(ProtocolError, match="'body' must be a map"):
        roundtrip(pipe, [altered])


def test_a_body_layout_and_a_layout_without_body_are_never_taken_for_each_other(pipe):
    with_body = protocol.encode("infer", 1, None, {"n": 1.0})[0]
    roundtrip(pipe, [with_body])  # remembered, with its body
    # The start of the bodied layout, up to its body key, then a trailer: the body key's value would be the
    # trailer's first key, which the full checks refuse.
    start = with_body[: with_body.index(b"\xa4body") + 5]
    forged = start + with_body[-protocol._TRAILER_SIZE :]
    with pytest.raises(ProtocolError, match="malformed: header is not valid msgpack"):  # a map one key short
        roundtrip(pipe, [forged])


# --- booleans are not ints --------------------------------------------------------------------------------
# msgpack's true and false decode to Python's bool, a subclass of int (True == 1): each int field of the header
# must refuse them by type. Each alteration turns one int of a header written by ``encode`` into a boolean,
# byte for byte, so that the known-layout path meets exactly the bytes it would otherwise recognise.
def _as_boolean(tag: bytes, width: int):
    def alter(header_bytes: bytes, value: bytes) -> bytes:
        at = header_bytes.index(tag) + len(tag) - 1  # the int's type byte (or the fixint itself)
        return header_bytes[:at] + value + header_bytes[at + 1 + width :]

    return alter


BOOLEAN_INTS = {
    "version": (_as_boolean(b"\xa7version\x01", 0), "malformed", "'version' must be an integer, got (True|False)"),
    "id": (_as_boolean(b"\xa2id\xcf", 8), "malformed", "'id' must be an unsigned 64-bit integer"),
    "time": (_as_boolean(b"\xa4time\xcb", 8), "malformed", "'time' must be a number"),
    "elapsed": (_as_boolean(b"\xa7elapsed\xcb", 8), "malformed", "'elapsed' must be a finite number"),
    "shape entry": (
        _as_boolean(b"\xa5shape\x92\x02", 0),
        "malformed",
        "shape must be a list of ints, got \\[(True|False), 3\\]",
    ),
}


@pytest.mark.parametrize("field", sorted(BOOLEAN_INTS))
@pytest.mark.parametrize("boolean", [b"\xc3", b"\xc2"], ids=["true", "false"])
@pytest.mark.parametrize("path", ["full checks", "known layout"])
def test_a_boolean_where_an_int_belongs_is_refused(pipe, field, boolean, path):
    alter, code, message = BOOLEAN_INTS[field]
    obs = {"obs": np.zeros((2, 3), np.float32)}
    limits = Limits()
    if path == "known layout":
        roundtrip(pipe, protocol.encode("infer", 1, obs), limits)  # the layout is now known under ``limits``
    header_bytes, buffer = protocol.encode("infer", 1, obs)
    altered = alter(header_bytes, boolean)
    with pytest.raises(ProtocolError, match=message) as raised:
        roundtrip(pipe, [altered, buffer.tobytes()], limits)
    assert raised.value.code == code
    # The id of the error reply: the request's own, unless the id itself was the boolean.
    assert raised.value.request_id == (0 if field == "id" else 1)
    assert roundtrip(pipe, protocol.encode("ping", 2), limits).type == "ping"


def test_the_boolean_alterations_change_only_the_one_field():
    """Guards the test above: each altered header decodes to the original with one int made a boolean."""
    header_bytes = protocol.encode("infer", 1, {"obs": np.zeros((2, 3), np.float32)})[0]
    original = msgpack.unpackb(header_bytes)
    for field, (alter, _, _) in BOOLEAN_INTS.items():
        altered = msgpack.unpackb(alter(header_bytes, b"\xc3"))
        if field == "shape entry":
            assert altered["arrays"][0]["shape"] == [True, 3] and type(altered["arrays"][0]["shape"][0]) is bool
            altered["arrays"][0]["shape"][0] = 2
        else:
            assert altered[field] is True
            altered[field] = original[field]
        assert altered == original
