"""docs/protocol.md is enough to write a client: its example runs against a real server, and its table of
failures, its key-file format and its ordering rules are checked against what the code does."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from zmq.utils import z85

from tests.bridge.conftest import LOOPBACK, running
from tests.bridge.policies import CountingPolicy, IntegratorSession, PushTExpertPolicy
from worldsim.bridge import PolicyServer, ServerConfig, WorldModelServer, protocol
from worldsim.bridge.protocol import ERROR_CODES, Limits
from worldsim.bridge.security import PUBLIC_KEY_FILE, SECRET_KEY_FILE, generate_keypair

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_documented_client_gets_a_chunk(policy_server):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "protocol.md should hold exactly one Python example"
    server = policy_server(PushTExpertPolicy)
    code = blocks[0].replace("tcp://127.0.0.1:5555", server.address)
    assert "worldsim" not in code  # the example uses only pyzmq, msgpack and numpy
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(8, 2)"


# --- the table of failures -----------------------------------------------------------------------------------
def documented_failures() -> dict[str, tuple[str | None, str]]:
    """failure -> (code or None for no reply, afterwards), as the table in protocol.md has them."""
    section = DOC.read_text().split("### Failures and error codes\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| failure")]
    table = {}
    for row in rows:
        failure, code, afterwards = (cell.strip() for cell in row.strip().strip("|").split(" | "))
        assert failure not in table, f"row {failure!r} twice"
        table[failure] = (None if code == "none: no reply" else code.strip("`"), afterwards)
    return table


OBS = np.ones((2, 3), np.float32)  # CountingPolicy's obs_history
OBS_SPEC = {"name": "obs_history", "dtype": "<f4", "shape": [2, 3]}
# Small limits, so that each size rule is cheap to break: a frame of more than 4,097 bytes is cut off.
LIMITS = Limits(max_header_bytes=1024, max_arrays=2, max_ndim=3, max_array_bytes=4096)


def header(**fields) -> bytes:
    """A request header with id 5; a field given as ``...`` is left out."""
    base = {"version": 1, "type": "infer", "id": 5, "time": 0.0, "arrays": [OBS_SPEC]}
    return msgpack.packb({key: value for key, value in {**base, **fields}.items() if value is not ...})


def infer(**fields) -> list[bytes]:
    return [header(**fields), OBS.tobytes()]


class FussyPolicy(CountingPolicy):
    """Refuses observations above 5 (``ValueError``: rejected) and fails below -5 (``RuntimeError``: internal),
    before it counts the call."""

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        if obs_history[0, 0] > 5:
            raise ValueError("observation out of range")
        if obs_history[0, 0] < -5:
            raise RuntimeError("the model broke")
        return super().predict_chunk(obs_history)


def one_policy_then_failures() -> Callable[[], FussyPolicy]:
    built = []

    def factory() -> FussyPolicy:
        built.append(1)
        if len(built) > 1:
            raise MemoryError("no room for another policy")
        return FussyPolicy()

    return factory


@dataclass(frozen=True)
class Case:
    frames: list[bytes]
    server: str = "policy"  # policy, world_model, busy (one session at most), factory (builds one policy only)
    reply_id: int = 5
    new_connection: bool = False  # sent from a second connection, not the one that holds a session


WM_CONTEXT = [np.zeros((2, 4), np.float32), np.zeros((1, 4), np.float32)]

# One message per row of the table, each breaking that row's rule and no other.
CASES = {
    "a frame over the frame limit": Case([b"x" * 5000]),
    "header over the header limit": Case([header(body={"pad": "x" * 1100}), OBS.tobytes()], reply_id=0),
    "header not msgpack, or holding a msgpack extension type (timestamps included)": Case(
        [msgpack.packb({"version": 1, "type": "ping", "id": 5, "time": 0.0, "note": msgpack.ExtType(5, b"x")})],
        reply_id=0,
    ),
    "header not a map": Case([msgpack.packb([1, "infer", 5])], reply_id=0),
    "`version` missing, or an integer other than 1": Case(infer(version=2)),
    "`version` not an integer (a string, a float, a boolean)": Case(infer(version=True)),
    "`id` missing, or not an unsigned 64-bit integer (a boolean, a float, a negative number)": Case(
        infer(id=True), reply_id=0
    ),
    "`id` 0 in a request": Case(infer(id=0), reply_id=0),
    "a header key other than the seven above": Case(infer(priority=1)),
    "`type` missing, not a string, or not a request type": Case(infer(type="action")),
    "`time` not a number (a boolean is not)": Case(infer(time=False)),
    "`elapsed` not a finite number >= 0": Case(infer(elapsed=-1.0)),
    "`body` not a map": Case(infer(body=[1])),
    "`arrays` not a list": Case(infer(arrays=OBS_SPEC)),
    "an array spec not a map of exactly `name`, `dtype`, `shape`": Case(infer(arrays=[{**OBS_SPEC, "order": "C"}])),
    "an array name not a string of 1-64 characters, or used twice": Case(infer(arrays=[{**OBS_SPEC, "name": ""}])),
    "a `dtype` not a string, or a `shape` not a list of integers": Case(
        infer(arrays=[{**OBS_SPEC, "shape": [2, 3.0]}])
    ),
    "more arrays than the limit": Case(
        [header(arrays=[{**OBS_SPEC, "name": f"a{i}"} for i in range(3)]), *[OBS.tobytes()] * 3]
    ),
    "a `dtype` string not in the table of dtypes": Case(infer(arrays=[{**OBS_SPEC, "dtype": ">f4"}])),
    "a `shape` of more dimensions than the limit, or with a negative size": Case(
        [header(arrays=[{**OBS_SPEC, "shape": [1, 2, 1, 3]}]), OBS.tobytes()]
    ),
    "declared array sizes over the limit, in all": Case([header(arrays=[{**OBS_SPEC, "shape": [2, 1000]}])]),
    "fewer or more buffers than declared arrays, or a buffer of the wrong length": Case([header()]),
    "arrays on a `hello`, `ping` or `bye`": Case(infer(type="ping")),
    "a request type this server does not answer (`step` to a policy, `infer` to a world model)": Case(
        infer(type="step")
    ),
    "a new connection's `reset`, `infer` or `step` while the server holds `max_sessions` sessions": Case(
        infer(), server="busy", new_connection=True
    ),
    "a new connection's `reset`, `infer` or `step` when the server cannot build a model for it": Case(
        infer(), server="factory", new_connection=True
    ),
    "a request without its arrays, or with other ones (missing, misnamed, extra)": Case(
        infer(arrays=[{**OBS_SPEC, "name": "obs"}])
    ),
    "an array of another dtype or shape than the served model takes": Case(
        infer(arrays=[{**OBS_SPEC, "shape": [3, 2]}])
    ),
    "NaN or infinity in a float array": Case([header(), np.full((2, 3), np.inf, np.float32).tobytes()]),
    "world model: `reset` with no frame, more frames than `max_context_frames`, or more actions than that": Case(
        protocol.encode("reset", 5, {"context_obs": np.zeros((5, 4), np.float32), "context_actions": WM_CONTEXT[1]}),
        server="world_model",
    ),
    "world model: `step` before a successful `reset`": Case(
        protocol.encode("step", 5, {"action": np.zeros(4, np.float32)}), server="world_model", new_connection=True
    ),
    "the model refused the input (it raised `ValueError` or `TypeError`)": Case([header(), (OBS * 9).tobytes()]),
    "the model failed (any other exception, or an answer of the wrong shape)": Case([header(), (-OBS * 9).tobytes()]),
}


def frames_of(frames: list) -> list[bytes]:
    return [bytes(frame) if not isinstance(frame, bytes) else frame for frame in frames]


@contextlib.contextmanager
def served(kind: str) -> Iterator[PolicyServer | WorldModelServer]:
    config = ServerConfig(address=LOOPBACK, limits=LIMITS, max_sessions=1 if kind == "busy" else 16)
    if kind == "world_model":
        server = WorldModelServer(IntegratorSession, config, max_context_frames=4)
    else:
        server = PolicyServer(one_policy_then_failures() if kind == "factory" else FussyPolicy, config)
    with running(server):
        yield server


class Peer:
    """A raw DEALER connection speaking the protocol by hand."""

    def __init__(self, context: zmq.Context, address: str) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.rcvtimeo = 3000
        self.socket.connect(address)
        self.next_id = 100

    def send(self, frames: list) -> None:
        self.socket.send_multipart(frames_of(frames))

    def reply(self, timeout_ms: int = 3000) -> protocol.Message | None:
        self.socket.rcvtimeo = timeout_ms
        try:
            return protocol.receive(self.socket, Limits(), protocol.REPLY_TYPES)
        except zmq.Again:
            return None

    def request(self, msg_type: str, arrays: dict | None = None) -> protocol.Message:
        self.next_id += 1
        self.send(protocol.encode(msg_type, self.next_id, arrays))
        reply = self.reply()
        assert reply is not None and reply.request_id == self.next_id, f"no reply to {msg_type}"
        return reply


def prime(kind: str, peer: Peer) -> None:
    """Give ``peer`` a session with some state: a policy has counted one call, a world model streams."""
    if kind == "world_model":
        assert (
            peer.request("reset", dict(zip(("context_obs", "context_actions"), WM_CONTEXT, strict=True))).type
            == "reset"
        )
        assert peer.request("step", {"action": np.ones(4, np.float32)}).type == "frame"
    else:
        assert peer.request("infer", {"obs_history": OBS}).arrays["actions"][0, 0] == 1.0


def session_went_on(kind: str, peer: Peer) -> bool:
    """Whether ``peer``'s session is the one ``prime`` left (a policy counts on, a world model steps on)."""
    if kind == "world_model":
        reference = IntegratorSession()
        reference.reset(*WM_CONTEXT)
        reference.step(np.ones(4, np.float32))
        reply = peer.request("step", {"action": np.ones(4, np.float32)})
        return reply.type == "frame" and np.array_equal(reply.arrays["obs"], reference.step(np.ones(4, np.float32)))
    return peer.request("infer", {"obs_history": OBS}).arrays["actions"][0, 0] == 2.0


