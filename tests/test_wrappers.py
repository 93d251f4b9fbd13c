"""Observation history, action chunks, simulated per-action delay and execution noise."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from worldsim.envs.wrappers import ActionChunk, ExecutionNoise, ObservationHistory, PerActionDelay

PUSH_T = "worldsim/PushT-v0"


def _actions(env: gym.Env, count: int, seed: int = 0) -> list[np.ndarray]:
    space = env.action_space
    space.seed(seed)
    return [space.sample() for _ in range(count)]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda env: ObservationHistory(env, 3),
        lambda env: ActionChunk(env, 4),
        lambda env: PerActionDelay(env, 2),
        lambda env: ExecutionNoise(env, 0.1),
    ],
    ids=["history", "chunk", "latency", "noise"],
)
def test_wrappers_pass_check_env(wrap):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # check_env always notes that a wrapped env is not its unwrapped self; anything else is a failure.
        warnings.filterwarnings("ignore", message=".*is different from the unwrapped version")
        # MountainCar: its observations provably stay in its space under any actions, which check_env samples
        # unseeded (Push-T's block can be flung past its declared bounds by random target jumps).
        check_env(wrap(gym.make("MountainCarContinuous-v0").unwrapped), skip_render_check=True)


def test_observation_history_pads_with_the_first_observation_and_keeps_order():
    env = ObservationHistory(gym.make(PUSH_T), 3)
    assert env.observation_space.shape == (3, 6)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, np.stack([obs[-1]] * 3))
    plain = gym.make(PUSH_T)
    expected = [plain.reset(seed=0)[0]]
    for action in _actions(env, 4):
        obs, *_ = env.step(action)
        expected.append(plain.step(action)[0])
    np.testing.assert_array_equal(obs, np.stack(expected[-3:]))
    obs, _ = env.reset(seed=1)  # the history does not leak across episodes
    np.testing.assert_array_equal(obs, np.stack([plain.reset(seed=1)[0]] * 3))


def test_observation_history_stacks_each_key_of_dict_observations():
    env = ObservationHistory(gym.make(PUSH_T, obs_type="state_pixels", image_size=16), 2)
    plain = gym.make(PUSH_T, obs_type="state_pixels", image_size=16)
    obs, _ = env.reset(seed=0)
    first, _ = plain.reset(seed=0)
    assert obs["state"].shape == (2, 6) and obs["pixels"].shape == (2, 16, 16, 3)
    (action,) = _actions(env, 1)
    obs, *_ = env.step(action)
    second = plain.step(action)[0]
    assert env.observation_space.contains(obs)
    for key in ("state", "pixels"):  # oldest first, each key from the same two steps
        np.testing.assert_array_equal(obs[key], np.stack([first[key], second[key]]))


def test_action_chunk_executes_the_chunk_and_sums_rewards():
    env = ActionChunk(gym.make(PUSH_T), 4)
    assert env.action_space.shape == (4, 2)
    plain = gym.make(PUSH_T)
    env.reset(seed=0)
    plain.reset(seed=0)
    chunk = np.stack(_actions(plain, 4))
    obs, reward, terminated, truncated, info = env.step(chunk)
    rewards = [plain.step(action)[1] for action in chunk]
    np.testing.assert_array_equal(obs, plain.unwrapped._state_obs())
    assert reward == pytest.approx(sum(rewards))
    assert info["executed_steps"] == 4
    np.testing.assert_allclose(info["step_rewards"], rewards)


def test_action_chunk_stops_at_truncation():
    env = ActionChunk(gym.wrappers.TimeLimit(gym.make(PUSH_T).unwrapped, max_episode_steps=6), 4)
    env.reset(seed=0)
    chunk = np.zeros((4, 2), np.float32)
    assert env.step(chunk)[4]["executed_steps"] == 4
    _, _, _, truncated, info = env.step(chunk)
    assert truncated and info["executed_steps"] == 2 and len(info["step_rewards"]) == 2


def test_action_chunk_rejects_wrong_shapes():
    env = ActionChunk(gym.make(PUSH_T), 4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(2))


def test_inference_latency_holds_the_previous_action_for_ticks_steps():
    ticks = 2
    env = PerActionDelay(gym.make(PUSH_T), ticks)
    plain = gym.make(PUSH_T)
    env.reset(seed=0)
    plain.reset(seed=0)
    actions = _actions(plain, 3)
    obs, reward, *_, info = env.step(actions[0])  # first step after reset: no delay
    assert info["latency_steps"] == 0
    np.testing.assert_array_equal(obs, plain.step(actions[0])[0])
    for previous, action in zip(actions[:-1], actions[1:], strict=True):
        obs, reward, *_, info = env.step(action)
        rewards = [plain.step(previous)[1] for _ in range(ticks)]
        expected_obs, last_reward, *_ = plain.step(action)
        np.testing.assert_array_equal(obs, expected_obs)
        assert reward == pytest.approx(sum(rewards) + last_reward)
        assert info["latency_steps"] == ticks


def test_inference_latency_resets_the_held_action():
    env = PerActionDelay(gym.make(PUSH_T), 3)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[4]["latency_steps"] == 0


def test_inference_latency_stops_when_the_episode_ends_during_the_delay():
    env = PerActionDelay(gym.wrappers.TimeLimit(gym.make(PUSH_T).unwrapped, max_episode_steps=3), 5)
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    *_, truncated, info = env.step(np.zeros(2, np.float32))
    assert truncated and info["latency_steps"] == 2


def test_zero_latency_is_transparent():
    env = PerActionDelay(gym.make(PUSH_T), 0)
    plain = gym.make(PUSH_T)
    env.reset(seed=0)
    plain.reset(seed=0)
    for action in _actions(plain, 5):
        np.testing.assert_array_equal(env.step(action)[0], plain.step(action)[0])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda env: ObservationHistory(env, 0), "n must be an int >= 1, got 0"),
        (lambda env: ActionChunk(env, 2.5), "n must be an int >= 1, got 2.5"),
        (lambda env: PerActionDelay(env, -1), "ticks must be an int >= 0, got -1"),
        (lambda env: ObservationHistory(env, True), "n must be an int >= 1, got True"),
    ],
)
def test_bad_sizes_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make(gym.make(PUSH_T))


def test_execution_noise_runs_a_seeded_perturbation_and_reports_it():
    def run(seed):
        env = ExecutionNoise(gym.make("MountainCarContinuous-v0"), 0.5)
        env.reset(seed=seed)
        executed = [env.step(np.array([0.9], np.float32))[4]["executed_action"] for _ in range(200)]
        return np.concatenate(executed)

    first, again, other = run(3), run(3), run(4)
    np.testing.assert_array_equal(first, again)  # reproducible under a seeded reset
    assert not np.array_equal(first, other)
    # noise of std 0.5 (the half range is 1) around 0.9, clipped into [-1, 1]: P(0.9 + 0.5 z >= 1) = P(z >= 0.2)
    # = 0.42 of the steps end at the bound (200 draws: standard error 0.035)
    assert first.max() == 1.0 and first.min() >= -1.0
    assert abs(np.mean(first == 1.0) - 0.42) < 0.12


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ExecutionNoise(gym.make("MountainCarContinuous-v0"), 0), "scale must be a number > 0, got 0"),
        (lambda: ExecutionNoise(gym.make("MountainCarContinuous-v0"), True), "scale must be a number > 0"),
        (lambda: ExecutionNoise(gym.make("CartPole-v1"), 0.1), "needs a bounded Box action space"),
    ],
)
def test_execution_noise_refuses_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
