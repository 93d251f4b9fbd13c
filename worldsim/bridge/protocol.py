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
from dataclasses import dataclass, field
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

_HEADER_KEYS = frozenset({"version", "type", "id", "time", "arrays", "body"})
_SPEC_KEYS = frozenset({"name", "dtype", "shape"})
_EMPTY: dict[str, Any] = {}
_NO_ARRAYS: list[Any] = []
_MAX_ID = 2**64 - 1


class ProtocolError(Exception):
    """A message that breaks the protocol; ``code`` is the error code of the ``error`` reply."""

    def __init__(self, code: str, message: str, request_id: int = 0) -> None:
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
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")

    @property
    def max_frame_bytes(self) -> int:
        return max(self.max_header_bytes, self.max_array_bytes) + 1


@dataclass(slots=True)
class Message:
    """A decoded message. Arrays are read-only views of the received buffers."""

    type: str
    request_id: int
    time: float
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)


def encode(
    msg_type: str,
    request_id: int,
    arrays: Mapping[str, np.ndarray] | None = None,
    body: Mapping[str, Any] | None = None,
) -> list[Any]:
    """The frames of one message: the packed header, then each array as a C-contiguous buffer."""
    keys = []
    buffers: list[Any] = []
    for name, array in (arrays or _EMPTY).items():
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would also turn 0-d arrays into 1-d ones)
            array = array.copy(order="C")
        keys.append((name, array.dtype, array.shape))
        buffers.append(array)
    # The header map is {version, type, id, time, arrays[, body]}, packed from cached pieces: a stream
    # repeats the same message types and array specs, and only the id and the time change.
    head = _HEADS.get((msg_type, bool(body)))
    if head is None:
        head = _new_head(msg_type, bool(body))
    spec_key = tuple(keys)
    specs = _SPECS.get(spec_key)
    if specs is None:
        specs = _new_specs(spec_key)
    header = b"".join((head, _packb(request_id), _TIME_KEY, _pack_double(time.time()), specs))
    if body:
        header += _BODY_KEY + _packb(dict(body))
    return [header, *buffers]


# One shared packer: with autoreset each call returns one packed object, and packing these plain types runs
# no Python code and never releases the GIL, so threads (a server and its clients in one process) cannot
# interleave inside a call.
_packb = msgpack.Packer().pack
_pack_double = struct.Struct(">d").pack
_TIME_KEY = _packb("time") + b"\xcb"  # msgpack float 64 follows
_BODY_KEY = _packb("body")

# Packed pieces by message type and by array specs; bounded, because types, names and shapes come from callers.
_HEADS: dict[tuple[str, bool], bytes] = {}
_SPECS: dict[tuple[tuple[str, np.dtype, tuple[int, ...]], ...], bytes] = {}


def _new_head(msg_type: str, with_body: bool) -> bytes:
    if len(_HEADS) >= 64:
        _HEADS.clear()
    entries = 6 if with_body else 5
    head = _HEADS[(msg_type, with_body)] = (
        bytes([0x80 | entries]) + _packb("version") + _packb(PROTOCOL_VERSION) + _packb("type") + _packb(msg_type)
        + _packb("id")
    )  # fmt: skip
    return head


def _new_specs(keys: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]) -> bytes:
    for name, dtype, _ in keys:
        if dtype.str not in DTYPES:
            raise ValueError(f"array {name!r}: dtype {dtype} is not one the protocol carries ({sorted(DTYPES)})")
    if len(_SPECS) >= 256:
        _SPECS.clear()
    specs = [{"name": name, "dtype": dtype.str, "shape": list(shape)} for name, dtype, shape in keys]
    packed = _SPECS[keys] = _packb("arrays") + _packb(specs)
    return packed


def send(socket: zmq.Socket, frames: list[Any], routing_id: bytes | None = None) -> None:
    """Send without blocking (a full queue raises ``zmq.Again``); large buffers go zero-copy."""
    # Only the first part of a message can meet a full queue: ZeroMQ then accepts the rest of it.
    if routing_id is not None:
        socket.send(routing_id, _NOBLOCK_MORE)
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        flags = _NOBLOCK_MORE if index < last else _NOBLOCK
        if type(frame) is np.ndarray and frame.nbytes >= ZERO_COPY_BYTES:
            socket.send(frame, flags, copy=False)
        else:
            socket.send(frame, flags)


def _reject_ext(code: int, data: bytes) -> None:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _drain(socket: zmq.Socket) -> None:
    while socket.get(RCVMORE):
        socket.recv(copy=False)


