"""Dict observation spaces over the bridge (a camera frame beside proprioception): the hello, one array per key in
``infer``, the checks on both sides, and a ControlLoop whose env returns dict observations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gymnasium as gym
import msgpack
import numpy as np
import pytest

from tests.bridge.test_policy_server import answer_hello_with
from worldsim.bridge import (
    ControlLoop,
    ControlLoopConfig,
    Limits,
    PolicyServer,
    ProtocolError,
    ServerConfig,
    ServerError,
)
from worldsim.bridge.wire_spaces import (
    box_from_wire,
    box_to_wire,
    require_observation_space,
    space_from_wire,
    space_to_wire,
)

PIXELS = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
STATE = gym.spaces.Box(-1.5, 1.5, (4,), np.float32)
CAMERA = gym.spaces.Dict(pixels=PIXELS, state=STATE)


class CameraPolicy:
    """A scripted visuomotor policy: each chunk is computed from its inputs, and every history it is handed (a
    copy) and every prefix is kept, so that a test compares them with what it sent.

    ``chunk[j] = [sum of the newest frame, sum of the oldest frame, *newest state] + j``: frame sums are at most
    64 * 64 * 3 * 255 < 2**24, exact in float32."""

    observation_space = CAMERA
    action_space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)
    obs_horizon = 2
    horizon = 4
    n_action_steps = 2

    def __init__(self) -> None:
        self.received: list[dict[str, np.ndarray]] = []
        self.prefixes: list[np.ndarray | None] = []

    def reset(self) -> None:
        """Stateless."""

    def predict_chunk(self, obs_history, *, prefix=None, executed_steps=None) -> np.ndarray:
        assert type(obs_history) is dict and list(obs_history) == ["pixels", "state"]
        self.received.append({key: np.array(value) for key, value in obs_history.items()})
        self.prefixes.append(None if prefix is None else np.array(prefix))
        pixels, state = obs_history["pixels"], obs_history["state"]
        base = np.concatenate([[pixels[-1].sum(dtype=np.int64), pixels[0].sum(dtype=np.int64)], state[-1]])
        return (base + np.arange(self.horizon)[:, None]).astype(np.float32)


def expected_chunk(pixels: np.ndarray, state: np.ndarray) -> np.ndarray:
    """CameraPolicy's chunk, worked out here element by element from the arrays the test sends."""
    newest = float(sum(int(v) for v in pixels[-1].ravel().tolist()))
    oldest = float(sum(int(v) for v in pixels[0].ravel().tolist()))
    row = [newest, oldest, *(float(v) for v in state[-1])]
    return np.array([[value + j for value in row] for j in range(4)], np.float32)


def camera_history(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pixels": rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),
        "state": rng.uniform(-1.5, 1.5, (2, 4)).astype(np.float32),
    }


def test_hello_announces_the_dict_space(policy_server, policy_client):
    client = policy_client(policy_server(CameraPolicy).address)
    info = client.connect()
    assert isinstance(info.observation_space, gym.spaces.Dict) and info.observation_space == CAMERA
    assert info.observation_space["pixels"].dtype == np.uint8
    np.testing.assert_array_equal(info.observation_space["state"].high, np.full(4, 1.5, np.float32))
    assert info.action_space == CameraPolicy.action_space
    assert client.obs_shape == {"pixels": (2, 64, 64, 3), "state": (2, 4)}
    assert client.obs_dtype == {"pixels": np.dtype(np.uint8), "state": np.dtype(np.float32)}


def test_a_dict_history_reaches_the_policy_byte_for_byte(policy_server, policy_client):
    served = CameraPolicy()
    client = policy_client(policy_server(lambda: served).address)
    for seed in (0, 1):
        history = camera_history(seed)
        chunk = client.infer(history)
        assert chunk.dtype == np.float32 and chunk.shape == (4, 6)
        np.testing.assert_array_equal(chunk, expected_chunk(history["pixels"], history["state"]))
        received = served.received[-1]
        for key in ("pixels", "state"):
            assert received[key].dtype == history[key].dtype
            assert received[key].tobytes() == history[key].tobytes()
    assert len(served.received) == 2


