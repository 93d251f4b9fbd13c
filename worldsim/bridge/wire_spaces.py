"""Observation and action spaces on the wire, and the checks that hold incoming arrays to the spaces a server
declared.

The protocol carries a ``Box`` of a protocol dtype, and, for a policy's observations, a ``Dict`` of such Boxes
(a camera frame beside proprioception): each entry travels as a Box of its own, its arrays named after its key.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.bridge.protocol import DTYPES, ProtocolError

ObservationSpace = gym.spaces.Box | gym.spaces.Dict


def require_box(space: Any, what: str) -> gym.spaces.Box:
    """``space`` if it is a ``Box`` the protocol can carry, else a clear ``TypeError``."""
    if not isinstance(space, gym.spaces.Box):
        raise TypeError(f"{what} must be a gymnasium.spaces.Box, got {type(space).__name__}")
    if space.dtype.str not in DTYPES:
        raise TypeError(f"{what} has dtype {space.dtype}, which the protocol does not carry")
    return space


def require_observation_space(space: Any, what: str) -> ObservationSpace:
    """``space`` if the protocol can carry it as observations: a ``Box``, or a ``Dict`` whose entries are all
    such Boxes under non-empty string keys (not nested). Else a clear one-line ``TypeError``."""
    if not isinstance(space, gym.spaces.Dict):
        if not isinstance(space, gym.spaces.Box):
            raise TypeError(
                f"{what} must be a gymnasium.spaces.Box or a gymnasium.spaces.Dict of Boxes, got {type(space).__name__}"
            )
        return require_box(space, what)
    if not space.spaces:
        raise TypeError(f"{what} is an empty gymnasium.spaces.Dict: it needs at least one Box")
    for key, entry in space.spaces.items():
        if type(key) is not str or not key:
            raise TypeError(f"{what}: the keys of a Dict must be non-empty strings, got {key!r}")
        if not isinstance(entry, gym.spaces.Box):
            raise TypeError(
                f"{what} must be a gymnasium.spaces.Box or a Dict of Boxes: entry {key!r} is a {type(entry).__name__}"
            )
        require_box(entry, f"{what}[{key!r}]")
    return space


def box_to_wire(space: gym.spaces.Box, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A body entry ``{dtype, shape}`` and the bounds as arrays ``<name>.low`` / ``<name>.high``."""
    return (
        {"type": "box", "dtype": space.dtype.str, "shape": list(space.shape)},
        {f"{name}.low": space.low, f"{name}.high": space.high},
    )


