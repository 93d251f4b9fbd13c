"""The simulator's own noise floor: a resampled replay scores twice the transition variance, a deterministic
env scores nothing."""

import gymnasium as gym
import numpy as np
import pytest

from worldsim.world_model.data import collect_episodes
from worldsim.world_model.held_out import resampled_simulator_errors

STEP = 0.5


class NoisyDrift(gym.Env):
    """A point that moves ``STEP`` per step plus Gaussian noise of ``noise`` drawn from the env's generator;
    its start is drawn at reset from the same generator."""

    def __init__(self, noise: float):
        self.noise = noise
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = float(self.np_random.uniform(-1.0, 1.0))
        return self._obs(), {}

    def step(self, action):
        self.position += STEP + self.noise * float(self.np_random.normal())
        return self._obs(), 0.0, False, False, {}

    def _obs(self):
        return np.array([self.position, 1.0])  # the second dimension never changes


class Still:
    def reset(self):
        pass

    def __call__(self, obs, info):
        return np.zeros(1, np.float32)


def _episodes(env, count):
    return collect_episodes(env, [Still()], count, seed=10, max_steps=10, progress=False)


def test_a_resampled_replay_scores_twice_the_transition_variance():
    env = NoisyDrift(noise=0.1)
    errors = resampled_simulator_errors(env, _episodes(env, 400), (1, 4), seed=10, resample_seed=99)
    # Two independent draws of the same step differ by noise of variance 2 * 0.1**2, in one of two dimensions.
    assert errors["1"]["mse"] == pytest.approx(2 * 0.1**2 / 2, rel=0.2)
    assert errors["4"]["mse"] == pytest.approx(4 * 2 * 0.1**2 / 2, rel=0.2)  # four steps' noise adds up
    # Copy-last: the drift of one step (0.5) and its noise, in one of two dimensions.
    assert errors["1"]["copy_last_mse"] == pytest.approx((STEP**2 + 0.1**2) / 2, rel=0.1)
    assert errors["1"]["ratio"] == pytest.approx(errors["1"]["mse"] / errors["1"]["copy_last_mse"])
    assert errors["1"]["episodes"] == 400


def test_a_deterministic_env_has_no_floor():
    env = NoisyDrift(noise=0.0)
    errors = resampled_simulator_errors(env, _episodes(env, 5), (1, 10), seed=10, resample_seed=99)
    assert errors["1"]["mse"] == 0.0 and errors["10"]["mse"] == 0.0
    assert errors["10"]["copy_last_mse"] == pytest.approx((10 * STEP) ** 2 / 2)


def test_episodes_replayed_from_the_wrong_seeds_are_not_a_floor():
    # The start is drawn at reset, so replaying from other seeds measures a different start, not noise.
    env = NoisyDrift(noise=0.0)
    errors = resampled_simulator_errors(env, _episodes(env, 20), (1,), seed=1_000, resample_seed=99)
    assert errors["1"]["mse"] > 0.01


def test_no_episodes_is_refused_in_one_line():
    with pytest.raises(ValueError, match="needs at least one episode"):
        resampled_simulator_errors(NoisyDrift(0.1), [], seed=0, resample_seed=1)