def test_submit_carries_a_dict_history_with_a_prefix(policy_server, policy_client):
    served = CameraPolicy()
    client = policy_client(policy_server(lambda: served).address)
    client.connect()
    history = camera_history(2)
    prefix = np.arange(6, dtype=np.float32)[None]
    request_id = client.submit(history, prefix=prefix, executed_steps=1)
    reply = client.poll(5.0)
    assert reply is not None and reply.request_id == request_id
    np.testing.assert_array_equal(reply.actions, expected_chunk(history["pixels"], history["state"]))
    np.testing.assert_array_equal(served.prefixes[-1], prefix)


class FramePolicy:
    """A policy of uint8 frames alone (a Box observation space): ``chunk[j] = [channel sums of the newest frame,
    its first and last bytes] + j``."""

    action_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    obs_horizon = 1
    horizon = 3
    n_action_steps = 1

    def __init__(self, size: int) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.received: list[np.ndarray] = []

    def reset(self) -> None:
        """Stateless."""

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        self.received.append(np.array(obs_history))
        frame = obs_history[-1]
        row = np.concatenate([frame.sum(axis=(0, 1), dtype=np.int64), [frame[0, 0, 0], frame[-1, -1, -1]]])
        return (row + np.arange(self.horizon)[:, None]).astype(np.float32)


@pytest.mark.parametrize("size", [64, 160])  # 12 KB, copied into its message; 75 KB, sent zero-copy
def test_a_uint8_frame_policy_round_trips_a_frame(size, policy_server, policy_client):
    served = FramePolicy(size)
    client = policy_client(policy_server(lambda: served).address)
    frame = np.random.default_rng(size).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    chunk = client.infer(frame)
    sums = [sum(frame[0, :, :, c].ravel().tolist()) for c in range(3)]
    row = [*sums, int(frame[0, 0, 0, 0]), int(frame[0, -1, -1, -1])]
    np.testing.assert_array_equal(chunk, np.array([[v + j for v in row] for j in range(3)], np.float32))
    assert served.received[-1].dtype == np.uint8 and served.received[-1].tobytes() == frame.tobytes()
    with pytest.raises(ValueError, match="obs_history must be one array"):
        client.infer({"pixels": frame})


