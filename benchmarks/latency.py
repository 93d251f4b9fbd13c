"""Success under inference delay: every delay-aware method over the same trained weights, Push-T and PickPlace.

    python benchmarks/latency.py --task pusht          # one task -> results/latency/pusht.json
    python benchmarks/latency.py --task pickplace
    python benchmarks/latency.py --report              # merge (and live_delay.py's runs) -> results/latency.json + .png

Each point runs ``--episodes`` seeded episodes (seeds 100000+, the policy's noise seeded too) in the
:class:`~worldsim.bridge.DelaySimulator`: the live ``ControlLoop``'s timing, offline. A chunk is asked
for every ``s`` ticks (the strategy's own ``n_action_steps``; one request in flight at a time) and arrives
``d`` ticks after its observation, taking over then; meanwhile the previous chunk keeps running.

Methods (the shipped checkpoints, no retraining):

=============  ==============================================================================
naive          10-step DDIM; the stale first ``d`` actions of each chunk are dropped
ensemble       10-step DDIM; overlapping chunks averaged per tick (ACT's temporal ensembling)
rtc_hard       real-time chunking, hard mask: the ``d`` actions running meanwhile frozen, the rest
               sampled from noise around them in 10 DDIM steps
rtc            real-time chunking, soft mask: also the previous chunk's later actions as a partial
               guess (per-token start levels decaying over the overlap), 10 DDIM steps
rti_naive      the task's RTI (its recorded k, calls, chunk), stale actions dropped
rti_prefix     the task's RTI with the prefix frozen in its warm start
open_loop      a reference, not a method: no delay, but each 10-step DDIM chunk executed for
               ``n_action_steps + d`` ticks, so its actions get as old as under delay ``d``
               (what any method that executes plans made ``d`` ticks ago can hope for)
=============  ==============================================================================

Smoothness: the mean L2 jump between consecutive actions where the source chunk changes (a boundary)
against where it does not (within a chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info  # noqa: E402

import worldsim  # noqa: E402, F401
from worldsim.bridge import DelayConfig  # noqa: E402
from worldsim.cli import evaluate_under_delay  # noqa: E402
from worldsim.envs.tasks import load_task  # noqa: E402
from worldsim.policies.diffusion_policy import DiffusionPolicy  # noqa: E402

SEED = 100_000
POLICY_SEED = 0
DELAYS = (0, 1, 2, 4, 8)
METHODS = {
    # name: (strategy, options over the policy's recorded ones, merge)
    "naive": ("ddim", {"steps": 10}, "switch"),
    "ensemble": ("ddim", {"steps": 10}, "ensemble"),
    "rtc_hard": ("rtc", {"steps": 10, "soft": False}, "switch"),
    "rtc": ("rtc", {"steps": 10, "soft": True}, "switch"),
    "rti_naive": ("rti", {"freeze_prefix": False}, "switch"),
    "rti_prefix": ("rti", {"freeze_prefix": True}, "switch"),
    "open_loop": ("ddim", {"steps": 10}, "switch"),
}


def run_point(policy, task, method: str, delay: int, episodes: int) -> dict:
    strategy, options, merge = METHODS[method]
    policy.set_strategy(strategy, **options)
    if method == "open_loop":
        # The staleness reference: synchronous inference, each chunk executed for as many ticks as under
        # delay d its actions can be old (the chunk's n_action_steps plus d).
        config = DelayConfig(delay_ticks=0, replan_every=int(policy.n_action_steps) + delay, merge=merge)
    else:
        config = DelayConfig(delay_ticks=delay, merge=merge)
    start = time.perf_counter()
    result, _ = evaluate_under_delay(policy, task, config, episodes=episodes, seed=SEED, policy_seed=POLICY_SEED)
    keep = ("success_rate", "mean_goal_error", "mean_steps", "mean_arrival_ticks", "deadline_misses",
            "boundary_jump", "within_jump", "jump_ratio", "replan_every", "merge")  # fmt: skip
    return {
        "method": method, "strategy": strategy, "options": options, "delay_ticks": delay, "episodes": episodes,
        **{key: result[key] for key in keep}, "wall_seconds": time.perf_counter() - start,
    }  # fmt: skip


def run_task(args) -> None:
    torch.set_num_threads(1)
    task = load_task(args.task)
    checkpoint = args.checkpoint or task.policy_checkpoint
    policy = DiffusionPolicy.from_pretrained(checkpoint)
    out = {"task": task.env_id, "checkpoint": task.policy_checkpoint, "machine": machine_info(), "seed": SEED,
           "policy_seed": POLICY_SEED, "episodes": args.episodes, "recorded_strategies": policy.strategy_defaults,
           "points": []}  # fmt: skip
    path = args.out / "latency" / f"{args.task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # a run of some methods or delays adds to (or replaces) the points of earlier ones
        earlier = json.loads(path.read_text())
        if earlier["episodes"] != args.episodes:
            raise SystemExit(f"{path} holds {earlier['episodes']}-episode points; pass --episodes to match or move it")
        out["points"] = earlier["points"]
    for delay in args.delays:
        for method in args.methods:
            point = run_point(policy, task, method, delay, args.episodes)
            if args.checkpoint:  # other weights (e.g. trained with prefix conditioning): a method of their own
                point |= {"method": f"{method}@{args.label}", "checkpoint": args.checkpoint}
            name = point["method"]
            out["points"] = [p for p in out["points"] if (p["method"], p["delay_ticks"]) != (name, delay)] + [point]
            print(
                f"{args.task} d={delay} {name:10s} success {point['success_rate']:.2f} "
                f"jump ratio {point['jump_ratio'] or float('nan'):.2f} ({point['wall_seconds']:.0f} s)",
                flush=True,
            )
            path.write_text(json.dumps(out, indent=1))


def targets(points: list[dict]) -> dict:
    """The issue's targets on one task: the best method at d=4 against its d=0, and at d=8 against naive."""
    by = {(p["method"], p["delay_ticks"]): p["success_rate"] for p in points}
    methods = sorted({p["method"] for p in points} - {"open_loop"})  # a reference, not a method
    best4 = max(methods, key=lambda m: by.get((m, 4), -1))
    best8 = max(methods, key=lambda m: by.get((m, 8), -1))
    return {
        "best_at_d4": best4,
        "d4_minus_d0_points": 100 * (by[(best4, 4)] - by[(best4, 0)]),
        "d4_within_5_points_of_d0": by[(best4, 4)] >= by[(best4, 0)] - 0.05,
        "best_at_d8": best8,
        "d8_minus_naive_points": 100 * (by[(best8, 8)] - by[("naive", 8)]),
        "d8_beats_naive_by_20_points": by[(best8, 8)] >= by[("naive", 8)] + 0.20,
        "open_loop_reference": {d: by.get(("open_loop", d)) for d in DELAYS},
        # Smoothness of every method at every delay (None: chunks of one action have no within-chunk step).
        "jump_ratio_by_method": {
            m: {p["delay_ticks"]: p["jump_ratio"] for p in points if p["method"] == m} for m in methods
        },
        "best_at_d4_jump_ratio_max": max(
            (p["jump_ratio"] for p in points if p["method"] == best4 and p["jump_ratio"] is not None), default=None
        ),
        "best_at_d4_boundary_jump_within_1_5x": all(
            p["jump_ratio"] is None or p["jump_ratio"] <= 1.5 for p in points if p["method"] == best4
        ),
    }


