"""CURVE: admitted clients are served encrypted, unknown keys are refused; key files and the loopback rule."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from tests.bridge.conftest import running
from tests.bridge.policies import CountingPolicy
from worldsim.bridge import (
    ClientConfig,
    CurveClientKeys,
    CurveServerKeys,
    PolicyClient,
    PolicyServer,
    ServerConfig,
    generate_keypair,
)
from worldsim.bridge.keys import main as keys_main
from worldsim.bridge.security import is_local_endpoint

OBS = np.ones((2, 3), np.float32)


@pytest.fixture
def keys(tmp_path):
    keys_main(["generate", str(tmp_path), "--name", "server", "--name", "alice", "--name", "mallory"])
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "alice.key").write_bytes((tmp_path / "alice.key").read_bytes())
    return tmp_path


def test_curve_admits_allowed_keys_and_rejects_unknown_ones(keys):
    server_keys = CurveServerKeys.from_files(keys / "server.key_secret", [keys / "allowed"])
    # Binding to all interfaces is fine with CURVE on; the clients still use loopback.
    config = ServerConfig(address="tcp://0.0.0.0:*", curve=server_keys)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running(PolicyServer(CountingPolicy, config)))
        address = "tcp://127.0.0.1:" + server.address.rsplit(":", 1)[1]

        def client(name: str) -> PolicyClient:
            curve = CurveClientKeys.from_files(keys / "server.key", keys / f"{name}.key_secret")
            return stack.enter_context(PolicyClient(address, ClientConfig(timeout_s=0.5, curve=curve)))

        np.testing.assert_array_equal(client("alice").infer(OBS), CountingPolicy().predict_chunk(OBS))
        with pytest.raises(TimeoutError, match="no policy server answered"):
            client("mallory").infer(OBS)
        assert server.stats.auth_rejected >= 1
        # A client without keys cannot talk to a CURVE server either.
        plain = stack.enter_context(PolicyClient(address, ClientConfig(timeout_s=0.3)))
        with pytest.raises(TimeoutError, match="no policy server answered"):
            plain.connect()
        assert server.stats.messages == 2  # alice's hello and infer, nothing else got through


def test_key_files_are_checked(keys, tmp_path):
    with pytest.raises(ValueError, match="no secret key"):
        CurveServerKeys.from_files(keys / "server.key", [keys / "allowed"])
    with pytest.raises(FileNotFoundError, match="no key file at .*nobody.key"):
        CurveClientKeys.from_files(keys / "nobody.key", keys / "alice.key_secret")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no \\*.key files"):
        CurveServerKeys.from_files(keys / "server.key_secret", [empty])
    (tmp_path / "junk.key").write_text("not a certificate")
    with pytest.raises(ValueError, match="not a ZeroMQ certificate"):
        CurveServerKeys.from_files(keys / "server.key_secret", [tmp_path / "junk.key"])
    public, secret = generate_keypair(tmp_path / "more", "robot")
    assert public.name == "robot.key" and (secret.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.3.2.1:1", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/worldsim.sock", True),
        ("inproc://x", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://10.0.0.2:5555", False),
        ("tcp://eth0:5555", False),
        ("ws://127.0.0.1:5555", False),
    ],
)
def test_local_endpoints(address, local):
    assert is_local_endpoint(address) is local
