import math

import numpy as np
import pytest
import torch

from worldsim.core.schedules import (
    PARAMETERIZATIONS,
    CosineSchedule,
    FlowMatchingSchedule,
    schedule_from_config,
)

SCHEDULES = [CosineSchedule(100), CosineSchedule(None), FlowMatchingSchedule()]


def diffusers_squaredcos_alphas_cumprod(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
    """diffusers' betas_for_alpha_bar('cosine') followed by cumprod(1 - betas), rewritten as a loop."""

    def f(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)]
    return np.cumprod(1.0 - np.asarray(betas))


@pytest.mark.parametrize("k", [10, 100, 1000])
def test_cosine_grid_matches_ddpm_squaredcos_cap_v2(k):
    schedule = CosineSchedule(k)
    levels = (np.arange(k) + 1) / k
    np.testing.assert_allclose(schedule.alpha_bar(levels), diffusers_squaredcos_alphas_cumprod(k), rtol=1e-10)
    assert schedule.alpha(np.zeros(1))[0] == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_targets_and_conversions_round_trip(schedule, parameterization, backend):
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((2, 2, 5, 3))
    level = rng.uniform(0.02, 0.98, (2, 5))
    if backend == "torch":
        x0, eps, level = (torch.as_tensor(a) for a in (x0, eps, level))
    x_t = schedule.add_noise(x0, eps, level)
    target = schedule.target(x0, eps, level, parameterization)
    back_x0, back_eps = schedule.split(target, x_t, level, parameterization)
    np.testing.assert_allclose(np.asarray(back_x0), np.asarray(x0), atol=1e-8)
    np.testing.assert_allclose(np.asarray(back_eps), np.asarray(eps), atol=1e-8)
    for other in PARAMETERIZATIONS:
        converted = schedule.convert(target, x_t, level, parameterization, other)
        np.testing.assert_allclose(np.asarray(converted), np.asarray(schedule.target(x0, eps, level, other)), atol=1e-8)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_add_noise_ends(schedule):
    rng = np.random.default_rng(1)
    x0, eps = rng.standard_normal((2, 1, 4, 2))
    np.testing.assert_allclose(schedule.add_noise(x0, eps, np.zeros((1, 4))), x0)
    assert np.abs(schedule.add_noise(x0, eps, np.ones((1, 4))) - eps).max() < 1e-3


def test_alpha_sigma_monotone_and_variance_preserving():
    levels = np.linspace(0, 1, 1001)
    for schedule in SCHEDULES:
        assert (np.diff(schedule.alpha(levels)) <= 1e-12).all()
        assert (np.diff(schedule.sigma(levels)) >= -1e-12).all()
    cosine = CosineSchedule(None)
    np.testing.assert_allclose(cosine.alpha(levels) ** 2 + cosine.sigma(levels) ** 2, 1.0, atol=1e-12)


def test_velocity_is_the_path_derivative():
    schedule = CosineSchedule(None)
    x0, eps = np.random.default_rng(2).standard_normal((2, 1, 3, 2))
    level, h = np.full((1, 3), 0.4), 1e-6
    numeric = (schedule.add_noise(x0, eps, level + h) - schedule.add_noise(x0, eps, level - h)) / (2 * h)
    np.testing.assert_allclose(schedule.target(x0, eps, level, "velocity"), numeric, atol=1e-6)


def test_config_round_trip_and_errors():
    for schedule in SCHEDULES:
        rebuilt = schedule_from_config(schedule.config())
        levels = np.linspace(0, 1, 11)
        np.testing.assert_allclose(rebuilt.alpha(levels), schedule.alpha(levels))
    with pytest.raises(ValueError, match="unknown noise schedule"):
        schedule_from_config({"name": "linear"})
    with pytest.raises(ValueError, match="unknown parameterization"):
        FlowMatchingSchedule().target(np.zeros((1, 1, 1)), np.zeros((1, 1, 1)), np.zeros((1, 1)), "score")
    with pytest.raises(ValueError, match="num_train_steps"):
        CosineSchedule(1)
