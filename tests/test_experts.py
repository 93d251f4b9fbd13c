"""Scripted experts: success on a few seeds, determinism, multimodality, state-only operation."""

import gymnasium as gym
import numpy as np
import pytest

from worldsim.envs.datasets import EXPERTS
from worldsim.envs.experts import PickPlaceExpert, PushTExpert
from worldsim.envs.registration import MUJOCO_TASKS


def _run(env: gym.Env, expert, seed: int) -> tuple[bool, np.ndarray]:
    env.reset(seed=seed)
    expert.reset()
    actions = []
    terminated = truncated = False
    while not (terminated or truncated):
        action = expert(env)
        assert env.action_space.contains(action)
        actions.append(action)
        _, _, terminated, truncated, info = env.step(action)
    return bool(info["is_success"]), np.array(actions)


def test_every_task_has_an_expert():
    assert set(EXPERTS) == set(MUJOCO_TASKS)


@pytest.mark.parametrize("env_id", sorted(EXPERTS))
def test_expert_succeeds_on_a_few_seeds(env_id):
    env = gym.make(env_id)
    expert = EXPERTS[env_id](seed=0)
    successes = [_run(env, expert, seed)[0] for seed in range(4)]
    assert all(successes)


@pytest.mark.parametrize("env_id", sorted(EXPERTS))
def test_expert_is_deterministic_given_its_seed(env_id):
    env = gym.make(env_id)
    _, first = _run(env, EXPERTS[env_id](seed=3), seed=11)
    _, second = _run(env, EXPERTS[env_id](seed=3), seed=11)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("env_id", sorted(EXPERTS))
def test_expert_acts_from_state_even_with_pixel_observations(env_id):
    env = gym.make(env_id, obs_type="pixels", image_size=16)
    state_env = gym.make(env_id)
    _, from_pixels_env = _run(env, EXPERTS[env_id](seed=1), seed=2)
    _, from_state_env = _run(state_env, EXPERTS[env_id](seed=1), seed=2)
    np.testing.assert_array_equal(from_pixels_env, from_state_env)


@pytest.mark.parametrize("expert_class", [PushTExpert, PickPlaceExpert])
def test_per_episode_choice_takes_both_values(expert_class):
    expert = expert_class(seed=0)
    sides = set()
    for _ in range(20):
        expert.reset()
        sides.add(expert.side)
    assert sides == {-1, 1}


def test_pick_place_expert_is_multimodal():
    """The same episode carried left and right of the straight line: two distinct, successful paths."""
    env = gym.make("worldsim/PickPlace-v0")
    paths = {}
    for expert_seed in range(10):
        expert = PickPlaceExpert(seed=expert_seed)
        env.reset(seed=4)
        expert.reset()
        side = expert.side
        success, actions = _run(env, _Replay(expert), seed=4)
        assert success
        paths.setdefault(side, actions)
    assert set(paths) == {-1, 1}
    assert np.abs(paths[-1][:, :2].sum(0) - paths[1][:, :2].sum(0)).max() < 1.0  # same start and end...
    length = min(len(paths[-1]), len(paths[1]))
    assert np.abs(paths[-1][:length, :2] - paths[1][:length, :2]).max() > 0.5  # ...different routes


def test_push_t_expert_is_multimodal():
    """Starting from the same state, the two sides of the coin lead to different pushing motions."""
    env = gym.make("worldsim/PushT-v0")
    runs = {}
    for expert_seed in range(10):
        expert = PushTExpert(seed=expert_seed)
        expert.reset()
        side = expert.side
        runs.setdefault(side, _run(env, _Replay(expert), seed=0))
    assert set(runs) == {-1, 1}
    assert all(success for success, _ in runs.values())
    length = min(len(runs[-1][1]), len(runs[1][1]))
    assert np.abs(runs[-1][1][:length] - runs[1][1][:length]).max() > 0.2


class _Replay:
    """Keeps an expert's already-drawn episode choice: ``reset()`` is a no-op."""

    def __init__(self, expert):
        self.expert = expert

    def reset(self):
        pass

    def __call__(self, env):
        return self.expert(env)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", sorted(EXPERTS))
def test_expert_reaches_ninety_percent_over_a_hundred_episodes(env_id):
    env = gym.make(env_id)
    expert = EXPERTS[env_id](seed=0)
    assert np.mean([_run(env, expert, seed)[0] for seed in range(100)]) >= 0.9
