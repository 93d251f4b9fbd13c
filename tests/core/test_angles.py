"""Angles reported modulo a turn: found in recorded data, and wrapped the short way round."""

import numpy as np
import torch

from worldsim.core.angles import angle_dims, wrap_angle, wrap_angles


def test_angles_reported_modulo_a_turn_are_found_by_their_jumps_across_the_seam():
    t = np.linspace(0, 4 * np.pi, 400)
    wrapped = np.mod(t, 2 * np.pi)  # crosses the seam: 6.28 -> 0.0
    unwrapped = np.linspace(-np.pi, np.pi, 400)  # spans a turn but never jumps
    contact = (np.sin(7 * t) > 0).astype(float)  # jumps by its whole (small) range
    fast = 3.0 * np.sin(40 * t)  # spans 6 rad and jumps by up to 3.5 per step, but is no angle
    states = np.c_[unwrapped, wrapped, contact, fast, np.mod(t, 2 * np.pi) - np.pi]
    assert angle_dims([states[:200], states[200:]]) == (1, 4)
    # the jump must lie inside an episode: two episodes that each stay on one side find nothing
    assert angle_dims([states[:99, 1:2], states[101:199, 1:2]]) == ()


def test_wrap_angles_wraps_only_the_named_dimensions_for_numpy_and_torch():
    x = np.array([[3.5, 3.5, -3.5, 7.0], [-np.pi, 0.1, np.pi, 100.0]])
    out = wrap_angles(x, (0, 2))
    np.testing.assert_allclose(out[:, [1, 3]], x[:, [1, 3]])  # untouched
    np.testing.assert_allclose(out[:, 0], [3.5 - 2 * np.pi, -np.pi])
    np.testing.assert_allclose(out[:, 2], [-3.5 + 2 * np.pi, -np.pi])  # +pi lands on -pi: [-pi, pi)
    tensor = wrap_angles(torch.tensor(x, requires_grad=True), (0, 2))
    np.testing.assert_allclose(tensor.detach().numpy(), out)
    assert wrap_angles(x, ()) is x
    # the scalar form the experts use for heading errors, on the same convention
    np.testing.assert_allclose(
        [wrap_angle(a) for a in (3.5, -3.5, 7.0)], [3.5 - 2 * np.pi, -3.5 + 2 * np.pi, 7.0 - 2 * np.pi]
    )
    assert wrap_angle(np.pi) == -np.pi and isinstance(wrap_angle(np.float32(1.0)), float)
