"""Minari demonstration datasets: recording, loading, space checks and training windows."""

import warnings

import gymnasium as gym
import minari
import numpy as np
import pytest

from worldsim.core.episodes import Episode, policy_windows, sequence_windows
from worldsim.envs.datasets import collect_dataset, datasets_root, fit_normalizers, load_demonstrations


def _episode(length: int, obs_dim: int = 3, act_dim: int = 2, offset: float = 0.0) -> Episode:
    """Observations and actions that encode their own step index, so windows can be checked exactly."""
    steps = np.arange(length + 1, dtype=np.float32) + offset
    return Episode(
        observations=np.repeat(steps[:, None], obs_dim, axis=1),
        actions=np.repeat(steps[:-1, None], act_dim, axis=1) + 0.5,
        rewards=np.zeros(length, np.float32),
        terminations=np.eye(1, length, length - 1, dtype=bool)[0],
        truncations=np.zeros(length, bool),
        success=True,
    )


@pytest.fixture(scope="module")
def push_t_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collect_dataset(
            "worldsim/PushT-v0", "worldsim/pusht/test-v0", 2, seed=5,
            obs_type="state_pixels", image_size=32, path=root, progress=False,
        )  # fmt: skip
    return root


def test_recorded_dataset_loads_back_as_episodes(push_t_dataset):
    episodes = load_demonstrations(
        "worldsim/pusht/test-v0", "worldsim/PushT-v0",
        env_kwargs={"obs_type": "state_pixels", "image_size": 32}, path=push_t_dataset,
    )  # fmt: skip
    assert len(episodes) == 2
    for episode in episodes:
        assert episode.success and episode.terminations[-1]
        assert episode.observations["state"].shape == (len(episode) + 1, 6)
        assert episode.observations["pixels"].shape == (len(episode) + 1, 32, 32, 3)
        assert episode.observations["pixels"].dtype == np.uint8
        assert episode.actions.shape == (len(episode), 2)


def test_recording_is_reproducible(push_t_dataset, tmp_path):
    collect_dataset("worldsim/PushT-v0", "worldsim/pusht/again-v0", 1, seed=5, path=tmp_path, progress=False)
    again = load_demonstrations("worldsim/pusht/again-v0", path=tmp_path)[0]
    first = load_demonstrations("worldsim/pusht/test-v0", path=push_t_dataset)[0]
    np.testing.assert_array_equal(again.actions, first.actions)
    np.testing.assert_array_equal(again.observations, first.observations["state"])


def test_loading_against_a_mismatched_task_raises(push_t_dataset):
    with pytest.raises(ValueError, match="observation_space"):
        load_demonstrations("worldsim/pusht/test-v0", "worldsim/PushT-v0", path=push_t_dataset)
    with pytest.raises(ValueError, match="does not match"):
        load_demonstrations(
            "worldsim/pusht/test-v0", "worldsim/PickPlace-v0",
            env_kwargs={"obs_type": "state_pixels", "image_size": 32}, path=push_t_dataset,
        )  # fmt: skip


def test_missing_or_existing_datasets_raise(push_t_dataset):
    with pytest.raises(ValueError, match="no local Minari dataset"):
        load_demonstrations("worldsim/pusht/missing-v0", path=push_t_dataset)
    with pytest.raises(ValueError, match="already exists"):
        collect_dataset("worldsim/PushT-v0", "worldsim/pusht/test-v0", 1, path=push_t_dataset, progress=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"env_id": "CartPole-v1"},  # no worldsim expert and none given
        {"env_id": "MountainCarContinuous-v0", "expert": lambda seed: None, "obs_type": "pixels"},
        {"num_episodes": 0},
        {"data_format": "csv"},
        {"num_envs": 0},
    ],
)
def test_bad_collection_arguments_raise(tmp_path, kwargs):
    arguments = {"env_id": "worldsim/PushT-v0", "num_episodes": 1, **kwargs}
    with pytest.raises(ValueError):
        collect_dataset(dataset_id="worldsim/bad/x-v0", path=tmp_path, progress=False, **arguments)


class PushWithVelocity:
    """A user's own controller for a Gymnasium env worldsim knows nothing about."""

    def __init__(self, seed=None):
        self.episodes = 0

    def reset(self):
        self.episodes += 1

    def __call__(self, obs, info):
        return np.array([1.0 if obs[1] >= 0 else -1.0], np.float32)  # obs = [position, velocity]


