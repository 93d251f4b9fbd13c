"""Atari Breakout as a worldsim env: Gymnasium conformance, the scripted player, and the object measures."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import worldsim  # noqa: F401  (registers the worldsim/ environments)
from worldsim.envs.atari import FIRE, BreakoutPlayer, breakout_fidelity, breakout_objects
from worldsim.envs.tasks import load_task
from worldsim.world_model.data import NoisyExpert

pytest.importorskip("ale_py")


def _play(steps: int, seed: int = 0, random_prob: float = 0.0):
    env = gym.make("worldsim/Breakout-v0")
    player = BreakoutPlayer(seed=seed, random_prob=random_prob)
    obs, info = env.reset(seed=seed)
    player.reset()
    frames, infos, actions, rewards = [obs], [info], [], []
    for _ in range(steps):
        action = player(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs), infos.append(info), actions.append(action), rewards.append(reward)
        if terminated or truncated:
            break
    env.close()
    return np.stack(frames), infos, actions, rewards


def test_check_env_passes_without_warnings():
    env = gym.make("worldsim/Breakout-v0", image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    assert env.observation_space == gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    assert gym.spec("worldsim/Breakout-v0").max_episode_steps == load_task("breakout").max_episode_steps == 2000
    env.close()


def test_seeded_play_is_deterministic_and_scores():
    first, infos, actions, rewards = _play(300)
    second, *_ = _play(300)
    np.testing.assert_array_equal(first, second)
    assert actions[0] == FIRE and infos[0]["ball_y"] == 0  # no ball in play until served
    assert sum(rewards) >= 4  # the player keeps the ball in play long enough to break bricks
    with pytest.raises(ValueError, match="Breakout actions are 0..3"):
        gym.make("worldsim/Breakout-v0").unwrapped.step(7)


def test_object_measures_follow_the_consoles_positions():
    frames, infos, _, _ = _play(400)
    objects = breakout_objects(frames)
    assert np.isfinite(objects["paddle"][:, 0]).all()
    # 64 px frames of a 160 px wide screen: the paddle's centre is (paddle_x - 39) * 0.4 (measured at full
    # size), away from the walls, whose lower ends are red too.
    paddle = (np.array([i["paddle_x"] for i in infos], float) - 39) * 0.4
    free = (paddle > 7) & (paddle < 57)
    assert free.mean() > 0.5
    np.testing.assert_allclose(objects["paddle"][free, 0], paddle[free], atol=1.0)
    ball = np.array([[i["ball_x"], i["ball_y"]] for i in infos], float)
    in_flight = np.isfinite(objects["ball"][:, 0])
    assert 0.3 < in_flight.mean() < 1.0
    np.testing.assert_allclose(objects["ball"][in_flight, 0], (ball[in_flight, 0] - 48.5) * 0.4, atol=1.5)
    assert objects["bricks"][-1] < objects["bricks"][0]  # bricks were broken


def test_fidelity_of_true_frames_is_exact_and_displaced_objects_are_measured():
    frames, *_ = _play(60)
    same = breakout_fidelity(frames, frames)
    assert np.nanmax(same["paddle_centre_error_px"]) == 0 and same["ball_presence_agrees"].all()
    np.testing.assert_array_equal(same["bricks_ratio"], 1.0)
    red = np.array([200, 72, 72], np.uint8)
    truth, dream = np.zeros((2, 64, 64, 3), np.uint8), np.zeros((2, 64, 64, 3), np.uint8)
    truth[:, 57:59, 20:26] = red  # paddle
    dream[:, 57:59, 25:31] = red
    truth[0, 40:42, 30:32] = red  # a ball in the first frame only, which the dream lost
    dream[1, 45:47, 10:12] = red  # and one the dream made up in the second
    truth[:, 20:25, 10:50] = dream[:, 20:23, 10:50] = 150  # bricks: the dream kept 3 of 5 rows
    measured = breakout_fidelity(dream, truth)
    np.testing.assert_allclose(measured["paddle_centre_error_px"], 5.0)
    np.testing.assert_array_equal(measured["ball_presence_agrees"], [0.0, 0.0])
    assert np.isnan(measured["ball_centre_error_px"]).all()
    np.testing.assert_allclose(measured["bricks_ratio"], 0.6)


def test_a_discrete_noisy_expert_takes_random_actions_at_its_rate():
    class Always:
        def reset(self):
            pass

        def __call__(self, obs, info):
            return 2

    noisy = NoisyExpert(Always(), gym.spaces.Discrete(4), noise_std=0.4, seed=0)
    actions = np.array([noisy(None, {}) for _ in range(4000)])
    # random 40% of the time, of which a quarter happens to be the expert's own action
    assert abs((actions != 2).mean() - 0.4 * 0.75) < 0.03
    with pytest.raises(ValueError, match="a probability for a Discrete space"):
        NoisyExpert(Always(), gym.spaces.Discrete(4), noise_std=1.5)


def test_play_holds_the_tasks_keys_for_breakout():
    from types import SimpleNamespace

    from worldsim.world_model.play import play_keys

    dreamt = SimpleNamespace(model=SimpleNamespace(metadata={"env_id": "worldsim/Breakout-v0"}))
    assert play_keys(dreamt) == {"left": 3, "right": 2, "space": 1}
    other = SimpleNamespace(model=SimpleNamespace(metadata={"env_id": "worldsim/PushT-v0"}))
    assert play_keys(other) == {}
