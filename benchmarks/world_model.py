"""Benchmark the shipped world models against the MuJoCo simulator: open-loop drift, speed and memory.

    python benchmarks/world_model.py            # writes benchmarks/results/world_model.json and world_model*.png
    python benchmarks/world_model.py --out DIR  # the same files into DIR

Held-out episodes (seeds never used in training) are rolled in MuJoCo with a mix of noisy-expert and
random-walk actions, ignoring termination, for ``--horizon`` steps. Each model starts from the true first
observation and replays the same actions open loop; the error at horizon h is the mean squared error of
its h-th observation against the simulator's (state units, or pixels scaled to [0, 1]), averaged over
episodes. Copy-last-frame predicts the first observation forever.

Pixel models of Push-T are also judged object by object (``objects``): colour masks of the block and the
pusher give the block's area ratio (dream / true), centroid and orientation errors and the pusher's
centroid error, and the frames' sharpness ratio, at horizons 1, 10, 50, 100, 300 and 1,000, for the
session's default sampler beside copy-last-frame and the simulator itself from a start nudged by 0.1 mm
(the chaos floor). ``--objects-only`` measures just these and keeps the rest of the JSON.

Also: frames per second at batch 1 for each sampler, in eager PyTorch and exported to onnxruntime (one
thread each); the process's resident memory (and the session's own bytes) after 1,000 and 10,000 streamed
frames; the issue's targets beside the measured figures (``targets`` per model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, latency_ms, machine_info  # noqa: E402

import worldsim  # noqa: E402, F401
from worldsim.envs.atari import breakout_fidelity  # noqa: E402
from worldsim.envs.datasets import default_expert  # noqa: E402
from worldsim.envs.frame_objects import object_fidelity  # noqa: E402
from worldsim.envs.push_t import OBJECT_COLOURS  # noqa: E402
from worldsim.export.onnx_world_model import OnnxWorldModelSession  # noqa: E402
from worldsim.export.world_model_export import env_rollout, export_world_model  # noqa: E402
from worldsim.world_model.data import NoisyExpert, RandomWalkActor, collect_episodes  # noqa: E402
from worldsim.world_model.model import WorldModel  # noqa: E402
from worldsim.world_model.session import SessionConfig, StreamingSession  # noqa: E402

HORIZONS = (1, 10, 100, 1000)
OBJECT_HORIZONS = (1, 10, 50, 100, 300, 1000)
HELD_OUT_SEED = 100_000
PUSHT = "worldsim/PushT-v0"
BREAKOUT = "worldsim/Breakout-v0"
OBJECT_WORLDS = (PUSHT, BREAKOUT)
"""Worlds whose frames have objects to measure by colour."""


def modes(model: WorldModel) -> dict[str, SessionConfig]:
    """The samplers compared; "no sink" keeps the same cache size, all of it a sliding window. A U-Net model
    (a frame window, one frame per call) compares its step counts and context noise instead."""
    c = model.config
    if c.network == "unet":
        return {
            "autoregressive": SessionConfig(steps=2, context_level=0.0),
            "autoregressive+context_noise": SessionConfig(steps=2, context_level=0.05),
            "autoregressive_1_step+context_noise": SessionConfig(steps=1, context_level=0.05),
            "autoregressive_3_steps+context_noise": SessionConfig(steps=3, context_level=0.05),
        }
    no_sink = {"sink_frames": 0, "window_frames": c.sink_frames + c.window_frames}
    return {
        "autoregressive": SessionConfig(steps=2, context_level=0.0, **no_sink),
        "autoregressive+sink": SessionConfig(steps=2, context_level=0.0),
        "autoregressive+sink+context_noise": SessionConfig(steps=2, context_level=0.05),
        "rolling": SessionConfig(sampling="rolling", rolling_window=3, context_level=0.0, **no_sink),
        "rolling+sink": SessionConfig(sampling="rolling", rolling_window=3, context_level=0.0),
        "rolling+sink+context_noise": SessionConfig(sampling="rolling", rolling_window=3, context_level=0.05),
        # what WorldModelEnv and a plain StreamingSession run: autoregressive, sink, context noise, and the
        # model's own step count (1 with a one-step predictor, else 2: streaming.default_steps)
        "session_defaults": SessionConfig(),
    }


def held_out_episodes(model: WorldModel, episodes: int, horizon: int):
    """Rollouts from seeds never trained on: a noisy expert and a random walk take turns; on Breakout the
    scripted player with 5% random actions, since random play ends the game in ~130 steps."""
    meta = model.metadata
    env = gym.make(meta["env_id"], max_episode_steps=horizon + 1, **meta.get("env_kwargs", {}))
    expert = default_expert(meta["env_id"])(seed=1)
    if meta["env_id"] == BREAKOUT:
        actors = [NoisyExpert(expert, env.action_space, noise_std=0.05, seed=1)]
    else:
        actors = [
            NoisyExpert(expert, env.action_space, noise_std=0.3, seed=1),
            RandomWalkActor(env.action_space, step_scale=0.1, seed=2),
        ]
    result = collect_episodes(
        env, actors, episodes, seed=HELD_OUT_SEED, max_steps=horizon, ignore_termination=True, progress=False
    )
    env.close()
    return result


def as_unit(obs: np.ndarray) -> np.ndarray:
    return obs.astype(np.float32) / 255.0 if obs.dtype == np.uint8 else obs.astype(np.float32)


def open_loop(
    model: WorldModel, episodes, config: SessionConfig, horizon: int, frames: list | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Squared error per step ``[episodes, horizon]`` and the predicted frames at the horizons (episode 0);
    ``frames``, when given, receives every episode's predictions ``[horizon, ...]``."""
    space = model.observation_space
    errors, snapshots = [], []
    for index, episode in enumerate(episodes):
        session = StreamingSession(model, config, seed=index)
        session.reset(episode.observations[:1])
        row, predictions = [], []
        for t in range(horizon):
            predicted = session.step(episode.actions[t])
            if space.dtype != np.uint8:
                predicted = np.clip(predicted, space.low, space.high)
            row.append(float(np.mean((as_unit(predicted) - as_unit(episode.observations[t + 1])) ** 2)))
            if index == 0 and t + 1 in HORIZONS:
                snapshots.append(predicted)
            if frames is not None:
                predictions.append(predicted)
        errors.append(row)
        if frames is not None:
            frames.append(np.stack(predictions))
    return np.asarray(errors), np.asarray(snapshots)