def _unpack_header(raw: bytes, limits: Limits) -> dict[str, Any]:
    if len(raw) > limits.max_header_bytes:
        raise ProtocolError("too_large", f"header of {len(raw)} bytes exceeds {limits.max_header_bytes}")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, ext_hook=_reject_ext, timestamp=0)
    except Exception as error:  # msgpack raises a zoo of types for garbage; all mean the same here
        raise ProtocolError("malformed", f"header is not valid msgpack ({type(error).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError("malformed", f"header must be a map, got {type(header).__name__}")
    return header


def _request_id(header: dict[str, Any]) -> int:
    value = header.get("id")
    if type(value) is not int or not 0 <= value <= _MAX_ID:
        raise ProtocolError("malformed", "'id' must be an unsigned 64-bit integer")
    return value


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
        name, shape = spec["name"], spec["shape"]
        dtype = _NUMPY_DTYPES.get(spec["dtype"]) if type(spec["dtype"]) is str else None
        if type(name) is not str or not 0 < len(name) <= limits.max_name_length or name in names:
            raise ProtocolError(
                "malformed", f"array names must be unique strings of 1-{limits.max_name_length} chars", request_id
            )
        if dtype is None:
            raise ProtocolError("bad_array", f"array {name!r}: dtype {spec['dtype']!r} is not allowed", request_id)
        if type(shape) is not list or len(shape) > limits.max_ndim:
            raise ProtocolError(
                "bad_array", f"array {name!r}: shape must be a list of <= {limits.max_ndim} ints", request_id
            )
        for size in shape:
            if type(size) is not int or size < 0:
                raise ProtocolError("bad_array", f"array {name!r}: shape holds {size!r}, not a size", request_id)
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a lying shape cannot overflow
        total += nbytes
        if total > limits.max_array_bytes:
            raise ProtocolError("too_large", f"arrays declare more than {limits.max_array_bytes} bytes", request_id)
        names.add(name)
        parsed.append((name, dtype, tuple(shape), nbytes))
    return parsed


def _check_header(header: dict[str, Any], limits: Limits, types: frozenset[str]) -> tuple[int, list]:
    if header.get("version") != PROTOCOL_VERSION:
        request_id = _request_id(header) if "id" in header else 0
        raise ProtocolError(
            "unsupported_version", f"protocol version {header.get('version')!r} is not {PROTOCOL_VERSION}", request_id
        )
    request_id = _request_id(header)
    if not header.keys() <= _HEADER_KEYS:
        raise ProtocolError(
            "malformed", f"unknown header keys {sorted(map(str, header.keys() - _HEADER_KEYS))}", request_id
        )
    msg_type = header.get("type")
    if type(msg_type) is not str or msg_type not in types:
        raise ProtocolError(
            "unknown_type", f"message type {header.get('type')!r} is not one of {sorted(types)}", request_id
        )
    if type(header.get("time")) not in (int, float):
        raise ProtocolError("malformed", "'time' must be a number", request_id)
    if type(header.get("body", _EMPTY)) is not dict:
        raise ProtocolError("malformed", "'body' must be a map", request_id)
    return request_id, _array_specs(header.get("arrays", _NO_ARRAYS), limits, request_id)


def receive(socket: zmq.Socket, limits: Limits, types: frozenset[str]) -> Message:
    """Receive the rest of one message from ``socket`` (after any routing id) and validate it.

    The whole multipart message is always consumed, also when it is refused, so the next receive starts
    at a message boundary.
    """
    raw = socket.recv()  # a timeout (zmq.Again) here leaves nothing half-read
    try:
        header = _unpack_header(raw, limits)
        request_id, specs = _check_header(header, limits, types)
    except ProtocolError:
        _drain(socket)
        raise
    except Exception as error:  # a check that missed some odd value must still leave a message boundary
        _drain(socket)
        raise ProtocolError("malformed", f"header could not be checked ({type(error).__name__})") from None
    arrays = {}
    for name, dtype, shape, nbytes in specs:
        if not socket.get(RCVMORE):
            raise ProtocolError("bad_array", f"header declares {len(specs)} buffers, fewer were sent", request_id)
        frame = socket.recv(copy=nbytes < ZERO_COPY_BYTES)
        buffer = frame if type(frame) is bytes else frame.buffer
        if len(buffer) != nbytes:
            _drain(socket)
            raise ProtocolError(
                "bad_array", f"array {name!r}: buffer has {len(buffer)} bytes, dtype and shape say {nbytes}", request_id
            )
        arrays[name] = np.ndarray(shape, dtype, buffer)  # read-only: the buffer is immutable
    if socket.get(RCVMORE):
        _drain(socket)
        raise ProtocolError("bad_array", f"header declares {len(specs)} buffers, more were sent", request_id)
    return Message(header["type"], request_id, float(header["time"]), arrays, header.get("body") or {})


def error_frames(error: ProtocolError) -> list[Any]:
    return encode("error", error.request_id, body={"code": error.code, "message": error.message})
