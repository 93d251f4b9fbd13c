"""``worldsim demo``: everything worldsim does, on the shipped checkpoints, in about two minutes on a CPU.

1. **policies**: the Push-T and PickPlace policies roll out in MuJoCo with full DDPM and with RTI warm
   starts; success, network calls per control step and latency side by side.
2. **camera**: the visuomotor Push-T policy (camera frames and the pusher's position in, RTI) drives one
   episode; a video of what it sees.
3. **dream**: the Push-T policy drives the real simulator; the shipped pixel world model replays the same
   start and actions on its own (a "dream"). A side-by-side video and the error over time.
4. **export**: the policy's ONNX export, its parity with PyTorch and the speed-up of onnxruntime.
5. **bridge**: the Push-T policy, exported to ONNX, is served over ZeroMQ by a separate process and a
   50 Hz control loop drives the simulator from it; deadline misses and round trips.

Each part reports its numbers, or says why it was skipped or failed, and the run ends with ``report.md``
in the output folder.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldsim.conf.schema import DemoCommand
from worldsim.envs.tasks import TaskSpec

STRATEGIES = {"ddpm": {}, "ddim": {"steps": 10}, "rti": {}, "rolling": {}}
"""Options of each strategy over the policy's recorded ones (RTI's are its task's tuned options)."""
FAST = {"episodes": 1, "dream_frames": 30, "loop_seconds": 1.0}


@dataclass
class Part:
    """One part of the demo: its status, time and the report section it wrote."""

    name: str
    status: str = "not run"
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    """Markdown of the part's section in the report."""