def fidelity(env_id: str, generated: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Object measures ``name -> [episodes, horizon]`` of a world's frames against the true ones."""
    if env_id == BREAKOUT:
        return breakout_fidelity(generated, truth)
    return object_fidelity(generated, truth, OBJECT_COLOURS)


def object_measures(env_id: str, generated: np.ndarray, truth: np.ndarray) -> dict:
    """Object fidelity of frames ``[episodes, horizon, H, W, 3]`` against the true ones, at the object
    horizons: each measure's mean over episodes (NaN-free ones), and how many episodes lost the object."""
    measures = fidelity(env_id, generated, truth)
    out = {}
    for name, values in measures.items():
        out[name] = {}
        for h in OBJECT_HORIZONS:
            if h <= values.shape[1]:
                column = values[:, h - 1]
                finite = np.isfinite(column)
                out[name][str(h)] = float(column[finite].mean()) if finite.any() else None
        reached = [h for h in OBJECT_HORIZONS if h <= values.shape[1]]
        lost = (~np.isfinite(values[:, [h - 1 for h in reached]])).sum(0)
        out[name]["episodes_without_a_value"] = {str(h): int(n) for h, n in zip(reached, lost, strict=True)}
    return out


def objects(model: WorldModel, episodes, horizon: int, seed: int = 0, steps: int | None = None) -> dict:
    """Object fidelity of the session's default sampler (or of ``steps`` DDIM steps per frame) and of
    copy-last-frame; on Push-T also of the simulator nudged 0.1 mm (Breakout's emulator is deterministic:
    it has no chaos floor to measure)."""
    from world_model_ceiling import nudged_replay

    meta = model.metadata
    env_id = meta["env_id"]
    truth = np.stack([e.observations[1 : horizon + 1] for e in episodes])
    frames: list = []
    config = SessionConfig(steps=steps)
    open_loop(model, episodes, config, horizon, frames)
    copy_last = np.repeat(np.stack([e.observations[:1] for e in episodes]), horizon, axis=1)
    result = {
        "horizons": list(OBJECT_HORIZONS),
        "model": {"sampler": config.__dict__, **object_measures(env_id, np.stack(frames), truth)},
        "copy_last_frame": object_measures(env_id, copy_last, truth),
    }
    if env_id == BREAKOUT:
        # Steps after the game ended show a frozen screen; the share still in play at each horizon.
        ended = np.stack([np.cumsum(e.terminations[:horizon]) > 0 for e in episodes])
        result["share_in_play"] = {str(h): float(1 - ended[:, h - 1].mean()) for h in OBJECT_HORIZONS if h <= horizon}
        return result
    env = gym.make(env_id, max_episode_steps=horizon + 1, **meta.get("env_kwargs", {}))
    rng = np.random.default_rng(seed)
    nudged = []
    for index, episode in enumerate(episodes):
        direction = rng.normal(size=2)
        nudge = 1e-4 * direction / np.linalg.norm(direction)
        nudged.append(np.stack(nudged_replay(env, HELD_OUT_SEED + index, episode.actions[:horizon], nudge)))
    env.close()
    return result | {"simulator_nudged_0.1mm": object_measures(env_id, np.stack(nudged), truth)}


def at_horizons(errors: np.ndarray) -> dict[str, float]:
    return {str(h): float(errors[:, h - 1].mean()) for h in HORIZONS if h <= errors.shape[1]}


SPEED_MODES = {
    "autoregressive_1_step": SessionConfig(steps=1),
    "autoregressive_2_steps": SessionConfig(steps=2),
    "rolling_window_3": SessionConfig(sampling="rolling", rolling_window=3),
}


def frames_per_second(session, model: WorldModel, repeats: int) -> dict:
    """Batch-1 ``step`` rate of a torch or onnxruntime streaming session, after a full cache."""
    session.reset(np.zeros((1, *model.observation_space.shape), model.observation_space.dtype))
    action = model.action_space.sample()
    stats = latency_ms(lambda: session.step(action), repeats=repeats, warmup=model.config.window_frames + 20)
    return {**stats, "fps_p50": 1e3 / stats["p50_ms"], "fps_mean": 1e3 / stats["mean_ms"]}


def speeds(model: WorldModel, name: str, repeats: int) -> dict:
    """Per sampler, eager PyTorch and the exported graph on onnxruntime (one thread each); a U-Net model has
    no rolling sampler but is timed at 3 steps too (DIAMOND's count)."""
    speed_modes = dict(SPEED_MODES)
    if model.config.network == "unet":
        speed_modes.pop("rolling_window_3")
        speed_modes["autoregressive_3_steps"] = SessionConfig(steps=3)
    obs, actions = env_rollout(model, 20)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "world_model.onnx"
        export_world_model(model, path, real_obs=obs, real_actions=actions, source=name)
        return {
            mode: {
                "torch": frames_per_second(StreamingSession(model, config, seed=0), model, repeats),
                "onnxruntime": frames_per_second(OnnxWorldModelSession(path, config, seed=0), model, repeats),
            }
            for mode, config in speed_modes.items()
        }


def rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory_over_stream(model: WorldModel, config: SessionConfig, frames: int) -> dict:
    """Process RSS and the session's own bytes after 1,000 and ``frames`` streamed frames.

    The memory target is judged on the process's RSS, which sees anything that grows with the stream (a
    leak in the session, the network, the allocator). ``session_bytes`` is the preallocated cache and
    window: constant by construction, so it is recorded but cannot judge the target.
    """
    session = StreamingSession(model, config, seed=0)
    session.reset(np.zeros((1, *model.observation_space.shape), model.observation_space.dtype))
    action = model.action_space.sample()
    record = {}
    for t in range(1, frames + 1):
        session.step(action)
        if t in (1_000, frames):
            record[str(t)] = {"session_bytes": session.memory_bytes, "process_rss_bytes": rss_bytes()}
    first, last = record["1000"], record[str(frames)]
    record["session_ratio"] = last["session_bytes"] / first["session_bytes"]
    record["rss_ratio"] = last["process_rss_bytes"] / first["process_rss_bytes"]
    # The ratio is diluted by the whole process (libraries, weights): the growth itself is what a leak adds.
    record["rss_growth_bytes"] = last["process_rss_bytes"] - first["process_rss_bytes"]
    record["rss_growth_bytes_per_frame"] = record["rss_growth_bytes"] / (frames - 1_000)
    return record


def bench_model(name: str, args) -> dict:
    model = WorldModel.from_pretrained(name)
    print(f"{name}: {sum(p.numel() for p in model.denoiser.parameters())} denoiser parameters")
    started = time.perf_counter()
    episodes = held_out_episodes(model, args.episodes, args.horizon)
    print(f"  {len(episodes)} held-out episodes in {time.perf_counter() - started:.0f} s")
    result = {"checkpoint": name, "command": model.metadata.get("command"), "episodes": len(episodes), "modes": {}}
    copy_last = np.asarray(
        [[np.mean((as_unit(e.observations[0]) - as_unit(o)) ** 2) for o in e.observations[1:]] for e in episodes]
    )
    result["copy_last_frame"] = {"mse": at_horizons(copy_last), "curve": log_curve(copy_last.mean(0))}
    snapshots = {}
    for mode, config in modes(model).items():
        started = time.perf_counter()
        errors, snapshots[mode] = open_loop(model, episodes, config, args.horizon)
        result["modes"][mode] = {
            "config": config.__dict__,
            "mse": at_horizons(errors),
            "curve": log_curve(errors.mean(0)),
        }
        print(f"  {mode}: {result['modes'][mode]['mse']} ({time.perf_counter() - started:.0f} s)")
    result["speed"] = speeds(model, name, args.repeats)
    result["memory"] = memory_over_stream(model, SessionConfig(steps=1), args.memory_frames)
    result["targets"] = targets(result, pixels=model.observation_space.dtype == np.uint8)
    print(f"  speed {json.dumps(result['speed']['autoregressive_1_step'])[:200]}, memory {result['memory']}")
    print(f"  targets {result['targets']}")
    if model.observation_space.dtype == np.uint8:
        plot_frames(snapshots, episodes[0].observations, args.out, name)
        if model.metadata.get("env_id") in OBJECT_WORLDS:
            result["objects"] = objects(model, episodes, args.horizon)
    return result


def targets(result: dict, *, pixels: bool) -> dict:
    """The issue's targets beside the figures measured for one model."""
    modes = result["modes"]
    # "rolling+sink+context_noise" is what a default SessionConfig(sampling="rolling") runs; "autoregressive"
    # is the plain baseline: every frame fully denoised and committed clean, no sink.
    plain = modes["autoregressive"]["mse"].get("100")
    rolling = modes.get("rolling+sink+context_noise", {}).get("mse", {}).get("100")
    rolling_clean = modes.get("rolling+sink", {}).get("mse", {}).get("100")
    fps = {
        f"{mode}, {backend}": entry["fps_p50"]
        for mode, backends in result["speed"].items()
        for backend, entry in backends.items()
    }
    best = max(fps, key=fps.get)
    minimum = 30 if pixels else 1000
    memory = result["memory"]
    out = {
        # Judged on process memory (RSS), not on the session's preallocated bytes, which cannot change.
        "memory_10000_over_1000": {
            "target": "<= 1.05",
            "measured": memory["rss_ratio"],
            "of": "process RSS, 10,000 frames / 1,000",
            "rss_growth_bytes": memory["rss_growth_bytes"],
            "session_bytes_ratio": memory["session_ratio"],
            "met": memory["rss_ratio"] <= 1.05,
        },
        "fps_batch1": {"target": f">= {minimum}", "measured": fps[best], "best_of": best, "met": fps[best] >= minimum},
    }
    if plain is not None and rolling is not None:
        ratio = rolling / plain
        out["rolling_sink_over_autoregressive_at_100"] = {
            "target": "<= 0.5", "measured": ratio, "met": ratio <= 0.5,
            "modes": "rolling+sink+context_noise (a rolling session's defaults) / autoregressive",
            "with_clean_context": rolling_clean / plain,
        }  # fmt: skip
    return out


def log_curve(curve: np.ndarray, points: int = 40) -> dict:
    """The mean error curve at log-spaced horizons (enough for the plot, small in JSON)."""
    horizons = np.unique(np.geomspace(1, len(curve), points).astype(int))
    return {"horizon": horizons.tolist(), "mse": [float(curve[h - 1]) for h in horizons]}


def plot_errors(models: dict[str, dict], out: Path) -> None:
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, (name, result) in zip(axes[0], models.items(), strict=True):
        curves = {"copy last frame": result["copy_last_frame"]["curve"]}
        curves |= {mode: entry["curve"] for mode, entry in result["modes"].items()}
        for label, curve in curves.items():
            copy = label == "copy last frame"
            ax.loglog(curve["horizon"], curve["mse"], label=label, lw=2 if copy else 1.2, ls="--" if copy else "-")
        # The nudged replays below start orders of magnitude lower; the axis stays on the models' range.
        ax.set_ylim(bottom=0.3 * min(min(curve["mse"]) for curve in curves.values()))
        # benchmarks/world_model_ceiling.py: the simulator itself, from a start whose block is nudged
        nudged = result.get("simulator_ceiling", {}).get("deltas", {})
        for rank, (delta, entry) in enumerate(nudged.items()):
            curve, grey = entry["single"]["curve"], str(0.75 - 0.5 * rank / max(len(nudged) - 1, 1))
            ax.loglog(curve["horizon"], curve["mse"], color=grey, ls=":", lw=1.5, label=f"MuJoCo, start nudged {delta}")
        ax.set(title=f"{name}: open-loop error vs MuJoCo", xlabel="horizon (steps)", ylabel="MSE")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "world_model.png", dpi=120)


