"""Scripted experts: the protocol, success on a few seeds, determinism, multimodality, state-only operation, and
the same actions as before they read ``info["state"]``."""

import gymnasium as gym
import numpy as np
import pytest

from worldsim.envs.datasets import default_expert
from worldsim.envs.experts import Expert, PickPlaceExpert, PushTExpert

# worldsim's own tasks and their experts, as the collection API finds them (from the task files)
EXPERTS = {env_id: default_expert(env_id) for env_id in ("worldsim/PushT-v0", "worldsim/PickPlace-v0")}


def _run(env: gym.Env, expert, seed: int) -> tuple[bool, np.ndarray]:
    obs, info = env.reset(seed=seed)
    expert.reset()
    actions = []
    terminated = truncated = False
    while not (terminated or truncated):
        action = expert(obs, info)
        assert env.action_space.contains(action)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
    return bool(info["is_success"]), np.array(actions)


def test_every_task_has_an_expert():
    import worldsim  # noqa: F401  (registers the tasks)

    # worldsim's own simulated tasks: the registered ids whose env class lives in worldsim.envs (Atari
    # Breakout's player reads the console, not a state vector: tests/test_atari.py).
    tasks = {
        env_id
        for env_id, spec in gym.registry.items()
        if str(spec.entry_point).startswith("worldsim.envs.")
        and not str(spec.entry_point).startswith("worldsim.envs.atari")
    }
    assert tasks and set(EXPERTS) == tasks
    assert all(isinstance(factory(seed=0), Expert) for factory in EXPERTS.values())
    assert EXPERTS == {"worldsim/PushT-v0": PushTExpert, "worldsim/PickPlace-v0": PickPlaceExpert}


@pytest.mark.parametrize("env_id", sorted(EXPERTS))
def test_every_info_holds_the_state_vector(env_id):
    """The experts' input: ``info["state"]`` is the state observation, for pixel observations too."""
    state_env = gym.make(env_id)
    pixel_env = gym.make(env_id, obs_type="pixels", image_size=16)
    obs, info = state_env.reset(seed=3)
    _, pixel_info = pixel_env.reset(seed=3)
    expert = EXPERTS[env_id](seed=0)
    expert.reset()
    for _ in range(5):
        assert info["state"].dtype == np.float32 and state_env.observation_space.contains(info["state"])
        np.testing.assert_array_equal(info["state"], obs)
        np.testing.assert_array_equal(pixel_info["state"], obs)
        action = expert(obs, info)
        obs, _, _, _, info = state_env.step(action)
        _, _, _, _, pixel_info = pixel_env.step(action)


