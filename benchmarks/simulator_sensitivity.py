"""How far does each suite simulator drift from its own recording after a tiny first-step difference?

    python benchmarks/simulator_sensitivity.py            # -> results/simulator_sensitivity.json + plot

The generalization suite asks a world model to stay below copy-last at horizons 10 and 50, run open loop on
the held-out episodes' recorded actions. On a stable system an early error fades; on an unstable one it
grows, and the recorded actions cannot correct it: a balancing controller's actions were chosen for the
true states, and played blind to a slightly different pendulum they let it fall. This benchmark replays the
suite's own held-out episodes (``generalization.held_out_episodes``: the same reset seeds, actors and
actions) in the simulator itself with only the **first** action shifted by ``epsilon`` of its half-range
(``worldsim.world_model.held_out.perturbed_simulator_errors``), for epsilons far below any learned model's
one-step error. Where even that replay ends above copy-last, no model can meet the open-loop target there.
It is the suite's generic counterpart of ``world_model_ceiling.py`` (Push-T's block nudged by millimetres).

Beside each task, for comparison only, the world model's own ratios as ``generalization.json`` holds them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_result  # noqa: E402
from generalization import HELD_OUT_SEED, HORIZONS, held_out_episodes  # noqa: E402

from worldsim.envs.public_experts import SUITE  # noqa: E402
from worldsim.envs.tasks import load_task  # noqa: E402
from worldsim.world_model.held_out import perturbed_simulator_errors  # noqa: E402

EPSILONS = (1e-2, 1e-3, 1e-4)
DIRECTION_SEED = 970_000


def task_part(name: str, episodes: int) -> dict:
    task = load_task(name)
    env = task.make_env()
    started = time.perf_counter()
    result: dict = {}
    for label, flat in held_out_episodes(task, env, episodes).items():
        per_epsilon = {}
        for epsilon in EPSILONS:
            errors = perturbed_simulator_errors(
                env, flat, HORIZONS, seed=HELD_OUT_SEED, epsilon=epsilon, direction_seed=DIRECTION_SEED
            )
            per_epsilon[f"{epsilon:g}"] = errors
            ratios = ", ".join(f"h{h} {errors[str(h)]['ratio']:.3g}x" for h in HORIZONS)
            print(f"{name}, {label} actions, first action shifted by {epsilon:g}: {ratios} copy-last", flush=True)
        result[label] = per_epsilon
    above = {
        label: sorted(
            (float(eps) for eps, errors in per.items() if any(errors[str(h)]["ratio"] >= 1.0 for h in HORIZONS)),
        )
        for label, per in result.items()
    }
    return {
        "perturbed": result,
        "epsilons_above_copy_last": above,
        "seconds": round(time.perf_counter() - started, 1),
    }


def model_ratios(name: str) -> dict | None:
    """The world model's open-loop ratios to copy-last from ``generalization.json`` (for the plot's reader)."""
    path = RESULTS / "generalization.json"
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get("tasks", {}).get(name, {}).get("world_model")
    if not entry:
        return None
    return {label: {h: r["ratio"] for h, r in per.items()} for label, per in entry["open_loop"].items()}


def plot(tasks: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ("expert", "random_walk")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, label in zip(axes, labels, strict=True):
        for i, (name, entry) in enumerate(tasks.items()):
            color = f"C{i}"
            smallest = f"{min(EPSILONS):g}"
            ratios = [entry["perturbed"][label][smallest][str(h)]["ratio"] for h in HORIZONS]
            ax.plot(HORIZONS, np.maximum(ratios, 1e-12), "o-", color=color, label=f"{name}: simulator, eps {smallest}")
            model = (entry.get("world_model_from_generalization_json") or {}).get(label)
            if model:
                ax.plot(HORIZONS, [model[str(h)] for h in HORIZONS], "x--", color=color, alpha=0.6)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("open-loop horizon (steps)")
        ax.set_title(f"{label} actions (dashed: the world model)")
    axes[0].set_ylabel("error / copy-last (raw units)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(SUITE))
    parser.add_argument("--episodes", type=int, default=100, help="held-out episodes per action source")
    args = parser.parse_args()
    tasks = {}
    for name in args.tasks:
        tasks[name] = task_part(name, args.episodes) | {"world_model_from_generalization_json": model_ratios(name)}
    result = {
        "benchmark": "simulator_sensitivity",
        "what": "each suite task's held-out episodes (generalization.py's seeds, actors, actions) replayed in the "
        "simulator with only the first action shifted by epsilon of its half-range (a random direction per "
        "episode and dimension): the raw-unit error to the recording at each horizon, beside copy-last's",
        "held_out": {"seed": HELD_OUT_SEED, "episodes": args.episodes, "direction_seed": DIRECTION_SEED},
        "epsilons": list(EPSILONS),
        "horizons": list(HORIZONS),
        "tasks": tasks,
    }
    write_result("simulator_sensitivity", result)
    plot(tasks, RESULTS / "simulator_sensitivity.png")


if __name__ == "__main__":
    main()
