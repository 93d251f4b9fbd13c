import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tests.world_model.conftest import PointMass, pixel_model, state_model
from worldsim.world_model.data import RandomWalkActor, collect_episodes
from worldsim.world_model.env import WorldModelEnv
from worldsim.world_model.session import SessionConfig


def far_right(obs, action, next_obs):
    return float(next_obs[0])


@pytest.mark.parametrize("sampling", ["autoregressive", "rolling"])
def test_check_env_passes(sampling):
    env = WorldModelEnv(
        model=state_model(), context_env=PointMass(), session=SessionConfig(sampling=sampling, rolling_window=2),
        reward_fn=far_right, max_episode_steps=20,
    )  # fmt: skip
    check_env(env, skip_render_check=True)


def test_check_env_passes_for_pixels_with_render():
    env = WorldModelEnv(model=pixel_model(), context_episodes=pixel_episodes(), render_mode="rgb_array")
    check_env(env)
    obs, _ = env.reset(seed=0)
    next_obs, *_ = env.step(env.action_space.sample())
    assert next_obs.dtype == np.uint8 and next_obs.shape == (32, 32, 3)
    np.testing.assert_array_equal(env.render(), next_obs)


def pixel_episodes():
    rng = np.random.default_rng(0)
    episodes = collect_episodes(PointMass(), [RandomWalkActor(PointMass().action_space, seed=0)], 2, max_steps=6,
                                progress=False)  # fmt: skip
    import dataclasses

    return [
        dataclasses.replace(e, observations=rng.integers(0, 256, (len(e) + 1, 32, 32, 3), dtype=np.uint8))
        for e in episodes
    ]


def test_same_seed_same_episode_and_context_from_episodes():
    episodes = collect_episodes(PointMass(), [RandomWalkActor(PointMass().action_space, seed=0)], 3, max_steps=10,
                                progress=False)  # fmt: skip
    env = WorldModelEnv(model=state_model(), context_episodes=episodes, context_frames=3, reward_fn=far_right)
    runs = []
    for seed in (4, 4, 5):
        obs, info = env.reset(seed=seed)
        assert info["context_frames"] == 3
        trajectory = [obs]
        for action in np.linspace(-1, 1, 8, dtype=np.float32)[:, None].repeat(2, 1):
            obs, reward, terminated, truncated, _ = env.step(action)
            assert reward == pytest.approx(obs[0]) and not terminated and not truncated
            trajectory.append(obs)
        runs.append(np.stack(trajectory))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    assert all(env.observation_space.contains(o) for o in runs[0])


def test_termination_truncation_and_errors():
    env = WorldModelEnv(model=state_model(), context_env=PointMass(), termination_fn=lambda obs: True,
                        max_episode_steps=1)  # fmt: skip
    with pytest.raises(ValueError, match="reset"):
        env.step(np.zeros(2, np.float32))
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
    assert terminated and truncated
    with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
        env.step(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="not both"):
        WorldModelEnv(model=state_model(), context_env=PointMass(), context_episodes=[])
    with pytest.raises(ValueError, match="pixel world model"):
        WorldModelEnv(model=state_model(), context_env=PointMass(), render_mode="rgb_array")
    with pytest.raises(ValueError, match="records no training environment"):
        WorldModelEnv(model=state_model())
    with pytest.raises(ValueError, match="context_env observations have shape"):
        WorldModelEnv(model=state_model(), context_env=gym.make("CartPole-v1"))