def space_to_wire(space: ObservationSpace, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A ``Box`` as ``box_to_wire`` writes it; a ``Dict`` as ``{"type": "dict", "spaces": {key: box entry}}``
    with the bounds of each entry as arrays ``<name>.<key>.low`` / ``<name>.<key>.high``."""
    if not isinstance(space, gym.spaces.Dict):
        return box_to_wire(space, name)
    entries, arrays = {}, {}
    for key, entry in space.spaces.items():
        entries[key], bounds = box_to_wire(entry, f"{name}.{key}")
        arrays.update(bounds)
    return {"type": "dict", "spaces": entries}, arrays


def space_from_wire(body: dict[str, Any], arrays: dict[str, np.ndarray], name: str) -> ObservationSpace:
    """The space the hello body entry ``name`` describes, a ``Box`` or a ``Dict`` of Boxes (the inverse of
    ``space_to_wire``); ``ProtocolError("malformed")`` for a description that is not one."""
    spec = body.get(name)
    if isinstance(spec, dict) and spec.get("type") == "dict":
        return _dict_from_wire(spec, arrays, name)
    return _box_from_wire(spec, arrays, name)


def box_from_wire(body: dict[str, Any], arrays: dict[str, np.ndarray], name: str) -> gym.spaces.Box:
    """The ``Box`` the hello body entry ``name`` describes."""
    return _box_from_wire(body.get(name), arrays, name)


def _box_from_wire(spec: Any, arrays: dict[str, np.ndarray], name: str) -> gym.spaces.Box:
    low, high = arrays.get(f"{name}.low"), arrays.get(f"{name}.high")
    if not isinstance(spec, dict) or spec.get("type") != "box" or low is None or high is None:
        raise ProtocolError("malformed", f"hello lacks a box description of {name!r}")
    shape = spec.get("shape")
    # Each entry an int by type: [True, 2] == [1, 2] in Python, but a boolean is not a size.
    sizes = type(shape) is list and all(type(size) is int for size in shape)
    if not sizes or spec.get("dtype") != low.dtype.str or shape != list(low.shape) or high.shape != low.shape:
        raise ProtocolError("malformed", f"{name!r}: bounds disagree with the declared dtype and shape")
    return gym.spaces.Box(low=low, high=high, dtype=low.dtype)


def _dict_from_wire(spec: dict[str, Any], arrays: dict[str, np.ndarray], name: str) -> gym.spaces.Dict:
    entries = spec.get("spaces")
    if type(entries) is not dict or not entries:
        raise ProtocolError("malformed", f"{name!r}: a dict description needs a non-empty map 'spaces'")
    spaces = {}
    for key, entry in entries.items():
        if type(key) is not str or not key:  # msgpack map keys may also be binary
            raise ProtocolError("malformed", f"{name!r}: the keys of 'spaces' must be non-empty strings, got {key!r}")
        spaces[key] = _box_from_wire(entry, arrays, f"{name}.{key}")
    return gym.spaces.Dict(spaces)


class ArraySpec:
    """One incoming array a server declared: its dtype, its shape and, for floats, only finite values.

    Built once per declared array: the masks of the finite check are worked out here, not per message.
    """

    def __init__(self, dtype: Any, shape: tuple[int, ...]) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self._float = self.dtype.kind == "f"
        self._masks = _finite_masks(self.dtype, math.prod(self.shape)) if self._float else None

    def take(self, arrays: dict[str, np.ndarray], name: str, request_id: int) -> np.ndarray:
        """``arrays[name]`` if it matches, else a ``ProtocolError`` that says how it does not."""
        array = arrays.get(name)
        if array is None:
            raise ProtocolError("bad_request", f"missing array {name!r}", request_id)
        if array.dtype != self.dtype or array.shape != self.shape:
            raise ProtocolError(
                "bad_array",
                f"array {name!r} is {array.dtype.str}{list(array.shape)}, expected {self.dtype.str}{list(self.shape)}",
                request_id,
            )
        # NaN or inf in an observation turns into NaN actions on a robot: refuse them at the door.
        if self._masks is not None:
            exponents, lowest, signs = self._masks
            finite = not ((int.from_bytes(array.data, "little") & exponents) + lowest) & signs
        else:
            finite = not self._float or bool(np.isfinite(array).all())
        if not finite:
            raise ProtocolError("bad_array", f"array {name!r} holds NaN or infinite values", request_id)
        return array


# Small arrays (an observation) are checked for NaN and infinity on their bytes, read as one Python integer
# (in C order, also from a view that is not contiguous): a value is NaN or infinite exactly when all its
# exponent bits are set. Masking every value down to its exponent bits and adding the lowest exponent bit
# carries into the value's sign bit exactly for those, and no carry crosses into the next value. This runs
# in CPython's integer code, which a server runs all the time anyway. A NumPy call (``np.isfinite(a).all()``,
# a dot product) costs several microseconds more on a server that sleeps between messages, because its code
# has left the CPU's caches by then: on this 2-core machine, with a 2 KB observation, the integer check took
# 4-5 us off the 22-28 us a bridge server adds to a raw pyzmq echo. Larger arrays go through NumPy, which is
# faster per value.
_FINITE_CHECK_MAX_BYTES = 4096
# Per little-endian IEEE 754 binary16/32/64 value: its exponent bits, the lowest exponent bit, its sign bit.
_EXPONENT_BITS = {
    "<f2": (0x7C00, 0x0400, 0x8000),
    "<f4": (0x7F80_0000, 0x0080_0000, 0x8000_0000),
    "<f8": (0x7FF0 << 48, 0x0010 << 48, 0x8000 << 48),
}


def _finite_masks(dtype: np.dtype, count: int) -> tuple[int, int, int] | None:
    """The masks of ``_EXPONENT_BITS`` repeated for ``count`` values, where that check applies."""
    if dtype.str not in _EXPONENT_BITS or count * dtype.itemsize > _FINITE_CHECK_MAX_BYTES:
        return None
    size = dtype.itemsize
    exponents, lowest, signs = (
        int.from_bytes(mask.to_bytes(size, "little") * count, "little") for mask in _EXPONENT_BITS[dtype.str]
    )
    return exponents, lowest, signs


def expect_names(arrays: dict[str, np.ndarray], names: set[str], request_id: int) -> None:
    if arrays.keys() != names:
        raise ProtocolError("bad_request", f"expected arrays {sorted(names)}, got {sorted(arrays)}", request_id)