def report(args) -> None:
    tasks = {}
    for path in sorted((args.out / "latency").glob("*.json")):
        data = json.loads(path.read_text())
        data["targets"] = targets(data["points"])
        tasks[data["task"]] = data
    # The live runs of benchmarks/live_delay.py (served ONNX policy over the bridge against the simulator).
    live = {path.stem: json.loads(path.read_text()) for path in sorted((args.out / "latency_live").glob("*.json"))}
    (args.out / "latency.json").write_text(json.dumps({"tasks": tasks, "live": live}, indent=1))
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.5 * len(tasks), 8), squeeze=False)
    for column, (name, data) in enumerate(tasks.items()):
        for method in dict.fromkeys(p["method"] for p in data["points"]):
            points = sorted((p for p in data["points"] if p["method"] == method), key=lambda p: p["delay_ticks"])
            if not points:
                continue
            delays = [p["delay_ticks"] for p in points]
            axes[0, column].plot(delays, [p["success_rate"] for p in points], marker="o", label=method)
            axes[1, column].plot(delays, [p["jump_ratio"] for p in points], marker="o", label=method)
        axes[0, column].set_title(f"{name} ({data['episodes']} episodes per point)")
        axes[0, column].set_ylabel("success rate")
        axes[1, column].set_ylabel("boundary / within-chunk action jump")
        axes[1, column].axhline(1.5, color="grey", lw=0.8, ls="--")
        for row in range(2):
            axes[row, column].set_xlabel("inference delay d (ticks)")
            axes[row, column].set_xticks(DELAYS)
        axes[0, column].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "latency.png", dpi=110)
    for name, data in tasks.items():
        print(name, json.dumps(data["targets"]))
    for name, data in live.items():
        print(name, json.dumps(data["targets"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=("pusht", "pickplace"), help="run one task's points")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--delays", type=int, nargs="+", default=list(DELAYS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--checkpoint", help="weights other than the task's shipped policy (points: METHOD@LABEL)")
    parser.add_argument("--label", default="variant", help="with --checkpoint: the suffix of its methods' names")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="merge the per-task results and plot")
    args = parser.parse_args()
    if args.report:
        report(args)
    elif args.task:
        run_task(args)
    else:
        parser.error("give --task or --report")


if __name__ == "__main__":
    main()
