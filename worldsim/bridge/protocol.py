"""The wire format: one msgpack header frame followed by one raw buffer per array (see docs/protocol.md).

Decoding never trusts the peer: sizes are checked before any array is built, dtypes come from a
whitelist of plain little-endian numeric types (no object dtype, so nothing can execute code), and every
buffer must be exactly as long as its declared dtype and shape. Anything else raises ``ProtocolError``
carrying the error code and the request id (when it could be read) for the ``error`` reply.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import zmq

PROTOCOL_VERSION = 1

REQUEST_TYPES = frozenset({"hello", "ping", "reset", "infer", "step", "bye"})
REPLY_TYPES = frozenset({"hello", "pong", "reset", "action", "frame", "bye", "error"})

# Little-endian or single-byte numeric types only: plain machine types every language can map.
_NUMPY_DTYPES = {
    name: np.dtype(name)
    for name in ("|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8")
}
DTYPES = frozenset(_NUMPY_DTYPES)

# Plain ints: combining pyzmq's enum flags costs more than the system call they go to, on every message
# (which is also why ``send`` loops over frames itself instead of calling ``send_multipart``).
_NOBLOCK, RCVMORE = int(zmq.NOBLOCK), int(zmq.RCVMORE)
_NOBLOCK_MORE = _NOBLOCK | int(zmq.SNDMORE)

# Below this size copying a buffer into a ZeroMQ message is cheaper than pinning it (pyzmq's own threshold).
ZERO_COPY_BYTES = 65536

_HEADER_KEYS = frozenset({"version", "type", "id", "time", "elapsed", "arrays", "body"})
_SPEC_KEYS = frozenset({"name", "dtype", "shape"})
_EMPTY: dict[str, Any] = {}
_NO_ARRAYS: list[Any] = []
_MAX_ID = 2**64 - 1


# Every code an ``error`` reply can carry (docs/protocol.md's table of failures names each one).
ERROR_CODES = (
    "malformed",
    "unsupported_version",
    "unknown_type",
    "too_large",
    "bad_array",
    "bad_request",
    "rejected",
    "internal",
    "busy",
)


class ProtocolError(Exception):
    """A message that breaks the protocol; ``code`` is the error code of the ``error`` reply."""

    def __init__(self, code: str, message: str, request_id: int = 0) -> None:
        if code not in ERROR_CODES:  # a code the protocol page does not define would reach clients otherwise
            raise ValueError(f"{code!r} is not a protocol error code ({', '.join(ERROR_CODES)})")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts; larger or deeper messages are refused before any allocation.

    ``max_array_bytes`` bounds the sum of all array buffers of one message; ``max_frame_bytes`` is the
    ZeroMQ-level cut-off (``MAXMSGSIZE``): a peer sending a larger frame is disconnected without a reply.
    """

    max_header_bytes: int = 65536
    max_arrays: int = 16
    max_ndim: int = 8
    max_name_length: int = 64
    max_array_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_arrays", "max_ndim", "max_name_length", "max_array_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:  # (True would pass as 1 otherwise)
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        # Header layouts that passed the checks under these limits, packed start -> (type, array specs): without
        # a body, and with one (start up to the body's key; found through header length -> start length).
        object.__setattr__(self, "_layouts", {})
        object.__setattr__(self, "_body_layouts", {})
        object.__setattr__(self, "_body_starts", {})

    @property
    def max_frame_bytes(self) -> int:
        return max(self.max_header_bytes, self.max_array_bytes) + 1


@dataclass(slots=True)
class Message:
    """A decoded message. Arrays are read-only views of the received buffers."""

    type: str
    request_id: int
    time: float
    arrays: dict[str, np.ndarray]
    body: dict[str, Any]
    elapsed: float
    """In a reply: the seconds the server's model spent on the request (0 where it computed nothing)."""


