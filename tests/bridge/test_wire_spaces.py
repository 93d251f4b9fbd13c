"""The checks every array a server receives goes through: dtype, shape and finite values."""

from __future__ import annotations

import numpy as np
import pytest

from worldsim.bridge.protocol import ProtocolError
from worldsim.bridge.wire_spaces import ArraySpec

FLOATS = [np.float16, np.float32, np.float64]


def finite(array: np.ndarray) -> bool:
    try:
        ArraySpec(array.dtype, array.shape).take({"x": array}, "x", request_id=1)
    except ProtocolError as error:
        assert error.code == "bad_array" and "NaN or infinite" in error.message
        return False
    return True


def edge_values(dtype) -> list[float]:
    info = np.finfo(dtype)
    return [0.0, -0.0, info.max, info.min, info.tiny, info.smallest_subnormal, -info.smallest_subnormal, 1.0, -2.5]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("size", [1, 7, 512, 4096])  # 4096 values are past the integer check for every dtype
def test_finite_check_agrees_with_numpy_at_every_position(dtype, size):
    rng = np.random.default_rng(size)
    base = (rng.standard_normal(size) * 10).astype(dtype)
    assert finite(base)
    for position in {0, size // 2, size - 1}:
        for value in [np.nan, -np.nan, np.inf, -np.inf, *edge_values(dtype)]:
            array = base.copy()
            array[position] = value
            assert finite(array) == bool(np.isfinite(array).all()), (dtype, size, position, value)


@pytest.mark.parametrize("dtype", FLOATS)
def test_finite_check_reads_any_nan_payload(dtype):
    bits = {np.float16: np.uint16, np.float32: np.uint32, np.float64: np.uint64}[dtype]
    infinity = int(np.array(np.inf, dtype).view(bits))
    # A NaN with only the lowest mantissa bit set, and one with all of them: the exponent bits are all set.
    for payload in (1, (1 << np.finfo(dtype).nmant) - 1):
        array = np.zeros((2, 3), dtype)
        array.view(bits)[1, 2] = payload | infinity
        assert np.isnan(array[1, 2])
        assert not finite(array)


def test_finite_check_on_views_and_other_byte_orders():
    array = np.zeros((4, 6), np.float32)
    array[1, 1] = np.inf
    assert finite(array[::2, ::2])
    assert not finite(array[1::2, 1::2])
    assert not finite(array.T)
    big_endian = np.zeros(5, ">f4")
    assert finite(big_endian)
    big_endian[3] = np.nan
    assert not finite(big_endian)


def test_integers_are_taken_as_they_are():
    assert finite(np.array([0, 255], np.uint8))


def test_array_spec_names_what_is_wrong():
    spec = ArraySpec(np.float32, (1, 2))
    with pytest.raises(ProtocolError, match="missing array 'obs'") as error:
        spec.take({}, "obs", request_id=7)
    assert error.value.code == "bad_request" and error.value.request_id == 7
    for wrong in (np.zeros((1, 2), np.float64), np.zeros((2, 1), np.float32)):
        with pytest.raises(ProtocolError, match=r"expected <f4\[1, 2\]") as error:
            spec.take({"obs": wrong}, "obs", request_id=7)
        assert error.value.code == "bad_array"
    with pytest.raises(ProtocolError, match="NaN or infinite"):
        spec.take({"obs": np.array([[0.0, np.nan]], np.float32)}, "obs", request_id=7)
    fine = {"obs": np.array([[0.0, 3e38]], np.float32)}
    assert spec.take(fine, "obs", request_id=7) is fine["obs"]