def test_collect_with_your_own_expert_on_any_env(tmp_path):
    collect_dataset(
        "MountainCarContinuous-v0", "mountaincar/test-v0", 2, seed=3, expert=PushWithVelocity, path=tmp_path,
        progress=False,
    )  # fmt: skip
    episodes = load_demonstrations("mountaincar/test-v0", "MountainCarContinuous-v0", path=tmp_path)
    assert len(episodes) == 2
    for index, episode in enumerate(episodes):
        # The recorded actions are the controller's, replayed they give back the recorded observations.
        env = gym.make("MountainCarContinuous-v0")
        obs, _ = env.reset(seed=3 + index)
        np.testing.assert_array_equal(obs, episode.observations[0])
        for action, expected in zip(episode.actions, episode.observations[1:], strict=True):
            assert abs(action[0]) == 1.0
            obs, *_ = env.step(action)
            np.testing.assert_array_equal(obs, expected)


def test_noisy_execution_records_the_expert_s_clean_labels_and_what_ran(tmp_path):
    """DART: the env runs the expert's action plus noise; the dataset keeps the expert's action as the label."""
    collect_dataset(
        "MountainCarContinuous-v0", "mountaincar/dart-v0", 2, seed=3, expert=PushWithVelocity, path=tmp_path,
        progress=False, action_noise=0.5,
    )  # fmt: skip
    episodes = load_demonstrations("mountaincar/dart-v0", "MountainCarContinuous-v0", path=tmp_path)
    with datasets_root(tmp_path):
        recorded = list(minari.load_dataset("mountaincar/dart-v0").iterate_episodes())
    for index, (episode, raw) in enumerate(zip(episodes, recorded, strict=True)):
        executed = raw.infos["executed_action"][1:]  # (the reset's row is a placeholder)
        assert set(np.unique(np.abs(episode.actions))) == {1.0}  # the expert's bang-bang labels ...
        # ... which ran as such only where the noise pointed out of [-1, 1] and was clipped (about half the steps)
        assert np.mean(executed != episode.actions) > 0.3
        env = gym.make("MountainCarContinuous-v0")
        env.reset(seed=3 + index)
        for action, expected in zip(executed, episode.observations[1:], strict=True):
            np.testing.assert_array_equal(env.step(action)[0], expected)  # what ran gives the observations


def test_a_noisy_recording_gets_its_own_dataset_id_and_bad_noise_is_refused():
    from worldsim.envs.tasks import TaskSpec

    assert TaskSpec(env_id="MountainCarContinuous-v0").demo_dataset_id() == "mountaincarcontinuous/expert-v0"
    noisy = TaskSpec(env_id="MountainCarContinuous-v0", demo_action_noise=0.1)
    assert noisy.demo_dataset_id() == "mountaincarcontinuous/expert-noise0p1-v0"
    with pytest.raises(ValueError, match="task.demo_action_noise must be a number >= 0, got -0.1"):
        TaskSpec(env_id="MountainCarContinuous-v0", demo_action_noise=-0.1)


def test_explicit_reset_seeds_and_make_kwargs_for_any_env(tmp_path):
    collect_dataset(
        "MountainCarContinuous-v0", "mountaincar/seeds-v0", 2, seeds=[11, 4], expert=PushWithVelocity,
        env_kwargs={"max_episode_steps": 25}, path=tmp_path, progress=False,
    )  # fmt: skip
    episodes = load_demonstrations("mountaincar/seeds-v0", path=tmp_path)
    assert [len(episode) for episode in episodes] == [25, 25]  # the make kwarg reached the env
    env = gym.make("MountainCarContinuous-v0")
    for reset_seed, episode in zip([11, 4], episodes, strict=True):
        np.testing.assert_array_equal(env.reset(seed=reset_seed)[0], episode.observations[0])
    with datasets_root(tmp_path):
        dataset = minari.load_dataset("mountaincar/seeds-v0")
    assert [meta["seed"] for meta in dataset.storage.get_episode_metadata([0, 1])] == [11, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": [1, 2, 3]}, "seeds must hold one reset seed per episode: 3 seeds for 2"),
        ({"seeds": []}, "0 seeds for 2"),
        ({"obs_type": "state_pixels", "env_kwargs": {"obs_type": "pixels"}}, "obs_type='state_pixels' contradicts"),
        ({"env_id": "MountainCarContinuous-v0", "expert": PushWithVelocity, "obs_type": "pixels"}, "env_kwargs"),
    ],
)
def test_bad_seeds_and_make_kwargs_are_refused_in_one_line(tmp_path, kwargs, message):
    arguments = {"env_id": "worldsim/PushT-v0", "num_episodes": 2, **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        collect_dataset(dataset_id="worldsim/bad/x-v0", path=tmp_path, progress=False, **arguments)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "worldsim").exists()  # refused before anything was recorded


