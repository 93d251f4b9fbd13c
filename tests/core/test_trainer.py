import json
import time

import pytest
import torch
from torch import nn

from worldsim.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from worldsim.core.trainer import Trainer, TrainerConfig


class NoisyRegression(nn.Module):
    """A loss with its own randomness, so resuming must restore the RNG as well as the weights."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    def compute_loss(self, batch):
        x = batch["x"] + 0.01 * torch.randn_like(batch["x"])
        return (self.net(x) - batch["y"]).pow(2).mean()


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, generator=g)
    return {"x": x, "y": x.sum(1, keepdim=True).sin()}


def config(steps):
    return TrainerConfig(steps=steps, batch_size=16, learning_rate=1e-2, warmup_steps=5, log_every=1, progress=False)


def test_training_lowers_loss_and_ema_tracks():
    torch.manual_seed(0)
    trainer = Trainer(NoisyRegression(), data(), config(150))
    history = trainer.fit()
    # Measured: the last logged loss is 0.21x the first, the EMA model's loss on all the data 0.23x.
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    ema_loss = trainer.ema_model.compute_loss(data()).item()
    assert ema_loss < 0.35 * history[0]["loss"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    full = Trainer(NoisyRegression(), data(), config(20))
    full.fit()

    torch.manual_seed(0)
    first = Trainer(NoisyRegression(), data(), config(20), output_dir=tmp_path)
    first.fit(until=12)  # interrupted; the state is saved where it stopped
    torch.manual_seed(123)  # whatever happens in between must not matter
    resumed = Trainer(NoisyRegression(), data(), config(20), output_dir=tmp_path)
    resumed.load_state(tmp_path)
    resumed.fit()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    for a, b in zip(resumed.model.parameters(), full.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    save_checkpoint(tmp_path, tensors, {"kind": "toy", "config": {"a": 1}})
    loaded, meta = load_checkpoint(tmp_path, kind="toy")
    assert torch.equal(loaded["w"], tensors["w"]) and meta["config"] == {"a": 1}
    with pytest.raises(CheckpointError, match="not a 'policy'"):
        load_checkpoint(tmp_path, kind="policy")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "model.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not a worldsim checkpoint"):
        load_checkpoint(tmp_path)


def test_bad_data_is_refused():
    with pytest.raises(ValueError, match="shared first dimension"):
        Trainer(NoisyRegression(), {"x": torch.zeros(10, 3), "y": torch.zeros(9, 1)}, config(1))
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(NoisyRegression(), {"x": torch.zeros(10, 3), "y": torch.zeros(10, 1)}, config(1))


def test_device_choice():
    trainer = Trainer(NoisyRegression(), data(), TrainerConfig(steps=1, batch_size=16, device="auto"))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert trainer.device.type == expected and next(trainer.ema_model.parameters()).device.type == expected
    assert Trainer(NoisyRegression(), data(), config(1)).device.type == "cpu"  # None: left alone
    with pytest.raises(ValueError, match="device must be"):
        TrainerConfig(device="gpu0")
    missing = torch.cuda.device_count()
    # A well-formed name of a GPU that is not there is refused where the device is resolved: by the Trainer.
    with pytest.raises(ValueError, match=f"this machine has {missing} CUDA GPU"):
        Trainer(NoisyRegression(), data(), TrainerConfig(batch_size=16, device=f"cuda:{missing}"))


def test_a_damaged_latest_state_is_refused_and_the_previous_one_resumes(tmp_path):
    torch.manual_seed(0)
    full = Trainer(NoisyRegression(), data(), config(20))
    full.fit()

    every_4 = TrainerConfig(**{**vars(config(20)), "checkpoint_every": 4})
    torch.manual_seed(0)
    Trainer(NoisyRegression(), data(), every_4, output_dir=tmp_path).fit(until=12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state", "train_state.prev"]  # no temporary left
    latest = tmp_path / "train_state" / "train_state.safetensors"
    latest.write_bytes(latest.read_bytes()[:-100])  # truncated, as by a full disk or a bad copy
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path / "train_state", name="train_state")

    resumed = Trainer(NoisyRegression(), data(), config(20))
    with pytest.warns(UserWarning, match="checksum.*falling back to the previous checkpoint"):
        resumed.load_state(tmp_path)
    assert resumed.step == 8  # the state before the damaged one
    resumed.fit()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]

    (tmp_path / "train_state.prev" / "train_state.json").write_text("{")
    with pytest.raises(CheckpointError, match="no usable 'train_state' checkpoint.*checksum.*not valid JSON"):
        Trainer(NoisyRegression(), data(), config(20)).load_state(tmp_path)


def test_replaced_data_is_what_the_rest_of_the_run_trains_on():
    class Recorder(NoisyRegression):
        seen: list[float] = []

        def compute_loss(self, batch):
            self.seen.extend(batch["x"][:, 0].tolist())
            return super().compute_loss(batch)

    torch.manual_seed(0)
    first = data()
    trainer = Trainer(Recorder(), first, config(12))
    trainer.fit(until=6)
    seen_before = len(Recorder.seen)
    second = {"x": torch.full((40, 3), 7.0), "y": torch.zeros(40, 1)}
    trainer.replace_data(second)
    trainer.fit()
    assert trainer.step == 12 and trainer.num_examples == 40
    assert set(Recorder.seen[:seen_before]) <= set(first["x"][:, 0].tolist())
    assert set(Recorder.seen[seen_before:]) == {7.0}


class SlowRegression(NoisyRegression):
    """Every step takes at least 20 ms, so a time budget is spent after a known least number of steps."""

    def compute_loss(self, batch):
        time.sleep(0.02)
        return super().compute_loss(batch)


def test_a_time_budget_stops_the_run_annealed():
    cfg = TrainerConfig(
        steps=100_000, batch_size=16, learning_rate=1e-2, warmup_steps=2, log_every=1, progress=False,
        time_limit_minutes=0.01,
    )  # fmt: skip
    trainer = Trainer(SlowRegression(), data(), cfg)
    history = trainer.fit()
    # 0.6 s at >= 20 ms a step: at most 30 steps, far from the 100,000 asked for
    assert 2 < trainer.step <= 30 and trainer.train_seconds >= 0.6
    lrs = [record["lr"] for record in history]
    assert lrs[-1] < 1e-6 < lrs[len(lrs) // 2] < 1e-2  # the cosine decay ran on time, to zero at the budget
    with pytest.raises(ValueError, match="time_limit_minutes applies to single-process runs"):
        TrainerConfig(time_limit_minutes=5, distributed=True)
    with pytest.raises(ValueError, match="training.time_limit_minutes"):
        TrainerConfig(time_limit_minutes=-1)


@pytest.mark.parametrize("progress", [False, True])
def test_without_a_progress_bar_each_log_record_is_printed(capsys, progress):
    cfg = TrainerConfig(steps=10, batch_size=16, learning_rate=1e-2, warmup_steps=2, log_every=5, progress=progress)
    history = Trainer(NoisyRegression(), data(), cfg).fit()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    if progress:
        assert lines == []  # the bar shows the loss instead
    else:
        assert [line.split(":")[0] for line in lines] == ["step 5/10", "step 10/10"]
        assert lines[1].startswith(f"step 10/10: loss {history[1]['loss']:.4g}, ")
