"""What could any world model reach on world_model.json's held-out episodes? The simulator from a nudged start.

    python benchmarks/world_model_ceiling.py      # adds "simulator_ceiling" to each model in world_model.json
    python benchmarks/world_model_ceiling.py --models wm-pusht-state   # to these models' entries only

Push-T is chaotic: whether the pusher catches the block's corner or slides past it decides where the block
goes, so a small error compounds. This script replays each model's held-out episodes (the seeds, actors and
actions of ``benchmarks/world_model.py``) in MuJoCo itself, from a start whose block is moved by ``delta``
millimetres in a random direction: a "world model" with perfect dynamics and only that error, once, at the
start. It reports the error at the benchmark's horizons (same units: state, or pixels in [0, 1]) for single
rollouts, and for the mean frame of ``--draws`` rollouts (what a model that minimizes MSE, knowing the start only
up to ``delta``, would predict). A learned model, whose one-step error is far larger than these nudges, cannot
be expected to do better. For pixel models it also reports the tokenizer's round-trip error on the true frames:
a latent model pays it at every horizon.

The models' own figures in the JSON are left as measured; the error plot is redrawn with these curves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info, write_result  # noqa: E402
from world_model import HELD_OUT_SEED, as_unit, at_horizons, held_out_episodes, log_curve, plot_errors  # noqa: E402

from worldsim.world_model.model import WorldModel  # noqa: E402

DELTAS_MM = (0.01, 0.1, 0.5, 2.0)
PUSHT = "worldsim/PushT-v0"
BLOCK_XY = slice(0, 2)  # PushT's qpos is [block x, y, angle, pusher x, y] (metres, radians)


def nudged_replay(env: gym.Env, seed: int, actions: np.ndarray, nudge: np.ndarray) -> list[np.ndarray]:
    """Observations 1..len(actions) of the episode reset with ``seed``, its block moved by ``nudge`` metres."""
    task = env.unwrapped
    env.reset(seed=seed)
    task.data.qpos[BLOCK_XY] += nudge
    mujoco.mj_forward(task.model, task.data)
    return [env.step(action)[0] for action in actions]


def simulator_errors(model: WorldModel, episodes, horizon: int, draws: int, seed: int) -> dict:
    """Per-delta error curves ``[episodes, horizon]`` of single nudged rollouts and of their mean."""
    meta = model.metadata
    env = gym.make(meta["env_id"], max_episode_steps=horizon + 1, **meta.get("env_kwargs", {}))
    space = model.observation_space
    rng = np.random.default_rng(seed)
    out = {}
    for delta_mm in DELTAS_MM:
        started = time.perf_counter()
        single, mean = [], []
        for index, episode in enumerate(episodes):
            truth = np.stack([as_unit(o) for o in episode.observations[1 : horizon + 1]])
            rollouts = []
            for _ in range(draws):
                direction = rng.normal(size=2)
                nudge = delta_mm / 1000 * direction / np.linalg.norm(direction)
                # held_out_episodes reset episode i with HELD_OUT_SEED + i
                observations = nudged_replay(env, HELD_OUT_SEED + index, episode.actions[:horizon], nudge)
                rollouts.append(np.stack([as_unit(np.clip(o, space.low, space.high)) for o in observations]))
            axes = tuple(range(2, truth.ndim + 1))
            single.append(np.mean((np.stack(rollouts) - truth) ** 2, axis=axes).mean(0))
            mean.append(np.mean((np.mean(rollouts, axis=0) - truth) ** 2, axis=tuple(range(1, truth.ndim))))
        single, mean = np.asarray(single), np.asarray(mean)
        out[f"{delta_mm}mm"] = {
            "single": {"mse": at_horizons(single), "curve": log_curve(single.mean(0))},
            f"mean_of_{draws}": {"mse": at_horizons(mean), "curve": log_curve(mean.mean(0))},
        }
        print(f"  {delta_mm} mm: single {out[f'{delta_mm}mm']['single']['mse']}, "
              f"mean {out[f'{delta_mm}mm'][f'mean_of_{draws}']['mse']} ({time.perf_counter() - started:.0f} s)",
              flush=True)  # fmt: skip
    env.close()
    return out


def tokenizer_floor(model: WorldModel, episodes, horizon: int) -> dict:
    """Round-trip error of the true frames through the model's tokenizer, per horizon."""
    errors = []
    for episode in episodes:
        frames = episode.observations[1 : horizon + 1]
        decoded = np.concatenate(
            [model.tokenizer.decode(model.tokenizer.encode(frames[i : i + 256])) for i in range(0, len(frames), 256)]
        )
        errors.append(np.mean((as_unit(decoded) - as_unit(frames)) ** 2, axis=(1, 2, 3)))
    return at_horizons(np.asarray(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=8, help="nudged rollouts per episode and delta")
    parser.add_argument("--seed", type=int, default=0, help="for the nudges' directions")
    parser.add_argument("--models", nargs="+", help="only these models' entries (default: every model in the JSON)")
    args = parser.parse_args()
    if args.draws < 1:
        parser.error("--draws must be positive")
    path = RESULTS / "world_model.json"
    if not path.is_file():
        parser.error(f"{path} is missing: run benchmarks/world_model.py first")
    results = json.loads(path.read_text())
    torch.set_num_threads(1)
    done: dict[str, dict] = {}  # models on the same environment share their episodes and replays
    unknown = set(args.models or ()) - set(results["models"])
    if unknown:
        parser.error(f"not in {path.name}: {', '.join(sorted(unknown))}")
    for name, entry in results["models"].items():
        if args.models and name not in args.models:
            continue
        model = WorldModel.from_pretrained(entry["checkpoint"])
        meta = model.metadata
        if meta["env_id"] != PUSHT:
            parser.error(f"{name}: the nudge is defined for {PUSHT}'s block, not {meta['env_id']}")
        horizon = max(results["horizons"])
        key = json.dumps([meta.get("env_kwargs", {}), entry["episodes"], horizon])
        print(f"{name}: {entry['episodes']} held-out episodes, {horizon} steps, {args.draws} draws per delta")
        episodes = held_out_episodes(model, entry["episodes"], horizon)
        if key not in done:
            done[key] = simulator_errors(model, episodes, horizon, args.draws, args.seed)
        ceiling = {"machine": machine_info(), "draws": args.draws, "deltas": done[key]}
        if model.observation_space.dtype == np.uint8:
            ceiling["tokenizer_round_trip"] = tokenizer_floor(model, episodes, horizon)
            print(f"  tokenizer round trip {ceiling['tokenizer_round_trip']}")
        entry["simulator_ceiling"] = ceiling
    write_result("world_model", results)
    plot_errors(results["models"], RESULTS)


if __name__ == "__main__":
    with torch.inference_mode():
        main()
