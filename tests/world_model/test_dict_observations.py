"""A goal-conditioned Dict observation space (observation, achieved and desired goal) is modelled as one flat
state vector, in Gymnasium's key order, by the same recipe as a Box one."""

import gymnasium as gym
import numpy as np
import pytest

from worldsim.core.episodes import Episode
from worldsim.core.trainer_config import TrainerConfig
from worldsim.envs.tasks import TaskSpec
from worldsim.world_model.config import TrainWorldModelConfig, WorldModelConfig
from worldsim.world_model.data import dict_state_env, flat_state_env, flat_state_space, flatten_episodes
from worldsim.world_model.env import WorldModelEnv
from worldsim.world_model.model import WorldModel
from worldsim.world_model.rewards import GoalReachedReward
from worldsim.world_model.train import gather_episodes, train_world_model

ENV_ID = "worldsim-tests/GoalPoint-v0"


class GoalPoint(gym.Env):
    """A point moved by its action toward a fixed goal; Fetch-like Dict observations and goal rules."""

    distance_threshold = 0.05

    def __init__(self):
        box = gym.spaces.Box(-10.0, 10.0, (2,), np.float64)
        self.observation_space = gym.spaces.Dict(
            {"observation": gym.spaces.Box(-10.0, 10.0, (3,), np.float64), "achieved_goal": box, "desired_goal": box}
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self):
        speed = np.linalg.norm(self._velocity, keepdims=True)
        point, goal = self._point.copy(), self._goal.copy()
        return {"observation": np.r_[point, speed], "achieved_goal": point, "desired_goal": goal}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._point, self._goal = self.np_random.uniform(-1, 1, 2), self.np_random.uniform(-1, 1, 2)
        self._velocity = np.zeros(2)
        return self._obs(), {}

    def step(self, action):
        self._velocity = 0.1 * np.asarray(action, np.float64)
        self._point = self._point + self._velocity
        return self._obs(), self.compute_reward(self._point, self._goal, {}), False, False, {}

    def compute_reward(self, achieved_goal, desired_goal, info):
        return -float(np.linalg.norm(np.asarray(achieved_goal) - np.asarray(desired_goal)))


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=GoalPoint, max_episode_steps=50)


def test_a_dict_of_boxes_is_one_vector_in_gymnasiums_key_order():
    space = GoalPoint().observation_space
    flat = flat_state_space(space)
    assert flat.shape == (7,) and flat.dtype == np.float32
    obs = {
        "observation": np.array([[1.0, 2.0, 3.0]] * 2),
        "achieved_goal": np.array([[4.0, 5.0]] * 2),
        "desired_goal": np.array([[6.0, 7.0]] * 2),
    }
    recorded = Episode(obs, np.zeros((1, 2), np.float32), np.zeros(1), np.zeros(1, bool), np.zeros(1, bool), False)
    [flattened] = flatten_episodes([recorded], space)
    np.testing.assert_array_equal(flattened.observations[0], [4, 5, 6, 7, 1, 2, 3])  # achieved, desired, observation
    env = flat_state_env(GoalPoint())
    first, _ = env.reset(seed=3)
    assert env.observation_space == flat and first.dtype == np.float32
    np.testing.assert_array_equal(first[:2], first[4:6])  # the achieved goal is the point


def test_spaces_that_cannot_be_one_vector_are_refused_in_one_line():
    camera = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), "state": gym.spaces.Box(-1, 1)})
    with pytest.raises(ValueError, match="world models take Box observations or a Dict of float Boxes, got Dict"):
        flat_state_space(camera)
    with pytest.raises(ValueError, match="world models take Box observations or a Dict of float Boxes, got Discrete"):
        flat_state_space(gym.spaces.Discrete(3))


def test_a_goal_conditioned_env_trains_a_flat_state_world_model(tmp_path):
    task = TaskSpec(env_id=ENV_ID)
    train, held_out, env = gather_episodes(task, 3, 20, 2, seed=0, progress=False)
    assert all(e.observations.shape == (21, 7) for e in train + held_out)
    # the flat episodes are the env's own dicts, flattened: replay one and compare
    replay = flat_state_env(gym.make(ENV_ID))
    obs, _ = replay.reset(seed=0)
    for t, action in enumerate(train[0].actions[:5]):
        np.testing.assert_allclose(train[0].observations[t], obs, rtol=1e-6)
        obs, *_ = replay.step(action)
    out = str(tmp_path / "wm")
    train_world_model(
        TrainWorldModelConfig(
            task=task, model=WorldModelConfig(
                width=32, depth=1, sequence_frames=4, window_frames=3, predictor_steps=20
            ),
            training=TrainerConfig(steps=4, batch_size=8, warmup_steps=1, progress=False, device="cpu"),
            episodes=4, max_steps=20, held_out_episodes=2, out=out,
        )
    )  # fmt: skip
    model = WorldModel.from_pretrained(out)
    assert model.observation_space == env.observation_space
    assert np.isfinite(model.metadata["training"]["held_out"]["one_step_mse"])
    dream = WorldModelEnv(model=model)  # its context comes from the recorded env, flattened the same way
    first, _ = dream.reset(seed=0, options={"context_seed": 0})
    np.testing.assert_allclose(first, train[0].observations[0], rtol=1e-6)
    obs, *_ = dream.step(np.zeros(2, np.float32))
    assert obs.shape == (7,) and np.isfinite(obs).all()
    # Seen through the env's own Dict and judged by its goal rules, a policy of the real env runs inside it.
    real = gym.make(ENV_ID)
    judged = dict_state_env(
        WorldModelEnv(model=model, match_seeds=True, reward_fn=GoalReachedReward(real)), real.observation_space
    )
    start, _ = judged.reset(seed=5)
    truth, _ = real.reset(seed=5)
    assert judged.observation_space == real.observation_space and set(start) == set(truth)
    for key in truth:
        np.testing.assert_allclose(start[key], truth[key], rtol=1e-6)
    obs, reward, _, _, info = judged.step(np.zeros(2, np.float32))
    distance = np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"])
    assert info["distance"] == pytest.approx(distance, rel=1e-5) and reward == pytest.approx(-distance, rel=1e-5)
    assert info["is_success"] == (distance < 0.05)


def test_goal_rules_on_flat_vectors():
    rules = GoalReachedReward(GoalPoint())
    # Gymnasium's order: achieved goal, desired goal, observation.
    at_goal, near, far = (
        np.r_[0.5, 0.5, 0.5, 0.5, 0, 0, 0],
        np.r_[0.5, 0.54, 0.5, 0.5, 0, 0, 0],
        np.r_[1, 0.5, 0, 0.5, 0, 0, 0],
    )
    assert rules.info(at_goal) == {"distance": 0.0, "is_success": True}
    assert rules.info(near)["is_success"] and not rules.info(far)["is_success"]
    assert rules(far, np.zeros(2), far) == pytest.approx(-1.0) and rules.info(far)["distance"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs Dict observations with achieved_goal and desired_goal"):
        GoalReachedReward(gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="flattens to"):
        dict_state_env(flat_state_env(GoalPoint()), gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (3,))}))
