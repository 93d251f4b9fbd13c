"""Samplers driven by exact posterior-mean denoisers must reproduce the data distribution."""

import numpy as np
import pytest
import torch

from tests.core.oracles import GaussianOracle, MixtureOracle, as_parameterization
from worldsim.core import plans
from worldsim.core.rolling import RollingDenoiser
from worldsim.core.sampling import denoise
from worldsim.core.schedules import CosineSchedule, FlowMatchingSchedule

SCHEDULES = {"cosine100": CosineSchedule(100), "cosine": CosineSchedule(None), "flow": FlowMatchingSchedule()}


# Epsilon prediction cannot recover x0 where alpha(1) = 0 exactly (continuous cosine, flow); the discrete grid
# keeps alpha > 0, which is why DDPM-style epsilon models use it.
CASES = [
    (schedule, parameterization)
    for schedule in SCHEDULES
    for parameterization in ("epsilon", "sample", "v_prediction", "velocity")
    if parameterization != "epsilon" or schedule == "cosine100"
]


@pytest.mark.parametrize("schedule_name,parameterization", CASES)
@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["ddim", "ddpm"])
def test_gaussian(schedule_name, eta, parameterization):
    schedule = SCHEDULES[schedule_name]
    oracle = GaussianOracle(schedule, mean=1.5, std=0.5)
    rng = np.random.default_rng(0)
    out = denoise(
        as_parameterization(oracle, schedule, parameterization),
        rng.standard_normal((4000, 4, 2)),
        plans.full_sequence(4, 100),
        schedule,
        parameterization=parameterization,
        eta=eta,
        generator=rng,
    )
    assert out.mean() == pytest.approx(1.5, abs=0.02)
    assert out.std() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["ddim", "ddpm"])
def test_two_mode_mixture(schedule_name, eta):
    schedule = SCHEDULES[schedule_name]
    means, std, weights = (-2.0, 2.0), 0.3, (0.3, 0.7)
    oracle = MixtureOracle(schedule, means, std, weights)
    rng = np.random.default_rng(1)
    out = denoise(
        as_parameterization(oracle, schedule, "sample"),
        rng.standard_normal((20000, 1, 1)),
        plans.full_sequence(1, 100),
        schedule,
        parameterization="sample",
        eta=eta,
        generator=rng,
    )
    true_mean = sum(w * m for m, w in zip(means, weights, strict=True))
    true_var = std**2 + sum(w * m * m for m, w in zip(means, weights, strict=True)) - true_mean**2
    assert out.mean() == pytest.approx(true_mean, abs=0.05)
    assert out.var() == pytest.approx(true_var, rel=0.05)
    assert (out > 0).mean() == pytest.approx(0.7, abs=0.015)
    assert np.abs(np.abs(out) - 2.0).mean() < 0.35  # samples sit on the modes, not between them


def test_torch_and_numpy_samplers_agree():
    schedule = CosineSchedule(100)
    oracle = GaussianOracle(schedule, 0.5, 0.8)
    model = as_parameterization(oracle, schedule, "epsilon")
    x = np.random.default_rng(2).standard_normal((8, 16, 2))
    plan = plans.full_sequence(16, 10)
    out_np = denoise(model, x, plan, schedule, parameterization="epsilon")
    out_torch = denoise(model, torch.as_tensor(x), plan, schedule, parameterization="epsilon")
    np.testing.assert_allclose(out_torch.numpy(), out_np, atol=1e-10)


