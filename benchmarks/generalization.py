"""Generalization suite: worldsim's one default recipe on public tasks nobody here tuned for.

    python benchmarks/generalization.py --tasks gym_pusht pusher --parts policy world_model
    python benchmarks/generalization.py --report      # per-task results -> generalization.json + plot
    python benchmarks/generalization.py --tasks lunar_lander --parts policy --tag meanstd
        --policy-set '{"normalization": "meanstd", "clip_sample": null}'     # (one line) a variant, kept apart
    python benchmarks/generalization.py --tasks gym_pusht --parts policy --tag batch64
        --training-set '{"batch_size": 64}'                                   # (one line) a trainer variant
    python benchmarks/generalization.py --tasks gym_pusht --parts policy --tag absolute
        --task-set '{"relative_to_obs": []}'                 # (one line) a task field the recipe would derive
    python benchmarks/generalization.py --tasks fetch_push --parts world_model --tag width256
        --model-set '{"width": 256}'                         # (one line) a world-model variant

Per task (a task file of ``worldsim.envs.public_experts.SUITE``), nothing task-specific is set here:

- **policy**: the task's demonstrations are recorded through ``collect_dataset`` (the task's expert,
  ``task.demo_episodes`` episodes from reset seed ``task.demo_seed``) and ``train_policy`` trains the
  default recipe (``TrainPolicyConfig``'s defaults; only ``training.time_limit_minutes`` caps its wall time,
  ``POLICY_RESERVE_MINUTES`` short of ``--policy-minutes`` so that the whole call fits it, and evaluation
  during training is off). The trained policy is then evaluated with 10-step DDIM (the full
  denoising from noise) and with RTI at the options the recipe recorded (k by RTI-DP's offline rule), on
  ``--episodes`` episodes from reset seed ``EVAL_SEED`` with policy noise seeds ``0 + i``; the expert and a
  uniform-random policy run on the same reset seeds. Targets: success >= 0.9 x the expert's (tasks without a
  success rule: return normalized between random (0) and expert (1) >= 0.9), RTI within 5 points of DDIM
  at <= 1 network call per executed action, training <= 20 minutes.
- **world_model**: ``train_world_model`` with its defaults (rollouts of a random walk and of the noisy
  expert; delta state tokens) and a time cap; then open-loop errors in
  raw observation units at horizons 1, 10 and 50 against holding the first observation (copy-last), on
  ``--wm-episodes`` held-out episodes (reset seeds 900,000+) driven by the expert and by the random walk,
  beside the simulator's own floor (the same episodes replayed with its random generator re-seeded after
  each reset: what a perfect sampling model would score; 0 for a deterministic env). Targets: below
  copy-last at every horizon, and <= 0.3 x copy-last at horizon 1. A Dict observation (the Fetch tasks'
  observation and goals) is modelled as one flat state vector, and its errors are over that vector.

Per-task JSON goes to ``benchmarks/results/generalization/<task>.json`` (so tasks can run in parallel
processes); ``--report`` merges them into ``benchmarks/results/generalization.json`` with a plot, and lists
each variant's policy targets (``<task>.<tag>.json``: ``minmax`` holds the recipe's min-max results from
before standardization became its default). ``--reuse`` evaluates a task's last checkpoint again instead of
training (after a change to the RTI rule, say); its JSON keeps the training record and says so.
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

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info  # noqa: E402
from public_experts import run_episodes  # noqa: E402

from worldsim.core.distributed import DistributedContext  # noqa: E402
from worldsim.envs.public_experts import SUITE  # noqa: E402
from worldsim.envs.tasks import TaskSpec, load_task  # noqa: E402

POLICY_TARGET = 0.9
RTI_POINTS = 0.05
POLICY_MINUTES_TARGET = 20.0
WM_MINUTES_TARGET = 15.0
HELD_OUT_SEED = 900_000
RESAMPLE_SEED = 950_000  # the re-seeded simulator's generators (resampled_simulator_errors)
# The policy's time cap covers the whole train_policy call; its training steps stop this much sooner, to leave
# time for the data, RTI-DP's offline k rule and the save (half a minute on the suite's tasks).
POLICY_RESERVE_MINUTES = 1.0
HORIZONS = (1, 10, 50)
OBS_CHECK = "clip"


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("returns",)}


def policy_part(name: str, args) -> dict:
    import torch

    from worldsim.policies.config import EVAL_SEED, DiffusionPolicyConfig, TrainPolicyConfig, policy_trainer_defaults
    from worldsim.policies.diffusion_policy import DiffusionPolicy
    from worldsim.policies.evaluation import evaluate_policy
    from worldsim.policies.recipe import policy_episodes
    from worldsim.policies.train import load_task_demonstrations, recommended_rti, train_policy

    task = suite_task(name, args)
    training = dataclasses.replace(
        policy_trainer_defaults(),
        **args.training_set,
        time_limit_minutes=args.policy_minutes - POLICY_RESERVE_MINUTES,
        eval_every=0,
        progress=False,
    )
    cfg = TrainPolicyConfig(
        task=task, policy=DiffusionPolicyConfig(**args.policy_set), data_path=str(args.data), threads=args.threads,
        out=str(args.runs / name / ("policy" + (f"-{args.tag}" if args.tag else ""))), training=training,
    )  # fmt: skip
    started = time.perf_counter()
    _, demos = load_task_demonstrations(cfg, DistributedContext())
    demo_seconds = time.perf_counter() - started
    previous = _previous_policy_result(name, args) if args.reuse else None
    if previous is None:
        started = time.perf_counter()
        train_policy(cfg)
        train_minutes = (time.perf_counter() - started) / 60
    else:
        train_minutes = previous["training"]["minutes"]
    policy = DiffusionPolicy.from_pretrained(cfg.out)  # what a user loads: the saved checkpoint
    if previous is not None and cfg.rti_max_pairs and "k" not in task.rti:
        # The RTI options by the current rule, as train_policy would record them now.
        found = recommended_rti(policy, policy_episodes(demos, policy.config), max_pairs=cfg.rti_max_pairs,
                                seed=cfg.training.seed)  # fmt: skip
        policy.strategy_defaults["rti"] = found | dict(task.rti)
        print(f"{name}: RTI by the current rule {found}", flush=True)
    # Every task alike: an env's observations that leave its own declared space (gym-pusht's block pushed
    # past the table) are clipped into it rather than refused, as `worldsim eval obs_check=clip` does.
    policy.obs_check = OBS_CHECK
    torch.set_num_threads(args.threads)

    seeds = list(range(EVAL_SEED, EVAL_SEED + args.episodes))
    expert = run_episodes(task, seeds, "expert")
    random = run_episodes(task, seeds, "random")
    strategies = {}
    for label, (strategy, options) in {"ddim": ("ddim", {"steps": 10}), "rti": ("rti", {})}.items():
        policy.set_strategy(strategy, **options)
        result = evaluate_policy(policy, task, episodes=args.episodes, seed=EVAL_SEED, policy_seed=0, progress=False)
        result["normalized_return"] = _normalized(result["mean_return"], expert, random)
        result["options"] = {k: v for k, v in vars(policy.strategy).items() if not k.startswith("_")}
        strategies[label] = result
        print(f"{name} {label}: {json.dumps(_brief(result))}", flush=True)
    c = policy.config
    return {
        "demonstrations": {
            "dataset_id": task.demo_dataset_id(),
            "episodes": len(demos),
            "seed": task.demo_seed,
            "action_noise": task.demo_action_noise,
            "steps": int(sum(len(e.actions) for e in demos)),
            "seconds": round(demo_seconds, 1),
            "successful": int(sum(bool(e.success) for e in demos)),
        },  # fmt: skip
        "derived": {
            "obs_shape": list(c.obs_shape),
            "obs_keys": c.obs_keys,
            "action_dim": c.action_dim,
            "discrete_dims": list(c.discrete_dims),
            "angle_dims": list(c.angle_dims),
            "relative_to_obs": list(c.relative_to_obs),
            "n_action_steps": c.n_action_steps,
            "horizon": c.horizon,
            "obs_horizon": c.obs_horizon,
            "parameterization": c.parameterization,
            "normalization": c.normalization,
            "per_step_conditioning": c.per_step_conditioning,
            "recorded_strategies": policy.strategy_defaults,
        },  # fmt: skip
        "training": previous["training"] | {"reused": _reuse_record(previous)}
        if previous
        else {
            "minutes": round(train_minutes, 2),
            "steps": policy.metadata.get("train_steps"),
            "time_limit_minutes": args.policy_minutes,
            "steps_time_limit_minutes": training.time_limit_minutes,
            "threads": args.threads,
            "batch_size": training.batch_size,
            "loss_last": _last_loss(policy.metadata.get("history", [])),
        },  # fmt: skip
        "eval_seeds": f"{seeds[0]}..{seeds[-1]}",
        "obs_check": OBS_CHECK,
        "policy_noise_seeds": f"0..{args.episodes - 1}",
        "expert": _strip(expert),
        "random": _strip(random),
        "strategies": strategies,
        "targets": _policy_targets(task, expert, strategies, train_minutes),
    }


def _result_path(name: str, args) -> Path:
    """Where a task's result goes: ``<task>.json``, or ``<task>.<tag>.json`` for a variant."""
    return args.out / "generalization" / (f"{name}.{args.tag}.json" if args.tag else f"{name}.json")