def encode(
    msg_type: str,
    request_id: int,
    arrays: Mapping[str, np.ndarray] | None = None,
    body: Mapping[str, Any] | None = None,
    elapsed: float = 0.0,
) -> list[Any]:
    """The frames of one message: the packed header, then each array as a C-contiguous buffer (arrays of
    ``ZERO_COPY_BYTES`` or more as frames that share their memory)."""
    keys: tuple = ()
    buffers: list[Any] = []
    if arrays:
        specs = []
        for name, array in arrays.items():
            if type(array) is not np.ndarray:
                array = np.asarray(array)
            if not array.flags.c_contiguous:  # (np.ascontiguousarray would also turn 0-d arrays into 1-d ones)
                array = array.copy(order="C")
            specs.append((name, array.dtype, array.shape))
            buffers.append(zmq.Frame(array, copy=False) if array.nbytes >= ZERO_COPY_BYTES else array)
        keys = tuple(specs)
    # The header map is {version, type, arrays[, body], elapsed, id, time}, packed from cached pieces: a stream
    # repeats the same message types and array specs, and only the numbers change. They come last, at fixed
    # widths, so that a receiver recognises a layout it has checked before (see ``receive``).
    start = _STARTS.get((msg_type, not body, keys)) or _new_start(msg_type, bool(body), keys)
    trailer = _TRAILER.pack(_ELAPSED_TAG, elapsed, _ID_TAG, request_id, _TIME_TAG, time.time())
    header = b"".join((start, _BODY_KEY, _packb(body), trailer)) if body else start + trailer
    return [header, *buffers]


# One shared packer: with autoreset each call returns one packed object, and packing these plain types runs
# no Python code and never releases the GIL, so threads (a server and its clients in one process) cannot
# interleave inside a call.
_packb = msgpack.Packer().pack
_BODY_KEY = _packb("body")
# The id always as msgpack uint 64, the times as float 64: fixed widths give each layout one trailer.
_ELAPSED_TAG = _packb("elapsed") + b"\xcb"
_ID_TAG = _packb("id") + b"\xcf"
_TIME_TAG = _packb("time") + b"\xcb"
_TAGS = (_ELAPSED_TAG, _ID_TAG, _TIME_TAG)
_TRAILER = struct.Struct(f">{len(_ELAPSED_TAG)}sd{len(_ID_TAG)}sQ{len(_TIME_TAG)}sd")
_TRAILER_SIZE = _TRAILER.size

# Packed header starts by message type, body or not, and array specs; bounded, because types, names and
# shapes come from callers.
_STARTS: dict[tuple[str, bool, tuple[tuple[str, np.dtype, tuple[int, ...]], ...]], bytes] = {}  # (type, no body, specs)


def _new_start(msg_type: str, with_body: bool, keys: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]) -> bytes:
    for name, dtype, _ in keys:
        if dtype.str not in DTYPES:
            raise ValueError(f"array {name!r}: dtype {dtype} is not one the protocol carries ({sorted(DTYPES)})")
    if len(_STARTS) >= 256:
        _STARTS.clear()
    specs = [{"name": name, "dtype": dtype.str, "shape": list(shape)} for name, dtype, shape in keys]
    start = _STARTS[(msg_type, not with_body, keys)] = (
        bytes([0x80 | (7 if with_body else 6)]) + _packb("version") + _packb(PROTOCOL_VERSION) + _packb("type")
        + _packb(msg_type) + _packb("arrays") + _packb(specs)
    )  # fmt: skip
    return start


def send(socket: zmq.Socket, frames: list[Any], routing_id: bytes | None = None) -> None:
    """Send ``encode``'s frames without blocking (a full queue raises ``zmq.Again``)."""
    # Only the first part of a message can meet a full queue: ZeroMQ then accepts the rest of it.
    if routing_id is not None:
        _send_frame(socket, routing_id, _NOBLOCK_MORE)
    last = len(frames) - 1
    for index in range(last):
        _send_frame(socket, frames[index], _NOBLOCK_MORE)
    _send_frame(socket, frames[last], _NOBLOCK)


