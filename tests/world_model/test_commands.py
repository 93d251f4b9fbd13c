"""The world-model training commands end to end on a small Gymnasium environment (the README's recipe)."""

import numpy as np
import pytest
import torch

from worldsim.world_model import self_forcing, train
from worldsim.world_model.model import WorldModel

TINY_RUN = ["--width", "32", "--depth", "1", "--batch-size", "8", "--no-progress", "--device", "cpu"]


def test_train_then_self_forcing_on_cartpole(tmp_path):
    base, tuned = tmp_path / "wm", tmp_path / "wm-sf"
    train.main(
        ["--env", "CartPole-v1", "--episodes", "6", "--max-steps", "30", "--steps", "6", "--warmup", "2",
         "--sequence-frames", "4", "--window-frames", "3", "--out", str(base), *TINY_RUN]
    )  # fmt: skip
    self_forcing.main(
        ["--checkpoint", str(base), "--out", str(tuned), "--episodes", "4", "--windows", "16", "--steps", "4",
         "--rounds", "2", "--batch-size", "8", "--no-progress", "--device", "cpu"]
    )  # fmt: skip
    model, start = WorldModel.from_pretrained(tuned), WorldModel.from_pretrained(base)
    meta = model.metadata
    assert meta["env_id"] == "CartPole-v1"
    assert meta["command"].startswith("python -m worldsim.world_model.self_forcing --checkpoint")
    assert meta["training"]["rounds"] == 2 and meta["training"]["base_command"] == start.metadata["command"]
    before, after = meta["training"]["held_out_before"], meta["training"]["held_out"]
    assert np.isfinite([before["one_step_mse"], after["one_step_mse"]]).all()
    changed = [not torch.equal(a, b) for a, b in zip(start.parameters(), model.parameters(), strict=True)]
    assert any(changed)


@pytest.mark.parametrize("command", [train.main, self_forcing.main])
def test_training_commands_refuse_a_bad_device_before_any_work(command, tmp_path, capsys):
    arguments = {train.main: ["--env", "CartPole-v1"], self_forcing.main: ["--checkpoint", "wm-pusht-state"]}
    with pytest.raises(SystemExit):
        command([*arguments[command], "--out", str(tmp_path / "out"), "--device", "gpu0"])
    assert "argument --device: device must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
