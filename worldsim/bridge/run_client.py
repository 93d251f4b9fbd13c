"""Run a Gymnasium env live against a served policy: the robot side of the bridge, with a simulator as robot.

    python -m worldsim.bridge.run_client --env worldsim/PushT-v0 --address tcp://127.0.0.1:5555 --rate 50

Prints one line per episode (success, ticks, deadline misses, round trip) and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

import worldsim  # noqa: F401 - registers the worldsim/ environments
from worldsim.bridge.action_schedule import SAFE_ACTIONS
from worldsim.bridge.connection import ClientConfig
from worldsim.bridge.control_loop import ControlLoop, ControlLoopConfig
from worldsim.bridge.policy_client import PolicyClient
from worldsim.bridge.security import CurveClientKeys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worldsim.bridge.run_client", description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="worldsim/PushT-v0", help="Gymnasium id (default: %(default)s)")
    parser.add_argument("--address", default="tcp://127.0.0.1:5555")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; the next ones count up")
    parser.add_argument("--rate", type=float, default=50.0, help="control rate in Hz")
    parser.add_argument("--delay-ticks", type=int, default=1, help="0 = synchronous inference")
    parser.add_argument("--replan-every", type=int, help="ticks between requests (default: the server's)")
    parser.add_argument("--safe-action", choices=SAFE_ACTIONS, default="hold")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds without reply before reconnecting")
    parser.add_argument(
        "--realtime-priority", type=int, help="run the loop under SCHED_FIFO at this priority, 1-99 (CAP_SYS_NICE)"
    )
    parser.add_argument("--server-key", help="the server's public NAME.key file (turns on CURVE)")
    parser.add_argument("--client-key", help="this client's NAME.key_secret file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.server_key) != bool(args.client_key):
        parser.error("CURVE needs both --server-key and --client-key")
    curve = CurveClientKeys.from_files(args.server_key, args.client_key) if args.server_key else None
    env = gym.make(args.env)
    client = PolicyClient(args.address, ClientConfig(timeout_s=args.timeout, curve=curve))
    try:
        loop = ControlLoop(
            env,
            client,
            ControlLoopConfig(
                rate_hz=args.rate,
                delay_ticks=args.delay_ticks,
                replan_every=args.replan_every,
                safe_action=args.safe_action,
                realtime_priority=args.realtime_priority,
            ),
        )
        results = []
        for episode in range(args.episodes):
            result = loop.run_episode(seed=args.seed + episode)
            stats = result.stats
            rtt = np.asarray(stats.round_trip_s) * 1e3
            print(
                f"seed {result.seed}: success={result.success} ticks={result.ticks} "
                f"misses={stats.deadline_misses} (fallback {stats.fallback_ticks}, overdue {stats.overdue_ticks}, "
                f"late {stats.late_ticks}) "
                f"round trip p50 {np.percentile(rtt, 50):.2f} ms p99 {np.percentile(rtt, 99):.2f} ms",
                flush=True,
            )
            results.append(result)
        summary = {
            "env": args.env,
            "rate_hz": args.rate,
            "success_rate": float(np.mean([r.success for r in results])),
            "deadline_misses": sum(r.stats.deadline_misses for r in results),
            "ticks": sum(r.ticks for r in results),
        }
        print(json.dumps(summary))
    finally:
        client.close()
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
