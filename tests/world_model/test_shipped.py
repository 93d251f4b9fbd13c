"""The shipped Push-T world models, judged on held-out MuJoCo rollouts regenerated here (not on the figures their
``model.json`` records), and run as environments."""

from __future__ import annotations

import dataclasses
import functools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from worldsim.core.episodes import Episode
from worldsim.envs.tasks import TaskSpec, task_for_env
from worldsim.world_model.data import collect_episodes
from worldsim.world_model.env import WorldModelEnv
from worldsim.world_model.held_out import one_step_error, open_loop_errors
from worldsim.world_model.model import WorldModel, resolve_checkpoint
from worldsim.world_model.rewards import PushTCoverageReward
from worldsim.world_model.train import default_actors, gather_episodes

SHIPPED = ["wm-pusht-state", "wm-pusht-state-sf", "wm-pusht-pixels"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The rollouts of a shipped model's recorded command (docs/world_model.md)."""

    task: TaskSpec
    episodes: int  # training episodes, seeds seed ... seed + episodes - 1
    max_steps: int
    seed: int
    held_out_episodes: int = 10  # the seeds right after the training ones
    through_termination: bool = False  # rollouts kept stepping past a termination (train.py's default since)


# The self-forced model's own rollouts used seeds 10,000-10,149 (its --seed 1) and its base model 0-299, so
# 10,150-10,159 are new to it as well. The pixel model's rollouts ended at a termination (Push-T's success), as
# the training code of the time did; the state models', trained by today's default commands, step through it.
PUSHT = task_for_env("worldsim/PushT-v0")
PUSHT_PIXELS = dataclasses.replace(PUSHT, env_kwargs={"obs_type": "pixels", "image_size": 64})
RECIPES = {
    "wm-pusht-state": Recipe(PUSHT, episodes=300, max_steps=300, seed=0, through_termination=True),
    "wm-pusht-state-sf": Recipe(PUSHT, episodes=150, max_steps=300, seed=10_000, through_termination=True),
    "wm-pusht-pixels": Recipe(PUSHT_PIXELS, episodes=200, max_steps=200, seed=0),
}

# The bar each model must clear: one-step MSE / copy-last MSE on the held-out windows (2 DDIM steps). Measured
# with the shipped weights on held-out sets of 10 episodes built like RECIPES but with other env and actor seeds
# (26 to 41 draws per model, over sets and sampling seeds, with the experts before and after they read
# info["state"]), on the set the test uses, and on the exact training-time set:
#   wm-pusht-state     0.19-0.50, this test's set 0.31, training-time set 0.31   -> bar 0.6
#   wm-pusht-state-sf  0.22-0.50, this test's set 0.36, training-time set 0.61   -> bar 0.75
#   wm-pusht-pixels    0.17-0.23, this test's set 0.22, training-time set 0.18   -> bar 0.3
# A model that only copied the last frame scores 1; the first 2,500-step pixel model scored 0.96.
BAR = {"wm-pusht-state": 0.6, "wm-pusht-state-sf": 0.75, "wm-pusht-pixels": 0.3}
# With every window's actions swapped for another window's, the error must rise far above copy-last: the
# advantage comes from the actions. Measured: 13-27x copy-last for both state models, 2.4-2.8x for pixels.
SHUFFLED_BAR = {"wm-pusht-state": 5.0, "wm-pusht-state-sf": 5.0, "wm-pusht-pixels": 1.5}


@functools.cache
def fresh_held_out(name: str) -> tuple[WorldModel, list[Episode]]:
    """The held-out episodes of ``name``'s recipe, rolled now in MuJoCo (1-6 s).

    ``gather_episodes`` drives its held-out rollouts with actors whose random streams have already run through
    the training rollouts; replaying those costs 20-140 s (the slow test below does). Fresh actors with the
    same seeds give other, equally held-out actions on the same held-out env seeds.
    """
    recipe = RECIPES[name]
    model = WorldModel.from_pretrained(name)
    env = recipe.task.make_env()
    episodes = collect_episodes(
        env, default_actors(env, recipe.task, recipe.seed), recipe.held_out_episodes,
        seed=recipe.seed + recipe.episodes, max_steps=recipe.max_steps, ignore_termination=recipe.through_termination,
        progress=False,
    )  # fmt: skip
    env.close()
    return model, episodes


def has_predictor(name: str) -> bool:
    return bool(WorldModel.from_pretrained(name).tokenizer.config().get("predictor_layers"))


# A model with a one-step predictor (docs/world_model.md) samples a standardized residual: its token-space
# error has no fixed relation to the raw one (the shipped state model's is 0.52x copy-last's in tokens and
# 0.0096x in raw units on the same episodes). Such a model is judged as the suite judges world models: open loop
# in raw units from each held-out episode's first observation, on its recorded actions. Measured (ratios to
# copy-last) on the base model's test episodes and on a second set (actors and env seeds 1,000 on), and for
# the self-forced model on its own test episodes and that second set: wm-pusht-state h1 0.0096 / 0.021, h10
# 0.080 / 0.095; wm-pusht-state-sf h1 0.047 / 0.021, h10 0.038 / 0.092.
RAW_BAR = {"wm-pusht-state": {"1": 0.1, "10": 0.4}, "wm-pusht-state-sf": {"1": 0.2, "10": 0.4}}
# With each episode's actions swapped for the next episode's, the pusher goes where those actions send it:
# measured 2.6 / 4.2x copy-last at h1 on the base model's two sets, 4.9 / 4.2x for the self-forced one's.
RAW_SHUFFLED_BAR = {"wm-pusht-state": 1.5, "wm-pusht-state-sf": 1.5}


@pytest.mark.parametrize("name", SHIPPED)
def test_recomputed_held_out_error_clears_the_measured_bar(name):
    torch.set_num_threads(1)
    model, episodes = fresh_held_out(name)
    if has_predictor(name):
        errors = open_loop_errors(model, episodes, (1, 10))
        assert {h: errors[h]["ratio"] < bar for h, bar in RAW_BAR[name].items()} == {"1": True, "10": True}, errors
        return
    errors = one_step_error(model, model.training_data(episodes, stride=7), generator=torch.Generator().manual_seed(0))
    ratio = errors["one_step_mse"] / errors["copy_last_mse"]
    assert ratio < BAR[name], errors
    # Consistency with what training recorded, on a different draw of held-out actions: recomputed / recorded
    # was measured at 0.66 and 1.28 (one-step) and 1.11 and 1.03 (copy-last) for the two models.
    recorded = model.metadata["training"]["held_out"]
    assert 0.5 < errors["one_step_mse"] / recorded["one_step_mse"] < 2.0, (errors, recorded)
    assert 0.7 < errors["copy_last_mse"] / recorded["copy_last_mse"] < 1.4, (errors, recorded)


@pytest.mark.parametrize("name", SHIPPED)
def test_the_held_out_advantage_comes_from_the_actions(name):
    torch.set_num_threads(1)
    model, episodes = fresh_held_out(name)
    if has_predictor(name):
        shuffled = [
            dataclasses.replace(episode, actions=episodes[(i + 1) % len(episodes)].actions[: len(episode.actions)])
            for i, episode in enumerate(episodes)
        ]
        assert all(len(e.actions) == len(o.actions) for e, o in zip(shuffled, episodes, strict=True))
        errors = open_loop_errors(model, shuffled, (1,))["1"]
        assert errors["ratio"] > RAW_SHUFFLED_BAR[name], errors
        return
    data = model.training_data(episodes, stride=7)
    swap = torch.randperm(len(data["cond"]), generator=torch.Generator().manual_seed(1))
    shuffled = {"frames": data["frames"], "cond": data["cond"][swap]}
    errors = one_step_error(model, shuffled, generator=torch.Generator().manual_seed(0))
    assert errors["one_step_mse"] > SHUFFLED_BAR[name] * errors["copy_last_mse"], errors


# How many held-out evaluations ran on the same generator before the final, recorded one: train.py evaluates
# every steps // 4 (4 times) with one generator, self_forcing.py draws the final figure from a fresh one.
EARLIER_EVALUATIONS = {"wm-pusht-state": 4, "wm-pusht-state-sf": 0, "wm-pusht-pixels": 4}


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_training_time_held_out_figures_are_reproduced(name):
    """gather_episodes as the recorded command ran it (20-140 s of rollouts): the figures in model.json come
    back, and they clear the same bar.

    While the experts read the simulator (commit fffac20) all three came back bit for bit. Since they act from
    the float32 ``info["state"]`` their actions differ in the last bits (tests/test_experts.py) and Push-T's
    contacts amplify that over an episode: measured 0.03% off for wm-pusht-state, 0.3% (one-step) and 3.0%
    (copy-last) for wm-pusht-state-sf, still exact for the pixel model. Hence 5%.
    """
    torch.set_num_threads(1)
    model = WorldModel.from_pretrained(name)
    recipe = RECIPES[name]
    _, held_out, env = gather_episodes(
        recipe.task, recipe.episodes, recipe.max_steps, recipe.held_out_episodes, seed=recipe.seed, progress=False,
        through_termination=recipe.through_termination,
    )  # fmt: skip
    env.close()
    data = model.training_data(held_out, stride=7)
    generator = torch.Generator().manual_seed(0)  # both commands' --seed / fixed seed
    for _ in range(EARLIER_EVALUATIONS[name]):
        one_step_error(model, data, generator=generator)
    errors = one_step_error(model, data, generator=generator)
    assert errors == pytest.approx(model.metadata["training"]["held_out"], rel=0.05)
    if not has_predictor(name):  # a predictor model's token-space ratio is no measure (above)
        assert errors["one_step_mse"] / errors["copy_last_mse"] < BAR[name], errors


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_records_its_command_and_is_small(name):
    model = WorldModel.from_pretrained(name)
    if "train_config" in model.metadata:  # trained by `worldsim train ...`: the whole resolved config
        # a self-forcing fine-tune records its own config and, in its training record, its base model's
        config = model.metadata["training"].get("base_train_config", model.metadata["train_config"])
        assert config["task"]["env_id"] == "worldsim/PushT-v0" and config["model"]["one_step_predictor"] is True
    else:  # the older `python -m worldsim.world_model.<train|self_forcing>` command line
        assert model.metadata["command"].startswith("python -m worldsim.world_model.")
    assert model.metadata["env_id"] == "worldsim/PushT-v0"
    size = sum(p.stat().st_size for p in resolve_checkpoint(name).iterdir())
    assert size < 10 * 2**20  # the docs list 3.7-4.0 MB; a checkpoint that grew past 10 MiB would not ship


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


def test_registered_neural_pusht_rewards_the_simulators_coverage_of_the_generated_block():
    import worldsim  # noqa: F401

    env = gym.make("worldsim/NeuralPushT-v0")
    # The oracle: MuJoCo Push-T's own coverage rule, applied to the block pose the model generated.
    simulator = gym.make("worldsim/PushT-v0").unwrapped
    workspace, success_coverage = simulator.task_state()["workspace"], simulator.success_coverage
    obs, _ = env.reset(seed=1)
    env.action_space.seed(1)
    rewards = []
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs.shape == env.observation_space.shape and not truncated
        pose = np.array([obs[2] * workspace, obs[3] * workspace, np.arctan2(obs[5], obs[4])])
        coverage = simulator._coverage(pose)
        # Both rules rasterize the goal T on the same 2 mm grid: measured identical on these steps.
        assert reward == pytest.approx(min(coverage / success_coverage, 1.0), abs=1e-3)
        assert terminated == (coverage >= success_coverage)
        rewards.append(reward)
    # Seed 1 starts with the block partly on the goal (measured rewards 0.30-0.32 for three steps, then 0 once
    # the random targets sweep the pusher through the block, as MuJoCo's does), so the check is not 0 == 0.
    assert max(rewards) > 0.1, rewards
    env.close()
    simulator.close()


def test_the_shipped_policy_steers_the_generated_pusher():
    """The diffusion policy acts on generated states, and the model moves the pusher where the policy sends it."""
    import worldsim  # noqa: F401
    from worldsim.policies.diffusion_policy import DiffusionPolicy

    torch.set_num_threads(1)
    policy = DiffusionPolicy.from_pretrained("pusht-state", strategy="ddim", steps=5)
    env = gym.make("worldsim/NeuralPushT-v0", max_episode_steps=30)
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        policy.reset()
        actions, pushers, calls = [], [], []
        truncated = False
        while not truncated:
            action = policy.select_action(obs)
            calls.append(policy.calls_last_prediction)
            obs, _, terminated, truncated, _ = env.step(action)
            assert not terminated  # 30 steps are far too few to finish Push-T
            actions.append(action)
            pushers.append(obs[:2])  # Push-T's action is the pusher's target, in the observation's units
        actions, pushers = np.asarray(actions), np.asarray(pushers)
        assert len(actions) == 30
        # A DDIM-5 prediction is 5 network calls; between predictions the policy plays its chunk without any.
        assert set(calls) == {0, 5}, calls
        # Measured on seeds 0-3: the generated pusher is 0.017-0.022 (mean, max 0.065) from its target (MuJoCo:
        # 0.001), and 0.20-0.33 from the target sent 5 steps later: the model follows these very actions.
        gap = np.abs(pushers - actions).max(1)
        assert gap.mean() < 0.05, gap
        assert np.abs(pushers[:-5] - actions[5:]).max(1).mean() > 0.1
    env.close()