def run_demo(config: DemoCommand, tasks: dict[str, TaskSpec], out: Path) -> list[Part]:
    """Run the parts named in ``config.parts`` on ``tasks`` and write ``out/report.md``.

    ``tasks`` holds the config of every task in ``config.tasks`` and of ``"pusht"``, whose checkpoints the
    dream, export and bridge parts use. Returns each part's outcome.
    """
    import torch

    torch.set_num_threads(1)  # batch-1 inference: one thread is fastest, and leaves a core to the simulator
    if config.fast:
        config = DemoCommand(**{**config.__dict__, **FAST, "fast": True})
    unknown = sorted(set(config.parts) - set(PARTS)) + sorted(set(config.strategies) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown demo part or strategy {unknown}: parts {list(PARTS)}, strategies {list(STRATEGIES)}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    parts = []
    for index, (name, run) in enumerate(PARTS.items(), 1):
        part = Part(name)
        if name not in config.parts:
            part.status = f"skipped: not in parts={list(config.parts)}"
        else:
            print(f"[{index}/{len(PARTS)}] {name} ...", flush=True)
            begun = time.perf_counter()
            try:
                run(config, tasks, out, part)
                part.status = "done"
            except Exception as error:  # a failed part is reported and the demo goes on to the next
                part.status = f"failed: {type(error).__name__}: {error}"
                (out / f"{name}_error.txt").write_text(traceback.format_exc())
            part.seconds = time.perf_counter() - begun
        print(f"[{index}/{len(PARTS)}] {name}: {part.status} ({part.seconds:.1f} s)", flush=True)
        parts.append(part)
    report = write_report(parts, out, time.perf_counter() - started, config)
    print(f"report: {report}")
    return parts


# --- 1. policies ------------------------------------------------------------------------------------------


def part_policies(config: DemoCommand, tasks: dict[str, TaskSpec], out: Path, part: Part) -> None:
    from worldsim.policies.diffusion_policy import DiffusionPolicy
    from worldsim.policies.evaluation import evaluate_policy

    part.lines += [
        f"{config.episodes} seeded episodes per row (seeds from {config.seed}), batch-1 PyTorch on the CPU.",
        "",
        "| task | strategy | success | max coverage | network calls / step | latency p50 (ms) | latency p99 (ms) "
        "| smoothness (mean sq. action change) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in (tasks[name] for name in config.tasks):
        for name in config.strategies:
            policy = DiffusionPolicy.from_pretrained(task.policy_checkpoint, strategy=name, **STRATEGIES[name])
            options = {**policy.strategy_defaults.get(name, {}), **STRATEGIES[name]}
            r = evaluate_policy(policy, task, episodes=config.episodes, seed=config.seed)
            coverage = f"{r['mean_max_score']:.2f}" if task.score_key else "-"
            part.lines.append(
                f"| {task.env_id} | {name} {_options(options)} | {r['success_rate']:.0%} | {coverage} "
                f"| {r['calls_per_step']:.2f} | {r['latency_ms_p50']:.2f} | {r['latency_ms_p99']:.2f} "
                f"| {r['smoothness_mse']:.4f} |"
            )
            print("  " + part.lines[-1], flush=True)


def _options(options: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else ""


# --- 2. a camera policy's episode ----------------------------------------------------------------------------


def part_camera(config: DemoCommand, tasks: dict[str, TaskSpec], out: Path, part: Part) -> None:
    from worldsim.policies.diffusion_policy import DiffusionPolicy

    task = tasks[config.camera_task]
    policy = DiffusionPolicy.from_pretrained(task.policy_checkpoint, strategy="rti")
    if policy.config.obs_type != "pixels":
        raise ValueError(f"{task.policy_checkpoint} is not a camera policy (it takes {policy.config.obs_type})")
    image_key = policy.config.obs_keys[0] if policy.config.multipart else None
    env = task.make_env()
    obs, info = env.reset(seed=config.seed)
    policy.reset()
    frames, calls, step_ms, success, score = [], [], [], False, 0.0
    while True:
        frame = obs[image_key] if image_key else obs
        started = time.perf_counter()
        action = policy.select_action(obs)
        step_ms.append((time.perf_counter() - started) * 1e3)
        calls.append(policy.calls_last_prediction)
        frames.append(frame)
        obs, _, terminated, truncated, info = env.step(action)
        success = success or bool(info.get("is_success", False))
        score = max(score, float(info.get(task.score_key, 0.0))) if task.score_key else score
        if terminated or truncated:
            frames.append(obs[image_key] if image_key else obs)
            break
    env.close()
    scale = max(1, 256 // frames[0].shape[0])
    video = _write_video([np.kron(f, np.ones((scale, scale, 1), np.uint8)) for f in frames], out / "camera_policy")
    warm = [ms for ms, c in zip(step_ms[1:], calls[1:], strict=True) if c]
    part.lines += [
        f"`{task.policy_checkpoint}` sees only its {frames[0].shape[0]} x {frames[0].shape[1]} camera"
        + (" and the robot's own position" if image_key else "")
        + f" and acts with RTI {_options(policy.strategy_defaults.get('rti', {}))}; seed {config.seed}, "
        "batch-1 PyTorch.",
        "",
        "| task | steps | success | max coverage | network calls / step | warm prediction p50 (ms, encoder included) |",
        "|---|---|---|---|---|---|",
        f"| {task.env_id} | {len(step_ms)} | {'yes' if success else 'no'} | "
        f"{f'{score:.2f}' if task.score_key else '-'} | {np.mean(calls):.2f} | "
        f"{np.median(warm) if warm else float('nan'):.2f} |",
        "",
        f"Video of what the policy sees: [{video.name}]({video.name})",
    ]


# --- 3. dream rollout --------------------------------------------------------------------------------------


def part_dream(config: DemoCommand, tasks: dict[str, TaskSpec], out: Path, part: Part) -> None:
    import gymnasium as gym
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from worldsim.policies.diffusion_policy import DiffusionPolicy
    from worldsim.world_model.model import WorldModel
    from worldsim.world_model.session import SessionConfig, StreamingSession

    model = WorldModel.from_pretrained(config.dream_checkpoint)
    env_id = tasks["pusht"].env_id
    image_size = model.observation_space.shape[0]
    if model.observation_space.dtype != np.uint8 or model.metadata.get("env_id") != env_id:
        raise ValueError(f"the dream needs a Push-T pixel world model; {config.dream_checkpoint} is not one")
    pusht = tasks["pusht"]
    policy = DiffusionPolicy.from_pretrained(pusht.policy_checkpoint, strategy="rti")

    # The real rollout: the state policy acts, the simulator renders what the world model should dream.
    env = gym.make(env_id, obs_type="state_pixels", image_size=image_size)
    obs, _ = env.reset(seed=config.seed)
    policy.reset()
    real, actions = [obs["pixels"]], []
    for _ in range(config.dream_frames):
        action = policy.select_action(obs["state"])
        obs, _, terminated, truncated, _ = env.step(action)
        real.append(obs["pixels"])
        actions.append(action)
        if terminated or truncated:
            break
    env.close()

    # The dream: the same first frame and actions, every later frame generated by the model alone.
    session = StreamingSession(model, SessionConfig(sampling="autoregressive"), seed=config.seed)
    session.reset(real[0][None])
    started = time.perf_counter()
    dream = [real[0]] + [session.step(a) for a in actions]
    fps = len(actions) / (time.perf_counter() - started)

    real_f, dream_f = np.stack(real).astype(np.float32) / 255, np.stack(dream).astype(np.float32) / 255
    error = ((real_f - dream_f) ** 2).mean(axis=(1, 2, 3))
    copy_first = ((real_f - real_f[:1]) ** 2).mean(axis=(1, 2, 3))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(error, label="world model (dream)")
    ax.plot(copy_first, "--", label="copy first frame")
    ax.set(xlabel="frame", ylabel="pixel MSE vs simulator", title="Push-T dream vs MuJoCo, same actions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "dream_error.png", dpi=120)
    plt.close(fig)

    scale = max(1, 256 // image_size)
    gap = np.full((image_size, 2, 3), 255, np.uint8)
    frames = [
        np.kron(np.concatenate([r, gap, d], 1), np.ones((scale, scale, 1), np.uint8))
        for r, d in zip(real, dream, strict=True)
    ]
    video = _write_video(frames, out / "dream")
    picks = np.linspace(0, len(frames) - 1, 4).astype(int)
    strip = np.concatenate([frames[i] for i in picks], 0)
    _save_png(strip, out / "dream_frames.png")
    part.lines += [
        f"Left: MuJoCo, right: the world model `{config.dream_checkpoint}` from the same first frame and the same "
        f"{len(actions)} actions (chosen by the Push-T policy in the simulator). Generated at {fps:.0f} frames/s.",
        "",
        f"| frames | pixel MSE at frame 1 | at frame {len(error) // 2} | at the last frame | mean "
        "| copy-first-frame mean |",
        "|---|---|---|---|---|---|",
        f"| {len(actions)} | {error[1]:.4f} | {error[len(error) // 2]:.4f} | {error[-1]:.4f} | {error[1:].mean():.4f} "
        f"| {copy_first[1:].mean():.4f} |",
        "",
        f"Video: [{video.name}]({video.name}) · error over time: ![error](dream_error.png) · frames (top to bottom: "
        f"frames {', '.join(map(str, picks))}): ![frames](dream_frames.png)",
    ]


def _write_video(frames: list[np.ndarray], stem: Path) -> Path:
    """An MP4 where an encoder is installed (imageio-ffmpeg), a GIF otherwise."""
    import imageio.v2 as imageio

    try:
        import imageio_ffmpeg  # noqa: F401

        path = stem.with_suffix(".mp4")
        imageio.mimsave(path, frames, fps=10, macro_block_size=1)
    except ImportError:
        path = stem.with_suffix(".gif")
        imageio.mimsave(path, frames, duration=0.1, loop=0)
    return path


def _save_png(image: np.ndarray, path: Path) -> None:
    import imageio.v2 as imageio

    imageio.imwrite(path, image)


# --- 4 and 5. export, then serve the export -------------------------------------------------------------


def part_export(config: DemoCommand, tasks: dict[str, TaskSpec], out: Path, part: Part) -> None:
    import torch

    from worldsim.export.onnx_policy import OnnxPolicy
    from worldsim.export.policy_export import PolicyEncoder, PolicyStep, export_policy
    from worldsim.policies.diffusion_policy import DiffusionPolicy

    checkpoint = tasks["pusht"].policy_checkpoint
    policy = DiffusionPolicy.from_pretrained(checkpoint)
    path = out / "pusht_policy.onnx"
    report = export_policy(policy, path, source=checkpoint)
    c = policy.config
    generator = torch.Generator().manual_seed(0)
    obs = torch.randn(1, c.obs_horizon, *c.obs_shape, generator=generator)
    with torch.inference_mode():
        cond = PolicyEncoder(policy).eval()(obs)
    x, level = (
        torch.randn(1, c.horizon, c.action_dim, generator=generator),
        torch.rand(1, c.horizon, generator=generator),
    )
    step = PolicyStep(policy).eval()
    runner = OnnxPolicy(path)
    inputs = {"cond": cond.numpy(), "x": x.numpy(), "level": level.numpy()}
    with torch.inference_mode():
        torch_ms = _median_ms(lambda: step(cond, x, level))
    onnx_ms = _median_ms(lambda: runner.session.run(["pred"], inputs))
    part.lines += [
        "| model | parity (max abs diff, torch vs onnxruntime) | tolerance | file size | torch step p50 (ms) "
        "| onnxruntime step p50 (ms) | speed-up | provider |",
        "|---|---|---|---|---|---|---|---|",
        f"| {checkpoint} | {report.max_abs_diff:.2e} | {report.tolerance:.0e} | {report.file_bytes / 1e6:.2f} MB "
        f"| {torch_ms:.3f} | {onnx_ms:.3f} | {torch_ms / onnx_ms:.1f}x | {report.providers[0]} |",
        "",
        f"File: [{path.name}]({path.name})",
    ]


def _median_ms(call: Callable[[], object], repeats: int = 200) -> float:
    for _ in range(20):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def part_bridge(config: DemoCommand, tasks: dict[str, TaskSpec], out: Path, part: Part) -> None:
    import gymnasium as gym

    from worldsim.bridge.connection import ClientConfig
    from worldsim.bridge.control_loop import ControlLoop, ControlLoopConfig
    from worldsim.bridge.policy_client import PolicyClient

    onnx = out / "pusht_policy.onnx"
    pusht = tasks["pusht"]
    source = f"onnx={onnx}" if onnx.is_file() else f"checkpoint={pusht.policy_checkpoint}"
    address = f"tcp://127.0.0.1:{_free_port()}"
    # The README's command: the served policy runs its task's RTI (the options its checkpoint recorded).
    command = [sys.executable, "-m", "worldsim", "serve", "task=pusht", "strategy=rti", source, f"address={address}"]
    log = (out / "bridge_server.log").open("w")
    environment = {**os.environ, "WORLDSIM_OUTPUT_DIR": str(out / "serve_outputs")}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=environment)
    try:
        line = server.stdout.readline()
        # Skip the output-folder line and log records (the server thread's CURVE warning may come first).
        while line.startswith(("worldsim serve: output folder", "[")):
            line = server.stdout.readline()
        if not line.startswith("serving"):
            raise RuntimeError(f"the policy server did not start (see bridge_server.log): {line.strip()}")
        env = gym.make(pusht.env_id)
        client = PolicyClient(address, ClientConfig(timeout_s=1.0))
        ticks = int(config.loop_seconds * config.loop_rate_hz)
        loop = ControlLoop(env, client, ControlLoopConfig(rate_hz=config.loop_rate_hz, max_ticks=ticks))
        result = loop.run_episode(seed=config.seed)
        client.close()
        env.close()
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(5)
        log.close()
    s = result.stats
    rtt = np.asarray(s.round_trip_s) * 1e3
    part.lines += [
        f"Server: a separate process serving {'the ONNX export' if onnx.is_file() else 'the PyTorch checkpoint'} "
        f"of {pusht.policy_checkpoint} with its task's RTI on {address}; "
        f"client: Push-T at {config.loop_rate_hz:.0f} Hz, "
        "executing the current chunk while the next one is computed.",
        "",
        "| ticks | deadline misses | safe-action ticks | chunks received | round trip p50 (ms) | round trip p99 (ms) "
        "| success |",
        "|---|---|---|---|---|---|---|",
        f"| {result.ticks} | {s.deadline_misses} | {s.fallback_ticks} | {s.chunks} "
        f"| {np.percentile(rtt, 50):.2f} | {np.percentile(rtt, 99):.2f} | {result.success} |",
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PARTS: dict[str, Callable[[DemoCommand, dict[str, TaskSpec], Path, Part], None]] = {
    "policies": part_policies,
    "camera": part_camera,
    "dream": part_dream,
    "export": part_export,
    "bridge": part_bridge,
}


def write_report(parts: list[Part], out: Path, seconds: float, config: DemoCommand) -> Path:
    titles = {
        "policies": "1. Policies in MuJoCo: full DDPM vs Real-Time Iteration",
        "camera": "2. A visuomotor policy: camera frames in, actions out",
        "dream": "3. Dream rollout: the world model next to the simulator",
        "export": "4. ONNX export: parity and speed",
        "bridge": "5. Live control over the ZeroMQ bridge",
    }
    lines = [
        "# worldsim demo report",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {seconds:.0f} s{' (fast mode)' if config.fast else ''}, "
        f"{os.cpu_count()} CPU cores.",
        "",
        "| part | status | seconds |",
        "|---|---|---|",
        *(f"| {p.name} | {p.status} | {p.seconds:.1f} |" for p in parts),
    ]
    for p in parts:
        lines += ["", f"## {titles[p.name]}", "", *(p.lines or [f"_{p.status}_"])]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
