"""Scale-out benchmark: data-parallel training, streaming windows from disk, parallel demonstration collection.

    python benchmarks/scale.py [--train-steps 80] [--stream-rows 12000] [--state-episodes 40]

Writes ``scale.json`` and ``scale.png``:

- training samples/s of the PushT diffusion policy (width 96, depth 3) on synthetic windows, under
  ``torchrun`` with 1 and with 2 CPU processes (gloo, one thread each, the same global batch);
- reading random batches of pixel-observation windows (``[2, 96, 96, 3]`` uint8, 55 KB a row) from a
  memory-mapped :class:`~worldsim.core.streaming_data.WindowDataset` with 0, 1 and 2 DataLoader workers,
  cold (the files evicted from the page cache first) and from memory;
- recording scripted-expert episodes of worldsim/PushT-v0 with 1 process and with 2 environment processes
  (``AsyncVectorEnv``), for state and for 96 px pixel observations, through the collection command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import worldsim  # noqa: E402, F401  (registers the environments)
from worldsim.core.normalizer import Normalizer  # noqa: E402
from worldsim.core.streaming_data import EpochBatchSampler, InMemoryWindows, write_windows  # noqa: E402
from worldsim.core.trainer import Trainer, TrainerConfig  # noqa: E402
from worldsim.envs.datasets import load_demonstrations  # noqa: E402
from worldsim.policies.config import DiffusionPolicyConfig  # noqa: E402
from worldsim.policies.diffusion_policy import DiffusionPolicy  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OBS_DIM, ACTION_DIM, OBS_HORIZON, HORIZON = 6, 2, 2, 16  # PushT's state policy
WARMUP_STEPS = 5


# ---------------------------------------------------------------------------------------------- training
def train_worker(
    out: Path,
    steps: int,
    batch_size: int,
    *,
    width: int = 96,
    depth: int = 3,
    mixed_precision: str = "no",
    compile: bool = False,
) -> None:
    """One torchrun rank: time ``steps`` training steps after a short warm-up; rank 0 writes the figures."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(8192, OBS_HORIZON, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(8192, HORIZON, ACTION_DIM)).astype(np.float32)
    config = DiffusionPolicyConfig(
        obs_shape=(OBS_DIM,), action_dim=ACTION_DIM, obs_horizon=OBS_HORIZON, horizon=HORIZON, width=width, depth=depth,
        heads=4, obs_feature_dim=width, action_low=(-1.0,) * ACTION_DIM, action_high=(1.0,) * ACTION_DIM,
    )  # fmt: skip
    torch.manual_seed(0)
    policy = DiffusionPolicy(
        config, obs_normalizer=Normalizer.fit(obs.reshape(-1, OBS_DIM)), action_normalizer=Normalizer.fit(actions[:, 0])
    )
    trainer = Trainer(
        policy,
        {"obs": torch.from_numpy(obs), "action": torch.from_numpy(actions)},
        TrainerConfig(
            steps=WARMUP_STEPS + steps, batch_size=batch_size, warmup_steps=10, log_every=10_000, progress=False,
            distributed=True, mixed_precision=mixed_precision, compile=compile,
        ),
    )  # fmt: skip
    trainer.fit(until=WARMUP_STEPS)
    trainer.dist.barrier()
    start = time.perf_counter()
    trainer.fit()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    seconds = time.perf_counter() - start
    if trainer.dist.is_main:
        result = {
            "processes": trainer.dist.world_size,
            "global_batch": batch_size,
            "rows_per_process": batch_size // trainer.dist.world_size,
            "steps": steps,
            "seconds": seconds,
            "steps_per_s": steps / seconds,
            "samples_per_s": steps * batch_size / seconds,
            "width": width,
            "depth": depth,
            "parameters_m": sum(p.numel() for p in policy.parameters()) / 1e6,
            "final_loss": trainer.history[-1]["loss"],
            "device": str(trainer.device),
            "mixed_precision": mixed_precision,
            "compile": compile,
        }
        out.write_text(json.dumps(result))