# pyzmq's Python-level ``Socket.send`` only adds draft-API options (routing_id, group) on the way to this
# compiled method: calling it directly saves a Python call on every frame.
_send_frame = zmq.backend.Socket.send


# msgpack >= 1.0's defaults (raw=False, strict_map_key=True, timestamp=0) are the protocol's, and each keyword
# passed costs more than the decoding of a small header: only ``ext_hook`` is passed.
_unpackb = msgpack.unpackb


def _reject_ext(code: int, data: bytes) -> None:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _drain(socket: zmq.Socket) -> None:
    while socket.get(RCVMORE):
        socket.recv(copy=False)


def _unpack_header(raw: bytes, limits: Limits) -> dict[str, Any]:
    if len(raw) > limits.max_header_bytes:
        raise ProtocolError("too_large", f"header of {len(raw)} bytes exceeds {limits.max_header_bytes}")
    try:
        header = _unpackb(raw, ext_hook=_reject_ext)
    except Exception as error:  # msgpack raises a zoo of types for garbage; all mean the same here
        raise ProtocolError("malformed", f"header is not valid msgpack ({type(error).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError("malformed", f"header must be a map, got {type(header).__name__}")
    return header


def _readable_id(header: dict[str, Any]) -> int:
    """The header's id if it is one (an unsigned 64-bit integer), else 0: the id of the error reply."""
    value = header.get("id")
    # ``type(...) is int``, not isinstance: msgpack's true and false decode to bool, which is an int subclass.
    return value if type(value) is int and 0 <= value <= _MAX_ID else 0


def _array_specs(specs: Any, limits: Limits, request_id: int) -> list[tuple[str, np.dtype, tuple[int, ...], int]]:
    """``(name, dtype, shape, nbytes)`` per declared array, all checked against ``limits``."""
    if type(specs) is not list:
        raise ProtocolError("malformed", "'arrays' must be a list", request_id)
    if len(specs) > limits.max_arrays:
        raise ProtocolError("too_large", f"{len(specs)} arrays exceed the limit of {limits.max_arrays}", request_id)
    parsed, names, total = [], set(), 0
    for spec in specs:
        if type(spec) is not dict or spec.keys() != _SPEC_KEYS:
            raise ProtocolError("malformed", "an array spec is a map of exactly name, dtype, shape", request_id)
        name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
        if type(name) is not str or not 0 < len(name) <= limits.max_name_length or name in names:
            raise ProtocolError(
                "malformed", f"array names must be unique strings of 1-{limits.max_name_length} chars", request_id
            )
        # Wrong msgpack types are ``malformed`` (as everywhere in the header); well-typed values the server does
        # not take are ``bad_array``. A boolean is not an int: msgpack's true/false decode to bool, an int subclass.
        if type(dtype) is not str:
            raise ProtocolError("malformed", f"array {name!r}: dtype must be a string, got {dtype!r}", request_id)
        if type(shape) is not list or any(type(size) is not int for size in shape):
            raise ProtocolError("malformed", f"array {name!r}: shape must be a list of ints, got {shape!r}", request_id)
        dtype = _NUMPY_DTYPES.get(dtype)
        if dtype is None:
            raise ProtocolError("bad_array", f"array {name!r}: dtype {spec['dtype']!r} is not allowed", request_id)
        if len(shape) > limits.max_ndim:
            raise ProtocolError("bad_array", f"array {name!r}: more than {limits.max_ndim} dimensions", request_id)
        if any(size < 0 for size in shape):
            raise ProtocolError("bad_array", f"array {name!r}: shape {shape} holds a negative size", request_id)
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a lying shape cannot overflow
        total += nbytes
        if total > limits.max_array_bytes:
            raise ProtocolError("too_large", f"arrays declare more than {limits.max_array_bytes} bytes", request_id)
        names.add(name)
        parsed.append((name, dtype, tuple(shape), nbytes))
    return parsed


def _check_header(header: dict[str, Any], limits: Limits, types: frozenset[str]) -> tuple[int, list]:
    request_id = _readable_id(header)
    # The version is judged first: a header of another version is never held to this version's rules.
    version = header.get("version")
    if "version" in header and type(version) is not int:  # true/false are booleans, not version numbers
        raise ProtocolError("malformed", f"'version' must be an integer, got {version!r}", request_id)
    if version != PROTOCOL_VERSION:
        said = "no 'version'" if "version" not in header else f"protocol version {version}"
        raise ProtocolError("unsupported_version", f"{said}: this server speaks {PROTOCOL_VERSION}", request_id)
    if type(header.get("id")) is not int or header["id"] != request_id:  # missing, a boolean, out of range
        raise ProtocolError("malformed", "'id' must be an unsigned 64-bit integer (not a boolean)")
    if not header.keys() <= _HEADER_KEYS:
        raise ProtocolError(
            "malformed", f"unknown header keys {sorted(map(str, header.keys() - _HEADER_KEYS))}", request_id
        )
    msg_type = header.get("type")
    if type(msg_type) is not str or msg_type not in types:
        raise ProtocolError(
            "unknown_type", f"message type {header.get('type')!r} is not one of {sorted(types)}", request_id
        )
    if type(header.get("time")) not in (int, float):  # (a bool's type is bool: refused)
        raise ProtocolError("malformed", "'time' must be a number (not a boolean)", request_id)
    elapsed = header.get("elapsed", 0.0)
    if type(elapsed) not in (int, float) or not 0.0 <= elapsed < math.inf:
        raise ProtocolError(
            "malformed", "'elapsed' must be a finite number of seconds >= 0 (not a boolean)", request_id
        )
    if type(header.get("body", _EMPTY)) is not dict:
        raise ProtocolError("malformed", "'body' must be a map", request_id)
    if _holds_timestamp(header.get("body")):
        raise ProtocolError("malformed", "msgpack timestamps are not allowed", request_id)
    return request_id, _array_specs(header.get("arrays", _NO_ARRAYS), limits, request_id)


def receive(socket: zmq.Socket, limits: Limits, types: frozenset[str]) -> Message:
    """Receive the rest of one message from ``socket`` (after any routing id) and validate it.

    The whole multipart message is always consumed, also when it is refused, so the next receive starts
    at a message boundary.
    """
    # Frames rather than bytes: a frame knows whether more parts follow, where asking the socket (RCVMORE)
    # costs more than the receive itself.
    frame = socket.recv(copy=False)  # a timeout (zmq.Again) here leaves nothing half-read
    raw = frame.bytes
    # A stream repeats one layout: a header written as ``encode`` writes it, whose bytes but the body, the id
    # and the time passed the full checks below once, under these limits. The same bytes get the same
    # verdict, so only the message type, the trailer's tags and the body are left to check.
    layout = limits._layouts.get(raw[:-_TRAILER_SIZE])
    body: Any = {}
    if layout is None and len(raw) in limits._body_starts:
        start = limits._body_starts[len(raw)]
        layout = limits._body_layouts.get(raw[:start])
        if layout is not None:
            body = _unpack_body(raw[start:-_TRAILER_SIZE])
    if layout is not None and body is not None and layout[0] in types:
        elapsed_tag, elapsed, id_tag, request_id, time_tag, sent = _TRAILER.unpack_from(raw, len(raw) - _TRAILER_SIZE)
        if (elapsed_tag, id_tag, time_tag) == _TAGS and 0.0 <= elapsed < math.inf:
            return _receive_arrays(socket, frame.more, layout[0], request_id, sent, layout[1], body, elapsed)
    try:
        header = _unpack_header(raw, limits)
        request_id, specs = _check_header(header, limits, types)
    except ProtocolError:
        _drain(socket)
        raise
    except Exception as error:  # a check that missed some odd value must still leave a message boundary
        _drain(socket)
        raise ProtocolError("malformed", f"header could not be checked ({type(error).__name__})") from None
    _remember_layout(raw, header, specs, limits)
    return _receive_arrays(
        socket,
        frame.more,
        header["type"],
        request_id,
        float(header["time"]),
        specs,
        header.get("body") or {},
        float(header.get("elapsed", 0.0)),
    )


def _unpack_body(raw: bytes) -> dict[str, Any] | None:
    """The body map of a known layout, or None when it is not one (the full checks then word the error)."""
    try:
        body = _unpackb(raw, ext_hook=_reject_ext)
    except Exception:
        return None
    return body if type(body) is dict and not _holds_timestamp(body) else None


def _holds_timestamp(value: Any) -> bool:
    """Whether a decoded value holds a msgpack timestamp: msgpack decodes that extension type itself, past
    ``ext_hook``."""
    if type(value) is dict:
        return any(_holds_timestamp(item) for item in value.values())
    if type(value) is list:
        return any(_holds_timestamp(item) for item in value)
    return type(value) is msgpack.Timestamp


def _remember_layout(raw: bytes, header: dict[str, Any], specs: list, limits: Limits) -> None:
    """Let ``receive`` recognise this header's layout if ``encode`` writes it byte for byte."""
    msg_type, body = header["type"], header.get("body")
    keys = tuple((name, dtype, shape) for name, dtype, shape, _ in specs)
    start = _STARTS.get((msg_type, not body, keys)) or _new_start(msg_type, bool(body), keys)
    if type(header["time"]) is not float or type(header.get("elapsed")) is not float or not raw.startswith(start):
        return
    trailer = _TRAILER.pack(_ELAPSED_TAG, header["elapsed"], _ID_TAG, header["id"], _TIME_TAG, header["time"])
    if body:
        start += _BODY_KEY
        if raw != b"".join((start, _packb(body), trailer)):
            return
    elif raw != start + trailer:
        return
    if len(limits._layouts) + len(limits._body_layouts) >= 64 or len(limits._body_starts) >= 256:
        for cache in (limits._layouts, limits._body_layouts, limits._body_starts):
            cache.clear()
    if body:  # found by the header's length: bodies of plain numbers keep the same length
        limits._body_layouts[start] = (msg_type, specs)
        limits._body_starts[len(raw)] = len(start)
    else:
        limits._layouts[start] = (msg_type, specs)


def _receive_arrays(
    socket: zmq.Socket,
    more: bool,
    msg_type: str,
    request_id: int,
    sent: float,
    specs: list,
    body: dict[str, Any],
    elapsed: float,
) -> Message:
    """The buffers of the arrays ``specs`` declares, as read-only arrays (``more``: whether the header said
    more parts follow); the rest of the message is drained."""
    arrays = {}
    for name, dtype, shape, nbytes in specs:
        if not more:
            raise ProtocolError("bad_array", f"header declares {len(specs)} buffers, fewer were sent", request_id)
        frame = socket.recv(copy=False)
        more = frame.more
        buffer = frame.buffer.toreadonly()  # ZeroMQ hands out writable views: arrays must not alias them
        if len(buffer) != nbytes:
            if more:
                _drain(socket)
            raise ProtocolError(
                "bad_array", f"array {name!r}: buffer has {len(buffer)} bytes, dtype and shape say {nbytes}", request_id
            )
        arrays[name] = np.ndarray(shape, dtype, buffer)
    if more:
        _drain(socket)
        raise ProtocolError("bad_array", f"header declares {len(specs)} buffers, more were sent", request_id)
    return Message(msg_type, request_id, sent, arrays, body, elapsed)


def error_frames(error: ProtocolError) -> list[Any]:
    return encode("error", error.request_id, body={"code": error.code, "message": error.message})
