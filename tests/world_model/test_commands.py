"""The world-model training entry points end to end on a small Gymnasium environment (the README's recipe), and
the ``worldsim train`` commands' refusal of a bad device."""

import pytest
import torch

from worldsim.core.trainer_config import TrainerConfig
from worldsim.envs.tasks import TaskSpec
from worldsim.world_model.config import SelfForcingConfig, TrainWorldModelConfig, WorldModelConfig
from worldsim.world_model.held_out import one_step_error, open_loop_errors
from worldsim.world_model.model import WorldModel
from worldsim.world_model.self_forcing import self_force
from worldsim.world_model.train import gather_episodes, train_world_model


def test_train_then_self_forcing_on_cartpole(tmp_path):
    base, tuned = str(tmp_path / "wm"), str(tmp_path / "wm-sf")
    cartpole = TaskSpec(env_id="CartPole-v1")
    train_world_model(
        TrainWorldModelConfig(
            task=cartpole, model=WorldModelConfig(
                width=32, depth=1, sequence_frames=4, window_frames=3, predictor_steps=20
            ),
            training=TrainerConfig(steps=6, batch_size=8, warmup_steps=2, progress=False, device="cpu"),
            episodes=6, max_steps=30, out=base,
        )
    )  # fmt: skip
    self_force(
        SelfForcingConfig(
            checkpoint=base, out=tuned, episodes=4, windows=16, rounds=2,
            training=TrainerConfig(steps=4, batch_size=8, seed=1, progress=False, device="cpu"),
        )
    )  # fmt: skip
    model, start = WorldModel.from_pretrained(tuned), WorldModel.from_pretrained(base)
    meta = model.metadata
    assert meta["env_id"] == "CartPole-v1" and meta["train_config"]["checkpoint"] == base
    assert meta["training"]["rounds"] == 2
    assert meta["training"]["base_train_config"] == start.metadata["train_config"]
    # The recorded "before" figure is the base model's, on the fine-tune's held-out rollouts: recomputed here
    # from self_force's recipe (300-step rollouts, 10 held-out episodes after --episodes, seeds from seed x 10,000).
    _, held_out, env = gather_episodes(cartpole, 4, 300, 10, seed=10_000, progress=False)
    env.close()
    recomputed = one_step_error(
        start, start.training_data(held_out, stride=7), generator=torch.Generator().manual_seed(0)
    )
    assert recomputed == pytest.approx(meta["training"]["held_out_before"], rel=1e-5)
    # The base's raw open-loop record: its held-out episodes (10 after the 6 training ones, 30 steps through
    # terminations) rolled again give the same figures; 50 steps is past every episode, so it is left out.
    _, base_held_out, env = gather_episodes(cartpole, 6, 30, 10, seed=0, progress=False)
    env.close()
    recorded = start.metadata["training"]["held_out_open_loop"]
    assert set(recorded) == {"1", "10"}
    again = open_loop_errors(start, base_held_out, (1, 10))
    assert {h: recorded[h]["ratio"] for h in recorded} == pytest.approx({h: again[h]["ratio"] for h in again})
    changed = [not torch.equal(a, b) for a, b in zip(start.parameters(), model.parameters(), strict=True)]
    assert any(changed)


@pytest.mark.parametrize(
    "command", [["train", "world-model"], ["train", "self-forcing", "checkpoint=wm-pusht-state"], ["train", "policy"]]
)
def test_training_commands_refuse_a_bad_device_before_any_work(command, tmp_path, capsys, monkeypatch):
    from worldsim import cli

    monkeypatch.setenv("WORLDSIM_OUTPUT_DIR", str(tmp_path / "outputs"))
    assert cli.main([*command, "training.device=gpu0"]) == 2
    assert "training.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu0'" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()  # refused while composing the config: no run folder
