"""Experts for public tasks: the protocol, success (or a return far above random) on seeded episodes, and the
path from such an env through ``collect_dataset`` to ``load_demonstrations``.

Thresholds come from ``benchmarks/results/public_experts.json`` (reset seeds 0-99): the fast tests run a few
of those seeds, the slow ones more. There the uniform-random policy's mean returns are -148.5 (Pusher), 50.1
(InvertedDoublePendulum: it falls after 6.6 steps) and -206.7 (LunarLander); the experts' -43.4, 9359.9 and 280.3.
"""

import gymnasium as gym
import numpy as np
import pytest

from worldsim.envs.experts import Expert
from worldsim.envs.public_experts import GOAL_ERRORS, PUBLIC_TASKS, GymPushTExpert, make_public_env


def _make(env_id: str) -> gym.Env:
    package = PUBLIC_TASKS[env_id].package
    if package is not None:
        pytest.importorskip(package)
    if env_id.startswith("LunarLander"):
        pytest.importorskip("Box2D")
    return make_public_env(env_id)


def _episode(env: gym.Env, expert, seed: int, strip_info: tuple[str, ...] = ()) -> dict:
    obs, info = env.reset(seed=seed)
    expert.reset()
    total, actions, done = 0.0, [], False
    while not done:
        action = expert(obs, {k: v for k, v in info.items() if k not in strip_info})
        assert env.action_space.contains(action), action
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        total, done = total + float(reward), terminated or truncated
    return {"return": total, "obs": obs, "info": info, "actions": np.array(actions), "length": len(actions)}


def _success(env_id: str, result: dict) -> bool:
    return bool(result["info"][PUBLIC_TASKS[env_id].success_key])


def test_the_table_describes_public_tasks_only():
    assert len(PUBLIC_TASKS) >= 6 and not any(env_id.startswith("worldsim/") for env_id in PUBLIC_TASKS)
    for env_id, task in PUBLIC_TASKS.items():
        assert task.env_id == env_id
        if task.package is None:  # Gymnasium's own envs; the others register when their package is imported
            assert env_id in gym.registry
        assert task.goal_error is None or task.goal_error in GOAL_ERRORS
    # Experts that need no optional package are built here; the others in their tasks' tests.
    assert isinstance(PUBLIC_TASKS["Pusher-v5"].expert(seed=0), Expert)
    assert isinstance(PUBLIC_TASKS["InvertedDoublePendulum-v5"].expert(seed=0), Expert)


SUCCESS_TASKS = ["gym_pusht/PushT-v0", "FetchReach-v4", "FetchPush-v4", "FetchPickAndPlace-v4"]


@pytest.mark.parametrize("env_id", SUCCESS_TASKS)
def test_expert_succeeds_on_a_few_seeds(env_id):
    env = _make(env_id)
    expert = PUBLIC_TASKS[env_id].expert(seed=0)
    assert isinstance(expert, Expert)
    for seed in range(3):
        result = _episode(env, expert, seed)
        assert _success(env_id, result), (env_id, seed)
        if env_id.startswith("Fetch"):  # the gripper dimension is a discrete command
            assert set(np.unique(result["actions"][:, 3])) <= {-1.0, 1.0}
            assert GOAL_ERRORS["goal_distance"](result["obs"], result["info"]) < 0.05


def test_fetch_pick_and_place_opens_and_closes_the_gripper():
    env = _make("FetchPickAndPlace-v4")
    result = _episode(env, PUBLIC_TASKS["FetchPickAndPlace-v4"].expert(seed=0), seed=5)
    assert _success("FetchPickAndPlace-v4", result)
    assert set(np.unique(result["actions"][:, 3])) == {-1.0, 1.0}


def test_pusher_brings_the_object_closer_far_above_random():
    env = _make("Pusher-v5")
    expert = PUBLIC_TASKS["Pusher-v5"].expert(seed=0)
    for seed in (2, 6):  # measured: returns -36.9 and -36.8, the object 8.3 and 7.7 cm closer
        start = np.asarray(env.reset(seed=seed)[0])
        result = _episode(env, expert, seed)
        assert result["return"] > -60.0  # random actions: -148.5 on average
        before = float(np.linalg.norm(start[17:19] - start[20:22]))
        assert GOAL_ERRORS["pusher_goal_distance"](result["obs"], result["info"]) < before - 0.05


def test_inverted_double_pendulum_balances_the_whole_episode():
    env = _make("InvertedDoublePendulum-v5")
    result = _episode(env, PUBLIC_TASKS["InvertedDoublePendulum-v5"].expert(seed=0), seed=0)
    assert result["length"] == 1000 and result["return"] > 9300.0


def test_lunar_lander_lands_from_the_observation_alone():
    env = _make("LunarLanderContinuous-v3")
    expert = PUBLIC_TASKS["LunarLanderContinuous-v3"].expert(seed=0)
    returns = [_episode(env, expert, seed)["return"] for seed in range(3)]
    assert min(returns) >= 200.0, returns  # Gymnasium's "solved" landing; measured 306.0, 273.9, 257.4


