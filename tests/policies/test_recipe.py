"""The default recipe's derivations on synthetic spaces and data, and how a user's success rule is judged."""

import gymnasium as gym
import numpy as np
import pytest

from worldsim.core.episodes import Episode
from worldsim.envs.tasks import EpisodeJudge, TaskSpec
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.recipe import (
    complete_policy_config,
    discrete_action_dims,
    observation_layout,
    policy_episodes,
    position_target_dims,
)


class SpacesOnly(gym.Env):
    """An env that only has spaces (the recipe reads nothing else)."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space


def episode(observations, actions) -> Episode:
    n = len(actions)
    flags = np.zeros(n, bool)
    return Episode(observations, np.asarray(actions, np.float32), np.zeros(n), flags, flags, True)


def test_a_goal_conditioned_dict_space_is_flattened_in_its_key_order():
    space = gym.spaces.Dict(
        {
            "observation": gym.spaces.Box(-np.inf, np.inf, (4,)),
            "achieved_goal": gym.spaces.Box(-1, 1, (3,)),
            "desired_goal": gym.spaces.Box(-2, 2, (3,)),
        }
    )
    layout = observation_layout(space)
    # Gymnasium sorts Dict keys: achieved_goal, desired_goal, observation
    assert layout["obs_keys"] == ("achieved_goal", "desired_goal", "observation")
    assert layout["obs_shape"] == (10,) and layout["obs_type"] == "state"
    assert layout["obs_low"][:6] == (-1.0,) * 3 + (-2.0,) * 3 and np.isinf(layout["obs_low"][6:]).all()
    obs = {k: np.arange(3 * n, dtype=np.float32).reshape(3, n) for k, n in (("observation", 4), ("achieved_goal", 3),
                                                                            ("desired_goal", 3))}  # fmt: skip
    config = DiffusionPolicyConfig(obs_keys=layout["obs_keys"])
    flat = policy_episodes([episode(obs, np.zeros((2, 2)))], config)[0].observations
    expected = np.r_[obs["achieved_goal"][1], obs["desired_goal"][1], obs["observation"][1]]
    np.testing.assert_array_equal(flat[1], expected)


def test_a_camera_with_proprioception_keeps_its_frames_and_its_state_apart():
    space = gym.spaces.Dict(
        {"pixels": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), "state": gym.spaces.Box(-2, 3, (2,), np.float32)}
    )
    layout = observation_layout(space)
    assert layout["obs_type"] == "pixels" and layout["obs_shape"] == (8, 8, 3)
    assert layout["obs_keys"] == ("pixels", "state") and layout["state_dim"] == 2
    assert layout["obs_low"] == (-2.0, -2.0) and layout["obs_high"] == (3.0, 3.0)
    frames = np.arange(3 * 8 * 8 * 3, dtype=np.uint8).reshape(3, 8, 8, 3)
    states = np.array([[0.5, 1.0], [1.5, 2.0], [2.5, -1.0]], np.float32)
    config = DiffusionPolicyConfig(obs_type="pixels", obs_keys=("pixels", "state"), state_dim=2)
    seen = policy_episodes([episode({"pixels": frames, "state": states}, np.zeros((2, 2)))], config)[0].observations
    assert seen["pixels"].dtype == np.uint8 and (seen["pixels"] == frames).all() and (seen["state"] == states).all()


def test_a_camera_dict_with_two_images_is_refused():
    image = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="one image and one state vector"):
        observation_layout(gym.spaces.Dict({"left": image, "right": image}))


def test_images_and_unbounded_states_get_their_own_layouts():
    assert observation_layout(gym.spaces.Box(0, 255, (32, 32, 3), np.uint8))["obs_type"] == "pixels"
    unbounded = observation_layout(gym.spaces.Box(-np.inf, np.inf, (5,)))
    assert unbounded["obs_low"] == () and unbounded["obs_shape"] == (5,)
    with pytest.raises(ValueError, match="state observations must be flat vectors"):
        observation_layout(gym.spaces.Box(-1, 1, (2, 3)))
    with pytest.raises(ValueError, match="policies take Box or Dict-of-Box observations"):
        observation_layout(gym.spaces.Discrete(4))


def test_discrete_dimensions_are_the_exactly_plus_minus_one_ones_seen_both_ways():
    rng = np.random.default_rng(0)
    actions = np.c_[rng.uniform(-1, 1, (50, 2)), rng.choice([-1.0, 1.0], 50), np.ones(50), rng.choice([-1.0, 0.99], 50)]
    # dim 2 is a gripper; dim 3 only ever +1 (no choice seen); dim 4 is not exactly +-1
    assert discrete_action_dims(actions) == (2,)
    assert discrete_action_dims(np.clip(rng.normal(0, 5, (100, 3)), -1, 1)) == ()  # saturated, not discrete


def test_a_user_env_gets_neutral_settings_and_the_task_file_wins_where_it_speaks():
    env = SpacesOnly(gym.spaces.Box(-5, 5, (3,)), gym.spaces.Box(np.array([-1, -2, -1]), np.array([1, 2, 1])))
    actions = np.c_[np.linspace(-1, 1, 20), np.linspace(-2, 2, 20), np.tile([-1.0, 1.0], 10)]
    demos = [episode(np.zeros((21, 3), np.float32), actions)]
    neutral = complete_policy_config(DiffusionPolicyConfig(), TaskSpec(env_id="Mine-v0"), env, demos)
    assert neutral.relative_to_obs == () and neutral.discrete_dims == (2,)
    assert neutral.action_low == (-1.0, -2.0, -1.0) and neutral.obs_shape == (3,)
    assert neutral.n_action_steps == DiffusionPolicyConfig().n_action_steps
    told = TaskSpec(env_id="Mine-v0", discrete_dims=[], relative_to_obs=[0, 1, -1], n_action_steps=4)
    stated = complete_policy_config(DiffusionPolicyConfig(), told, env, demos)
    assert stated.discrete_dims == () and stated.relative_to_obs == (0, 1, -1) and stated.n_action_steps == 4
    with pytest.raises(ValueError, match="policy.relative_to_obs is not a policy setting: it comes from task"):
        complete_policy_config(DiffusionPolicyConfig(relative_to_obs=(0,)), TaskSpec(env_id="Mine-v0"), env, demos)


def reached(obs, info) -> bool:
    """A user's success rule, by import path (see ``TaskSpec.success``)."""
    return bool(obs[0] > 0.5)