def test_the_client_refuses_a_wrong_history_naming_the_key(policy_server, policy_client):
    served = CameraPolicy()
    client = policy_client(policy_server(lambda: served).address)
    client.connect()
    history = camera_history(3)
    with pytest.raises(ValueError, match=r"obs_history lacks the key 'state' \(it needs \['pixels', 'state'\]\)"):
        client.infer({"pixels": history["pixels"]})
    with pytest.raises(ValueError, match="obs_history has the unexpected key 'depth'"):
        client.infer({**history, "depth": history["state"]})
    with pytest.raises(ValueError, match=r"obs_history\['pixels'\] must be uint8\[2, 64, 64, 3\], got float32"):
        client.infer({**history, "pixels": history["pixels"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"obs_history\['state'\] must be float32\[2, 4\], got float32\[3, 4\]"):
        client.infer({**history, "state": np.zeros((3, 4), np.float32)})
    with pytest.raises(ValueError, match="obs_history must be a dict of arrays with the keys"):
        client.submit(history["state"])
    assert served.received == []  # none of them was sent


def test_the_server_refuses_a_wrong_history_naming_the_array(policy_server, policy_client):
    """Sent around the client's checks, as a client in another language might: each is refused with its reason,
    the policy never sees it, and the session goes on."""
    served = CameraPolicy()
    client = policy_client(policy_server(lambda: served).address)
    client.connect()
    history = camera_history(4)
    pixels, state = history["pixels"], history["state"]
    refused = [
        ({"obs_history.pixels": pixels}, "bad_request: missing array 'obs_history.state'"),
        (
            {"obs_history.pixels": pixels.astype(np.float32), "obs_history.state": state},
            r"bad_array: array 'obs_history.pixels' is <f4\[2, 64, 64, 3\], expected \|u1\[2, 64, 64, 3\]",
        ),
        (
            {"obs_history.pixels": pixels, "obs_history.state": state[:1]},
            r"bad_array: array 'obs_history.state' is <f4\[1, 4\], expected <f4\[2, 4\]",
        ),
        (
            {"obs_history": state},
            r"bad_request: expected arrays \['obs_history.pixels', 'obs_history.state'\] and optionally 'prefix'",
        ),
        (
            {"obs_history.pixels": pixels, "obs_history.state": state, "obs_history.depth": state},
            r"bad_request: expected arrays .* got \['obs_history.depth', 'obs_history.pixels', 'obs_history.state'\]",
        ),
    ]
    for bad in (np.nan, np.inf, -np.inf):
        broken = state.copy()
        broken[1, 2] = bad
        arrays = {"obs_history.pixels": pixels, "obs_history.state": broken}
        refused.append((arrays, "bad_array: array 'obs_history.state' holds NaN"))
    for arrays, message in refused:
        with pytest.raises(ServerError, match=message) as error:
            client.connection.request("infer", arrays)
        assert "\n" not in error.value.message
    assert served.received == []
    # The NaN check is the server's: the client passes a finite-shaped history through as it is.
    with pytest.raises(ServerError, match="'obs_history.state' holds NaN or infinite values"):
        client.infer({"pixels": pixels, "state": np.full((2, 4), np.nan, np.float32)})
    np.testing.assert_array_equal(client.infer(history), expected_chunk(pixels, state))
    assert len(served.received) == 1


# --- the description on the wire ---------------------------------------------------------------------------
def wire(space, name="observation_space") -> tuple[dict, dict]:
    """``space_to_wire``'s body through msgpack (as a hello carries it) and its arrays."""
    body, arrays = space_to_wire(space, name)
    return {name: msgpack.unpackb(msgpack.packb(body))}, arrays


def test_a_dict_space_on_the_wire():
    body, arrays = wire(CAMERA)
    assert body["observation_space"] == {
        "type": "dict",
        "spaces": {
            "pixels": {"type": "box", "dtype": "|u1", "shape": [64, 64, 3]},
            "state": {"type": "box", "dtype": "<f4", "shape": [4]},
        },
    }
    names = [f"observation_space.{key}.{bound}" for key in ("pixels", "state") for bound in ("high", "low")]
    assert sorted(arrays) == names
    np.testing.assert_array_equal(arrays["observation_space.state.low"], np.full(4, -1.5, np.float32))
    assert arrays["observation_space.pixels.high"].dtype == np.uint8
    assert space_from_wire(body, arrays, "observation_space") == CAMERA
    # A Box is as before.
    assert space_to_wire(STATE, "action_space")[0] == box_to_wire(STATE, "action_space")[0]
    box_body, box_arrays = wire(STATE, "action_space")
    assert space_from_wire(box_body, box_arrays, "action_space") == STATE
    # Only an observation space may be a dict.
    action_body, action_arrays = wire(CAMERA, "action_space")
    with pytest.raises(ProtocolError, match="hello lacks a box description of 'action_space'"):
        box_from_wire(action_body, action_arrays, "action_space")


def _spaces(change):
    def edit(body, arrays):
        change(body["observation_space"]["spaces"], arrays)

    return edit


MALFORMED = {
    "spaces not a map": (
        lambda body, arrays: body["observation_space"].update(spaces=[["pixels", {}]]),
        "'observation_space': a dict description needs a non-empty map 'spaces'",
    ),
    "no spaces": (
        lambda body, arrays: body["observation_space"].update(spaces={}),
        "'observation_space': a dict description needs a non-empty map 'spaces'",
    ),
    "an empty key": (
        _spaces(lambda spaces, arrays: spaces.update({"": spaces["state"]})),
        "'observation_space': the keys of 'spaces' must be non-empty strings, got ''",
    ),
    "a binary key": (
        _spaces(lambda spaces, arrays: spaces.update({b"depth\n": spaces["state"]})),
        r"'observation_space': the keys of 'spaces' must be non-empty strings, got b'depth\\n'",
    ),
    "a missing bound": (
        lambda body, arrays: arrays.pop("observation_space.state.high"),
        "hello lacks a box description of 'observation_space.state'",
    ),
    "a nested dict": (
        _spaces(lambda spaces, arrays: spaces.update(pixels={"type": "dict", "spaces": {"a": spaces["state"]}})),
        "hello lacks a box description of 'observation_space.pixels'",
    ),
    "a shape that disagrees": (
        _spaces(lambda spaces, arrays: spaces["pixels"].update(shape=[64, 64, 4])),
        "'observation_space.pixels': bounds disagree with the declared dtype and shape",
    ),
    "a boolean size": (
        _spaces(lambda spaces, arrays: spaces["state"].update(shape=[True])),
        "'observation_space.state': bounds disagree",
    ),
    "a dtype that disagrees": (
        _spaces(lambda spaces, arrays: spaces["pixels"].update(dtype="<f4")),
        "'observation_space.pixels': bounds disagree",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_dict_description_is_refused_in_one_line(case):
    change, message = MALFORMED[case]
    body, arrays = wire(CAMERA)
    change(body, arrays)
    with pytest.raises(ProtocolError, match=message) as error:
        space_from_wire(body, arrays, "observation_space")
    assert error.value.code == "malformed" and "\n" not in error.value.message


def test_a_malformed_dict_description_in_a_hello_is_refused_by_the_client(policy_client):
    broken = {"type": "dict", "spaces": {"pixels": {"type": "box", "dtype": "|u1", "shape": [64, 64]}}}
    address, close = answer_hello_with({"observation_space": broken}, lambda config: PolicyServer(CameraPolicy, config))
    try:
        with pytest.raises(ProtocolError, match="malformed: 'observation_space.pixels': bounds disagree"):
            policy_client(address, timeout_s=3.0).connect()
    finally:
        close()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (gym.spaces.Discrete(3), "must be a gymnasium.spaces.Box or a gymnasium.spaces.Dict of Boxes, got Discrete"),
        (
            gym.spaces.Dict(a=gym.spaces.Discrete(3)),
            "must be a gymnasium.spaces.Box or a Dict of Boxes: entry 'a' is a Discrete",
        ),
        (gym.spaces.Dict(a=CAMERA), "entry 'a' is a Dict"),
        (gym.spaces.Dict({}), "is an empty gymnasium.spaces.Dict"),
        (gym.spaces.Dict({1: STATE}), "the keys of a Dict must be non-empty strings, got 1"),
        (gym.spaces.Dict(a=gym.spaces.Box(0, 1, (2,), ">f4")), r"policy.observation_space\['a'\] has dtype >f4"),
    ],
)
def test_spaces_the_protocol_does_not_carry_are_refused(space, message):
    with pytest.raises(TypeError, match=message):
        require_observation_space(space, "policy.observation_space")

    class Odd(CameraPolicy):
        observation_space = space

    with pytest.raises(TypeError, match=message):
        PolicyServer(Odd, ServerConfig())
    assert require_observation_space(CAMERA, "x") is CAMERA and require_observation_space(STATE, "x") is STATE


def test_a_dict_space_must_fit_the_server_limits():
    class ManyKeys(CameraPolicy):
        observation_space = gym.spaces.Dict({f"cam{i}": PIXELS for i in range(8)})

    with pytest.raises(ValueError, match="8 keys needs 18 arrays in hello, more than Limits.max_arrays=16"):
        PolicyServer(ManyKeys, ServerConfig())
    PolicyServer(ManyKeys, ServerConfig(limits=Limits(max_arrays=18)))

    class LongKey(CameraPolicy):
        observation_space = gym.spaces.Dict({"k" * 42: STATE})

    with pytest.raises(ValueError, match="longer than Limits.max_name_length=64"):
        PolicyServer(LongKey, ServerConfig())


# --- a control loop on dict observations -------------------------------------------------------------------
class CameraEnv(gym.Env):
    """Observation at step ``t``: a frame whose every byte is ``t`` and a state ``[t / 100, 0, 0, 0]``; truncated
    after ``max_steps``."""

    observation_space = CAMERA
    action_space = gym.spaces.Box(-1.0, 1e6, (2,), np.float32)

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self.steps = 0
        self.actions: list[np.ndarray] = []

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "pixels": np.full((64, 64, 3), self.steps, np.uint8),
            "state": np.array([self.steps / 100, 0.0, 0.0, 0.0], np.float32),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.steps = 0
        self.actions = []
        return self._obs(), {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.steps += 1
        return self._obs(), 0.0, False, self.steps >= self.max_steps, {}


class TickCameraPolicy:
    """Plans ``chunk[j] = [t + j, t + j]`` from the newest observation's tick ``t``, read once from the frame and
    once from the state: the action applied at tick ``k`` is ``[k, k]`` when both arrived intact, in step."""

    observation_space = CAMERA
    action_space = CameraEnv.action_space
    obs_horizon = 3
    horizon = 8
    n_action_steps = 2

    def __init__(self) -> None:
        self.histories: list[dict[str, np.ndarray]] = []

    def reset(self) -> None:
        self.histories.clear()

    def predict_chunk(self, obs_history) -> np.ndarray:
        self.histories.append({key: np.array(value) for key, value in obs_history.items()})
        frame_tick = float(obs_history["pixels"][-1].mean())
        state_tick = float(np.round(obs_history["state"][-1, 0] * 100))
        return np.array([[frame_tick + j, state_tick + j] for j in range(self.horizon)], np.float32)


def test_a_control_loop_runs_an_env_with_dict_observations(policy_server, policy_client):
    served = TickCameraPolicy()
    server = policy_server(lambda: served)
    env = CameraEnv(30)
    loop = ControlLoop(env, policy_client(server.address), ControlLoopConfig(rate_hz=50, delay_ticks=1, record=True))
    result = loop.run_episode(seed=0)
    assert result.ticks == 30 and result.truncated and result.stats.chunks >= 2
    used = np.flatnonzero(result.trace["obs_tick"] >= 0)
    assert used.size and used[0] == 0
    np.testing.assert_array_equal(result.trace["action"][used], np.stack([used, used], axis=1).astype(np.float32))
    np.testing.assert_array_equal(np.stack(env.actions), result.trace["action"])
    # Each history holds consecutive ticks, oldest first, the frame and the state of one tick side by side; the
    # first is the episode's first observation three times.
    first = served.histories[0]
    assert first["pixels"].shape == (3, 64, 64, 3) and first["pixels"].dtype == np.uint8
    np.testing.assert_array_equal(first["state"][:, 0], np.zeros(3, np.float32))
    for history in served.histories:
        frame_ticks = history["pixels"].reshape(3, -1)
        assert (frame_ticks == frame_ticks[:, :1]).all()
        ticks = frame_ticks[:, 0].astype(np.int64)
        np.testing.assert_array_equal(np.round(history["state"][:, 0] * 100).astype(np.int64), ticks)
        assert set(np.diff(ticks).tolist()) <= {0, 1} and ticks[-1] - ticks[0] <= 2


# --- docs/protocol.md ----------------------------------------------------------------------------------------
def test_the_documented_example_is_what_a_server_sends(policy_server, policy_client):
    """The example of "Dict observation spaces" in protocol.md: its hello body and the array names and specs it
    lists are those of a served CameraPolicy (64x64 RGB frames and a 4-vector, obs_horizon 2)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = doc.split("### Dict observation spaces (policy)\n", 1)[1].split("\n### ", 1)[0]
    (example,) = re.findall(r"```text\n(.*?)```", section, flags=re.S)
    body_text, rest = example.split("arrays ", 1)
    documented_body = json.loads("{" + body_text.removeprefix("body").strip() + "}")
    documented = dict(re.findall(r"(\S+)\s+(\S+ \[[\d, ]*\])", rest))
    server = policy_server(CameraPolicy)
    body, arrays = server._hello_reply()
    assert documented_body["observation_space"] == body["observation_space"]
    hello = {name: f"{array.dtype.str} {list(array.shape)}" for name, array in arrays.items()}
    assert {name: hello[name] for name in hello if name.startswith("observation_space.")} == {
        name: spec for name, spec in documented.items() if name.startswith("observation_space.")
    }
    assert {"action_space.low", "action_space.high"} <= hello.keys()
    infer = {name: spec for name, spec in documented.items() if name.startswith("obs_history.")}
    client = policy_client(server.address)
    client.connect()
    sent = client._observation_arrays(camera_history(5))
    assert {name: f"{array.dtype.str} {list(array.shape)}" for name, array in sent.items()} == infer