@pytest.mark.parametrize("schedule_name", ["cosine100", "flow"])
def test_rolling_denoiser_emits_the_data_distribution(schedule_name):
    schedule = SCHEDULES[schedule_name]
    oracle = GaussianOracle(schedule, mean=-1.0, std=0.5)
    rng = np.random.default_rng(3)
    window = 50
    rolling = RollingDenoiser(
        as_parameterization(oracle, schedule, "sample"), schedule, window=window, parameterization="sample"
    )
    emitted = []
    for tick in range(window + 20):
        out = rolling.tick(rng.standard_normal((1000, 1, 2))).emitted
        if tick < window - 1:
            assert out is None and rolling.num_slots == tick + 1
        else:
            emitted.append(out)
    assert rolling.num_calls == window + 20 and rolling.num_slots == window - 1
    samples = np.concatenate(emitted, 1)
    assert samples.shape == (1000, 21, 2)
    assert samples.mean() == pytest.approx(-1.0, abs=0.02)
    assert samples.std() == pytest.approx(0.5, rel=0.05)


def test_rolling_matches_the_equivalent_pyramid_plan():
    """With an oracle that treats tokens independently, a rolling window of W is W DDIM steps per token."""
    schedule = CosineSchedule(100)
    oracle = GaussianOracle(schedule, 0.3, 0.7)
    model = as_parameterization(oracle, schedule, "epsilon")
    noise = np.random.default_rng(4).standard_normal((2, 6, 3))
    rolling = RollingDenoiser(model, schedule, window=4, parameterization="epsilon")
    outputs = [rolling.tick(noise[:, i : i + 1]) for i in range(6)]
    emitted = [o.emitted for o in outputs]
    reference = denoise(model, noise, plans.pyramid(6, 4, 1), schedule, parameterization="epsilon")
    np.testing.assert_allclose(np.concatenate(emitted[3:], 1), reference[:, :3], atol=1e-10)
    # The clean estimate of the oldest slot at the emitting call is the emitted slot itself (its last step
    # lands on level 0), and every estimate has the window's shape.
    np.testing.assert_allclose(outputs[3].pred_original_sample[:, :1], emitted[3], atol=1e-10)
    assert outputs[0].emitted is None and outputs[0].pred_original_sample.shape == (2, 1, 3)


def test_rolling_warm_start_emits_next_tick_and_keeps_a_good_guess():
    schedule = CosineSchedule(100)
    oracle = GaussianOracle(schedule, 0.0, 1.0)
    model = as_parameterization(oracle, schedule, "sample")
    rng = np.random.default_rng(5)
    rolling = RollingDenoiser(model, schedule, window=8, parameterization="sample", top_level=0.05, generator=rng)
    guess = rng.standard_normal((4, 7, 2))
    rolling.warm_start(guess)
    np.testing.assert_allclose(rolling.levels, 0.05 * np.arange(1, 8) / 8)
    tail = schedule.add_noise(guess[:, -1:], rng.standard_normal((4, 1, 2)), np.full((4, 1), 0.05))
    out = rolling.tick(tail).emitted
    assert out is not None and rolling.num_calls == 1
    # At a low start level the data barely moves: the warm start is kept, not re-sampled.
    assert np.abs(out - guess[:, :1]).max() < 0.1


def test_rolling_conditioning_rules():
    schedule = FlowMatchingSchedule()
    seen = []
    rolling = RollingDenoiser(
        lambda x, level, cond: seen.append(None if cond is None else cond.shape) or np.zeros_like(x),
        schedule, window=3, parameterization="velocity", tokens_per_slot=2,
    )  # fmt: skip
    rolling.tick(np.zeros((1, 2, 4)), token_cond=np.zeros((1, 2, 5)))
    rolling.tick(np.zeros((1, 2, 4)), token_cond=np.zeros((1, 2, 5)))
    assert seen == [(1, 2, 5), (1, 4, 5)]
    with pytest.raises(ValueError, match="token_cond"):
        rolling.tick(np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="shape"):
        rolling.tick(np.zeros((1, 3, 4)), token_cond=np.zeros((1, 3, 5)))
    with pytest.raises(ValueError, match="either"):
        rolling.tick(np.zeros((1, 2, 4)), cond=np.zeros((1, 5)), token_cond=np.zeros((1, 2, 5)))