def test_every_error_code_is_in_the_table_and_every_code_in_the_table_exists():
    codes = {code for code, _ in documented_failures().values() if code is not None}
    assert codes == set(ERROR_CODES)


def test_every_row_of_the_table_has_a_case_here():
    assert set(documented_failures()) == set(CASES)


@pytest.mark.parametrize("failure", sorted(CASES))
def test_each_failure_gets_the_documented_code_and_aftermath(failure):
    code, afterwards = documented_failures()[failure]
    case = CASES[failure]
    context = zmq.Context()
    try:
        with served(case.server) as server:
            holder = Peer(context, server.address)
            prime(case.server, holder)
            sender = Peer(context, server.address) if case.new_connection else holder
            sessions = server.session_count
            sender.send(case.frames)
            reply = sender.reply(timeout_ms=1000 if code is None else 3000)
            if code is None:
                assert reply is None
            else:
                assert reply is not None and reply.type == "error", reply
                assert (reply.body["code"], reply.request_id) == (code, case.reply_id), reply.body
                assert "\n" not in reply.body["message"]  # one line
            if afterwards == "connection dropped":
                # The client's ZeroMQ connects again as a new peer: a fresh session, the old one left to expire.
                assert holder.request("infer", {"obs_history": OBS}).arrays["actions"][0, 0] == 1.0
                assert server.stats.sessions_opened == 2
                return
            assert sender.request("ping").type == "pong"  # the connection is kept
            if afterwards == "kept; no session is created":
                assert server.session_count == sessions
                assert session_went_on(case.server, holder)
            elif afterwards == "kept; `step` needs a new `reset`":
                assert sender.request("step", {"action": np.ones(4, np.float32)}).body["code"] == "bad_request"
            else:
                assert afterwards in ("kept", "kept, as the model left it"), f"unknown aftermath {afterwards!r}"
                assert session_went_on(case.server, holder)
            assert server.running
    finally:
        context.destroy(linger=0)


