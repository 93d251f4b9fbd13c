"""The bridge's scripts (serve, keys, run_client) and its torch-free contract."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.bridge.policies import IntegratorSession, PushTExpertPolicy
from worldsim.bridge import PolicyClient, ServerConfig, run_client
from worldsim.bridge.serve import build_parser, build_server, load_factory, make_server

REPO = Path(__file__).resolve().parents[2]

TORCH_FREE = """
import sys
import gymnasium as gym
import numpy as np
import worldsim.bridge
from worldsim.bridge import serve, keys, run_client  # the scripts too
from worldsim.bridge import (ClientConfig, ControlLoop, ControlLoopConfig, PolicyClient, PolicyServer, ServerConfig,
                             WorldModelClient, WorldModelServer)

class Linear:
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    obs_horizon, horizon, n_action_steps = 1, 4, 2
    def reset(self): pass
    def select_action(self, obs): return self.predict_chunk(obs[None])[0]
    def predict_chunk(self, obs_history): return np.tile(obs_history[-1, :2], (4, 1))

class Env:
    def reset(self, seed=None): return np.zeros(3, np.float32), {}
    def step(self, action): return np.full(3, 0.5, np.float32), 1.0, False, False, {}

class Session:
    observation_space, action_space = Linear.observation_space, Linear.action_space
    def reset(self, context_obs, context_actions): self.obs = context_obs[-1]
    def step(self, action): return self.obs

with PolicyServer(Linear, ServerConfig(address="tcp://127.0.0.1:*")) as server, PolicyClient(server.address) as client:
    result = ControlLoop(Env(), client, ControlLoopConfig(rate_hz=200, max_ticks=20)).run_episode()
    assert result.ticks == 20 and result.total_reward == 20.0
with WorldModelServer(Session, ServerConfig(address="tcp://127.0.0.1:*")) as server, \\
        WorldModelClient(server.address) as client:
    client.reset(np.zeros((1, 3), np.float32), np.zeros((0, 2), np.float32))
    assert client.step(np.zeros(2, np.float32)).shape == (3,)
models = sorted(m for m in sys.modules if m.split(".")[:2] in (["worldsim", "policies"], ["worldsim", "world_model"],
                                                              ["worldsim", "export"]))
assert not models, f"the bridge imported model packages: {models}"
sys.exit(3 if "torch" in sys.modules else 0)
"""


def test_bridge_serves_and_controls_without_importing_torch_or_any_model_package():
    done = subprocess.run([sys.executable, "-c", TORCH_FREE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:] or "torch was imported"


def test_load_factory_names_a_callable():
    assert load_factory("tests.bridge.policies:PushTExpertPolicy") is PushTExpertPolicy
    with pytest.raises(ValueError, match="package.module:callable"):
        load_factory("tests.bridge.policies.PushTExpertPolicy")
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        load_factory("tests.bridge.policies:Nope")
    with pytest.raises(TypeError, match="not callable"):
        load_factory("tests.bridge.policies:PushTExpertPolicy.horizon")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["policy", "--factory", "no_such_module_xyz:make"], "No module named"),
        (
            ["policy", "--factory", "tests.bridge.policies:CountingPolicy", "--address", "tcp://0.0.0.0:5555"],
            "refusing to serve unencrypted",
        ),
        (["policy", "--factory", "tests.bridge.policies:CountingPolicy", "--allow", "keys/"], "--allow needs"),
        (["world-model", "--factory", "tests.bridge.policies:CountingPolicy"], "not a world-model session"),
    ],
)
def test_serve_reports_bad_set_ups_clearly(argv, message):
    done = subprocess.run(
        [sys.executable, "-m", "worldsim.bridge.serve", *argv], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_serve_builds_either_kind_of_server():
    args = build_parser().parse_args(
        [
            "world-model",
            "--factory",
            "tests.bridge.policies:IntegratorSession",
            "--address",
            "tcp://127.0.0.1:*",
            "--max-context-frames",
            "5",
        ]
    )
    server = build_server(args)
    assert server.model_kind == "world_model" and server.max_context_frames == 5


def test_run_client_drives_pusht_against_a_served_policy(policy_server, capsys):
    server = policy_server(PushTExpertPolicy)
    assert run_client.main(["--address", server.address, "--episodes", "1", "--rate", "100", "--delay-ticks", "0"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["env"] == "worldsim/PushT-v0" and summary["ticks"] > 0 and summary["success_rate"] in (0.0, 1.0)


SERVE_FOREVER = """
import signal, sys
from tests.bridge.policies import CountingPolicy
from worldsim.bridge import ServerConfig
from worldsim.bridge.serve import serve_forever

lines = []
def announce(line):
    lines.append(line)
    print("announced:", line, flush=True)

status = serve_forever("policy", CountingPolicy, ServerConfig(address="tcp://127.0.0.1:*"), announce=announce)
assert len(lines) == 1, lines
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the previous SIGTERM handler was not put back"
print("returned", status, flush=True)
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_announces_once_bound_and_stops_cleanly_on_a_signal(stop):
    """The library function the face calls: one announced line with the bound endpoint, a served client, a
    clean return (0) on SIGTERM or SIGINT."""
    # A job started in the background by a non-interactive shell inherits SIGINT ignored, and Python then keeps
    # ignoring it; the child gets the default disposition, as in a terminal, whatever runs this test.
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_FOREVER], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else ""
        assert re.fullmatch(r"announced: serving policy on tcp://127\.0\.0\.1:\d+ \(CURVE off: unencrypted, local "
                            r"clients only\)\n", line), line  # fmt: skip
        address = line.split()[4]
        with PolicyClient(address) as client:
            assert client.infer(np.ones((2, 3), np.float32)).shape == (4, 2)
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err[-2000:]
    assert out.strip() == "returned 0"


def test_the_serve_script_prints_one_line_and_exits_zero_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "worldsim.bridge.serve", "world-model", "--factory",
         "tests.bridge.policies:IntegratorSession", "--address", "tcp://127.0.0.1:*"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else ""
        assert line.startswith("serving world_model on tcp://127.0.0.1:"), line
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0 and out == ""


def test_make_server_builds_either_kind_and_refuses_others():
    config = ServerConfig(address="tcp://127.0.0.1:*")
    assert make_server("policy", PushTExpertPolicy, config).model_kind == "policy"
    for kind in ("world-model", "world_model"):
        server = make_server(kind, IntegratorSession, config, max_context_frames=3)
        assert server.model_kind == "world_model" and server.max_context_frames == 3
    with pytest.raises(ValueError, match="kind must be one of"):
        make_server("simulator", IntegratorSession, config)


def test_the_serve_script_has_no_model_building_options():
    """Checkpoints and ONNX files are the face's business: the bridge only takes a factory."""
    for option in ("--checkpoint", "--onnx", "--strategy", "--option"):
        assert option not in build_parser().format_help()
    with pytest.raises(SystemExit, match="2"):
        build_parser().parse_args(["policy", "--checkpoint", "pusht-state"])


def test_the_serve_script_says_when_the_address_is_taken(policy_server):
    taken = policy_server(PushTExpertPolicy).address
    done = subprocess.run(
        [sys.executable, "-m", "worldsim.bridge.serve", "policy", "--factory", "tests.bridge.policies:CountingPolicy",
         "--address", taken],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and f"cannot bind {taken}: Address already in use" in done.stderr, done.stderr
