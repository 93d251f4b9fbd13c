"""Benchmark the ZeroMQ bridge: round-trip latency against the raw pyzmq floor, live control loops, fuzzing.

    python benchmarks/bridge.py                       # full run, about 6 minutes on 2 cores
    python benchmarks/bridge.py --policy pkg.mod:make_policy   # the control loops with another served policy
    python -m worldsim.export policy pickplace-state /tmp/pickplace.onnx
    python benchmarks/bridge.py --env worldsim/PickPlace-v0 --onnx /tmp/pickplace.onnx --strategy rti \
        --option k=10 --option calls=2 --option cold_start_steps=10 \
        --policy-description "the shipped pickplace-state policy exported to ONNX (...)"
                                                      # the command behind results/bridge.json
    python benchmarks/bridge.py --quick               # smoke run: few repeats, 500 ticks

Servers run in their own processes, started with ``python -m worldsim.bridge.serve`` (the real deployment
path), one BLAS thread each; an ONNX policy is served there through ``--factory
benchmarks.bridge:make_onnx_policy``, which reads the file and strategy from the environment variable
``WORLDSIM_BENCH_ONNX`` (the bridge builds no model itself). Writes ``benchmarks/results/bridge.json`` and
``bridge.png``:

- latency: 2 KB observation round trip (``infer`` -> ``action``) over tcp loopback and ipc, CURVE off and
  on, beside a raw pyzmq DEALER/ROUTER ping-pong of the same request bytes, the two (and a raw client
  against the bridge server) interleaved in blocks of 100 round trips over open connections;
- control loop: deadline misses over N ticks of ``worldsim/PushT-v0`` at 50 Hz and 200 Hz against a served
  policy (default: a numpy stand-in for RTI, see ``StandInRTIPolicy``), asynchronous inference;
- fuzz: malformed and mutated messages sent to a served policy, error replies counted, and crashes counted:
  each time the server process died or stopped answering a well-formed ``ping``, it is restarted and the
  campaign goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gymnasium as gym
import msgpack
import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, summarize_ms, write_result  # noqa: E402

import worldsim  # noqa: E402, F401 - registers worldsim/PushT-v0
from worldsim.bridge import (  # noqa: E402
    ClientConfig,
    ControlLoop,
    ControlLoopConfig,
    CurveClientKeys,
    PolicyClient,
    protocol,
)
from worldsim.bridge.keys import main as generate_keys  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OBS_DIM = 256  # obs_history [2, 256] float32 = 2048 bytes


class EchoPolicy:
    """Near-zero compute (a fixed chunk), so the latency benchmark measures the bridge, not a model."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    obs_horizon, horizon, n_action_steps = 2, 16, 1

    def __init__(self) -> None:
        self._chunk = np.zeros((self.horizon, 2), np.float32)

    def reset(self) -> None:
        """Stateless."""

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        return self._chunk[0]

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        return self._chunk