def test_pick_place_dataset_records_the_discrete_gripper(tmp_path):
    # (The `worldsim collect` command that wraps collect_dataset is tested with the CLI.)
    collect_dataset("worldsim/PickPlace-v0", "worldsim/pickplace/cli-v0", 2, path=tmp_path, progress=False)
    episodes = load_demonstrations("worldsim/pickplace/cli-v0", "worldsim/PickPlace-v0", path=tmp_path)
    assert [episode.success for episode in episodes] == [True, True]
    assert set(np.unique(np.concatenate([episode.actions[:, 3] for episode in episodes]))) == {-1.0, 1.0}


def test_parallel_collection_records_every_episode_in_order(push_t_dataset, tmp_path):
    collect_dataset("worldsim/PushT-v0", "worldsim/pusht/vector-v0", 3, 5, path=tmp_path, progress=False, num_envs=2)
    episodes = load_demonstrations("worldsim/pusht/vector-v0", "worldsim/PushT-v0", path=tmp_path)
    # Each sub-environment's steps went to its own episode: replaying episode i's actions from its reset
    # seed 5 + i in a plain environment gives back exactly the recorded observations and rewards.
    env = gym.make("worldsim/PushT-v0")
    for index, episode in enumerate(episodes):
        observations, rewards = [env.reset(seed=5 + index)[0]], []
        for action in episode.actions:
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            rewards.append(reward)
        np.testing.assert_array_equal(np.stack(observations), episode.observations)
        np.testing.assert_array_equal(np.float32(rewards), episode.rewards)
        assert terminated == episode.terminations[-1] and truncated == episode.truncations[-1]
    # The first episode is the single-process recording's; the dataset does not depend on the process count.
    first = load_demonstrations("worldsim/pusht/test-v0", path=push_t_dataset)[0]
    np.testing.assert_array_equal(episodes[0].actions, first.actions)
    collect_dataset("worldsim/PushT-v0", "worldsim/pusht/three-v0", 3, 5, path=tmp_path, progress=False, num_envs=3)
    again = load_demonstrations("worldsim/pusht/three-v0", path=tmp_path)
    assert all(np.array_equal(a.actions, b.actions) for a, b in zip(episodes, again, strict=True))
    # Explicit seeds in parallel: each episode is reset, and its expert seeded, with its own seed.
    collect_dataset(
        "worldsim/PushT-v0", "worldsim/pusht/seeds-v0", 2, seeds=[7, 6], path=tmp_path, progress=False, num_envs=2
    )
    chosen = load_demonstrations("worldsim/pusht/seeds-v0", path=tmp_path)
    np.testing.assert_array_equal(chosen[0].actions, episodes[2].actions)
    np.testing.assert_array_equal(chosen[1].observations, episodes[1].observations)
    with datasets_root(tmp_path):
        stored = minari.load_dataset("worldsim/pusht/seeds-v0").storage.get_episode_metadata([0, 1])
    assert [meta["seed"] for meta in stored] == [7, 6]


def test_policy_windows_follow_diffusion_policy_padding():
    episodes = [_episode(5), _episode(3, offset=100)]
    obs, actions = policy_windows(episodes, obs_horizon=2, action_horizon=4)
    assert obs.shape == (8, 2, 3) and actions.shape == (8, 4, 2)
    np.testing.assert_array_equal(obs[0, :, 0], [0, 0])  # first observation repeated before the start
    np.testing.assert_array_equal(obs[3, :, 0], [2, 3])
    np.testing.assert_array_equal(actions[3, :, 0], [3.5, 4.5, 4.5, 4.5])  # last action repeated
    np.testing.assert_array_equal(actions[0, :, 0], [0.5, 1.5, 2.5, 3.5])  # chunk starts at the current step
    np.testing.assert_array_equal(obs[5, :, 0], [100, 100])  # windows never straddle episodes
    np.testing.assert_array_equal(actions[7, :, 0], [102.5, 102.5, 102.5, 102.5])


