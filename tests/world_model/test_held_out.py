"""The simulator's own noise floor: a resampled replay scores twice the transition variance, a deterministic
env scores nothing."""

import gymnasium as gym
import numpy as np
import pytest

from worldsim.world_model.data import collect_episodes
from worldsim.world_model.held_out import perturbed_simulator_errors, resampled_simulator_errors

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


class LinearPoint(gym.Env):
    """``x' = gain * x + a``, deterministic: an unstable system for a gain above 1, a stable one below."""

    def __init__(self, gain: float):
        self.gain = gain
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.1, 0.1))
        return np.array([self.x]), {}

    def step(self, action):
        self.x = self.gain * self.x + float(action[0])
        return np.array([self.x]), 0.0, False, False, {}


class Hold:
    """The action that keeps ``LinearPoint`` where it is, from its observation (a feedback controller)."""

    def __init__(self, gain: float, saturated: bool = False):
        self.gain, self.saturated = gain, saturated

    def reset(self):
        pass

    def __call__(self, obs, info):
        if self.saturated:
            return np.array([2.0], np.float32)
        return np.array([(1.0 - self.gain) * obs[0]], np.float32)


@pytest.mark.parametrize("gain", [2.0, 0.5])
def test_a_first_step_difference_grows_on_an_unstable_system_and_fades_on_a_stable_one(gain):
    env = LinearPoint(gain)
    episodes = collect_episodes(env, [Hold(gain)], 6, seed=10, max_steps=10, progress=False)
    epsilon = 1e-3
    errors = perturbed_simulator_errors(env, episodes, (1, 4, 10), seed=10, epsilon=epsilon)
    shift = epsilon * 2.0  # epsilon times the half-range of [-2, 2]
    for h in (1, 4, 10):  # the first action's shift, carried h - 1 steps by the gain
        assert errors[str(h)]["mse"] == pytest.approx((shift * gain ** (h - 1)) ** 2, rel=1e-3)
    assert errors["10"]["episodes"] == 6


def test_a_saturated_first_action_is_shifted_inwards():
    env = LinearPoint(1.0)
    episodes = collect_episodes(env, [Hold(1.0, saturated=True)], 3, seed=10, max_steps=2, progress=False)
    errors = perturbed_simulator_errors(env, episodes, (1, 2), seed=10, epsilon=0.01)
    assert errors["1"]["mse"] == pytest.approx(0.02**2, rel=1e-3)
    assert errors["2"]["mse"] == pytest.approx(0.02**2, rel=1e-3)


def test_the_perturbed_replay_refuses_what_it_cannot_shift():
    env = LinearPoint(2.0)
    episodes = collect_episodes(env, [Hold(2.0)], 1, seed=10, max_steps=2, progress=False)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        perturbed_simulator_errors(env, episodes, seed=10, epsilon=0.0)
    with pytest.raises(ValueError, match="needs at least one episode"):
        perturbed_simulator_errors(env, [], seed=10, epsilon=0.1)
    env.action_space = gym.spaces.Discrete(2)
    with pytest.raises(ValueError, match="shifts a bounded Box action"):
        perturbed_simulator_errors(env, episodes, seed=10, epsilon=0.1)
