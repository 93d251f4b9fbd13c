"""Memory-mapped training windows, the epoch sampler, and the trainer reading from disk."""

import pickle

import numpy as np
import pytest
import torch

from tests.core.test_trainer import NoisyRegression, config, data
from worldsim.core.streaming_data import EpochBatchSampler, InMemoryWindows, WindowDataset, write_windows
from worldsim.core.trainer import Trainer, TrainerConfig


def chunks(rows: int = 30, pieces: int = 3) -> list[dict]:
    """Windows whose rows encode their own index, in pieces (one shard each) of mixed dtypes."""
    index = np.arange(rows)
    obs = np.repeat(index[:, None, None], 2, axis=1) * np.ones((1, 1, 3), np.float32)
    pixels = (index[:, None, None] % 256).astype(np.uint8) * np.ones((1, 4, 4), np.uint8)
    bounds = np.linspace(0, rows, pieces + 1).astype(int)
    return [
        {"obs": obs[a:b], "pixels": torch.from_numpy(pixels[a:b])} for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def test_window_round_trip_through_memory_mapped_shards(tmp_path):
    pieces = chunks()
    dataset = write_windows(tmp_path / "windows", iter(pieces))  # any iterable: written piece by piece
    assert len(dataset) == 30 and len(dataset.shards) == 3
    assert sorted(p.name for p in (tmp_path / "windows").iterdir())[0] == "index.json"
    full = {"obs": np.concatenate([p["obs"] for p in pieces]), "pixels": np.concatenate([p["pixels"] for p in pieces])}
    rows = torch.tensor([29, 0, 11, 10, 9, 20, 11])  # unsorted, repeated, across all shards
    batch = dataset[rows]
    for key, value in full.items():
        np.testing.assert_array_equal(batch[key].numpy(), value[rows.numpy()])
        assert batch[key].dtype == torch.from_numpy(value).dtype
    assert dataset[7]["obs"].shape == (2, 3) and float(dataset[7]["obs"][0, 0]) == 7.0
    everything = dataset.to_tensors()
    assert all(np.array_equal(everything[key].numpy(), value) for key, value in full.items())
    # The files really are mapped, not read: a worker receives the description, never the arrays.
    opened = WindowDataset(tmp_path / "windows")
    opened[rows]
    assert isinstance(opened._mapped[0]["obs"], np.memmap)
    assert pickle.loads(pickle.dumps(opened))._mapped is None


def test_bad_windows_are_refused(tmp_path):
    write_windows(tmp_path / "w", {"x": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="already exists"):
        write_windows(tmp_path / "w", {"x": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="share their first dimension"):
        write_windows(tmp_path / "a", {"x": np.zeros((4, 2)), "y": np.zeros(3)})
    with pytest.raises(ValueError, match="the first chunk had"):
        write_windows(tmp_path / "b", [{"x": np.zeros((4, 2))}, {"x": np.zeros((4, 3))}])
    with pytest.raises(ValueError, match="every chunk was empty"):
        write_windows(tmp_path / "c", {"x": np.zeros((0, 2))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # failed writes leave nothing behind
    with pytest.raises(ValueError, match="index.json is missing"):
        WindowDataset(tmp_path)
    with pytest.raises(IndexError, match=r"in \[0, 4\)"):
        WindowDataset(tmp_path / "w")[np.array([0, 4])]


def test_epoch_sampler_splits_global_batches_and_resumes_anywhere():
    single = EpochBatchSampler(50, 8, seed=3)
    ranks = [iter(EpochBatchSampler(50, 8, seed=3, rank=r, world_size=2)) for r in range(2)]
    stream = iter(single)
    first_epoch = []
    for _ in range(12):  # past the end of the first epoch (6 batches, 2 rows dropped)
        batch = next(stream)
        parts = [next(rank) for rank in ranks]
        assert len(parts[0]) == 4 and torch.equal(torch.cat(parts), batch)
        first_epoch.append(batch)
    assert len(torch.cat(first_epoch[:6]).unique()) == 48  # no row twice within an epoch
    assert not torch.equal(first_epoch[0], first_epoch[6])  # reshuffled for the next one
    later = iter(EpochBatchSampler(50, 8, seed=3, epoch=1, batch=2))
    assert torch.equal(next(later), first_epoch[8])
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        EpochBatchSampler(50, 8, world_size=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatchSampler(5, 8)


def test_trainer_on_disk_with_workers_repeats_the_in_memory_run_and_resumes(tmp_path):
    dataset = write_windows(tmp_path / "windows", {key: value.numpy() for key, value in data().items()})
    torch.manual_seed(0)
    in_memory = Trainer(NoisyRegression(), data(), config(14))
    in_memory.fit()

    workers = TrainerConfig(**{**vars(config(14)), "num_workers": 2})
    torch.manual_seed(0)
    first = Trainer(NoisyRegression(), dataset, workers, output_dir=tmp_path / "state")
    first.fit(until=9)  # the workers have read ahead; the saved position counts only what was trained on
    torch.manual_seed(99)
    resumed = Trainer(NoisyRegression(), WindowDataset(tmp_path / "windows"), workers)
    resumed.load_state(tmp_path / "state")
    resumed.fit()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in in_memory.history]
    for a, b in zip(resumed.model.parameters(), in_memory.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_trainer_refuses_other_data():
    with pytest.raises(ValueError, match="dict of tensors or a WindowDataset"):
        Trainer(NoisyRegression(), [torch.zeros(3)], config(1))
    assert len(InMemoryWindows({"x": torch.zeros(7, 2)})) == 7
