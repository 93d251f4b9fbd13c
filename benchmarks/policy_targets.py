"""Judge policy.json's RTI-versus-DDPM target on more episodes than its table.

    python benchmarks/policy_targets.py --tasks worldsim/PushT-v0 --extra-episodes 400 --workers 2

``benchmarks/policy.py`` runs every strategy over 100 seeded episodes. Near 90% success, the standard error of
the difference of two such rates is about 4 points: wider than the target's 3-point margin, so one table
cannot tell a policy that meets it from one that misses it. This script evaluates the two rows the target
compares (``ddpm`` and ``rti_task``, with the options the JSON records for them) on ``--extra-episodes`` more
seeds, continuing the table's (episode ``i`` of the table has seed ``EVAL_SEED + i``), split over worker
processes, and pools them with the table's episodes. It writes ``targets_extended`` into each task's entry of
``policy.json`` in ``--out`` (default ``benchmarks/results``); the table and its ``targets`` stay as measured.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info  # noqa: E402

COMPARED = ("ddpm", "rti_task")  # the target: rti_task within 3 points of ddpm, with >= 25x fewer calls


def evaluate_share(job: tuple[str, str, str, dict, int, int, int]) -> dict:
    """One worker's share: ``episodes`` episodes from seed ``seed`` (one torch thread, its own noise seed)."""
    import torch

    import worldsim  # noqa: F401 - registers the tasks
    from worldsim.policies.diffusion_policy import DiffusionPolicy
    from worldsim.policies.evaluation import evaluate_policy

    env_id, checkpoint, strategy, options, seed, episodes, noise_seed = job
    torch.set_num_threads(1)
    torch.manual_seed(noise_seed)
    policy = DiffusionPolicy.from_pretrained(checkpoint)
    policy.set_strategy(strategy, **options)
    # The env id's shipped task file judges the episodes (success, and its score key).
    return evaluate_policy(policy, env_id, episodes=episodes, seed=seed, progress=False)


def pool(results: list[dict]) -> dict:
    """Episode-weighted success and step-weighted calls per step over several evaluations."""
    episodes = sum(r["episodes"] for r in results)
    steps = sum(r["episodes"] * r["mean_steps"] for r in results)
    successes = sum(round(r["success_rate"] * r["episodes"]) for r in results)
    return {
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "calls_per_step": sum(r["calls_per_step"] * r["episodes"] * r["mean_steps"] for r in results) / steps,
        "mean_steps": steps / episodes,
    }


def main() -> None:
    from worldsim.policies.config import EVAL_SEED

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--extra-episodes", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the policy.json to extend")
    args = parser.parse_args()
    if args.extra_episodes < 1 or args.workers < 1:
        parser.error("--extra-episodes and --workers must be positive")
    path = args.out / "policy.json"
    if not path.is_file():
        parser.error(f"{path} is missing: run benchmarks/policy.py first")
    results = json.loads(path.read_text())
    missing = [task for task in args.tasks if task not in results["tasks"]]
    if missing:
        parser.error(f"{path} has no entry for {missing}: run benchmarks/policy.py --tasks {' '.join(missing)}")

    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch or MuJoCo state
    for env_id in args.tasks:
        task = results["tasks"][env_id]
        table_episodes = task["episodes"]
        shares = [
            args.extra_episodes // args.workers + (i < args.extra_episodes % args.workers) for i in range(args.workers)
        ]
        starts = [EVAL_SEED + table_episodes + sum(shares[:i]) for i in range(args.workers)]
        started = time.time()
        extended: dict = {"machine": machine_info(), "extra_episodes": args.extra_episodes, "rows": {}}
        for name in COMPARED:
            row = task["strategies"][name]
            jobs = [
                (env_id, task["checkpoint"], row["strategy"], row["options"], start, count, 1000 + i)
                for i, (start, count) in enumerate(zip(starts, shares, strict=True))
                if count
            ]
            with ProcessPoolExecutor(len(jobs), mp_context=context) as workers:
                extra = list(workers.map(evaluate_share, jobs))
            pooled = pool([row, *extra])
            extended["rows"][name] = {
                "options": row["options"],
                "table": {"episodes": row["episodes"], "success_rate": row["success_rate"]},
                "extra": pool(extra),
                "pooled": pooled,
            }
            print(f"{env_id} {name}: table {row['success_rate']:.2f} over {row['episodes']}, extra "
                  f"{extended['rows'][name]['extra']['success_rate']:.3f} over {args.extra_episodes}, pooled "
                  f"{pooled['success_rate']:.3f} over {pooled['episodes']}", flush=True)  # fmt: skip
        ddpm, rti = (extended["rows"][name]["pooled"] for name in COMPARED)
        gap = round(100 * (rti["success_rate"] - ddpm["success_rate"]), 6)
        # Unpaired: an upper bound for these paired episodes (same seeds), but the noise differs per row.
        stderr = 100 * math.sqrt(sum(r["success_rate"] * (1 - r["success_rate"]) / r["episodes"] for r in (ddpm, rti)))
        reduction = ddpm["calls_per_step"] / rti["calls_per_step"]
        extended["targets"] = {
            "rti_task_call_reduction_vs_ddpm": {
                "target": ">= 25x fewer calls per action",
                "measured": reduction,
                "met": reduction >= 25,
            },
            "rti_task_success_minus_ddpm_points": {
                "target": ">= -3",
                "measured": gap,
                "standard_error_points": stderr,
                "episodes": ddpm["episodes"],
                "met": gap >= -3,
            },
        }
        extended["seconds"] = time.time() - started
        task["targets_extended"] = extended
        print(f"{env_id}: rti_task - ddpm = {gap:+.1f} points (standard error {stderr:.1f}) over "
              f"{ddpm['episodes']} episodes; {reduction:.1f}x fewer calls", flush=True)  # fmt: skip
    path.write_text(json.dumps({"machine": machine_info(), **results}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