# Actions of PushTExpert / PickPlaceExpert recorded before they read info["state"] (when they read the simulator
# through env.unwrapped.task_state()): episode seeds 0 and 1, the expert seeded like the episode, the first 30
# steps (PickPlace: the whole episode), and each episode's full length.
# fmt: off
REFERENCE = {
    ("worldsim/PushT-v0", 0): (121, [
        [-0.8145557, 0.30458543], [-0.81890136, 0.11330385], [-0.7892867, -0.06410378], [-0.7302859, -0.22200045],
        [-0.6473538, -0.35587117], [-0.5465842, -0.46243536], [-0.467917, -0.4826855], [-0.38947073, -0.50207436],
        [-0.31102607, -0.5214572], [-0.23258138, -0.54084015], [-0.15413669, -0.5602231], [-0.07569199, -0.57960606],
        [0.0027527055, -0.598989], [0.067396544, -0.61496186], [0.04710852, -0.5379051], [0.03468453, -0.49071705],
        [0.021137778, -0.44594654], [0.0065759174, -0.40087706], [-0.008927122, -0.35506934],
        [-0.032822397, -0.43886185], [-0.027788412, -0.35984448], [-0.025083536, -0.3111272],
        [-0.028310776, -0.2641606], [-0.034903426, -0.21617249], [-0.07476646, -0.29420933],
        [-0.055616222, -0.21737958], [-0.044254135, -0.16992866], [-0.03843512, -0.12420011],
        [-0.03594184, -0.07669395], [-0.09253128, -0.14495617],
    ]),
    ("worldsim/PushT-v0", 1): (186, [
        [0.5368271, -0.33190253], [0.36272246, -0.32852063], [0.20348345, -0.29392824], [0.06430893, -0.2328211],
        [-0.050736632, -0.15070574], [-0.13882585, -0.053657424], [-0.19843858, 0.051931825],
        [-0.26094893, 0.11024305], [-0.32533115, 0.15898474], [-0.3812042, 0.21723701], [-0.42720243, 0.283564],
        [-0.46217716, 0.35630932], [-0.48525488, 0.43365616], [-0.49585924, 0.51367277], [-0.49372536, 0.5943608],
        [-0.47890657, 0.6737051], [-0.451773, 0.74972403], [-0.41300222, 0.8205191], [-0.36356255, 0.88432217],
        [-0.30468875, 0.9395398], [-0.230513, 0.90871125], [-0.15618551, 0.87702274], [-0.081856936, 0.8453282],
        [-0.012811681, 0.8158866], [-0.06205805, 0.75308615], [-0.09216926, 0.7146874], [-0.122061454, 0.6788965],
        [-0.12990707, 0.7689564], [-0.10931756, 0.7628561], [-0.13585588, 0.6873953],
    ]),
    ("worldsim/PickPlace-v0", 0): (23, [
        [0.054032337, -1.0, -1.0, -1.0], [0.018359996, -1.0, -1.0, -1.0], [0.004190071, -1.0, -1.0, -1.0],
        [0.0006308429, -1.0, -0.39553693, -1.0], [1.8018482e-05, -0.6209008, -0.27100667, -1.0],
        [-2.7074957e-05, -0.17086893, -1.0, -1.0], [-1.1452156e-05, -0.032316536, -1.0, -1.0],
        [-2.9713115e-06, -0.0032408228, -0.62889236, -1.0], [-5.3190973e-07, 0.0004896782, -0.1739638, 1.0],
        [0.0, 0.0, 1.0, 1.0], [-1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, 0.72917175, 1.0],
        [-1.0, -1.0, 0.20861638, 1.0], [-1.0, -0.7692375, 0.042641558, 1.0], [-1.0, 0.36089888, 0.0057160337, 1.0],
        [-1.0, 0.7638975, 2.4571009e-05, 1.0], [-0.14545532, 0.45432144, -1.0, 1.0],
        [-0.01163688, 0.12486463, -1.0, 1.0], [0.0029157323, 0.024186844, -1.0, 1.0],
        [0.0010241626, 0.0017196735, -0.669429, 1.0], [0.00014089337, 9.2535214e-05, -0.18845919, 1.0],
        [0.0, 0.0, 0.0, -1.0],
    ]),
    ("worldsim/PickPlace-v0", 1): (21, [
        [0.75789154, 1.0, -1.0, -1.0], [0.25752747, 1.0, -1.0, -1.0], [0.05877197, 1.0, -1.0, -1.0],
        [0.008848446, 1.0, -0.39553693, -1.0], [0.00025271147, 1.0, -0.09460986, -1.0],
        [-0.00037977262, 0.5946866, -0.29652387, -1.0], [-0.00016063453, 0.16198206, -1.0, -1.0],
        [-4.1677242e-05, 0.030311925, -1.0, -1.0], [-7.461363e-06, 0.00293976, -0.5448043, -1.0],
        [-6.383922e-07, -0.00050335313, -0.14539032, 1.0], [0.0, 0.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 1.0],
        [-1.0, 0.9992641, 1.0, 1.0], [-1.0, -0.23862292, 0.73439914, 1.0], [-1.0, -0.8342244, 0.21038476, 1.0],
        [-0.34563103, -0.68804115, -0.16705051, 1.0], [-0.061063442, -0.21038948, -1.0, 1.0],
        [-0.0065998207, -0.044341464, -1.0, 1.0], [0.0005705043, -0.0061653075, -1.0, 1.0],
        [0.00025669797, -5.6474437e-05, -0.5182978, 1.0], [0.0, 0.0, 0.0, -1.0],
    ]),
}
# fmt: on


@pytest.mark.parametrize(("env_id", "seed"), sorted(REFERENCE))
def test_experts_act_as_before_they_read_the_info(env_id, seed):
    """The experts compute what they computed from the simulator, now from the float32 ``info["state"]``.

    The state vector is the simulator state rounded to float32 (about 1e-8 m), so actions may differ from the
    recorded ones in their last float32 bits (measured: at most 1.2e-6 over 20 episodes of each task), never
    more; the episode lengths, hence every discrete decision on the way, are the same.
    """
    length, reference = REFERENCE[(env_id, seed)]
    success, actions = _run(gym.make(env_id), EXPERTS[env_id](seed=seed), seed=seed)
    assert success and len(actions) == length
    np.testing.assert_allclose(actions[: len(reference)], np.array(reference, np.float32), rtol=0, atol=2e-6)


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

    def __call__(self, obs, info):
        return self.expert(obs, info)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", sorted(EXPERTS))
def test_expert_reaches_ninety_percent_over_a_hundred_episodes(env_id):
    env = gym.make(env_id)
    expert = EXPERTS[env_id](seed=0)
    assert np.mean([_run(env, expert, seed)[0] for seed in range(100)]) >= 0.9
