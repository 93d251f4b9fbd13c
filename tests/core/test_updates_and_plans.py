import numpy as np
import pytest
import torch

from worldsim.core import plans
from worldsim.core.plans import Plan
from worldsim.core.sampling import denoise
from worldsim.core.schedules import CosineSchedule, FlowMatchingSchedule
from worldsim.core.updates import step

BUILDERS = {
    "full_sequence": lambda: plans.full_sequence(6, 10),
    "autoregressive": lambda: plans.autoregressive(4, 5),
    "pyramid": lambda: plans.pyramid(5, 4, 2),
    "rolling": lambda: plans.pyramid(5, 4, 1),
    "warm_start": lambda: plans.warm_start(6, 0.03, 3),
    "warm_start_renoise": lambda: plans.warm_start(6, 0.2, 4, renoise=True),
    "frozen_prefix": lambda: plans.frozen_prefix(6, 2, 8),
    "per_token_start": lambda: plans.per_token_start([0.0, 0.0, 0.3, 0.7, 1.0, 1.0], 5, grid_steps=100),
    "from_levels": lambda: plans.from_levels([0.5, 0.25, 0.0], 3),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_builders_end_clean_and_only_warm_starts_rise(name):
    plan = BUILDERS[name]()
    assert (plan.end == 0).all()
    # (Levels inside [0, 1] need no check here: Plan refuses any other, see test_plan_validation.)
    rises = [bool((nxt > cur).any()) for cur, nxt in plan.transitions()]
    assert plan.renoises() == (name == "warm_start_renoise")
    # Only the re-noising warm start lifts a level, and only in its first row; every other plan only descends.
    assert rises == [name == "warm_start_renoise"] + [False] * (len(rises) - 1)


def test_model_call_counts():
    assert plans.full_sequence(16, 100).num_model_calls == 100
    assert plans.warm_start(16, 0.03, 3).num_model_calls == 3
    assert plans.warm_start(16, 0.03, 3, renoise=True).num_model_calls == 3
    # Diffusion Forcing's pyramid: S + (T - 1) * u rows of work.
    assert plans.pyramid(5, 4, 1).num_model_calls == 4 + 4
    assert plans.autoregressive(3, 10).num_model_calls == 30


def test_warm_start_on_a_grid_rounds_its_levels():
    assert plans.warm_start(3, 0.5, 2, grid_steps=4).levels[:, 0].tolist() == [0.5, 0.25, 0.0]
    assert plans.warm_start(3, 0.6, 2, grid_steps=5).levels[:, 0].tolist() == [0.6, 0.4, 0.0]  # 0.3 -> 0.4
    with pytest.raises(ValueError, match="need more than 4 grid steps"):
        plans.warm_start(3, 0.5, 3, grid_steps=4)


def test_plan_validation():
    with pytest.raises(ValueError, match="inside \\[0, 1\\]"):
        Plan(np.array([[1.5, 0.0]]))
    with pytest.raises(ValueError, match="rows >= 1"):
        Plan(np.zeros(3))
    with pytest.raises(ValueError, match="must not increase"):
        plans.from_levels([0.1, 0.2], 2)
    with pytest.raises(ValueError, match="num_frozen"):
        plans.frozen_prefix(4, 4, 10)
    with pytest.raises(ValueError, match="start_level"):
        plans.warm_start(4, 0.0, 3)
    with pytest.raises(ValueError, match="nothing to denoise"):
        plans.per_token_start([0.0, 0.0], 3)
    with pytest.raises(ValueError, match="must lie in"):
        plans.per_token_start([0.0, 1.2], 3)


def test_per_token_start_walks_each_token_from_its_own_level():
    plan = plans.per_token_start([0.0, 0.5, 1.0], 2, renoise=True)
    # A first row at 0 (forward-diffuse the guess), then each token from its start to 0 in two equal steps.
    assert plan.levels.tolist() == [[0, 0, 0], [0, 0.5, 1.0], [0, 0.25, 0.5], [0, 0, 0]]
    assert plan.num_model_calls == 2


def _random_model(seed=0):
    gen = np.random.default_rng(seed)
    return lambda x, level, cond: gen.standard_normal(x.shape)


@pytest.mark.parametrize("name", BUILDERS)
def test_clean_tokens_are_never_changed(name):
    plan = BUILDERS[name]()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, plan.num_tokens, 3))
    always_clean = (plan.levels == 0).all(axis=0)
    out = denoise(_random_model(), x, plan, CosineSchedule(100), parameterization="epsilon", eta=1.0, generator=rng)
    np.testing.assert_array_equal(out[:, always_clean], x[:, always_clean])