def test_success_from_a_callable_from_an_info_key_or_undefined():
    by_callable = EpisodeJudge(f"{__name__}:reached")
    for x in (0.1, 0.7, 0.2):  # true at one step is success
        by_callable.observe(np.array([x]), 0.0, {})
    assert by_callable.success is True
    by_key = EpisodeJudge("is_success")
    by_key.observe(np.zeros(1), 1.0, {"is_success": False})
    by_key.observe(np.zeros(1), 2.0, {"is_success": False})
    assert by_key.success is False and by_key.total_reward == 3.0
    never = EpisodeJudge("is_success")  # an env without the key: success is undefined, not 0
    never.observe(np.zeros(1), 1.0, {"other": 1})
    assert never.success is None and EpisodeJudge(None).success is None
    with pytest.raises(ValueError, match="task.success"):
        EpisodeJudge("no_such_module_xyz:fn")


def test_bounds_the_env_s_own_demonstrations_break_are_dropped():
    env = SpacesOnly(gym.spaces.Box(0.0, 1.0, (3,)), gym.spaces.Box(-1, 1, (1,)))
    observations = np.c_[np.linspace(0, 1, 11), np.linspace(-0.2, 0.9, 11), np.linspace(0.1, 1.3, 11)]
    demos = [episode(observations.astype(np.float32), np.zeros((10, 1)))]
    config = complete_policy_config(DiffusionPolicyConfig(), TaskSpec(env_id="Mine-v0"), env, demos)
    # a dimension broken on either side loses both bounds; dimension 0 stays checked
    assert config.obs_low == (0.0, -np.inf, -np.inf) and config.obs_high == (1.0, np.inf, np.inf)