def timed_training(processes: int, steps: int, batch_size: int, options: tuple[str, ...] = ()) -> dict:
    """``train_worker`` under ``torchrun`` with ``processes`` ranks; ``options``: more worker flags."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "train.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            __file__, "--train-worker", str(out), "--train-steps", str(steps), "--batch-size", str(batch_size),
            *options,
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
        subprocess.run(command, check=True, env=env, cwd=ROOT)
        return json.loads(out.read_text())


def training(steps: int, batch_size: int, repeats: int) -> dict:
    """Each configuration ``repeats`` times, alternating, the best kept: other jobs on the shared cores only
    ever slow a run down, so the fastest is the least disturbed."""
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(repeats):
        for processes in runs:
            runs[processes].append(timed_training(processes, steps, batch_size))
            print(f"training, {processes} process(es): {runs[processes][-1]['samples_per_s']:.0f} samples/s")
    result = {}
    for processes, attempts in runs.items():
        best = max(attempts, key=lambda run: run["samples_per_s"])
        result[f"{processes}_process"] = {**best, "samples_per_s_all_runs": [run["samples_per_s"] for run in attempts]}
    result["speedup_2_vs_1"] = result["2_process"]["samples_per_s"] / result["1_process"]["samples_per_s"]
    return result


# ---------------------------------------------------------------------------------------------- streaming
def evict(directory: Path) -> None:
    """Drop the dataset's own files from the page cache, so the next read comes from the disk."""
    for path in directory.iterdir():
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def read_rate(dataset, batches: int, batch_size: int, workers: int) -> dict:
    sampler = EpochBatchSampler(len(dataset), batch_size, seed=0)
    loader = DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )
    start = time.perf_counter()
    nbytes = 0
    for count, batch in enumerate(loader, start=1):
        nbytes += sum(value.numel() * value.element_size() for value in batch.values())
        if count == batches:
            break
    seconds = time.perf_counter() - start  # includes starting the workers, as a training run pays it too
    return {"rows_per_s": batches * batch_size / seconds, "mb_per_s": nbytes / seconds / 1e6, "seconds": seconds}


def streaming(rows: int, batches: int, batch_size: int) -> dict:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "windows"
        chunk = 500  # written piece by piece, as windows larger than memory would be
        pieces = (
            {
                "obs": rng.integers(0, 256, size=(min(chunk, rows - start), OBS_HORIZON, 96, 96, 3), dtype=np.uint8),
                "action": rng.uniform(-1, 1, size=(min(chunk, rows - start), HORIZON, ACTION_DIM)).astype(np.float32),
            }
            for start in range(0, rows, chunk)
        )
        start = time.perf_counter()
        dataset = write_windows(directory, pieces)
        write_seconds = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in directory.iterdir()) / 1e6
        result = {
            "rows": rows,
            "row_kb": size_mb * 1e3 / rows,
            "dataset_mb": size_mb,
            "batch_size": batch_size,
            "batches_read": batches,
            "write_mb_per_s": size_mb / write_seconds,
        }
        for workers in (0, 1, 2):
            evict(directory)
            result[f"mmap_cold_workers_{workers}"] = read_rate(dataset, batches, batch_size, workers)
            print(f"streaming, mmap cold, {workers} workers: {result[f'mmap_cold_workers_{workers}']}")
        result["mmap_page_cached_workers_0"] = read_rate(dataset, batches, batch_size, 0)
        result["in_memory"] = read_rate(InMemoryWindows(dataset.to_tensors()), batches, batch_size, 0)
        print(f"streaming, in memory: {result['in_memory']}")
    return result


