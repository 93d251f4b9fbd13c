"""Expert-takeover demonstrations: what is recorded is exactly the expert's part, from the policy's states."""

import gymnasium as gym
import numpy as np
import pytest

from worldsim.envs.datasets import load_demonstrations
from worldsim.envs.experts import PushTExpert
from worldsim.policies.takeover import TakeoverStats, collect_takeover_dataset, takeover_episodes

TASK = "worldsim/PushT-v0"


class ParkedPolicy:
    """Sends the pusher to one corner and keeps it there: it never finishes the task by itself."""

    def reset(self) -> None:
        """Stateless."""

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        return np.array([-0.9, -0.9], np.float32)


class ExpertAsPolicy:
    """The expert behind the policy API, to finish episodes itself (a state observation is what it reads)."""

    def __init__(self) -> None:
        self.expert = PushTExpert(seed=1)

    def reset(self) -> None:
        self.expert.reset()

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        return self.expert(obs, {"state": obs})


def test_segments_are_the_expert_finishing_from_where_the_policy_left_it(tmp_path):
    seed, handover = 7, (3, 12)
    dataset, stats = collect_takeover_dataset(
        ParkedPolicy(), TASK, "worldsim/pusht/takeover-test-v0", 2, seed, handover_steps=handover,
        path=tmp_path, progress=False,
    )  # fmt: skip
    assert stats.episodes == 2 and stats.policy_finished == 0
    assert stats.recorded + stats.expert_failed == 2 and stats.recorded >= 1
    episodes = load_demonstrations("worldsim/pusht/takeover-test-v0", TASK, path=tmp_path)
    assert len(episodes) == stats.recorded == dataset.total_episodes
    assert sum(len(episode) for episode in episodes) == stats.recorded_steps
    # Replay: the policy's steps are not recorded, the segment starts at the handover observation, and its
    # actions are the expert's own; episode i depends on seed + i alone.
    env = gym.make(TASK, max_episode_steps=1000)
    replayed = []
    for index in range(2):
        steps = int(np.random.default_rng(seed + index).integers(handover[0], handover[1] + 1))
        expert = PushTExpert(seed=seed + index)
        obs, info = env.reset(seed=seed + index)
        for _ in range(steps):
            obs, _, _, _, info = env.step(ParkedPolicy().select_action(obs))
        expert.reset()
        observations, actions, success = [obs], [], False
        while not success and len(actions) < 300:
            actions.append(expert(obs, info))
            obs, _, terminated, _, info = env.step(actions[-1])
            observations.append(obs)
            success = bool(info["is_success"])
        if success:
            replayed.append((np.array(observations), np.array(actions)))
    assert len(replayed) == len(episodes)
    for episode, (observations, actions) in zip(episodes, replayed, strict=True):
        assert episode.success and episode.terminations[-1]
        np.testing.assert_array_equal(episode.observations, observations)
        np.testing.assert_array_equal(episode.actions, actions)


def test_episodes_the_policy_finishes_record_nothing():
    env = gym.make(TASK, max_episode_steps=1000)
    stats = TakeoverStats()
    segments = takeover_episodes(ExpertAsPolicy(), env, PushTExpert, 2, 3, (400, 400), 300, stats)
    assert list(segments) == []
    assert stats == TakeoverStats(episodes=2, policy_finished=2)


def test_bad_requests_are_refused_before_anything_is_recorded(tmp_path):
    def collect(**overrides):
        arguments = {"episodes": 1, "handover_steps": (1, 2), "path": tmp_path, "progress": False, **overrides}
        return collect_takeover_dataset(ParkedPolicy(), arguments.pop("env_id", TASK), "worldsim/x/y-v0", **arguments)

    with pytest.raises(ValueError, match="handover_steps"):
        collect(handover_steps=(5, 2))
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        collect(episodes=0)
    with pytest.raises(ValueError, match="expert_steps"):
        collect(expert_steps=0)
    with pytest.raises(ValueError, match="no scripted expert"):
        collect(env_id="CartPole-v1")
    collect()
    with pytest.raises(ValueError, match="already exists"):
        collect()


def test_the_command_reports_bad_arguments_in_one_line(tmp_path, capsys, monkeypatch):
    from worldsim.cli import main

    monkeypatch.setenv("WORLDSIM_OUTPUT_DIR", str(tmp_path / "outputs"))
    code = main(["takeover", "handover_steps=[9,3]", f"path={tmp_path}", "episodes=1"])
    assert code == 2
    assert "worldsim takeover: error: handover_steps must be (low, high)" in capsys.readouterr().err


def test_training_reads_several_datasets_together(tmp_path, capsys):
    import json

    from worldsim.core.trainer_config import TrainerConfig
    from worldsim.envs.datasets import collect_dataset
    from worldsim.envs.tasks import TaskSpec
    from worldsim.policies.config import DiffusionPolicyConfig, TrainPolicyConfig
    from worldsim.policies.train import train_policy

    collect_dataset(TASK, "worldsim/pusht/a-v0", 1, seed=1, path=tmp_path, progress=False)
    collect_takeover_dataset(
        ParkedPolicy(), TASK, "worldsim/pusht/b-v0", 1, 2, handover_steps=(3, 3), path=tmp_path, progress=False
    )
    lengths = [
        sum(len(e) for e in load_demonstrations(name, path=tmp_path))
        for name in ("worldsim/pusht/a-v0", "worldsim/pusht/b-v0")
    ]
    train_policy(
        TrainPolicyConfig(
            task=TaskSpec(env_id=TASK, dataset_id="worldsim/pusht/a-v0"), extra_datasets=["worldsim/pusht/b-v0"],
            data_path=str(tmp_path), out=str(tmp_path / "run"), collect=False, eval_episodes=1, rti_max_pairs=0,
            policy=DiffusionPolicyConfig(width=16, depth=1),
            training=TrainerConfig(steps=2, batch_size=8, eval_every=1000, checkpoint_every=1000, device="cpu"),
        )
    )  # fmt: skip
    assert f"2 episodes, {sum(lengths)} training windows from worldsim/pusht/a-v0, worldsim/pusht/b-v0" in (
        capsys.readouterr().out
    )
    metadata = json.loads((tmp_path / "run" / "model.json").read_text())
    assert metadata["dataset_ids"] == ["worldsim/pusht/a-v0", "worldsim/pusht/b-v0"]
