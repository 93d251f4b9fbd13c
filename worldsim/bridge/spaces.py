"""Box spaces on the wire, and the checks that hold incoming arrays to the spaces a server declared."""

from __future__ import annotations

import functools
import math
from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.bridge.protocol import DTYPES, ProtocolError


def require_box(space: Any, what: str) -> gym.spaces.Box:
    """``space`` if it is a ``Box`` the protocol can carry, else a clear ``TypeError``."""
    if not isinstance(space, gym.spaces.Box):
        raise TypeError(f"{what} must be a gymnasium.spaces.Box, got {type(space).__name__}")
    if space.dtype.str not in DTYPES:
        raise TypeError(f"{what} has dtype {space.dtype}, which the protocol does not carry")
    return space


def box_to_wire(space: gym.spaces.Box, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A body entry ``{dtype, shape}`` and the bounds as arrays ``<name>.low`` / ``<name>.high``."""
    return (
        {"type": "box", "dtype": space.dtype.str, "shape": list(space.shape)},
        {f"{name}.low": space.low, f"{name}.high": space.high},
    )


def box_from_wire(body: dict[str, Any], arrays: dict[str, np.ndarray], name: str) -> gym.spaces.Box:
    spec = body.get(name)
    low, high = arrays.get(f"{name}.low"), arrays.get(f"{name}.high")
    if not isinstance(spec, dict) or spec.get("type") != "box" or low is None or high is None:
        raise ProtocolError("malformed", f"hello lacks a box description of {name!r}")
    if spec.get("dtype") != low.dtype.str or spec.get("shape") != list(low.shape) or high.shape != low.shape:
        raise ProtocolError("malformed", f"{name!r}: bounds disagree with the declared dtype and shape")
    return gym.spaces.Box(low=low, high=high, dtype=low.dtype)


def expect_array(
    arrays: dict[str, np.ndarray], name: str, dtype: np.dtype, shape: tuple[int, ...], request_id: int
) -> np.ndarray:
    """The array ``name`` if it has exactly this dtype and shape and, for floats, only finite values."""
    array = arrays.get(name)
    if array is None:
        raise ProtocolError("bad_request", f"missing array {name!r}", request_id)
    if array.dtype != dtype or array.shape != shape:
        raise ProtocolError(
            "bad_array",
            f"array {name!r} is {array.dtype.str}{list(array.shape)}, expected {np.dtype(dtype).str}{list(shape)}",
            request_id,
        )
    # NaN or inf in an observation turns into NaN actions on a robot: refuse them at the door.
    if array.dtype.kind == "f" and not all_finite(array):
        raise ProtocolError("bad_array", f"array {name!r} holds NaN or infinite values", request_id)
    return array


def all_finite(array: np.ndarray) -> bool:
    """Whether a float array holds no NaN and no infinity.

    One dot product with a constant small power of two: it is NaN or infinite exactly when a value is
    (the scale keeps any sum of finite values finite and typical values normal, and it raises no floating-
    point warning for an infinity, as multiplying by 0 would), and it allocates nothing, where
    ``np.isfinite(array).all()`` builds a boolean array on every message.
    """
    if array.dtype.char not in "fd":  # float16 sums could overflow; only float32 and float64 go through BLAS
        return bool(np.isfinite(array).all())
    return math.isfinite(array.reshape(-1).dot(_scales(array.size, array.dtype)))


@functools.lru_cache(maxsize=32)
def _scales(size: int, dtype: np.dtype) -> np.ndarray:
    scales = np.full(size, 2.0 ** -(np.finfo(dtype).maxexp // 2), dtype)
    scales.flags.writeable = False
    return scales


def expect_names(arrays: dict[str, np.ndarray], names: set[str], request_id: int) -> None:
    if arrays.keys() != names:
        raise ProtocolError("bad_request", f"expected arrays {sorted(names)}, got {sorted(arrays)}", request_id)