def test_a_policy_sees_an_angle_on_either_side_of_the_seam_as_neighbours():
    env = SpacesOnly(gym.spaces.Box(-np.inf, np.inf, (2,)), gym.spaces.Box(-1, 1, (1,)))
    t = np.linspace(0, 6 * np.pi, 61)
    observations = np.c_[np.cos(t), np.mod(t, 2 * np.pi)].astype(np.float32)
    demos = [episode(observations, np.zeros((60, 1)))]
    config = complete_policy_config(DiffusionPolicyConfig(), TaskSpec(env_id="Mine-v0"), env, demos)
    assert config.angle_dims == (1,) and config.state_feature_size == 3

    from worldsim.core.normalizer import Normalizer
    from worldsim.policies.diffusion_policy import DiffusionPolicy

    torch = pytest.importorskip("torch")
    normalizer = Normalizer.fit(observations, config.normalization)
    policy = DiffusionPolicy(
        config, obs_normalizer=normalizer, action_normalizer=Normalizer.fit(np.zeros((4, 1)), config.normalization)
    )
    near = torch.tensor([[[0.5, 0.001]] * 2, [[0.5, 2 * np.pi - 0.001]] * 2, [[0.5, np.pi]] * 2])
    features = policy._state_features(near)
    assert features.shape == (3, 2, 3)
    seam = (features[0] - features[1]).abs().max().item()
    across = (features[0] - features[2]).abs().max().item()
    assert seam < 0.01 and across > 1.9  # sine and cosine: the seam is no distance, half a turn is 2
    expected = torch.as_tensor(normalizer.normalize(near[0].numpy())[..., 0])
    torch.testing.assert_close(features[0, :, 0], expected)  # the other dimension is normalized as before


def test_angle_dims_outside_the_state_or_repeated_are_refused():
    for bad in ((2,), (1, 1), (-1,)):
        with pytest.raises(ValueError, match=r"angle_dims \[.*\] must be distinct state dimensions \(0 \.\. 1\)"):
            DiffusionPolicyConfig(obs_shape=(2,), action_dim=1, angle_dims=bad)


def _rollouts(step, dims: int, actions: int, seed: int = 0, episodes: int = 6, length: int = 40):
    """States ``[T + 1, dims]`` and random actions ``[T, actions]`` of ``state, velocity = step(state,
    velocity, action)`` from random starts."""
    rng = np.random.default_rng(seed)
    states, acts = [], []
    for _ in range(episodes):
        state, velocity = rng.uniform(-1, 1, dims), np.zeros(dims)
        actions_taken = rng.uniform(-1, 1, (length, actions))
        rows = [state]
        for action in actions_taken:
            state, velocity = step(state, velocity, action)
            rows.append(state)
        states.append(np.array(rows))
        acts.append(actions_taken)
    return states, acts


def test_position_targets_are_found_whatever_their_order_and_other_actions_are_not():
    def pd_target(state, velocity, action):
        # action 0 is the target of state 1, action 1 of state 0 (a PD loop that keeps some momentum);
        # action 2 pushes state 2 by a displacement; state 3 is a velocity-driven (torque) joint of action 3.
        new_velocity = 0.3 * (action[[1, 0]] - state[:2]) + 0.4 * velocity[:2]
        v3 = velocity[3] + 0.1 * action[3]
        moved = state + np.r_[new_velocity, 0.05 * action[2], v3]
        return moved, np.r_[new_velocity, 0.0, v3]

    states, actions = _rollouts(pd_target, dims=4, actions=4)
    assert position_target_dims(states, actions) == (1, 0, -1, -1)


@pytest.mark.parametrize(
    "step",
    [
        lambda s, v, a: (s + 0.05 * a, v),  # displacements (the Fetch arms' mocap)
        lambda s, v, a: (s + v + 0.1 * a, v + 0.1 * a),  # torques: the action sets an acceleration
        lambda s, v, a: (s + 0.3 * a - 0.1 * s, v),  # a pull towards 0 that the action only biases
    ],
    ids=["displacement", "torque", "leaky"],
)
def test_actions_that_are_not_position_targets_keep_the_policy_absolute(step):
    states, actions = _rollouts(step, dims=2, actions=2)
    assert position_target_dims(states, actions) == ()


def test_the_recipe_predicts_a_target_position_relative_to_what_it_targets_unless_the_task_says_otherwise():
    env = SpacesOnly(gym.spaces.Box(-5, 5, (2,)), gym.spaces.Box(-1, 1, (2,)))
    states, actions = _rollouts(lambda s, v, a: (s + 0.5 * (a - s), v), dims=2, actions=2)
    demos = [episode(o.astype(np.float32), a) for o, a in zip(states, actions, strict=True)]
    derived = complete_policy_config(DiffusionPolicyConfig(), TaskSpec(env_id="Mine-v0"), env, demos)
    assert derived.relative_to_obs == (0, 1)
    absolute = complete_policy_config(
        DiffusionPolicyConfig(), TaskSpec(env_id="Mine-v0", relative_to_obs=[]), env, demos
    )
    assert absolute.relative_to_obs == ()
    with pytest.raises(ValueError, match="an episode of 40 actions needs 41 states, got 40"):
        position_target_dims([states[0][:-1]], [actions[0]])
