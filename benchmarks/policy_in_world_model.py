"""The world model as the user's simulator: policy variants scored inside the model and in the simulator.

    python benchmarks/policy_in_world_model.py [--episodes 50] [--out benchmarks/results]

The shipped Push-T policy (``pusht-state``) runs with several inference strategies (the variants) for
``--episodes`` episodes from reset seed ``EVAL_SEED`` in MuJoCo (``worldsim/PushT-v0``) and inside the
shipped state world model (``worldsim/NeuralPushT-v0`` with ``match_seeds=True``: each episode starts from
the simulator's own reset with the same seed; coverage and success judged by the simulator's rule on the
generated states). Policy noise is seeded ``0 + i`` in both. Reports per variant the success in each, the
gap in points, and Spearman's rank correlation of the variants' success rates (and of their mean maximum
coverage, which ties less). Target (issue 23): gap within 15 points, the same rank order (rho reported).
Writes ``policy_in_world_model.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info  # noqa: E402

from worldsim.envs.tasks import TaskSpec, load_task  # noqa: E402
from worldsim.policies.config import EVAL_SEED  # noqa: E402
from worldsim.policies.diffusion_policy import DiffusionPolicy  # noqa: E402
from worldsim.policies.evaluation import evaluate_policy  # noqa: E402

VARIANTS = {
    "rti_task": ("rti", {}),  # the options the policy recorded (k = 30 in 3 calls, chunks of 4)
    "rti_k3": ("rti", {"k": 3, "calls": None, "cold_start_steps": None, "n_action_steps": 1}),  # class defaults
    "ddim10": ("ddim", {"steps": 10}),
    "ddim3": ("ddim", {"steps": 3}),
    "ddim1": ("ddim", {"steps": 1}),
    "rolling": ("rolling", {}),
}
GAP_POINTS = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    simulator = load_task("pusht")
    model = TaskSpec(
        env_id="worldsim/NeuralPushT-v0", env_kwargs={"match_seeds": True}, success="is_success", score_key="coverage"
    )
    policy = DiffusionPolicy.from_pretrained(simulator.policy_checkpoint)
    rows = {}
    for name, (strategy, options) in VARIANTS.items():
        policy.set_strategy(strategy, **options)
        row = {"strategy": strategy, "options": options}
        for where, task in (("simulator", simulator), ("world_model", model)):
            started = time.perf_counter()
            result = evaluate_policy(
                policy, task, episodes=args.episodes, seed=EVAL_SEED, policy_seed=0, progress=False
            )  # fmt: skip
            row[where] = {
                "success_rate": result["success_rate"],
                "mean_max_coverage": result["mean_max_score"],
                "mean_steps": result["mean_steps"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        row["gap_points"] = abs(row["simulator"]["success_rate"] - row["world_model"]["success_rate"])
        rows[name] = row
        print(name, json.dumps({k: row[k] for k in ("simulator", "world_model", "gap_points")}), flush=True)
    sim = [rows[n]["simulator"]["success_rate"] for n in rows]
    wm = [rows[n]["world_model"]["success_rate"] for n in rows]
    sim_cov = [rows[n]["simulator"]["mean_max_coverage"] for n in rows]
    wm_cov = [rows[n]["world_model"]["mean_max_coverage"] for n in rows]
    rho = spearmanr(sim, wm).statistic
    rho_cov = spearmanr(sim_cov, wm_cov).statistic
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "policy": simulator.policy_checkpoint,
        "world_model": "wm-pusht-state (worldsim/NeuralPushT-v0, match_seeds=True)",
        "episodes": args.episodes,
        "reset_seeds": f"{EVAL_SEED}..{EVAL_SEED + args.episodes - 1}",
        "policy_noise_seeds": f"0..{args.episodes - 1}",
        "variants": rows,
        "spearman_success": None if np.isnan(rho) else float(rho),
        "spearman_mean_max_coverage": None if np.isnan(rho_cov) else float(rho_cov),
        "targets": {
            "every_gap_within_15_points": bool(all(r["gap_points"] <= GAP_POINTS for r in rows.values())),
            "same_rank_order": bool(rho == 1.0),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "policy_in_world_model.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}: Spearman rho {result['spearman_success']} (success), {result['spearman_mean_max_coverage']} "
          "(coverage)")  # fmt: skip


if __name__ == "__main__":
    main()