def _previous_policy_result(name: str, args) -> dict:
    """The policy part of this task's (and tag's) last result, whose checkpoint ``--reuse`` evaluates again."""
    path = _result_path(name, args)
    previous = json.loads(path.read_text()).get("policy") if path.exists() else None
    if not previous or not (args.runs / name / ("policy" + (f"-{args.tag}" if args.tag else ""))).is_dir():
        raise SystemExit(f"--reuse: no earlier policy result and checkpoint for {name} (run without --reuse first)")
    return previous


def _reuse_record(previous: dict) -> dict:
    """What a ``--reuse`` run records: that the checkpoint was trained by the earlier run, evaluated again."""
    first = previous["training"].get("reused") or {  # evaluated again before: keep what the training run gave
        "trained": previous.get("date"),
        "previous_rti": previous["derived"]["recorded_strategies"].get("rti"),
        "previous_targets": previous["targets"],
    }
    return first | {"evaluated_again": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _last_loss(history: list[dict]) -> float | None:
    losses = [record["loss"] for record in history if "loss" in record]
    return losses[-1] if losses else None


def _normalized(value: float, expert: dict, random: dict) -> float:
    span = expert["return_mean"] - random["return_mean"]
    return float((value - random["return_mean"]) / span) if abs(span) > 1e-9 else float("nan")


def _brief(result: dict) -> dict:
    keys = ("success_rate", "mean_return", "normalized_return", "mean_goal_error", "calls_per_step", "mean_steps")
    return {k: result.get(k) for k in keys}


def _policy_targets(task: TaskSpec, expert: dict, strategies: dict, train_minutes: float) -> dict:
    ddim, rti = strategies["ddim"], strategies["rti"]
    if expert["success_rate"] is not None and ddim["success_rate"] is not None:
        measure, full, fast = "success_rate", ddim["success_rate"], rti["success_rate"]
        bar = POLICY_TARGET * expert["success_rate"]
    else:
        measure, full, fast, bar = "normalized_return", ddim["normalized_return"], rti["normalized_return"], 0.9
    calls = rti["calls_per_step"]
    return {
        "measure": measure,
        "ddim": full,
        "rti": fast,
        "bar": bar,
        "ddim_met": bool(full >= bar),
        "rti_within_5_points_of_ddim": bool(fast >= full - RTI_POINTS),
        "rti_calls_per_action": calls,
        "rti_calls_met": bool(calls is not None and calls <= 1.0),
        "training_minutes_met": bool(train_minutes <= POLICY_MINUTES_TARGET),
    }


def held_out_episodes(task: TaskSpec, env, count: int) -> dict:
    """The world-model part's held-out episodes per action source (the expert, the random walk): ``count``
    episodes of ``max(HORIZONS)`` steps from reset seeds ``HELD_OUT_SEED + i``, stepped through termination,
    Dict observations flattened."""
    from worldsim.world_model.data import NoisyExpert, RandomWalkActor, collect_episodes, flatten_episodes

    actors = {
        "expert": NoisyExpert(task.make_expert(0), env.action_space, noise_std=0.0, seed=0),
        "random_walk": RandomWalkActor(env.action_space, step_scale=0.1, seed=0),
    }
    episodes = {}
    for label, actor in actors.items():
        recorded = collect_episodes(
            env, [actor], count, seed=HELD_OUT_SEED, max_steps=max(HORIZONS) + 1, ignore_termination=True,
            progress=False,
        )  # fmt: skip
        episodes[label] = flatten_episodes(recorded, env.observation_space)
    return episodes


def world_model_part(name: str, args) -> dict:
    import torch

    from worldsim.world_model.config import TrainWorldModelConfig, WorldModelConfig, world_model_trainer_defaults
    from worldsim.world_model.held_out import open_loop_errors, resampled_simulator_errors
    from worldsim.world_model.model import WorldModel
    from worldsim.world_model.train import train_world_model

    task = load_task(name)
    env = task.make_env()  # the actors see the env's own observations; Dict ones are flattened after
    training = dataclasses.replace(world_model_trainer_defaults(), time_limit_minutes=args.wm_minutes, progress=False)
    model_config = dataclasses.replace(WorldModelConfig(), **args.model_set)
    out = args.runs / name / ("world_model" + (f"-{args.tag}" if args.tag else ""))
    cfg = TrainWorldModelConfig(task=task, model=model_config, out=str(out), training=training,
                                threads=args.threads)  # fmt: skip
    started = time.perf_counter()
    train_world_model(cfg)
    train_minutes = (time.perf_counter() - started) / 60
    model = WorldModel.from_pretrained(cfg.out)
    torch.set_num_threads(args.threads)
    errors, floors = {}, {}
    for label, flat in held_out_episodes(task, env, args.wm_episodes).items():
        errors[label] = open_loop_errors(model, flat, HORIZONS, seed=0)
        floors[label] = resampled_simulator_errors(env, flat, HORIZONS, seed=HELD_OUT_SEED, resample_seed=RESAMPLE_SEED)
        print(
            f"{name} world model, {label} actions: "
            + ", ".join(
                f"h{h} {errors[label][str(h)]['ratio']:.3f}x copy-last (simulator resampled "
                f"{floors[label][str(h)]['ratio']:.3f}x)"
                for h in HORIZONS
            ),
            flush=True,
        )
    ratios = {label: {h: errors[label][str(h)]["ratio"] for h in map(str, HORIZONS)} for label in errors}
    return {
        "training": {
            "minutes": round(train_minutes, 2),
            "steps": model.metadata.get("training", {}).get("steps"),
            "time_limit_minutes": args.wm_minutes,
            "rollout_episodes": model.metadata.get("training", {}).get("episodes"),
            "max_steps": cfg.max_steps,
            "tokenizer": model.tokenizer.config(),
            "decoding": model.metadata.get("training", {}).get("decoding"),
        },  # fmt: skip
        "held_out": {"seed": HELD_OUT_SEED, "episodes": args.wm_episodes, "units": "raw observation units"},
        "open_loop": errors,
        "simulator_resampled": {
            "what": "the simulator itself replaying each held-out episode's actions from the same reset seed with "
            "its random generator re-seeded after the reset: the raw-unit error a perfect sampling model would "
            "make (0 for a deterministic env), beside the same copy-last baseline",
            **floors,
        },
        "targets": {
            "below_copy_last_everywhere": bool(all(r < 1.0 for rs in ratios.values() for r in rs.values())),
            "h1_at_most_0.3x": bool(all(rs["1"] <= 0.3 for rs in ratios.values())),
            "training_minutes_met": bool(train_minutes <= WM_MINUTES_TARGET),
        },
    }


PARTS = {"policy": policy_part, "world_model": world_model_part}


def suite_task(name: str, args):
    """The suite's task file, with the run's recipe-wide demonstration settings (the same for every task) and a
    variant's task fields (``--task-set``)."""
    task = load_task(name)
    if args.demo_action_noise:
        task = dataclasses.replace(task, demo_action_noise=args.demo_action_noise)
    return dataclasses.replace(task, **args.task_set)


def run(args) -> None:
    out_dir = args.out / "generalization"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.tasks:
        path = _result_path(name, args)
        entry = json.loads(path.read_text()) if path.exists() else {}
        entry |= {name: getattr(args, name) for name in VARIANT_EXAMPLES if getattr(args, name)}
        task = load_task(name)
        entry |= {"task": name, "env_id": task.env_id, "env_kwargs": task.env_kwargs}
        for part in args.parts:
            print(f"== {name}: {part}", flush=True)
            entry[part] = PARTS[part](name, args)
            entry[part]["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            entry[part]["machine"] = machine_info()
            path.write_text(json.dumps(entry, indent=1, default=_json_default) + "\n")


VARIANT_EXAMPLES = {
    "policy_set": '{"normalization": "meanstd", "clip_sample": null}',
    "training_set": '{"batch_size": 64}',
    "task_set": '{"relative_to_obs": []}',
    "model_set": '{"width": 256}',
}
"""The options that run a variant of the recipe (each sets fields of one config; needs --tag), with examples."""


def variant_configs() -> dict[str, type]:
    """The config whose fields each of ``VARIANT_EXAMPLES`` sets: the policy's, its trainer's (whose time cap
    stays ``--policy-minutes``), the task's (fields the recipe would otherwise derive), the world model's."""
    from worldsim.core.trainer_config import TrainerConfig
    from worldsim.policies.config import DiffusionPolicyConfig
    from worldsim.world_model.config import WorldModelConfig

    return {"policy_set": DiffusionPolicyConfig, "training_set": TrainerConfig, "task_set": TaskSpec,
            "model_set": WorldModelConfig}  # fmt: skip


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def report(args) -> None:
    entries = {}
    for name in SUITE:
        path = args.out / "generalization" / f"{name}.json"
        if path.exists():
            entries[name] = json.loads(path.read_text())
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "suite": list(SUITE),
        "not_run": {part: [n for n in SUITE if part not in entries.get(n, {})] for part in PARTS},
        "targets": {
            "policy": f"success >= {POLICY_TARGET} x expert's (else normalized return >= 0.9), RTI within 5 points "
            "of DDIM at <= 1 call per action, training <= 20 min",
            "world_model": "open-loop raw-unit error below copy-last at horizons 1, 10, 50 (expert and random-walk "
            "actions), <= 0.3x copy-last at horizon 1, training <= 15 min",
        },
        "tasks": entries,
        "variants": _variants(args.out / "generalization"),
    }
    (args.out / "generalization.json").write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")
    _plot(entries, args.out / "generalization.png")


def _variants(folder: Path) -> dict:
    """Each variant's policy targets per task (``<task>.<tag>.json``), beside the default recipe's."""
    variants: dict = {}
    for path in sorted(folder.glob("*.*.json")):
        name, tag = path.name[: -len(".json")].split(".", 1)
        entry = json.loads(path.read_text())
        if name in SUITE and "policy" in entry:
            variant = variants.setdefault(
                tag,
                {
                    "policy_set": entry.get("policy_set"),
                    "training_set": entry.get("training_set"),
                    "task_set": entry.get("task_set"),
                    "tasks": {},
                },
            )
            variant["tasks"][name] = entry["policy"]["targets"]
            # the trainer's batch as run: variants made before the recipe's batch became 64 ran at 256
            variant.setdefault("batch_size", {})[name] = entry["policy"]["training"].get("batch_size")
    return variants


def _plot(entries: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 4.8))
    names = [n for n in entries if "policy" in entries[n]]
    for offset, label in ((-0.2, "ddim"), (0.2, "rti")):
        values = [entries[n]["policy"]["targets"][label] for n in names]
        left.bar(np.arange(len(names)) + offset, values, width=0.4, label=label.upper())
    left.scatter(np.arange(len(names)), [entries[n]["policy"]["targets"]["bar"] for n in names], marker="_", s=600,
                 color="k", label="target (0.9 x expert)", zorder=3)  # fmt: skip
    left.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    left.set_ylabel("success rate, or return normalized random 0 .. expert 1")
    left.set_title("policy: default recipe")
    left.legend()
    wm = [n for n in entries if "open_loop" in entries[n].get("world_model", {})]
    for i, (label, marker) in enumerate((("expert", "o"), ("random_walk", "s"))):
        for j, n in enumerate(wm):
            ratios = [entries[n]["world_model"]["open_loop"][label][str(h)]["ratio"] for h in HORIZONS]
            right.plot(HORIZONS, ratios, marker=marker, color=f"C{j}", linestyle="-" if i == 0 else "--",
                       label=f"{n} ({label})")  # fmt: skip
            floor = entries[n]["world_model"].get("simulator_resampled", {}).get(label, {})
            noisy = [(h, floor[str(h)]["ratio"]) for h in HORIZONS if floor.get(str(h), {}).get("ratio", 0) > 0]
            if noisy:  # a stochastic simulator's own floor (a deterministic one's 0 has no place on a log axis)
                right.scatter(*zip(*noisy, strict=True), marker="x", color=f"C{j}", s=40,
                              label=f"{n} ({label}): simulator resampled")  # fmt: skip
    right.axhline(1.0, color="k", linewidth=0.8)
    right.axhline(0.3, color="k", linewidth=0.8, linestyle=":")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("open-loop horizon (steps)")
    right.set_ylabel("raw-unit MSE / copy-last MSE")
    right.set_title("world model: default recipe")
    right.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: the lines stay visible
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=list(SUITE), help="suite task names (default: all)")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per strategy (default 100)")
    parser.add_argument("--wm-episodes", type=int, default=100, help="held-out world-model episodes per actor")
    parser.add_argument("--policy-minutes", type=float, default=20.0, help="policy training time limit")
    parser.add_argument("--wm-minutes", type=float, default=15.0, help="world-model training time limit")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument(
        "--demo-action-noise", type=float, default=0.0,
        help="record every task's demonstrations with this DART execution noise (task.demo_action_noise)",
    )  # fmt: skip
    parser.add_argument("--runs", type=Path, default=Path("runs/generalization"))
    parser.add_argument("--data", type=Path, default=Path("runs/generalization/minari"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="merge the per-task results and plot")
    for name, config in variant_configs().items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=json.loads, default={}, metavar="JSON",
            help=f"a variant of the recipe: {config.__name__} fields, e.g. '{VARIANT_EXAMPLES[name]}' (needs --tag)",
        )  # fmt: skip
    parser.add_argument(
        "--reuse", action="store_true",
        help="evaluate the checkpoint the last run of each task (and tag) trained, with the RTI options the "
        "current rule derives, instead of training again (the result records that it did)",
    )  # fmt: skip
    parser.add_argument(
        "--tag", default="", help="name of a variant: results go to <task>.<tag>.json, left out of --report"
    )
    args = parser.parse_args()
    if args.report:
        report(args)
    else:
        unknown = sorted(set(args.tasks) - set(SUITE))
        if unknown:
            parser.error(f"unknown suite task(s) {unknown}; the suite is {list(SUITE)}")
        given = [name for name in VARIANT_EXAMPLES if getattr(args, name)]
        if bool(given) != bool(args.tag):
            parser.error(
                "--policy-set/--training-set/--task-set/--model-set and --tag go together: a variant of the recipe "
                "is kept apart by its tag"
            )
        for name, config in variant_configs().items():
            unknown = sorted(set(getattr(args, name)) - {f.name for f in dataclasses.fields(config)})
            if unknown:
                parser.error(f"--{name.replace('_', '-')}: {unknown} are not {config.__name__} fields")
        if "time_limit_minutes" in args.training_set:
            parser.error("--training-set cannot set time_limit_minutes: --policy-minutes sets the cap")
        run(args)


if __name__ == "__main__":
    main()