def test_sequence_windows_pair_frames_with_the_actions_between_them():
    frames, actions = sequence_windows([_episode(5), _episode(2, offset=100)], length=3)
    assert frames.shape == (3, 4, 3) and actions.shape == (3, 3, 2)  # the 2-step episode is too short
    np.testing.assert_array_equal(frames[1, :, 0], [1, 2, 3, 4])
    np.testing.assert_array_equal(actions[1, :, 0], [1.5, 2.5, 3.5])
    frames, _ = sequence_windows([_episode(7)], length=2, stride=3)
    np.testing.assert_array_equal(frames[:, 0, 0], [0, 3])
    with pytest.raises(ValueError, match="no episode has 9 steps"):
        sequence_windows([_episode(5)], length=9)


def test_dict_observations_are_windowed_per_key_or_by_the_key_named(push_t_dataset):
    episodes = load_demonstrations("worldsim/pusht/test-v0", path=push_t_dataset)
    windows, actions = policy_windows(episodes)  # a camera policy's windows: every key, cut alike
    assert set(windows) == {"pixels", "state"} and windows["pixels"].shape[1:] == (2, 32, 32, 3)
    assert len(windows["pixels"]) == len(windows["state"]) == len(actions)
    states, _ = policy_windows(episodes, obs_key="state")
    np.testing.assert_array_equal(states, windows["state"])
    frames, _ = sequence_windows(episodes, length=4, obs_key="pixels")
    assert frames.shape[1:] == (5, 32, 32, 3)
    with pytest.raises(ValueError, match="obs_key"):
        policy_windows([_episode(3)], obs_key="state")


def test_normalizers_cover_all_observations_and_actions():
    stats = fit_normalizers([_episode(4), _episode(2, offset=10)])
    obs = stats["observation"].normalize(np.array([[0.0, 0.0, 0.0], [12.0, 12.0, 12.0]]))
    np.testing.assert_allclose(obs, [[-1, -1, -1], [1, 1, 1]])
    np.testing.assert_allclose(stats["action"].unnormalize(np.zeros(2)), [(0.5 + 11.5) / 2] * 2)
    assert fit_normalizers([_episode(3)], mode="meanstd")["action"].mode == "meanstd"


@pytest.mark.parametrize("horizons", [(0, 4), (2, 0)])
def test_bad_window_arguments_raise(horizons):
    with pytest.raises(ValueError):
        policy_windows([_episode(3)], *horizons)
    with pytest.raises(ValueError):
        policy_windows([], 2, 4)


def test_a_derived_dataset_of_another_size_is_used_with_a_warning_not_silently(tmp_path):
    """The derived id names the env and the noise only: a later run asking for more episodes (or other seeds)
    is told that it trains on the earlier recording, and how to record the one it asks for."""
    import dataclasses

    from worldsim.core.distributed import DistributedContext
    from worldsim.envs.datasets import recorded_reset_seeds
    from worldsim.envs.tasks import TaskSpec
    from worldsim.policies.train import TrainPolicyConfig, load_task_demonstrations

    task = TaskSpec(env_id="MountainCarContinuous-v0", expert="tests.test_datasets:PushWithVelocity", demo_episodes=2,
                    demo_seed=3, max_episode_steps=30)  # fmt: skip
    config = TrainPolicyConfig(task=task, out=str(tmp_path / "policy"), data_path=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # recorded as asked: nothing to say
        ids, episodes = load_task_demonstrations(config, DistributedContext())
        load_task_demonstrations(config, DistributedContext())
    assert ids == ["mountaincarcontinuous/expert-v0"] and len(episodes) == 2
    assert recorded_reset_seeds(ids[0], path=tmp_path) == [3, 4]
    more = dataclasses.replace(config, task=dataclasses.replace(task, demo_episodes=5))
    with pytest.warns(UserWarning, match=r"2 episodes, reset seeds 3..4\), not the 5 episodes from seed 3 the task"):
        _, episodes = load_task_demonstrations(more, DistributedContext())
    assert len(episodes) == 2  # nothing re-recorded or deleted
    named = dataclasses.replace(more, task=dataclasses.replace(more.task, dataset_id="mountaincarcontinuous/expert-v0"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a dataset the user named is theirs to size
        load_task_demonstrations(named, DistributedContext())
    with pytest.raises(ValueError, match="no local Minari dataset 'missing/expert-v0'"):
        recorded_reset_seeds("missing/expert-v0", path=tmp_path)