def test_vector_env_runs_a_policy_inside_the_model():
    """Two model copies under gymnasium's vector API, driven by a policy that only sees observations."""
    envs = gym.vector.SyncVectorEnv(
        [lambda: WorldModelEnv(model=state_model(), context_env=PointMass(), reward_fn=far_right, max_episode_steps=5)]
        * 2  # fmt: skip
    )
    obs, _ = envs.reset(seed=[0, 1])
    assert obs.shape == (2, 2) and not np.array_equal(obs[0], obs[1])
    resetting = np.zeros(2, bool)
    for step in range(1, 8):  # past the truncation, so autoreset runs too
        actions = np.clip(-obs, -1, 1).astype(np.float32)  # a "go to the centre" policy
        obs, reward, terminated, truncated, _ = envs.step(actions)
        # far_right rewards the x of the generated observation; Gymnasium's next-step autoreset answers the step
        # after an episode's end with a fresh reset (reward 0) instead.
        np.testing.assert_allclose(reward, np.where(resetting, 0.0, obs[:, 0]), rtol=1e-6)
        assert truncated.tolist() == [step == 5] * 2 and not terminated.any()
        resetting = terminated | truncated
    envs.close()


def test_make_vec_with_registered_entry_point():
    gym.register(
        id="worldsim-test/PointMassModel-v0", entry_point=WorldModelEnv,
        kwargs={"model": state_model(), "context_env": PointMass()}, max_episode_steps=4,
    )  # fmt: skip
    try:
        envs = gym.make_vec("worldsim-test/PointMassModel-v0", num_envs=2, vectorization_mode="sync")
        envs.reset(seed=0)
        obs, *_ = envs.step(envs.action_space.sample())
        assert obs.shape == (2, 2)
        envs.close()
    finally:
        del gym.registry["worldsim-test/PointMassModel-v0"]


def test_the_model_starts_where_the_simulator_does_and_reports_the_reward_info():
    """``context_seed`` resets the real env with that seed (the simulator's start); ``context`` starts from
    given observations; a reward function's ``info`` reaches every step's info."""

    class FarRight:
        def __call__(self, obs, action, next_obs):
            return float(next_obs[0])

        def info(self, next_obs):
            return {"is_success": bool(next_obs[0] > 0.5), "x": float(next_obs[0])}

    real = PointMass()
    env = WorldModelEnv(model=state_model(), context_env=PointMass(), reward_fn=FarRight())
    for seed in (3, 8):
        obs, _ = env.reset(seed=0, options={"context_seed": seed})
        np.testing.assert_allclose(obs, real.reset(seed=seed)[0], atol=1e-6)
    given = np.array([[0.25, -0.5]], np.float32)
    obs, info = env.reset(seed=0, options={"context": given})
    np.testing.assert_allclose(obs, given[0])
    assert info["context_frames"] == 1
    next_obs, reward, *_, info = env.step(np.zeros(2, np.float32))
    assert info["x"] == pytest.approx(next_obs[0]) == pytest.approx(reward)
    assert info["is_success"] == (next_obs[0] > 0.5)
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['start'\]"):
        env.reset(options={"start": 1})
    with pytest.raises(ValueError, match="reset context must be observations"):
        env.reset(options={"context": np.zeros((1, 3))})
    episodes = collect_episodes(PointMass(), [RandomWalkActor(PointMass().action_space, seed=0)], 2, max_steps=5,
                                progress=False)  # fmt: skip
    recorded = WorldModelEnv(model=state_model(), context_episodes=episodes)
    with pytest.raises(ValueError, match="context_seed resets a real environment"):
        recorded.reset(options={"context_seed": 1})


def test_matched_seeds_start_the_model_from_the_simulator_s_reset():
    real = PointMass()
    env = WorldModelEnv(model=state_model(), context_env=PointMass(), match_seeds=True)
    for seed in (2, 9):
        np.testing.assert_allclose(env.reset(seed=seed)[0], real.reset(seed=seed)[0], atol=1e-6)
    unmatched = WorldModelEnv(model=state_model(), context_env=PointMass())
    assert not np.allclose(unmatched.reset(seed=2)[0], real.reset(seed=2)[0])
    episodes = collect_episodes(PointMass(), [RandomWalkActor(PointMass().action_space, seed=0)], 2, max_steps=5,
                                progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="match_seeds resets a real environment"):
        WorldModelEnv(model=state_model(), context_episodes=episodes, match_seeds=True)