def test_the_version_is_judged_before_the_rest_of_the_header(policy_server, raw_dealer):
    socket = raw_dealer(policy_server(CountingPolicy).address)
    socket.send_multipart([msgpack.packb({"version": 2, "type": 7, "id": "x", "future": True})])
    reply = protocol.receive(socket, Limits(), protocol.REPLY_TYPES)
    assert (reply.type, reply.body["code"], reply.request_id) == ("error", "unsupported_version", 0)


def test_replies_come_in_arrival_order_one_per_request(policy_server, raw_dealer):
    """Several requests in flight on one connection: one reply each, in the order they were sent; error replies
    to unreadable ids carry 0."""
    socket = raw_dealer(policy_server(CountingPolicy).address)
    sent = [
        protocol.encode("infer", 1, {"obs_history": OBS}),
        [b"\xc1 not msgpack"],
        protocol.encode("ping", 3),
        protocol.encode("infer", 4, {"obs_history": np.full((2, 3), np.nan, np.float32)}),
        protocol.encode("hello", 5),
        protocol.encode("infer", 6, {"obs_history": OBS}),
    ]
    for frames in sent:
        socket.send_multipart(frames_of(frames))
    replies = [protocol.receive(socket, Limits(), protocol.REPLY_TYPES) for _ in sent]
    assert [(r.request_id, r.type) for r in replies] == [
        (1, "action"),
        (0, "error"),
        (3, "pong"),
        (4, "error"),
        (5, "hello"),
        (6, "action"),
    ]
    assert replies[-1].arrays["actions"][0, 0] == 2.0  # the second counted call of the same session
    socket.rcvtimeo = 200
    with pytest.raises(zmq.Again, match="Resource temporarily unavailable"):
        socket.recv()  # nothing more: one reply per request


