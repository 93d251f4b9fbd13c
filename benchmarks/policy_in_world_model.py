"""The world model as the user's simulator: policy variants scored inside the model and in the simulator.

    python benchmarks/policy_in_world_model.py [--task pusht] [--episodes 50] [--out benchmarks/results]
    python benchmarks/policy_in_world_model.py --task fetch_push \
        --world-model runs/generalization/fetch_push/world_model --policy runs/generalization/fetch_push/policy

A policy runs with several inference strategies (the variants) for ``--episodes`` episodes from reset seed
``EVAL_SEED`` in the simulator and inside a world model that starts each episode from the simulator's own
reset with the same seed (``match_seeds=True``); policy noise is seeded ``0 + i`` in both.

- ``pusht``: the shipped Push-T policy (``pusht-state``) in MuJoCo (``worldsim/PushT-v0``) and in
  ``worldsim/NeuralPushT-v0`` (the shipped ``wm-pusht-state`` unless ``--world-model`` names another);
  coverage and success are judged by the simulator's rule on the generated states.
- a goal-conditioned suite task (``fetch_reach``, ``fetch_push``, ``fetch_pick_and_place``): its
  ``generalization.py`` policy and world model; inside the model the policy sees the flat state vector as the
  env's Dict again (``dict_state_env``) and success is the env's own goal rule on the generated goals
  (``GoalReachedReward``); the episode lasts the env's time limit.

Reports per variant the success in each, the gap in points, and Spearman's rank correlation of the variants'
success rates and of a score that ties less (Push-T: mean maximum coverage; goal tasks: mean return, the
number of steps at the goal). Target (issue 23): gap within 15 points, the same rank order (rho reported).
The simulator also runs every variant a second time with other policy noise seeds (``RESEED``): its rho
against itself is what chance alone keeps of the order at this episode count.
Writes ``policy_in_world_model/<task>.json`` (``<task>.<tag>.json`` with ``--tag``: a variant's models).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info  # noqa: E402

from worldsim.envs.tasks import TaskSpec, load_task  # noqa: E402
from worldsim.policies.config import EVAL_SEED  # noqa: E402
from worldsim.policies.diffusion_policy import DiffusionPolicy  # noqa: E402
from worldsim.policies.evaluation import evaluate_policy  # noqa: E402
from worldsim.world_model.data import dict_state_env  # noqa: E402
from worldsim.world_model.env import WorldModelEnv  # noqa: E402
from worldsim.world_model.rewards import GoalReachedReward  # noqa: E402

VARIANTS = {
    "rti_task": ("rti", {}),  # the options the policy recorded (k = 30 in 3 calls, chunks of 4)
    "rti_k3": ("rti", {"k": 3, "calls": None, "cold_start_steps": None, "n_action_steps": 1}),  # class defaults
    "ddim10": ("ddim", {"steps": 10}),
    "ddim3": ("ddim", {"steps": 3}),
    "ddim1": ("ddim", {"steps": 1}),
    "rolling": ("rolling", {}),
    # The whole chunk executed open loop: a weaker variant on contact tasks, so the ranks have a spread to keep.
    "ddim10_whole_chunk": ("ddim", {"steps": 10, "n_action_steps": "horizon"}),
}
GAP_POINTS = 0.15
RESEED = 10_000
"""Policy noise seeds of the simulator's second run: how well the simulator keeps its own rank order when
only the policy's noise changes (the ceiling for any model's rho on these episode counts)."""


def neural_task(name: str, world_model: str | None) -> tuple[TaskSpec, TaskSpec, str]:
    """The simulator's task, the same task inside the world model (an env registered for this run), and the
    world model's name."""
    simulator = load_task(name)
    if name == "pusht":
        kwargs = {"match_seeds": True} | ({"model": world_model} if world_model else {})
        model = TaskSpec(
            env_id="worldsim/NeuralPushT-v0", env_kwargs=kwargs, success="is_success", score_key="coverage"
        )
        return simulator, model, world_model or "wm-pusht-state"
    if world_model is None:
        raise SystemExit(f"--world-model: the checkpoint of {name}'s world model (generalization.py trains one)")
    real = simulator.make_env()
    limit = real.spec.max_episode_steps
    reward = GoalReachedReward(real)  # refuses, in one line, a task without goals in its observations
    env_id = f"worldsim-bench/Neural-{name}-v0"

    def make(**_):
        inner = WorldModelEnv(model=world_model, context_env=simulator.make_env(), match_seeds=True, reward_fn=reward,
                              max_episode_steps=limit)  # fmt: skip
        return dict_state_env(inner, real.observation_space)

    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=make)
    model = dataclasses.replace(simulator, env_id=env_id, env_kwargs={}, success="is_success", score_key=None)
    return simulator, model, world_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pusht", help="pusht, or a goal-conditioned suite task")
    parser.add_argument("--world-model", default=None, help="world-model checkpoint (pusht: wm-pusht-state)")
    parser.add_argument("--policy", default=None, help="policy checkpoint (pusht: the shipped one)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="", help="name of a variant (another world model): <task>.<tag>.json")
    args = parser.parse_args()
    if args.tag and not args.world_model:
        parser.error("--tag names a variant's world model: give it with --world-model")
    torch.set_num_threads(args.threads)
    simulator, model, world_model = neural_task(args.task, args.world_model)
    checkpoint = args.policy or simulator.policy_checkpoint
    if checkpoint is None:
        raise SystemExit(f"--policy: {args.task} ships no policy")
    policy = DiffusionPolicy.from_pretrained(checkpoint)
    secondary = "mean_max_coverage" if args.task == "pusht" else "mean_return"
    rows = {}
    for name, (strategy, options) in VARIANTS.items():
        policy.set_strategy(strategy, **{k: policy.config.horizon if v == "horizon" else v for k, v in options.items()})
        row = {"strategy": strategy, "options": options}
        for where, task, noise_seed in (
            ("simulator", simulator, 0), ("simulator_reseeded", simulator, RESEED), ("world_model", model, 0)
        ):  # fmt: skip
            started = time.perf_counter()
            result = evaluate_policy(
                policy, task, episodes=args.episodes, seed=EVAL_SEED, policy_seed=noise_seed, progress=False
            )  # fmt: skip
            row[where] = {
                "success_rate": result["success_rate"],
                "mean_max_coverage": result["mean_max_score"],
                "mean_return": result["mean_return"],
                "mean_goal_error": result["mean_goal_error"],
                "mean_steps": result["mean_steps"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        row["gap_points"] = abs(row["simulator"]["success_rate"] - row["world_model"]["success_rate"])
        rows[name] = row
        print(name, json.dumps({k: row[k] for k in ("simulator", "world_model", "gap_points")}), flush=True)
    rho = _spearman(
        [rows[n]["simulator"]["success_rate"] for n in rows], [rows[n]["world_model"]["success_rate"] for n in rows]
    )
    rho_score = _spearman(
        [rows[n]["simulator"][secondary] for n in rows], [rows[n]["world_model"][secondary] for n in rows]
    )
    own = {
        key: _spearman([rows[n]["simulator"][key] for n in rows], [rows[n]["simulator_reseeded"][key] for n in rows])
        for key in ("success_rate", secondary)
    }
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "task": args.task,
        "simulator": simulator.env_id,
        "policy": checkpoint,
        "world_model": f"{world_model} (match_seeds=True)",
        "episodes": args.episodes,
        "reset_seeds": f"{EVAL_SEED}..{EVAL_SEED + args.episodes - 1}",
        "policy_noise_seeds": f"0..{args.episodes - 1}",
        "simulator_reseeded_noise_seeds": f"{RESEED}..{RESEED + args.episodes - 1}",
        "variants": rows,
        "spearman_success": rho,
        f"spearman_{secondary}": rho_score,
        "simulator_against_itself_reseeded": {
            "what": "Spearman's rho of the simulator's variants against the same simulator, episodes and reset "
            "seeds with other policy noise seeds: the rank order that chance alone keeps at this episode count",
            "spearman_success": own["success_rate"],
            f"spearman_{secondary}": own[secondary],
        },
        "targets": {
            "every_gap_within_15_points": bool(all(r["gap_points"] <= GAP_POINTS for r in rows.values())),
            "same_rank_order": bool(rho == 1.0),
        },
    }
    folder = args.out / "policy_in_world_model"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{args.task}.{args.tag}.json" if args.tag else f"{args.task}.json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}: Spearman rho {rho} (success), {rho_score} ({secondary}); the simulator against itself "
          f"reseeded {own['success_rate']} (success), {own[secondary]} ({secondary})")  # fmt: skip


def _spearman(a: list, b: list) -> float | None:
    """Spearman's rho, None where it is undefined (one side has every value equal)."""
    rho = spearmanr(a, b).statistic
    return None if np.isnan(rho) else float(rho)


if __name__ == "__main__":
    main()
