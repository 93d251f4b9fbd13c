"""The shared trainer under torchrun: 2 CPU processes (gloo) against 1, exact resume, and the config's checks.

The test launches this very file with ``torchrun --standalone --nproc_per_node=2`` (see ``main`` below);
each rank trains, then writes its parameters and history for the test to compare.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tests.core.test_trainer import NoisyRegression, data
from worldsim.core.distributed import DistributedContext, init_distributed, rank_seed
from worldsim.core.trainer import Trainer, TrainerConfig

ROOT = Path(__file__).resolve().parents[2]
STEPS, BATCH = 10, 16


class Regression(NoisyRegression):
    """No randomness in the loss: a 2-process run must then follow the 1-process run up to rounding."""

    def compute_loss(self, batch):
        return (self.net(batch["x"]) - batch["y"]).pow(2).mean()


def trainer_config(distributed: bool) -> TrainerConfig:
    return TrainerConfig(
        steps=STEPS, batch_size=BATCH, learning_rate=1e-2, warmup_steps=3, log_every=2, progress=False,
        distributed=distributed,
    )  # fmt: skip


def curve(history: list[dict]) -> list[tuple]:
    """What a run computed, without its timings."""
    return [(h["step"], h["loss"], h["grad_norm"], h["lr"]) for h in history]


def fresh(model_class: type[nn.Module], distributed: bool, **kwargs) -> Trainer:
    torch.manual_seed(0)  # rank 0's initial weights; DistributedDataParallel gives them to every rank
    return Trainer(model_class(), data(), trainer_config(distributed), **kwargs)


def run_ranks(out: Path) -> list[dict]:
    """Runs ``main`` under torchrun in 2 processes; returns each rank's parameters and findings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, "-m", "tests.core.test_distributed_training", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [
        {**json.loads((out / f"rank{rank}.json").read_text()), "params": load_file(out / f"rank{rank}.safetensors")}
        for rank in range(2)
    ]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return run_ranks(tmp_path_factory.mktemp("ddp"))


def test_two_processes_keep_identical_weights_and_match_one_process(ranks):
    zero, one = ranks
    for name, value in zero["params"].items():
        assert torch.equal(value, one["params"][name]), name  # DDP: the same update on every rank
    assert curve(zero["history"]) == curve(one["history"])  # logged losses are averaged over the ranks
    single = fresh(Regression, distributed=False)
    single.fit()
    # Same global batch of 16 (8 rows per rank): only the order of the float additions differs.
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(zero["params"][f"model.{name}"], value, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(zero["history"], single.history, strict=True):
        assert ours["step"] == theirs["step"]
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)


def test_interrupted_distributed_training_resumes_bit_for_bit(ranks):
    for rank in ranks:
        assert rank["resumed_equals_uninterrupted"]
    # Every rank draws its own noise (distinct seeds), which the resumed ranks restored exactly.
    assert ranks[0]["next_draw"] != ranks[1]["next_draw"]


def test_only_rank_zero_writes(ranks):
    assert ranks[0]["files"] == ["train_state", "train_state.prev"]
    assert ranks[0]["saved_by"] == [0] and ranks[1]["saved_by"] == []  # the artifact too, once at the end


def test_without_torchrun_distributed_training_warns_and_runs_alone(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.warns(UserWarning, match="launch with torchrun"):
        context = init_distributed()
    assert context == DistributedContext() and context.is_main
    with pytest.warns(UserWarning, match="launch with torchrun"):
        trainer = fresh(Regression, distributed=True)
    assert trainer.dist.world_size == 1 and trainer.fit(until=2)[-1]["step"] == 2


def test_rank_seeds_are_distinct_and_stable():
    seeds = {rank_seed(0, rank) for rank in range(64)} | {rank_seed(1, rank) for rank in range(64)}
    assert len(seeds) == 128
    # Stable means the same in another process (every rank computes its own), whatever Python's hash seed.
    code = "from worldsim.core.distributed import rank_seed; print(rank_seed(5, 3), rank_seed(5, 3, 7))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(rank_seed(5, 3)), str(rank_seed(5, 3, 7))]
    assert rank_seed(5, 3, 7) != rank_seed(5, 3)  # the salt is part of the seed


def test_mixed_precision_and_compile_options_are_checked():
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        TrainerConfig(mixed_precision="fp16")
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        Trainer(Regression(), data(), TrainerConfig(batch_size=16, mixed_precision="bf16"))
    with pytest.raises(ValueError, match="num_workers"):
        TrainerConfig(num_workers=-1)


@pytest.mark.slow
def test_compiled_training_follows_eager_training():
    """torch.compile on CPU needs a C++ compiler and tens of seconds; the loss curve must not change much."""
    eager = fresh(Regression, distributed=False)
    eager.fit()
    torch.manual_seed(0)
    compiled = Trainer(Regression(), data(), TrainerConfig(**{**vars(trainer_config(False)), "compile": True}))
    compiled.fit()
    for ours, theirs in zip(compiled.history, eager.history, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)


def main(out: Path) -> None:
    """One rank of the torchrun launch made by :func:`run_ranks`."""
    torch.set_num_threads(1)
    saved_by = []
    plain = fresh(Regression, distributed=True, output_dir=out / "plain", save=lambda model, step: saved_by.append(0))
    rank = plain.dist.rank
    plain.fit()
    params = {f"model.{k}": v for k, v in plain.model.state_dict().items()}

    # A stochastic loss (each rank its own noise): stop at step 6, resume in fresh trainers, compare.
    uninterrupted = fresh(NoisyRegression, distributed=True)
    uninterrupted.fit()
    fresh(NoisyRegression, distributed=True, output_dir=out / "noisy").fit(until=6)
    torch.manual_seed(1234 + rank)  # whatever happens in between must not matter
    resumed = fresh(NoisyRegression, distributed=True, output_dir=out / "noisy")
    resumed.load_state(out / "noisy")
    resumed.fit()
    same = curve(resumed.history) == curve(uninterrupted.history) and all(
        torch.equal(a, b) for a, b in zip(resumed.model.parameters(), uninterrupted.model.parameters(), strict=True)
    )
    findings = {
        "history": plain.history,
        "resumed_equals_uninterrupted": same,
        "next_draw": torch.rand(4).tolist(),
        "saved_by": saved_by,
        "files": sorted(p.name for p in (out / "noisy").iterdir()) if rank == 0 else [],
    }
    save_file(params, out / f"rank{rank}.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps(findings))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