def plot_frames(snapshots: dict[str, np.ndarray], truth: np.ndarray, out: Path, name: str) -> None:
    """Predicted frames at the horizons for each sampler, under the simulator's."""
    rows = [("MuJoCo", [truth[h] for h in HORIZONS if h < len(truth)])]
    rows += [(mode, list(frames)) for mode, frames in snapshots.items()]
    fig, axes = plt.subplots(len(rows), len(rows[0][1]), figsize=(2 * len(rows[0][1]), 2 * len(rows)))
    for r, (label, frames) in enumerate(rows):
        for c, frame in enumerate(frames):
            axes[r, c].imshow(frame)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(f"h = {HORIZONS[c]}")
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"world_model_pixels_{name}.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", default=["wm-pusht-state", "wm-pusht-state-sf", "wm-pusht-pixels"])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--horizon", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--memory-frames", type=int, default=10_000)
    parser.add_argument("--update", action="store_true", help="keep the other models already in the JSON")
    parser.add_argument("--objects-only", action="store_true", help="the pixel models' object fidelity alone")
    parser.add_argument("--steps", type=int, help="--objects-only: DDIM steps per frame (default: the session's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of world_model.json and its plots")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "world_model.json"
    models = json.loads(path.read_text())["models"] if (args.update or args.objects_only) and path.exists() else {}
    if args.objects_only:
        for name in args.checkpoints:
            model = WorldModel.from_pretrained(name)
            if model.observation_space.dtype != np.uint8 or model.metadata.get("env_id") not in OBJECT_WORLDS:
                continue
            episodes = held_out_episodes(model, args.episodes, args.horizon)
            models.setdefault(name, {})["objects"] = objects(model, episodes, args.horizon, steps=args.steps)
            models[name]["objects"]["load_average_1min"] = os.getloadavg()[0]
            print(f"{name}: {json.dumps(models[name]['objects'])[:600]}")
        result = json.loads(path.read_text()) if path.exists() else {"machine": machine_info()}
        path.write_text(json.dumps({**result, "models": models}, indent=2) + "\n")
        print(f"wrote {path}")
        return
    for name in args.checkpoints:
        models[name] = bench_model(name, args)
        models[name]["load_average_1min"] = os.getloadavg()[0]  # the CPU is shared: speeds depend on it
    plot_errors(models, args.out)
    result = {"horizons": list(HORIZONS), "held_out_seed": HELD_OUT_SEED, "models": models}
    path.write_text(json.dumps({"machine": machine_info(), **result}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
