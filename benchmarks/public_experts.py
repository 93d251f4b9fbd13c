"""Public-task experts: success, return, final goal error, length and speed, beside a uniform-random policy.

    python benchmarks/public_experts.py [--episodes 100] [--tasks fetch_push ...] [--out benchmarks/results]

For every task of the generalization suite (``worldsim.envs.public_experts.SUITE``: task files) it runs the task's
expert and a uniform-random policy on the same reset seeds ``0 .. episodes - 1`` and writes
``public_experts.json``. The expert is made once (``expert(seed=0)``) and ``reset()`` before each episode, as
``collect_dataset`` records; the random policy draws from the action space, seeded with the episode's reset seed.
Success and goal error are the task's judge (``TaskSpec.judge``: its success rule true at any step, its goal error
after the last step); seconds per episode are the expert's episodes' wall time, environment included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info  # noqa: E402

import worldsim  # noqa: E402
from worldsim.envs.public_experts import SUITE  # noqa: E402
from worldsim.envs.tasks import TaskSpec, load_task  # noqa: E402

SOLVED_RETURN = {"LunarLanderContinuous-v3": 200.0}  # Gymnasium's "solved" landing score


def run_episodes(task: TaskSpec, seeds: list[int], policy: str) -> dict:
    """Episodes of the expert (``policy="expert"``) or of uniform-random actions, one per reset seed."""
    env = task.make_env()
    expert = task.make_expert(seed=0) if policy == "expert" else None
    returns, lengths, successes, goal_errors = [], [], [], []
    start = time.perf_counter()
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        judge = task.judge()
        if expert is not None:
            expert.reset()
        else:
            env.action_space.seed(seed)
        total, steps, done = 0.0, 0, False
        while not done:
            action = expert(obs, info) if expert is not None else env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            judge.observe(obs, reward, info)
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        returns.append(total)
        lengths.append(steps)
        if judge.success is not None:
            successes.append(judge.success)
        if judge.goal_error is not None:
            goal_errors.append(judge.goal_error)
    seconds = time.perf_counter() - start
    env.close()
    result = {
        "episodes": len(seeds),
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        "seconds_per_episode": seconds / len(seeds),
        "success_rate": float(np.mean(successes)) if successes else None,
        "final_goal_error_mean": float(np.mean(goal_errors)) if goal_errors else None,
        "returns": [round(value, 4) for value in returns],
    }
    if task.env_id in SOLVED_RETURN:
        result["solved_fraction"] = float(np.mean(np.array(returns) >= SOLVED_RETURN[task.env_id]))
    return result


def versions() -> dict:
    found = {"worldsim": worldsim.__version__, "gymnasium": gym.__version__, "mujoco": mujoco.__version__}
    for distribution in ("gym-pusht", "gymnasium-robotics", "pymunk", "box2d"):
        try:
            found[distribution] = version(distribution)
        except PackageNotFoundError:
            found[distribution] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100, help="episodes per task and policy (default 100)")
    parser.add_argument("--tasks", nargs="*", default=list(SUITE), help="task names (default: the suite)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seeds = list(range(args.episodes))
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "reset_seeds": f"0..{args.episodes - 1}",
        "episodes_per_task": args.episodes,
        "tasks": {},
    }
    for name in args.tasks:
        task = load_task(name)
        env_id = task.env_id
        print(f"{env_id}: expert and random policy over {args.episodes} episodes ...", flush=True)
        entry = {
            "task": name,
            "make_kwargs": task.env_kwargs,
            "expert": task.expert,
            "success": task.success,
            "goal_error": task.goal_error,
            "expert_policy": run_episodes(task, seeds, "expert"),
            "random_policy": run_episodes(task, seeds, "random"),
        }
        results["tasks"][env_id] = entry
        summary = {
            policy: {key: value for key, value in entry[policy].items() if key != "returns"}
            for policy in ("expert_policy", "random_policy")
        }
        print(json.dumps(summary, indent=2), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "public_experts.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'public_experts.json'}")


if __name__ == "__main__":
    main()