def test_a_hello_body_is_ignored_and_the_idle_clock_restarts_with_any_request(policy_server, raw_dealer):
    server = policy_server(CountingPolicy, session_timeout_s=0.6)
    socket = raw_dealer(server.address)
    plain = protocol.encode("hello", 1)
    with_body = protocol.encode("hello", 2, body={"client": "robot-7", "wants": [1, 2]})
    socket.send_multipart(plain)
    first = protocol.receive(socket, Limits(), protocol.REPLY_TYPES)
    socket.send_multipart(with_body)
    second = protocol.receive(socket, Limits(), protocol.REPLY_TYPES)
    assert (first.type, second.type) == ("hello", "hello") and first.body == second.body
    socket.send_multipart(frames_of(protocol.encode("infer", 3, {"obs_history": OBS})))
    assert protocol.receive(socket, Limits(), protocol.REPLY_TYPES).type == "action"
    for request_id in range(4, 12):  # 1.6 s of hellos, more than twice the session timeout
        time.sleep(0.2)
        socket.send_multipart(protocol.encode("hello", request_id))
        protocol.receive(socket, Limits(), protocol.REPLY_TYPES)
    assert server.session_count == 1 and server.stats.sessions_expired == 0


# --- CURVE key files -------------------------------------------------------------------------------------------
def documented_key_files() -> list[str]:
    section = DOC.read_text().split("### Key files\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```text\n(.*?)```", section, flags=re.S)


def test_key_files_are_byte_for_byte_as_documented(tmp_path):
    public_doc, secret_doc = documented_key_files()
    assert public_doc == PUBLIC_KEY_FILE.format(public="<PUBLIC>")
    assert secret_doc == SECRET_KEY_FILE.format(public="<PUBLIC>", secret="<SECRET>")
    public_file, secret_file = generate_keypair(tmp_path, "robot")
    public_key, secret_key = read_key(secret_file, "public-key"), read_key(secret_file, "secret-key")
    assert public_file.read_bytes() == public_doc.replace("<PUBLIC>", public_key).encode("ascii")
    assert secret_file.read_bytes() == secret_doc.replace("<PUBLIC>", public_key).replace(
        "<SECRET>", secret_key
    ).encode("ascii")
    assert zmq.curve_public(secret_key.encode()) == public_key.encode()  # a real key pair


