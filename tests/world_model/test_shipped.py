"""The shipped Push-T world models load, stream from real context, and run as environments."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from worldsim.world_model.env import WorldModelEnv
from worldsim.world_model.model import WorldModel, resolve_checkpoint
from worldsim.world_model.rewards import PushTCoverageReward

SHIPPED = ["wm-pusht-state", "wm-pusht-state-sf", "wm-pusht-pixels"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_records_its_command_and_beats_copy_last(name):
    model = WorldModel.from_pretrained(name)
    assert model.metadata["command"].startswith("python -m worldsim.world_model.")
    assert model.metadata["env_id"] == "worldsim/PushT-v0"
    held_out = model.metadata["training"]["held_out"]
    assert held_out["one_step_mse"] < held_out["copy_last_mse"]
    size = sum(p.stat().st_size for p in resolve_checkpoint(name).iterdir())
    assert size < 10 * 2**20


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_as_environment(name):
    model = WorldModel.from_pretrained(name)
    pixels = model.observation_space.dtype == np.uint8
    reward = None if pixels else PushTCoverageReward()
    env = WorldModelEnv(
        model=model, reward_fn=reward, termination_fn=None if pixels else reward.terminated, max_episode_steps=50,
        render_mode="rgb_array" if pixels else None,
    )  # fmt: skip
    check_env(env, skip_render_check=not pixels)
    env.close()


def test_registered_neural_pusht_runs_and_rewards_coverage():
    import gymnasium as gym

    import worldsim  # noqa: F401

    env = gym.make("worldsim/NeuralPushT-v0")
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        total += reward
        assert obs.shape == env.observation_space.shape and 0.0 <= reward <= 1.0
    assert 0.0 <= total <= 5.0
    env.close()


def test_the_shipped_policy_is_evaluated_inside_the_world_model():
    from worldsim.policies.diffusion_policy import DiffusionPolicy
    from worldsim.policies.evaluation import evaluate_policy

    policy = DiffusionPolicy.from_pretrained("pusht-state", strategy="ddim", steps=5)
    result = evaluate_policy(
        policy, "worldsim/NeuralPushT-v0", episodes=2, seed=0, env_kwargs={"max_episode_steps": 30}, progress=False
    )
    # The policy acted on generated states for whole (time-limited) episodes and was rewarded by coverage.
    assert result["episodes"] == 2 and 0 < result["mean_steps"] <= 30
    assert 0.0 <= result["mean_reward"] <= 30.0 and result["calls_per_step"] > 0
