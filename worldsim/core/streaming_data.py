"""Training data for the trainer: rows in memory or memory-mapped from disk, and the order they are read in.

The trainer consumes *windows*: a dict of arrays sharing their first dimension, one row per training
example (e.g. ``{"obs": [N, 2, 6], "action": [N, 16, 2]}``). Two sources serve such rows by index:

- :class:`InMemoryWindows` wraps a dict of tensors already in memory;
- :class:`WindowDataset` reads a directory written by :func:`write_windows` (one ``.npy`` file per
  array and shard, plus ``index.json``) through ``np.load(mmap_mode="r")``, so a dataset larger than
  memory streams from disk and the operating system's page cache keeps the hot part.

Both are map-style ``torch.utils.data.Dataset`` objects indexed by a whole batch of row indices at once
(one gather per array instead of one call per row), so a ``DataLoader`` with ``batch_size=None`` and
``num_workers`` reads batches in background processes. :class:`EpochBatchSampler` yields those index
batches: a seeded permutation per epoch, cut into global batches, each rank taking its own slice, starting
from any (epoch, batch) position, so a resumed or distributed run reads exactly the rows it would have.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

FORMAT = "worldsim-windows"
VERSION = 1
INDEX = "index.json"

Array = np.ndarray | torch.Tensor


class InMemoryWindows(Dataset):
    """Rows of a dict of tensors sharing their first dimension; ``windows[index]`` gathers a batch."""

    def __init__(self, data: Mapping[str, torch.Tensor]):
        sizes = {key: len(value) for key, value in data.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"training data must be tensors with one shared first dimension, got sizes {sizes}")
        self.data = dict(data)
        self.length = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.data.items()}


def _as_numpy(value: Array) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def write_windows(
    directory: str | os.PathLike, chunks: Mapping[str, Array] | Iterable[Mapping[str, Array]]
) -> WindowDataset:
    """Write training windows to ``directory`` (which must not exist yet) as memory-mappable ``.npy`` shards.

    Args:
        directory: the dataset directory to create.
        chunks: one dict of arrays (numpy or torch) sharing their first dimension, or an iterable of such
            dicts with the same keys, row shapes and dtypes: each becomes one shard, so windows can be
            produced and written piece by piece (e.g. per episode) without ever holding them all in memory.

    Returns:
        The written dataset, opened as a :class:`WindowDataset`.
    """
    directory = Path(directory)
    if directory.exists():
        raise ValueError(f"{directory} already exists; delete it or choose another directory")
    if isinstance(chunks, Mapping):
        chunks = [chunks]
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Everything goes to a sibling temporary directory renamed at the end: no half-written dataset is ever
    # visible under the real name.
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        arrays: dict[str, dict] | None = None
        shards: list[dict] = []
        for number, chunk in enumerate(chunks):
            chunk = {key: _as_numpy(value) for key, value in chunk.items()}
            sizes = {key: len(value) for key, value in chunk.items()}
            if not sizes or len(set(sizes.values())) != 1:
                raise ValueError(f"chunk {number}: arrays must share their first dimension, got sizes {sizes}")
            layout = {key: {"dtype": value.dtype.str, "shape": list(value.shape[1:])} for key, value in chunk.items()}
            if arrays is None:
                arrays = layout
            elif layout != arrays:
                raise ValueError(f"chunk {number} has arrays {layout}, the first chunk had {arrays}")
            length = next(iter(sizes.values()))
            if length == 0:
                continue
            files = {key: f"{key}-{len(shards):05d}.npy" for key in chunk}
            for key, value in chunk.items():
                np.save(staging / files[key], np.ascontiguousarray(value))
            shards.append({"length": length, "files": files})
        if not shards:
            raise ValueError("no windows to write: every chunk was empty")
        index = {
            "format": FORMAT,
            "version": VERSION,
            "length": sum(shard["length"] for shard in shards),
            "arrays": arrays,
            "shards": shards,
        }
        (staging / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return WindowDataset(directory)


class WindowDataset(Dataset):
    """Training windows memory-mapped from a directory written by :func:`write_windows`.

    ``dataset[indices]`` gathers a batch (a dict of tensors, one row per index); ``dataset[i]`` one row.
    The files are opened lazily in each process, so DataLoader workers map them themselves rather than
    receiving copies.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        path = self.directory / INDEX
        if not path.is_file():
            raise ValueError(f"{self.directory} is not a window dataset: {INDEX} is missing")
        index = json.loads(path.read_text())
        if index.get("format") != FORMAT or index.get("version", 0) > VERSION:
            raise ValueError(f"{path} is not a {FORMAT} index of version <= {VERSION}")
        self.arrays: dict[str, dict] = index["arrays"]
        self.shards: list[dict] = index["shards"]
        self.length: int = index["length"]
        self._starts = np.cumsum([0] + [shard["length"] for shard in self.shards])[:-1]
        self._mapped: list[dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:
        # Pickled into spawned DataLoader workers: send the description, never the mapped arrays' contents.
        return {**self.__dict__, "_mapped": None}

    def _open(self) -> list[dict[str, np.ndarray]]:
        if self._mapped is None:
            self._mapped = [
                {key: np.load(self.directory / name, mmap_mode="r") for key, name in shard["files"].items()}
                for shard in self.shards
            ]
        return self._mapped

    def __getitem__(self, index: int | np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        rows = np.asarray(index, dtype=np.int64)
        single = rows.ndim == 0
        rows = np.atleast_1d(rows)
        if rows.ndim != 1:
            raise ValueError(f"index must be an int or a 1-D array of row indices, got shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= self.length):
            raise IndexError(f"row indices must be in [0, {self.length}), got [{rows.min()}, {rows.max()}]")
        mapped = self._open()
        batch = {
            key: np.empty((len(rows), *spec["shape"]), dtype=np.dtype(spec["dtype"]))
            for key, spec in self.arrays.items()
        }
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        for shard in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard)
            local = rows[where] - self._starts[shard]
            # Ascending reads let the page cache and readahead work for us.
            order = np.argsort(local, kind="stable")
            for key, out in batch.items():
                out[where[order]] = mapped[shard][key][local[order]]
        tensors = {key: torch.from_numpy(value) for key, value in batch.items()}
        return {key: value[0] for key, value in tensors.items()} if single else tensors

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Every row read into memory: the in-memory form of the same data."""
        return {
            key: torch.from_numpy(np.concatenate([np.asarray(shard[key]) for shard in self._open()]))
            for key in self.arrays
        }


def as_windows(data: Mapping[str, torch.Tensor] | Dataset) -> Dataset:
    """The trainer's view of its data: a dict of tensors is wrapped, a batch-indexed dataset used as is."""
    if isinstance(data, (InMemoryWindows, WindowDataset)):
        return data
    if isinstance(data, Mapping):
        return InMemoryWindows(data)
    raise ValueError(f"training data must be a dict of tensors or a WindowDataset, got {type(data).__name__}")


class EpochBatchSampler(Sampler):
    """Index batches for one rank, epoch after epoch, from a given position on (never-ending).

    Epoch ``e`` is a permutation drawn from ``(seed, e)`` alone, cut into ``len // batch_size`` global
    batches (the remainder is dropped, as the last incomplete batch would weigh its rows differently).
    Rank ``r`` of ``world_size`` takes rows ``[r * b, (r + 1) * b)`` of each global batch, with
    ``b = batch_size // world_size``, so the ranks together see exactly the batch a single process sees.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        batch: int = 0,
    ):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world_size}")
        if num_examples < batch_size:
            raise ValueError(f"{num_examples} training examples are fewer than one batch of {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.batch = epoch, batch

    @property
    def batches_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=g)

    def __iter__(self) -> Iterator[torch.Tensor]:
        local = self.batch_size // self.world_size
        epoch, batch = self.epoch, self.batch
        while True:
            order = self.epoch_order(epoch)
            for start in range(batch * self.batch_size, self.batches_per_epoch * self.batch_size, self.batch_size):
                yield order[start + self.rank * local : start + (self.rank + 1) * local]
            epoch, batch = epoch + 1, 0