class StandInRTIPolicy:
    """A stand-in for the RTI diffusion policy on Push-T (state): a numpy MLP "denoiser" with random weights,
    called 3 times per chunk (RTI's step list [2, 1, 0]) on the previous chunk shifted by one step (the warm
    start), horizon 16, one action executed per chunk: about 2 ms per chunk on one core of this CPU (the
    measured compute time is in the results)."""

    observation_space = gym.spaces.Box(-1.05, 1.05, (6,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    obs_horizon, horizon, n_action_steps = 2, 16, 1
    width, depth = 1536, 3

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        sizes = [2 * 6 + 16 * 2 + 1, *[self.width] * self.depth, 16 * 2]
        self._weights = [
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        ]
        self.reset()

    def reset(self) -> None:
        self._guess: np.ndarray | None = None

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        return self.predict_chunk(np.stack([obs] * self.obs_horizon))[0]

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        if self._guess is None:
            chunk = np.zeros((self.horizon, 2), np.float32)
        else:
            chunk = np.concatenate([self._guess[1:], self._guess[-1:]])
        for level in (2, 1, 0):
            x = np.concatenate([obs_history.ravel(), chunk.ravel(), [level / 100]]).astype(np.float32)
            for weight in self._weights[:-1]:
                x = np.tanh(x @ weight)
            chunk = np.tanh(chunk + 0.1 * (x @ self._weights[-1]).reshape(self.horizon, 2))
        self._guess = chunk
        return chunk


def make_echo_policy() -> EchoPolicy:
    return EchoPolicy()


def make_standin_rti_policy() -> StandInRTIPolicy:
    return StandInRTIPolicy()


ONNX_VARIABLE = "WORLDSIM_BENCH_ONNX"


def make_onnx_policy():
    """An exported policy (``--onnx``), built from ``$WORLDSIM_BENCH_ONNX``: JSON ``{"path", "strategy",
    "options"}``, which ``main`` sets for the server processes it starts."""
    from worldsim.export.onnx_policy import OnnxPolicy

    spec = json.loads(os.environ[ONNX_VARIABLE])
    return OnnxPolicy(spec["path"], strategy=spec["strategy"], **spec["options"])


def strategy_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs, values read as JSON where they are JSON (numbers, booleans), else as strings."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--option must look like KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


# --- processes ---------------------------------------------------------------------------------------------
def _child_env() -> dict[str, str]:
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**os.environ, **threads, "PYTHONPATH": str(REPO)}


@contextlib.contextmanager
def process(argv: list[str], ready_prefix: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """A child process that prints ``<ready_prefix> <endpoint> ...`` once listening; killed on exit."""
    child = subprocess.Popen(
        [sys.executable, *argv],
        cwd=REPO,
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        line = child.stdout.readline() if ready else ""
        if not line.startswith(ready_prefix):
            raise RuntimeError(f"{argv} did not start: {line!r}")
        yield child, line[len(ready_prefix) :].split()[0]
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()


def served(factory: str, address: str, keys: Path | None) -> contextlib.AbstractContextManager:
    """A policy server process serving the factory ``module:callable``."""
    argv = ["-m", "worldsim.bridge.serve", "policy", "--factory", factory, "--address", address]
    if keys is not None:
        argv += ["--curve-secret", str(keys / "server.key_secret"), "--allow", str(keys / "client.key")]
    return process(argv, "serving policy on ")


def echo_server(address: str, keys: Path | None) -> None:
    """The raw floor: a ROUTER that sends every message straight back (with the same CURVE set-up)."""
    context = zmq.Context()
    authenticator = None
    socket = context.socket(zmq.ROUTER)
    socket.linger = 0
    if keys is not None:
        authenticator = ThreadAuthenticator(context)
        authenticator.start()
        authenticator.configure_curve(domain="*", location=str(keys))
        socket.curve_publickey, socket.curve_secretkey = zmq.auth.load_certificate(keys / "server.key_secret")
        socket.curve_server = True
    socket.bind(address)
    print("echoing on", socket.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    try:
        while True:
            socket.send_multipart(socket.recv_multipart())
    finally:
        socket.close(linger=0)
        if authenticator is not None:
            authenticator.stop()
        context.term()


def client_keys(keys: Path | None) -> CurveClientKeys | None:
    return None if keys is None else CurveClientKeys.from_files(keys / "server.key", keys / "client.key_secret")


# --- measurements ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def raw_pinger(address: str, keys: Path | None, frames: list[bytes]) -> Iterator[Callable[[], None]]:
    """One raw pyzmq DEALER round trip of ``frames`` per call (the socket stays open)."""
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.rcvtimeo = 5000
    curve = client_keys(keys)
    if curve is not None:
        socket.curve_serverkey, socket.curve_publickey = curve.server_public_key, curve.public_key
        socket.curve_secretkey = curve.secret_key
    socket.connect(address)

    def ping() -> None:
        socket.send_multipart(frames)
        socket.recv_multipart()

    try:
        yield ping
    finally:
        socket.close(linger=0)
        context.term()


@contextlib.contextmanager
def bridge_pinger(address: str, keys: Path | None) -> Iterator[Callable[[], None]]:
    """One ``PolicyClient.infer`` of a 2 KB observation history per call."""
    obs = np.random.default_rng(0).standard_normal((2, OBS_DIM)).astype(np.float32)
    with PolicyClient(address, ClientConfig(timeout_s=5.0, curve=client_keys(keys))) as client:
        client.connect()
        yield lambda: client.infer(obs)


BLOCK = 100  # round trips per source before switching to the next one


def interleaved_ms(pingers: dict[str, Callable[[], None]], repeats: int, warmup: int = 200) -> dict[str, dict]:
    """Each source ``repeats`` times, in alternating blocks of ``BLOCK``: on a shared machine the load changes
    over seconds, and short alternating blocks expose every source to the same changes."""
    for ping in pingers.values():
        for _ in range(warmup):
            ping()
    samples: dict[str, list[float]] = {name: [] for name in pingers}
    clock = time.perf_counter
    for _ in range(max(repeats // BLOCK, 1)):
        for name, ping in pingers.items():
            block = samples[name]
            for _ in range(BLOCK):
                start = clock()
                ping()
                block.append(clock() - start)
    return {name: summarize_ms(np.asarray(values) * 1e3) for name, values in samples.items()}


def latency_suite(keys: Path, workdir: Path, repeats: int) -> dict:
    """Per transport and CURVE setting: the raw floor, a raw client against the bridge server (the server's
    share of the overhead) and the bridge client against the bridge server, interleaved."""
    obs = np.random.default_rng(0).standard_normal((2, OBS_DIM)).astype(np.float32)
    header, buffer = protocol.encode("infer", 1, {"obs_history": obs})
    frames = [header, buffer.tobytes()]  # exactly what the bridge client sends for one infer
    results = {}
    for transport in ("tcp", "ipc"):
        for curve in (False, True):
            name = f"{transport}_curve_{'on' if curve else 'off'}"
            key_dir = keys if curve else None
            echo_address = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{workdir}/{name}-echo.sock"
            bridge_address = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{workdir}/{name}.sock"
            echo_argv = [__file__, "--echo-server", echo_address] + (["--keys", str(keys)] if curve else [])
            with (
                process(echo_argv, "echoing on ") as (_, echo),
                served("benchmarks.bridge:make_echo_policy", bridge_address, key_dir) as (_, bridge),
                raw_pinger(echo, key_dir, frames) as raw_ping,
                raw_pinger(bridge, key_dir, frames) as raw_to_bridge_ping,
                bridge_pinger(bridge, key_dir) as bridge_ping,
            ):
                entry = interleaved_ms(
                    {"raw_pyzmq": raw_ping, "raw_client_bridge_server": raw_to_bridge_ping, "bridge": bridge_ping},
                    repeats,
                )
            raw, full = entry["raw_pyzmq"], entry["bridge"]
            entry["ratio_p50"] = full["p50_ms"] / raw["p50_ms"]
            entry["ratio_p99"] = full["p99_ms"] / raw["p99_ms"]
            results[name] = entry
            print(
                f"{name}: raw p50 {raw['p50_ms'] * 1e3:.0f} us p99 {raw['p99_ms'] * 1e3:.0f} us | bridge p50 "
                f"{full['p50_ms'] * 1e3:.0f} us p99 {full['p99_ms'] * 1e3:.0f} us | x{entry['ratio_p50']:.2f} "
                f"(raw client, bridge server: p50 {entry['raw_client_bridge_server']['p50_ms'] * 1e3:.0f} us)",
                flush=True,
            )
    return results


def control_loop_run(source: str, env_id: str, rate_hz: float, ticks: int) -> tuple[dict, np.ndarray]:
    with served(source, "tcp://127.0.0.1:*", None) as (_, endpoint), PolicyClient(endpoint) as client:
        env = gym.make(env_id, max_episode_steps=ticks)
        loop = ControlLoop(env, client, ControlLoopConfig(rate_hz=rate_hz, delay_ticks=1))
        totals: dict[str, float] = {}
        round_trips: list[float] = []
        compute: list[float] = []
        first_chunks: list[float] = []  # each episode's cold start, awaited before the clock starts
        episodes = 0
        start = time.perf_counter()
        while (done := int(totals.get("ticks", 0))) < ticks:
            loop.config.max_ticks = ticks - done
            result = loop.run_episode(seed=episodes)
            episodes += 1
            stats = vars(result.stats)
            for key in (
                "ticks",
                "deadline_misses",
                "fallback_ticks",
                "overdue_ticks",
                "late_ticks",
                "requests",
                "chunks",
                "late_chunks",
                "stale_chunks",
                "lost_requests",
                "reconnects",
            ):
                totals[key] = totals.get(key, 0) + stats[key]
            round_trips += result.stats.round_trip_s  # the chunks on the tick path; the first one apart
            compute += result.stats.compute_s
            if result.stats.first_chunk_compute_s is not None:
                first_chunks.append(result.stats.first_chunk_compute_s)
        env.close()
    round_trips_ms, compute_ms = np.asarray(round_trips) * 1e3, np.asarray(compute) * 1e3
    summary = {
        "rate_hz": rate_hz,
        "delay_ticks": 1,
        "episodes": episodes,
        "wall_s": time.perf_counter() - start,
        **{k: int(v) for k, v in totals.items()},
        "round_trip_ms": {
            "p50": float(np.percentile(round_trips_ms, 50)),
            "p99": float(np.percentile(round_trips_ms, 99)),
            "max": float(round_trips_ms.max()),
        },
        "policy_compute_ms": {"p50": float(np.percentile(compute_ms, 50)), "p99": float(np.percentile(compute_ms, 99))},
        "first_chunk_compute_ms": {
            "p50": float(np.percentile(first_chunks, 50)) * 1e3,
            "max": max(first_chunks) * 1e3,
            "count": len(first_chunks),
        },
    }
    print(
        f"control loop {rate_hz:.0f} Hz: {summary['deadline_misses']} misses in {summary['ticks']} ticks "
        f"(fallback {summary['fallback_ticks']}, overdue {summary['overdue_ticks']}, late {summary['late_ticks']}); "
        f"round trip p50 {summary['round_trip_ms']['p50']:.2f} ms, "
        f"compute p50 {summary['policy_compute_ms']['p50']:.2f} ms",
        flush=True,
    )
    return summary, round_trips_ms


def fuzz_messages(count: int, rng: np.random.Generator) -> Iterator[tuple[str, list[bytes]]]:
    """Crafted attacks and random mutations of a valid ``infer``, in a fixed pseudo-random order."""
    obs = np.zeros((2, OBS_DIM), np.float32)
    valid_header, buffer = protocol.encode("infer", 1, {"obs_history": obs})
    valid = [valid_header, buffer.tobytes()]

    def header(**fields) -> bytes:
        base = {
            "version": 1,
            "type": "infer",
            "id": 1,
            "time": 0.0,
            "arrays": [{"name": "obs_history", "dtype": "<f4", "shape": [2, OBS_DIM]}],
        }
        return msgpack.packb({**base, **fields})

    crafted = {
        "random_bytes": lambda: [rng.bytes(int(rng.integers(1, 4096)))],
        "random_frames": lambda: [rng.bytes(int(rng.integers(0, 300))) for _ in range(int(rng.integers(1, 5)))],
        "wrong_dtype": lambda: [
            header(
                arrays=[
                    {
                        "name": "obs_history",
                        "dtype": str(rng.choice(["<f8", "|O", ">f4", "<c8", "S4"])),
                        "shape": [2, OBS_DIM],
                    }
                ]
            ),
            valid[1],
        ],
        "lying_shape": lambda: [
            header(
                arrays=[
                    {
                        "name": "obs_history",
                        "dtype": "<f4",
                        "shape": [int(rng.integers(1, 9)), int(rng.integers(1, 999))],
                    }
                ]
            ),
            valid[1],
        ],
        "huge_declared_size": lambda: [
            header(arrays=[{"name": "obs_history", "dtype": "<f8", "shape": [2**40, int(rng.integers(2**20, 2**40))]}])
        ],
        "wrong_version": lambda: [header(version=int(rng.integers(2, 1000))), valid[1]],
        # msgpack true/false where an int belongs (bool is an int subclass in Python): refused as malformed.
        "boolean_for_int": lambda: [
            header(**{str(rng.choice(["version", "id", "time"])): bool(rng.integers(2))}),
            valid[1],
        ],
        "missing_buffer": lambda: [header()],
        "extra_buffer": lambda: [*valid, rng.bytes(16)],
        "nan_observation": lambda: [valid[0], np.full((2, OBS_DIM), np.nan, np.float32).tobytes()],
    }

    def mutated() -> list[bytes]:
        frames = list(valid)
        index = int(rng.integers(len(frames)))
        data = bytearray(frames[index])
        for _ in range(int(rng.integers(1, 6))):
            if data and rng.random() < 0.8:
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            else:
                del data[int(rng.integers(len(data) + 1)) :]
        frames[index] = bytes(data)
        return frames

    names = [*crafted, "mutation"]
    for _ in range(count):
        name = names[int(rng.integers(len(names)))] if rng.random() < 0.5 else "mutation"
        yield name, (mutated() if name == "mutation" else crafted[name]())


def answers(endpoint: str) -> bool:
    """Whether a server at ``endpoint`` answers a well-formed ``ping`` within 2 s."""
    try:
        with PolicyClient(endpoint, ClientConfig(timeout_s=2.0)) as client:
            client.ping()
        return True
    except TimeoutError:
        return False


def fuzz_run(count: int) -> dict:
    """Send ``count`` fuzz messages to a served policy. A crash is a server process that died or stopped
    answering a well-formed ``ping``; it is counted, a new server is started, and the campaign goes on."""
    rng = np.random.default_rng(0)
    sent, errors, other_replies, no_reply, crashes, servers = 0, 0, 0, 0, 0, 0
    by_kind: dict[str, int] = {}
    messages = fuzz_messages(count, rng)
    context = zmq.Context()
    try:
        while sent < count:
            servers += 1
            with served("benchmarks.bridge:make_echo_policy", "tcp://127.0.0.1:*", None) as (child, endpoint):
                socket = context.socket(zmq.DEALER)
                socket.linger = 0
                socket.rcvtimeo = 2000
                socket.connect(endpoint)
                crashed = False
                try:
                    for kind, frames in messages:
                        socket.send_multipart(frames)
                        sent += 1
                        by_kind[kind] = by_kind.get(kind, 0) + 1
                        try:
                            reply = protocol.receive(socket, protocol.Limits(), protocol.REPLY_TYPES)
                        except zmq.Again:
                            no_reply += 1
                            reply = None
                        else:
                            errors += reply.type == "error"
                            other_replies += reply.type != "error"
                        if child.poll() is not None or (reply is None and not answers(endpoint)):
                            crashed = True
                            break
                    # Still serving well-formed clients after the last message?
                    crashed = crashed or child.poll() is not None or not answers(endpoint)
                finally:
                    socket.close(linger=0)
                crashes += crashed
    finally:
        context.term()
    result = {
        "messages_sent": sent,
        "error_replies": errors,
        "valid_replies": other_replies,
        "no_reply": no_reply,
        "crashes": crashes,
        "servers_started": servers,
        "crash_definition": "times the server process died or stopped answering a well-formed ping (each time a "
        "new one was started and the campaign went on)",
        "messages_by_kind": by_kind,
    }
    print(
        f"fuzz: {sent} sent, {errors} error replies, {other_replies} valid replies, {no_reply} unanswered, "
        f"{crashes} crashes ({servers} servers started)",
        flush=True,
    )
    return result


def plot(latency: dict, loops: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(latency)
    x = np.arange(len(names))
    sources = (
        ("raw_pyzmq", "#8c8c8c", "raw pyzmq (floor)"),
        ("raw_client_bridge_server", "#dd8452", "raw client, bridge server"),
        ("bridge", "#4c72b0", "bridge client and server"),
    )
    for offset, (source, color, label) in zip((-0.27, 0.0, 0.27), sources, strict=True):
        p50 = [latency[n][source]["p50_ms"] * 1e3 for n in names]
        p99 = [latency[n][source]["p99_ms"] * 1e3 for n in names]
        left.bar(x + offset, p50, 0.27, color=color, label=f"{label}: p50")
        left.scatter(x + offset, p99, color="k", marker="_", s=150, label="p99" if source == "bridge" else None)
    left.set_yscale("log")
    left.set_xticks(x, [n.replace("_curve_", "\nCURVE ") for n in names])
    left.set_ylabel("round trip (us)")
    left.set_title("2 KB observation round trip, loopback")
    left.legend(fontsize=8)
    for label, round_trips in loops.items():
        right.hist(round_trips, bins=100, histtype="step", label=label)
    right.set_xlabel("control-loop chunk round trip incl. policy compute (ms)")
    right.set_yscale("log")
    right.set_title("Served policy in the control loop")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "bridge.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--policy",
        default="benchmarks.bridge:make_standin_rti_policy",
        help="module:callable of the policy served in the control loops (default: %(default)s)",
    )
    parser.add_argument("--onnx", help="serve this exported policy in the control loops instead of --policy")
    parser.add_argument("--strategy", default="rti", help="with --onnx: ddpm, ddim, rti or rolling")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="with --onnx: a strategy option"
    )
    parser.add_argument("--env", default="worldsim/PushT-v0", help="the env the control loops run (state obs)")
    parser.add_argument("--policy-description", help="what --policy is, for the JSON (default: the stand-in's)")
    parser.add_argument("--repeats", type=int, default=10_000, help="round trips per latency measurement")
    parser.add_argument("--ticks", type=int, default=10_000, help="control-loop ticks per rate")
    parser.add_argument("--fuzz", type=int, default=10_000, help="fuzz messages")
    parser.add_argument("--quick", action="store_true", help="500 repeats, 500 ticks, 1000 fuzz messages")
    parser.add_argument("--echo-server", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.echo_server, args.keys)
        return
    if args.quick:
        args.repeats, args.ticks, args.fuzz = 500, 500, 1000

    if args.onnx:  # the server processes inherit it (see make_onnx_policy)
        spec = {
            "path": str(Path(args.onnx).resolve()),
            "strategy": args.strategy,
            "options": strategy_options(args.option),
        }
        os.environ[ONNX_VARIABLE] = json.dumps(spec)
        source = "benchmarks.bridge:make_onnx_policy"
        served_with = f"--factory {source} with {ONNX_VARIABLE}={json.dumps(spec)}"
    else:
        source = args.policy
        served_with = f"--factory {args.policy}"

    load = {"start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="worldsim-bridge-bench-") as workdir:
        keys = Path(workdir) / "keys"
        generate_keys(["generate", str(keys)])
        latency = latency_suite(keys, Path(workdir), args.repeats)
    load["after_latency"] = os.getloadavg()[0]
    loops, round_trips = {}, {}
    for rate in (50.0, 200.0):
        loops[f"{rate:.0f}Hz"], round_trips[f"{rate:.0f}Hz"] = control_loop_run(source, args.env, rate, args.ticks)
        load[f"after_{rate:.0f}Hz"] = os.getloadavg()[0]
    fuzz = fuzz_run(args.fuzz)

    default_policy = args.policy == parser.get_default("policy") and not args.onnx
    description = args.policy_description or (
        "STAND-IN, not a trained policy: " + " ".join(StandInRTIPolicy.__doc__.split())
        if default_policy
        else served_with
    )
    worst_ratio = max(v["ratio_p50"] for v in latency.values())
    worst_p99 = max(v["bridge"]["p99_ms"] for v in latency.values())
    result = {
        "observation": {"shape": [2, OBS_DIM], "dtype": "float32", "bytes": 2 * OBS_DIM * 4},
        "latency": latency,
        "control_loop": {
            "policy": description,
            "served_with": served_with,
            "env": f"{args.env} (state)",
            "mode": "asynchronous inference, delay_ticks=1, replan every tick",
            **loops,
        },
        "fuzz": fuzz,
        "targets": {
            "bridge_p50_over_raw_p50_max": {"target": 1.3, "value": worst_ratio, "met": worst_ratio <= 1.3},
            "bridge_p99_ms_max": {"target": 1.0, "value": worst_p99, "met": worst_p99 <= 1.0},
            "fuzz_crashes": {"target": 0, "value": fuzz["crashes"], "met": fuzz["crashes"] == 0},
            "deadline_misses_50Hz": {
                "target": 0,
                "value": loops["50Hz"]["deadline_misses"],
                "met": loops["50Hz"]["deadline_misses"] == 0,
                "note": "measured with " + ("the stand-in policy" if default_policy else description),
            },
        },
        "settings": {
            "repeats": args.repeats,
            "interleaved_block": BLOCK,
            "ticks": args.ticks,
            "server_blas_threads": 1,
        },
        "load_average_1min": {
            **load,
            "note": "other jobs shared the machine's cores during the run; the loads are os.getloadavg()",
        },
    }
    write_result("bridge", result)
    plot(latency, round_trips)


if __name__ == "__main__":
    main()
