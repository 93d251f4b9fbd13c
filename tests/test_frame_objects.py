"""Objects measured in frames by colour: the moments of synthetic shapes, and Push-T's rendered objects."""

import gymnasium as gym
import numpy as np
import pytest

from worldsim.envs.frame_objects import ColourRule, angle_difference, mask_moments, object_fidelity, sharpness
from worldsim.envs.push_t import OBJECT_COLOURS

BLUE = ColourRule(dominant=2, other=0, margin=30)


def rectangle(h=40, w=40, centre=(20.0, 12.0), half=(9.0, 2.0), angle=0.0):
    """A mask of a rotated rectangle (``half`` along its own x and y axes), drawn analytically."""
    ys, xs = np.mgrid[0:h, 0:w].astype(float)
    dx, dy = xs - centre[0], ys - centre[1]
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    return (np.abs(u) <= half[0]) & (np.abs(v) <= half[1])


@pytest.mark.parametrize("angle", [0.0, 0.4, 1.2, 2.8])
def test_moments_find_a_rectangles_area_centre_and_long_axis(angle):
    mask = rectangle(centre=(20.0, 17.0), angle=angle)
    m = mask_moments(mask)
    assert m["area"] == mask.sum() and 60 <= m["area"] <= 100  # 18 x 4 pixels inside, 19 x 5 with its edges
    np.testing.assert_allclose(m["centroid"], [20.0, 17.0], atol=0.3)
    assert angle_difference(m["orientation"], angle) < 0.08


def test_an_empty_mask_has_no_centroid_and_angles_wrap_at_pi():
    m = mask_moments(np.zeros((2, 8, 8), bool))
    assert (m["area"] == 0).all() and np.isnan(m["centroid"]).all()
    assert angle_difference(0.05, np.pi - 0.05) == pytest.approx(0.1)
    assert angle_difference(0.0, np.pi / 2) == pytest.approx(np.pi / 2)


def test_fidelity_sees_a_smeared_or_moved_object_that_mse_would_forgive():
    white = np.full((40, 40, 3), 255, np.uint8)
    truth = white.copy()
    truth[rectangle()] = (140, 170, 220)  # a blue bar
    moved = white.copy()
    moved[rectangle(centre=(26.0, 12.0))] = (140, 170, 220)
    smeared = white.copy()
    smeared[rectangle(half=(13.0, 5.0))] = (200, 215, 240)  # paler and larger: still bluish
    f = object_fidelity(np.stack([truth, moved, smeared]), np.stack([truth] * 3), {"bar": BLUE})
    np.testing.assert_allclose(f["bar_area_ratio"][:2], [1.0, 1.0])
    assert f["bar_area_ratio"][2] > 2.0
    np.testing.assert_allclose(f["bar_centroid_error"], [0.0, 6.0, 0.0], atol=1e-9)
    assert f["sharpness_ratio"][0] == 1.0 and f["sharpness_ratio"][2] < 1.0  # paler edges: less gradient energy
    assert sharpness(white) == 0.0


def test_push_t_frames_show_a_block_and_a_pusher_by_their_colours():
    env = gym.make("worldsim/PushT-v0", obs_type="state_pixels", image_size=64)
    obs, _ = env.reset(seed=3)
    block = mask_moments(OBJECT_COLOURS["block"].mask(obs["pixels"]))
    pusher = mask_moments(OBJECT_COLOURS["pusher"].mask(obs["pixels"]))
    env.close()
    # The table spans 2 * 0.28 m over 64 pixels; the T covers 0.0063 m^2, the pusher a 1.5 cm radius disc.
    metres_per_pixel = 2 * 0.28 / 64
    assert 0.7 < block["area"] * metres_per_pixel**2 / 0.0063 < 1.3
    assert 3 <= pusher["area"] <= 16
    # Image x is world x, image rows run down from world +y; the pusher's centre is the state's (x, y) * 0.25 m.
    x, y = obs["state"][:2] * 0.25
    expected = [(x + 0.28) / metres_per_pixel - 0.5, (0.28 - y) / metres_per_pixel - 0.5]
    np.testing.assert_allclose(pusher["centroid"], expected, atol=1.0)
