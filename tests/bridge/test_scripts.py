"""The bridge's scripts (serve, keys, run_client) and its torch-free contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridge.policies import PushTExpertPolicy
from worldsim.bridge import run_client
from worldsim.bridge.serve import build_parser, build_server, load_factory

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
sys.exit(3 if "torch" in sys.modules else 0)
"""


def test_bridge_serves_and_controls_without_importing_torch():
    done = subprocess.run([sys.executable, "-c", TORCH_FREE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:] or "torch was imported"


def test_load_factory_names_a_callable():
    assert load_factory("tests.bridge.policies:PushTExpertPolicy") is PushTExpertPolicy
    with pytest.raises(ValueError, match="package.module:callable"):
        load_factory("tests.bridge.policies.PushTExpertPolicy")
    with pytest.raises(AttributeError):
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


def test_serve_builds_a_world_model_server_from_a_checkpoint():
    args = build_parser().parse_args(
        ["world-model", "--checkpoint", "wm-pusht-state", "--address", "tcp://127.0.0.1:*"]
    )
    server = build_server(args)
    assert server.model_kind == "world_model"
    first, second = server.open_session(), server.open_session()
    assert first.session is not second.session  # every client streams with its own cache
    assert first.session.model is second.session.model  # over one copy of the weights
    with pytest.raises(ValueError, match="--onnx serves policies"):
        build_server(build_parser().parse_args(["world-model", "--onnx", "x.onnx"]))