def read_key(path: Path, which: str) -> str:
    """The documented recipe for a client without a certificate library, followed literally."""
    for line in path.read_text(encoding="ascii").splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.lstrip().startswith(which):
            return line.split('"')[1]
    raise AssertionError(f"no {which} in {path}")


def test_the_documented_recipe_loads_keys_a_curve_server_accepts(tmp_path):
    """A raw pyzmq client, keys read by the recipe and decoded to 32 bytes (as the Rust example does), talks to a
    CURVE server set up from the same files by the reference code."""
    from worldsim.bridge import CurveServerKeys

    generate_keypair(tmp_path, "server")
    generate_keypair(tmp_path, "client")
    config = ServerConfig(
        address=LOOPBACK,
        curve=CurveServerKeys.from_files(tmp_path / "server.key_secret", [tmp_path / "client.key"]),
    )
    context = zmq.Context()
    try:
        with running(PolicyServer(CountingPolicy, config)) as server:
            socket = context.socket(zmq.DEALER)
            socket.linger, socket.rcvtimeo = 0, 3000
            socket.curve_serverkey = z85.decode(read_key(tmp_path / "server.key", "public-key"))
            socket.curve_publickey = z85.decode(read_key(tmp_path / "client.key_secret", "public-key"))
            socket.curve_secretkey = z85.decode(read_key(tmp_path / "client.key_secret", "secret-key"))
            socket.connect(server.address)
            socket.send_multipart(protocol.encode("ping", 1))
            assert protocol.receive(socket, Limits(), protocol.REPLY_TYPES).type == "pong"
    finally:
        context.destroy(linger=0)


@pytest.fixture(scope="module")
def c_client(tmp_path_factory) -> Path:
    """tests/bridge/curve_client.c built against the libzmq that pyzmq ships (no zmq.h needed)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    libraries = sorted(Path(zmq.__file__).resolve().parents[1].glob("pyzmq.libs/libzmq*.so*"))
    if compiler is None or not libraries:
        pytest.skip("needs a C compiler and the libzmq shared library bundled with pyzmq")
    constants = ("DEALER", "LINGER", "RCVTIMEO", "CURVE_SERVERKEY", "CURVE_PUBLICKEY", "CURVE_SECRETKEY")
    binary = tmp_path_factory.mktemp("c") / "curve_client"
    command = [
        compiler,
        "-std=c99",
        "-Wall",
        "-Werror",
        "-o",
        str(binary),
        str(Path(__file__).with_name("curve_client.c")),
    ]
    command += [f"-DZMQ_{name}={int(getattr(zmq, name))}" for name in constants]
    command += [str(libraries[0]), f"-Wl,-rpath,{libraries[0].parent}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return binary


@pytest.mark.parametrize("form", ["z85", "binary"])
def test_a_c_client_loads_the_key_files_as_documented(c_client, tmp_path, form):
    from worldsim.bridge import CurveServerKeys

    generate_keypair(tmp_path, "server")
    generate_keypair(tmp_path, "client")
    config = ServerConfig(
        address=LOOPBACK,
        curve=CurveServerKeys.from_files(tmp_path / "server.key_secret", [tmp_path / "client.key"]),
    )
    with running(PolicyServer(CountingPolicy, config)) as server:
        done = subprocess.run(
            [str(c_client), server.address, str(tmp_path / "server.key"), str(tmp_path / "client.key_secret"), form],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, (done.returncode, done.stderr)
    reply = msgpack.unpackb(bytes.fromhex(done.stdout.strip()))
    assert (reply["type"], reply["id"]) == ("pong", 1)
