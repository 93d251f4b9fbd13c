"""Task-suite benchmark: expert success, simulation and rendering speed, dataset throughput.

    python benchmarks/envs.py [--episodes 100] [--out benchmarks/results]

Writes ``envs.json`` (machine, versions, date, figures) and ``envs_tasks.png`` (frames of both tasks and
the PushT expert's two ways round the block from one start state).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import matplotlib  # noqa: E402
import minari  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

import worldsim  # noqa: E402
from worldsim.core.episodes import policy_windows  # noqa: E402
from worldsim.envs.datasets import collect_dataset, load_demonstrations  # noqa: E402
from worldsim.envs.experts import PushTExpert  # noqa: E402
from worldsim.envs.tasks import TaskSpec, load_task  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TASKS = ("pickplace", "pusht")  # worldsim's own tasks (worldsim/conf/task/<name>.yaml)


def expert_success(task: TaskSpec, episodes: int) -> dict:
    env_id = task.env_id
    env = task.make_env()
    expert = task.make_expert(seed=0)
    successes, lengths, scores = [], [], []
    start = time.perf_counter()
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        expert.reset()
        terminated = truncated = False
        steps = 0
        while not (terminated or truncated):
            obs, _, terminated, truncated, info = env.step(expert(obs, info))
            steps += 1
        successes.append(bool(info["is_success"]))
        lengths.append(steps)
        scores.append(info["coverage"] if "coverage" in info else info["distance"])
    result = {
        "episodes": episodes,
        "success_rate": float(np.mean(successes)),
        "mean_episode_steps": float(np.mean(lengths)),
        "max_episode_steps": int(max(lengths)),
        "seconds": time.perf_counter() - start,
    }
    key = "mean_final_coverage" if env_id.endswith("PushT-v0") else "mean_final_distance_m"
    result[key] = float(np.mean(scores))
    return result


def steps_per_second(env_id: str, steps: int, **kwargs) -> float:
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=0)
    env.step(actions[0])  # creates the renderer outside the timed loop
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def dataset_throughput(env_id: str, episodes: int, obs_type: str, root: Path) -> dict:
    dataset_id = f"worldsim/bench/{env_id.split('/')[1].lower()}-{obs_type.replace('_', '-')}-v0"
    start = time.perf_counter()
    dataset = collect_dataset(env_id, dataset_id, episodes, obs_type=obs_type, path=root, progress=False)
    write = time.perf_counter() - start
    steps = dataset.total_steps
    start = time.perf_counter()
    loaded = load_demonstrations(dataset_id, path=root)
    read = time.perf_counter() - start
    start = time.perf_counter()
    windows, _ = policy_windows(loaded, obs_key="state" if obs_type == "state_pixels" else None)
    window_time = time.perf_counter() - start
    size = sum(f.stat().st_size for f in (root / dataset_id).rglob("*") if f.is_file())
    return {
        "obs_type": obs_type,
        "episodes": episodes,
        "steps": int(steps),
        "record_steps_per_s": steps / write,
        "read_steps_per_s": steps / read,
        "policy_windows_per_s": len(windows) / window_time,
        "bytes_per_step": size / steps,
    }


def figure(path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, env_id in zip(axes[:2], ("worldsim/PushT-v0", "worldsim/PickPlace-v0"), strict=True):
        env = gym.make(env_id, obs_type="pixels")
        frame, _ = env.reset(seed=3)
        ax.imshow(frame)
        ax.set_title(f"{env_id} (96x96 observation)")
        ax.axis("off")
    env = gym.make("worldsim/PushT-v0")
    ax = axes[2]
    for expert_seed in range(12):
        expert = PushTExpert(seed=expert_seed)
        obs, info = env.reset(seed=3)
        expert.reset()
        path_xy, terminated, truncated = [], False, False
        while not (terminated or truncated):
            path_xy.append(env.unwrapped.task_state()["pusher"])
            obs, _, terminated, truncated, info = env.step(expert(obs, info))
        path_xy = np.array(path_xy) / 0.25
        ax.plot(path_xy[:, 0], path_xy[:, 1], color="tab:red" if expert.side > 0 else "tab:blue", alpha=0.6)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect("equal")
    ax.set_title("PushT expert pusher paths, one start state\n(colour: the episode's side choice)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100, help="expert episodes per task")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "mujoco_gl": os.environ["MUJOCO_GL"],
        },
        "versions": {
            "worldsim": worldsim.__version__,
            "gymnasium": gym.__version__,
            "mujoco": mujoco.__version__,
            "minari": minari.__version__,
            "numpy": np.__version__,
        },
        "tasks": {},
    }
    for spec in sorted(map(load_task, TASKS), key=lambda spec: spec.env_id):
        env_id = spec.env_id
        print(f"{env_id}: expert over {args.episodes} episodes ...", flush=True)
        task = {"expert": expert_success(spec, args.episodes)}
        task["steps_per_s"] = {
            "state": steps_per_second(env_id, 3000),
            "pixels_96": steps_per_second(env_id, 1000, obs_type="pixels", image_size=96),
        }
        with tempfile.TemporaryDirectory() as root:
            task["dataset"] = [
                dataset_throughput(env_id, 20, "state", Path(root)),
                dataset_throughput(env_id, 5, "state_pixels", Path(root)),
            ]
        results["tasks"][env_id] = task
        print(json.dumps(task, indent=2), flush=True)
    figure(args.out / "envs_tasks.png")
    (args.out / "envs.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'envs.json'} and {args.out / 'envs_tasks.png'}")


if __name__ == "__main__":
    main()