def test_pusht_expert_tracks_the_agent_velocity_itself():
    """Without ``info["vel_agent"]`` the expert predicts the agent's velocity with the PD loop's own model:
    it acts as it does with gym-pusht's reported velocity (to rounding), so it also runs on bare observations."""
    env = _make("gym_pusht/PushT-v0")
    with_info = _episode(env, GymPushTExpert(seed=2), seed=7)
    bare = _episode(env, GymPushTExpert(seed=2), seed=7, strip_info=("vel_agent", "goal_pose"))
    assert _success("gym_pusht/PushT-v0", bare) and bare["length"] == with_info["length"]
    np.testing.assert_allclose(bare["actions"], with_info["actions"], atol=1e-3)


def test_pusht_expert_goes_round_either_way():
    """The per-episode coin: from one start, the two sides of the coin walk round the block differently."""
    env = _make("gym_pusht/PushT-v0")
    paths = {}
    for expert_seed in range(10):
        expert = GymPushTExpert(seed=expert_seed)
        expert.reset()
        side = expert.side
        expert.reset = lambda: None  # keep the side just drawn
        result = _episode(env, expert, seed=3)
        assert _success("gym_pusht/PushT-v0", result)
        paths.setdefault(side, result["actions"])
    assert set(paths) == {-1, 1}
    length = min(len(paths[-1]), len(paths[1]))
    assert np.abs(paths[-1][:length] - paths[1][:length]).max() > 50.0  # px


def test_collect_dataset_records_a_public_env_through_the_protocol(tmp_path):
    pytest.importorskip("gym_pusht")
    from worldsim.envs.datasets import collect_dataset, load_demonstrations

    env = make_public_env("gym_pusht/PushT-v0")  # registers the env for collect_dataset's gymnasium.make
    collect_dataset(
        "gym_pusht/PushT-v0", "pusht/public-v0", 2, seeds=[11, 3], env_kwargs={"obs_type": "state"},
        expert=GymPushTExpert, path=tmp_path, progress=False,
    )  # fmt: skip
    episodes = load_demonstrations(
        "pusht/public-v0", "gym_pusht/PushT-v0", env_kwargs={"obs_type": "state"}, path=tmp_path
    )
    assert len(episodes) == 2 and all(episode.success for episode in episodes)
    # The recorded actions are the expert's: replayed from the same reset seeds they give the same observations.
    for reset_seed, episode in zip([11, 3], episodes, strict=True):
        obs, _ = env.reset(seed=reset_seed)
        observations = [obs]
        for action in episode.actions:
            observations.append(env.step(action)[0])
        np.testing.assert_allclose(np.array(observations), episode.observations, rtol=0, atol=1e-9)


def test_bad_seeds_for_a_public_env_are_refused(tmp_path):
    pytest.importorskip("gym_pusht")
    from worldsim.envs.datasets import collect_dataset

    make_public_env("gym_pusht/PushT-v0")
    with pytest.raises(ValueError, match="seeds must hold one reset seed per episode: 1 seeds for 2"):
        collect_dataset(
            "gym_pusht/PushT-v0", "pusht/bad-v0", 2, seeds=[4], env_kwargs={"obs_type": "state"},
            expert=GymPushTExpert, path=tmp_path, progress=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="obs_type='pixels' applies to worldsim's tasks only"):
        collect_dataset(
            "gym_pusht/PushT-v0", "pusht/bad-v0", 1, obs_type="pixels", expert=GymPushTExpert, path=tmp_path,
            progress=False,
        )  # fmt: skip


def test_unknown_public_task_is_refused():
    with pytest.raises(ValueError, match="is not one of the public tasks"):
        make_public_env("CartPole-v1")


@pytest.mark.slow
@pytest.mark.parametrize("env_id", SUCCESS_TASKS)
def test_expert_success_over_fifty_episodes(env_id):
    env = _make(env_id)
    expert = PUBLIC_TASKS[env_id].expert(seed=0)
    assert np.mean([_success(env_id, _episode(env, expert, seed)) for seed in range(50)]) >= 0.96


@pytest.mark.slow
def test_pusher_return_over_twenty_episodes():
    env = _make("Pusher-v5")
    expert = PUBLIC_TASKS["Pusher-v5"].expert(seed=0)
    assert np.mean([_episode(env, expert, seed)["return"] for seed in range(20)]) > -55.0  # measured -43.6


@pytest.mark.slow
def test_inverted_double_pendulum_over_ten_episodes():
    env = _make("InvertedDoublePendulum-v5")
    expert = PUBLIC_TASKS["InvertedDoublePendulum-v5"].expert(seed=0)
    assert all(_episode(env, expert, seed)["length"] == 1000 for seed in range(10))


@pytest.mark.slow
def test_lunar_lander_over_fifty_episodes():
    env = _make("LunarLanderContinuous-v3")
    expert = PUBLIC_TASKS["LunarLanderContinuous-v3"].expert(seed=0)
    returns = np.array([_episode(env, expert, seed)["return"] for seed in range(50)])
    assert returns.mean() > 250.0 and np.mean(returns >= 200.0) >= 0.94  # measured 284.5 and 1.0