def test_equal_levels_untouched_exactly_even_with_noise():
    rng = np.random.default_rng(4)
    x, pred, noise = rng.standard_normal((3, 2, 4, 3))
    level = np.array([[0.5, 0.3, 0.3, 0.0], [1.0, 0.2, 0.7, 0.1]])
    nxt = np.array([[0.5, 0.1, 0.6, 0.0], [1.0, 0.2, 0.3, 0.1]])
    out = step(CosineSchedule(100), x, pred, level, nxt, "epsilon", eta=1.0, noise=noise).prev_sample
    same = level == nxt
    np.testing.assert_array_equal(out[same], x[same])
    assert not np.allclose(out[~same], x[~same])


def test_flow_ddim_is_euler():
    schedule = FlowMatchingSchedule()
    rng = np.random.default_rng(5)
    x, velocity = rng.standard_normal((2, 2, 3, 4))
    level, nxt = np.full((2, 3), 0.7), np.full((2, 3), 0.45)
    out = step(schedule, x, velocity, level, nxt, "velocity").prev_sample
    np.testing.assert_allclose(out, x + (nxt - level)[..., None] * velocity, atol=1e-12)


def test_eta_one_is_the_ddpm_posterior():
    """Against DDPM's textbook posterior on the discrete grid (timestep t -> t - 1)."""
    k = 100
    schedule = CosineSchedule(k)
    rng = np.random.default_rng(6)
    x, eps, z = rng.standard_normal((3, 1, 1, 8))
    for t in (99, 50, 1):
        abar_t, abar_prev = schedule.alpha_bar(np.array((t + 1) / k)), schedule.alpha_bar(np.array(t / k))
        beta = 1 - abar_t / abar_prev
        x0 = (x - np.sqrt(1 - abar_t) * eps) / np.sqrt(abar_t)
        mean = (np.sqrt(abar_prev) * beta / (1 - abar_t)) * x0 + (
            np.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t)
        ) * x
        std = np.sqrt((1 - abar_prev) / (1 - abar_t) * beta)
        level, nxt = np.full((1, 1), (t + 1) / k), np.full((1, 1), t / k)
        out = step(schedule, x, eps, level, nxt, "epsilon", eta=1, noise=z)
        np.testing.assert_allclose(out.prev_sample, mean + std * z, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(out.pred_original_sample, x0, rtol=1e-8, atol=1e-8)


def test_renoise_is_forward_diffusion():
    schedule = CosineSchedule(100)
    rng = np.random.default_rng(7)
    clean = np.full((20000, 1, 1), 0.8)
    result = step(
        schedule, clean, None, np.zeros((20000, 1)), np.full((20000, 1), 0.3), "epsilon",
        noise=rng.standard_normal(clean.shape),
    )  # fmt: skip
    assert result.pred_original_sample is None  # no prediction was given
    out = result.prev_sample
    a, s = schedule.alpha(np.array(0.3)), schedule.sigma(np.array(0.3))
    assert out.mean() == pytest.approx(a * 0.8, abs=0.02)
    assert out.std() == pytest.approx(s, rel=0.03)


def test_update_errors():
    schedule = CosineSchedule(100)
    x = np.zeros((1, 2, 1))
    down, up = np.array([[0.5, 0.5]]), np.array([[0.2, 0.6]])
    with pytest.raises(ValueError, match="noise"):
        step(schedule, x, x, down, up, "epsilon")
    with pytest.raises(ValueError, match="pred"):
        step(schedule, x, None, down, np.array([[0.2, 0.5]]), "epsilon")
    with pytest.raises(ValueError, match="eta"):
        step(schedule, x, x, down, down, "epsilon", eta=2.0)


def test_denoise_rejects_bad_input():
    plan = plans.full_sequence(4, 3)
    model = _random_model()
    with pytest.raises(ValueError, match="4 tokens"):
        denoise(model, np.zeros((1, 5, 2)), plan, CosineSchedule(), parameterization="epsilon")
    bad = np.zeros((1, 4, 2))
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        denoise(model, bad, plan, CosineSchedule(), parameterization="epsilon")
    with pytest.raises(ValueError, match="NaN"):
        denoise(model, torch.full((1, 4, 2), float("inf")), plan, CosineSchedule(), parameterization="epsilon")