# ---------------------------------------------------------------------------------------------- collection
def collection(episodes: dict[str, int]) -> dict:
    """Wall-clock time of the collection command, as a user runs it (interpreter and process start included)."""
    result = {"env": "worldsim/PushT-v0", "command": "python -m worldsim.envs.collect ... --num-envs N"}
    for obs_type, count in episodes.items():
        for num_envs in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                dataset_id = f"bench/pusht/{obs_type}{num_envs}-v0"
                command = [
                    sys.executable, "-m", "worldsim.envs.collect", "--task", "worldsim/PushT-v0", "--episodes",
                    str(count), "--dataset-id", dataset_id, "--obs-type", obs_type, "--num-envs", str(num_envs),
                    "--path", tmp,
                ]  # fmt: skip
                start = time.perf_counter()
                subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
                seconds = time.perf_counter() - start
                steps = sum(len(episode) for episode in load_demonstrations(dataset_id, path=tmp))
            result[f"{obs_type}_{num_envs}_env_process"] = {
                "episodes": count,
                "steps": steps,
                "seconds": seconds,
                "steps_per_s": steps / seconds,
            }
            print(f"collection, {obs_type}, {num_envs} env process(es): {steps / seconds:.0f} steps/s")
    return result


def plot(result: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    train = result["training"]
    rates = [train[f"{n}_process"]["samples_per_s"] for n in (1, 2)]
    axes[0].bar(["1 process", "2 processes"], rates)
    axes[0].set_title(f"DDP training (gloo, global batch {train['1_process']['global_batch']})")
    axes[0].set_ylabel("samples / s")
    stream = result["streaming"]
    keys = ["mmap_cold_workers_0", "mmap_cold_workers_1", "mmap_cold_workers_2", "mmap_page_cached_workers_0"]
    labels = ["mmap cold\n0 workers", "mmap cold\n1 worker", "mmap cold\n2 workers", "mmap cached\n0 workers"]
    axes[1].bar([*labels, "in memory"], [stream[k]["rows_per_s"] for k in [*keys, "in_memory"]])
    axes[1].set_title(f"reading windows ({stream['row_kb']:.0f} KB a row, batch {stream['batch_size']})")
    axes[1].set_ylabel("rows / s")
    axes[1].tick_params(axis="x", labelsize=8)
    collect = result["collection"]
    width = 0.35
    for offset, num_envs in ((-width / 2, 1), (width / 2, 2)):
        rates = [collect[f"{obs}_{num_envs}_env_process"]["steps_per_s"] for obs in ("state", "pixels")]
        axes[2].bar(np.arange(2) + offset, rates, width, label=f"{num_envs} env process{'es' if num_envs > 1 else ''}")
    axes[2].set_xticks(range(2), ["state", "96 px pixels"])
    axes[2].set_yscale("log")
    axes[2].set_title("expert demonstrations, PushT")
    axes[2].set_ylabel("env steps / s")
    axes[2].legend()
    fig.suptitle("2 CPU cores shared with other jobs (load average in scale.json)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=80)
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="global training batch")
    parser.add_argument("--stream-rows", type=int, default=12000)
    parser.add_argument("--stream-batches", type=int, default=150)
    parser.add_argument("--state-episodes", type=int, default=40)
    parser.add_argument("--pixel-episodes", type=int, default=10, help="96 px pixel observations")
    parser.add_argument("--train-worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=96, help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--mixed-precision", default="no", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_worker is not None:
        train_worker(
            args.train_worker, args.train_steps, args.batch_size, width=args.width, depth=args.depth,
            mixed_precision=args.mixed_precision, compile=args.compile,
        )  # fmt: skip
        return
    torch.set_num_threads(1)
    result = {
        "note": (
            "Measured on a machine with 2 CPU cores shared with other jobs (load average in machine): "
            "2 processes can at best double the 1-process figures, and less when the other jobs are busy. "
            "Training runs 1 torch thread per process, best of train_repeats alternating runs; 'cold' reads evict "
            "the dataset's files from this machine's page cache first (a virtual disk may still be cached by its "
            "host); collection times include starting the interpreter and the environment processes."
        ),
        "training": training(args.train_steps, args.batch_size, args.train_repeats),
        "streaming": streaming(args.stream_rows, args.stream_batches, args.batch_size),
        "collection": collection({"state": args.state_episodes, "pixels": args.pixel_episodes}),
    }
    write_result("scale", result)
    plot(result, RESULTS / "scale.png")


if __name__ == "__main__":
    main()
