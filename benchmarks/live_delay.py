"""Live against simulated delay: an exported policy served over the bridge at 200 Hz, and the DelaySimulator.

    python benchmarks/live_delay.py                        # PickPlace, RTI with the frozen prefix, 200 Hz
    python benchmarks/live_delay.py --task pusht --method rtc --rate 50
    python benchmarks/live_delay.py --task pusht_pixels --method rti_prefix --rate 50 --delay-ticks 1   # camera
    # -> benchmarks/results/latency_live/<task>_<method>_<rate>Hz.json (and --report of latency.py reads it)

The task's shipped policy is exported to ONNX and served by ``worldsim.bridge.serve`` in its own process
(onnxruntime, one thread); a ``ControlLoop`` runs seeded episodes against it at ``--rate`` (at least
``--episodes`` of them and ``--min-ticks`` ticks in all)
with chunks taking over ``--delay-ticks`` after their observation, recording deadline misses and the
delay measured live (``LoopStats.arrival_ticks``). The same ONNX file then runs in-process in the
``DelaySimulator`` on the same seeds, with the same timing and the compute delays drawn from the live
ones, so the two success rates can be compared: what the simulator predicts is what the robot sees.

The loop (this process) and the server are pinned to a core each (``--no-pin`` leaves them to the
scheduler). Cold starts stay off the tick path: an episode's first chunk (the strategy's cold start) is awaited before
the loop's clock starts, and every later request is a warm step computed while the current chunk runs.
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

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge import ONNX_VARIABLE, served  # noqa: E402
from common import RESULTS, machine_info  # noqa: E402
from latency import METHODS, SEED  # noqa: E402

import worldsim  # noqa: E402, F401
from worldsim.bridge import (  # noqa: E402
    ClientConfig,
    ControlLoop,
    ControlLoopConfig,
    DelayConfig,
    DelaySimulator,
    PolicyClient,
    chunk_boundary_jumps,
)
from worldsim.envs.tasks import load_task  # noqa: E402
from worldsim.export.onnx_policy import OnnxPolicy  # noqa: E402
from worldsim.export.policy_export import export_policy  # noqa: E402
from worldsim.policies.diffusion_policy import DiffusionPolicy  # noqa: E402

OUT = RESULTS / "latency_live"


def served_options(policy: DiffusionPolicy, method: str) -> tuple[str, dict, str]:
    """The method's strategy with every option written out (the policy's recorded ones under its own)."""
    strategy, options, merge = METHODS[method]
    return strategy, {**policy.strategy_defaults.get(strategy, {}), **options}, merge


def run_live(task, onnx: Path, strategy: str, options: dict, args) -> tuple[list, dict]:
    os.environ[ONNX_VARIABLE] = json.dumps({"path": str(onnx), "strategy": strategy, "options": options})
    factory = "benchmarks.bridge:make_onnx_policy"
    config = ControlLoopConfig(
        rate_hz=args.rate, delay_ticks=args.delay_ticks, merge=METHODS[args.method][2], record=True,
        realtime_priority=args.realtime_priority,
    )  # fmt: skip
    results = []
    pinned = None
    with (
        served(factory, "tcp://127.0.0.1:*", None) as (server, endpoint),
        PolicyClient(endpoint, ClientConfig(timeout_s=1.0)) as client,
    ):
        if args.pin:
            # The robot's loop and the policy server each on a core of their own, as a real-time deployment
            # would run them: neither waits for the other to be scheduled.
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(server.pid, {cores[-1]})
            os.sched_setaffinity(0, {cores[0]})
            pinned = {"loop_core": cores[0], "server_core": cores[-1]}
        env = task.make_env()
        loop = ControlLoop(env, client, config)
        ticks = 0
        while len(results) < args.episodes or ticks < args.min_ticks:
            results.append(loop.run_episode(seed=SEED + len(results)))
            ticks += results[-1].ticks
        env.close()
    if args.pin:
        os.sched_setaffinity(0, cores)  # the simulator afterwards may use every core again
    return results, {
        "served_with": f"--factory {factory} with {ONNX_VARIABLE}={os.environ[ONNX_VARIABLE]}",
        "pinned": pinned,
    }


def run_simulated(task, onnx: Path, strategy: str, options: dict, args, episodes: int, compute_ticks: list[int]):
    policy = OnnxPolicy(onnx, strategy=strategy, **options)
    policy.seed(0)
    config = DelayConfig(delay_ticks=args.delay_ticks, merge=METHODS[args.method][2], compute_ticks=compute_ticks)
    envs = [task.make_env() for _ in range(episodes)]
    results = DelaySimulator(policy, config, seed=0).run_episodes(envs, [SEED + i for i in range(episodes)])
    for env in envs:
        env.close()
    return results


def summary(results: list) -> dict:
    stats = [r.stats for r in results]
    arrivals = [d for s in stats for d in s.arrival_ticks]
    counts = {name: int(sum(getattr(s, name) for s in stats)) for name in (
        "ticks", "deadline_misses", "fallback_ticks", "overdue_ticks", "late_ticks", "requests", "chunks",
        "late_chunks", "lost_requests", "reconnects",
    )}  # fmt: skip
    figures = {
        "episodes": len(results),
        "success_rate": float(np.mean([r.success for r in results])),
        **counts,
        "arrival_ticks": {str(d): int(n) for d, n in zip(*np.unique(arrivals, return_counts=True), strict=True)},
        **chunk_boundary_jumps(results),
    }
    round_trip = np.array([t for s in stats for t in s.round_trip_s]) * 1e3
    compute = np.array([t for s in stats for t in s.compute_s]) * 1e3
    if len(round_trip):
        figures["round_trip_ms"] = {q: float(np.percentile(round_trip, p)) for q, p in (("p50", 50), ("p99", 99))}
        figures["round_trip_ms"]["max"] = float(round_trip.max())
    if len(compute):  # the control steps: every chunk asked for on the tick path
        figures["policy_compute_ms"] = {q: float(np.percentile(compute, p)) for q, p in (("p50", 50), ("p99", 99))}
    first = np.array([s.first_chunk_compute_s for s in stats if s.first_chunk_compute_s is not None]) * 1e3
    if len(first):  # each episode's cold start, awaited before the clock starts
        figures["first_chunk_compute_ms"] = {
            "p50": float(np.percentile(first, 50)),
            "max": float(first.max()),
            "count": len(first),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--task", default="pickplace", choices=("pusht", "pickplace", "pusht_pixels", "pickplace_pixels")
    )
    parser.add_argument("--method", default="rti_prefix", choices=list(METHODS))
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--delay-ticks", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=200, help="at least this many episodes ...")
    parser.add_argument("--min-ticks", type=int, default=10_000, help="... and live ticks (the deadline target's)")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="leave the loop and server unpinned (default: a core each)"
    )
    parser.add_argument(
        "--realtime-priority", type=int, help="run the loop under SCHED_FIFO at this priority, 1-99 (CAP_SYS_NICE)"
    )
    parser.add_argument("--checkpoint", help="a policy other than the task's shipped one")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    task = load_task(args.task)
    checkpoint = args.checkpoint or task.policy_checkpoint
    torch_policy = DiffusionPolicy.from_pretrained(checkpoint)
    strategy, options, merge = served_options(torch_policy, args.method)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / f"{args.task}.onnx"
        export_policy(torch_policy, onnx, source=checkpoint)
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        live_results, served_with = run_live(task, onnx, strategy, options, args)
        live_seconds = time.perf_counter() - start
        live = summary(live_results)
        measured = [d for r in live_results for d in r.stats.arrival_ticks]
        print(f"live {args.rate:.0f} Hz: success {live['success_rate']:.2f}, {live['deadline_misses']} misses in "
              f"{live['ticks']} ticks, arrivals {live['arrival_ticks']} ({live_seconds:.0f} s)")  # fmt: skip
        episodes = len(live_results)
        drawn = measured or [args.delay_ticks]
        simulated = summary(run_simulated(task, onnx, strategy, options, args, episodes, drawn))
        print(f"simulated: success {simulated['success_rate']:.2f}")
    gap = 100 * (live["success_rate"] - simulated["success_rate"])
    result = {
        "machine": machine_info() | {"load_average_1min_before": load_before},
        "task": task.env_id,
        "policy": f"{checkpoint} exported to ONNX, onnxruntime on 1 thread",
        "method": args.method, "strategy": strategy, "options": options, "merge": merge,
        "rate_hz": args.rate, "delay_ticks": args.delay_ticks, "seeds": f"{SEED}..{SEED + episodes - 1}",
        **served_with, "loop_realtime_priority": args.realtime_priority,
        "live": live | {"wall_seconds": live_seconds},
        "simulated": simulated | {"compute_ticks": "drawn from the live arrival_ticks"},
        "targets": {
            "deadline_misses": {
                "target": "0 over >= 10,000 ticks", "measured": live["deadline_misses"], "ticks": live["ticks"],
                "met": live["deadline_misses"] == 0 and live["ticks"] >= 10_000,
            },
            "live_vs_simulated_success": {
                "target": "within 5 points", "measured_points": gap, "met": abs(gap) <= 5.0,
            },
        },
    }  # fmt: skip
    if torch_policy.config.obs_type == "pixels":  # issue 25: a camera policy's control step, encoder included
        p99 = live["policy_compute_ms"]["p99"]
        result["targets"]["control_step_p99_ms"] = {"target": "<= 10", "measured": p99, "met": p99 <= 10.0}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.task}_{args.method}_{args.rate:.0f}Hz.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"live - simulated: {gap:+.1f} points -> {path}")


if __name__ == "__main__":
    main()
