"""The visuomotor policy: camera frames (and proprioception) in, actions out, on the same core and strategies."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from worldsim.core.episodes import Episode, policy_windows
from worldsim.core.normalizer import Normalizer
from worldsim.envs.tasks import load_task, task_names
from worldsim.envs.wrappers import Proprioception, select_proprioception
from worldsim.export.metadata import ExportFormatError
from worldsim.export.onnx_policy import OnnxPolicy
from worldsim.export.policy_export import export_policy
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.diffusion_policy import DiffusionPolicy
from worldsim.policies.encoders import PixelEncoder, random_shift
from worldsim.policies.strategies import STRATEGIES

SIZE, STATE, ACTIONS, HORIZON, K = 16, 2, 2, 8, 20
STRATEGY_KWARGS = {"ddpm": {}, "ddim": {"steps": 5}, "rti": {"k": 3, "calls": 2}, "rolling": {}, "rtc": {"steps": 5}}


def make_pixel_policy(seed=0, state=True, relative=False) -> DiffusionPolicy:
    torch.manual_seed(seed)
    config = DiffusionPolicyConfig(
        obs_shape=(SIZE, SIZE, 3), action_dim=ACTIONS, obs_type="pixels",
        obs_keys=("pixels", "state") if state else (), state_dim=STATE if state else 0,
        obs_low=(-1.0,) * STATE if state else (), obs_high=(1.0,) * STATE if state else (),
        horizon=HORIZON, n_action_steps=4, num_train_steps=K, width=32, depth=2, heads=2,
        action_low=(-1.0,) * ACTIONS, action_high=(1.0,) * ACTIONS, relative_to_obs=(0, 1) if relative else (),
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    obs_norm = Normalizer.fit(rng.uniform(-1, 1, (100, STATE))) if state else None
    policy = DiffusionPolicy(
        config, obs_normalizer=obs_norm, action_normalizer=Normalizer.fit(rng.uniform(-1, 1, (100, 2)))
    )
    with torch.no_grad():  # an untrained adaLN-zero net predicts zeros; make the outputs depend on the weights
        for p in policy.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy.eval()


def observation(rng, state=True):
    frame = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    if not state:
        return frame
    return {"pixels": frame, "state": rng.uniform(-1, 1, STATE).astype(np.float32)}


def history(rng, batch=None, state=True):
    lead = (2,) if batch is None else (batch, 2)
    pixels = rng.integers(0, 256, (*lead, SIZE, SIZE, 3), dtype=np.uint8)
    if not state:
        return pixels
    return {"pixels": pixels, "state": rng.uniform(-1, 1, (*lead, STATE)).astype(np.float32)}


# ---------------------------------------------------------------------------------------------- the encoder
def test_the_encoder_maps_a_history_of_frames_and_states_to_one_vector_and_uses_all_of_it():
    policy = make_pixel_policy()
    obs = {k: torch.as_tensor(v) for k, v in history(np.random.default_rng(0), batch=3).items()}
    with torch.no_grad():
        base = policy._encode(obs)
        assert base.shape == (3, policy.config.feature_dim)
        older = {"pixels": obs["pixels"].clone(), "state": obs["state"]}
        older["pixels"][:, 0] = 255 - older["pixels"][:, 0]  # only the older frame of each history changes
        state = {"pixels": obs["pixels"], "state": obs["state"] + 0.5}
        assert (policy._encode(older) - base).abs().max() > 1e-4
        assert (policy._encode(state) - base).abs().max() > 1e-4
        # Rows are independent: row 1 alone gives row 1's features.
        alone = policy._encode({k: v[1:2] for k, v in obs.items()})
    torch.testing.assert_close(alone[0], base[1], atol=1e-5, rtol=1e-5)


def test_augmentation_runs_in_training_only():
    config = DiffusionPolicyConfig(obs_shape=(SIZE, SIZE, 3), action_dim=2, obs_type="pixels", width=32, heads=2)
    encoder = PixelEncoder(config)
    frames = torch.rand(4, 2, SIZE, SIZE, 3) * 2 - 1
    encoder.eval()
    torch.testing.assert_close(encoder(frames), encoder(frames))
    encoder.train()
    torch.manual_seed(0)
    assert (encoder(frames) - encoder(frames)).abs().max() > 1e-5


def test_random_shift_crops_the_padded_frames_at_one_offset_per_history():
    frames = torch.arange(2 * 3 * 1 * 6 * 6, dtype=torch.float32).view(2, 3, 1, 6, 6)
    shifted = random_shift(frames, 2, generator=torch.Generator().manual_seed(1))
    assert shifted.shape == frames.shape
    padded = torch.nn.functional.pad(frames.flatten(0, 1), (2, 2, 2, 2), mode="replicate").view(2, 3, 1, 10, 10)
    for b in range(2):
        found = [
            (y, x)
            for y in range(5)
            for x in range(5)
            if torch.equal(padded[b, 0, :, y : y + 6, x : x + 6], shifted[b, 0])
        ]
        assert len(found) >= 1
        y, x = found[0]
        for t in range(3):  # the same offset for every frame of the history
            assert torch.equal(padded[b, t, :, y : y + 6, x : x + 6], shifted[b, t])


# ---------------------------------------------------------------------------------------------- the control API
@pytest.mark.parametrize("name", STRATEGIES)
def test_the_encoder_runs_once_per_control_step_and_its_cnn_once_per_frame(name):
    policy = make_pixel_policy()
    policy.set_strategy(name, **STRATEGY_KWARGS[name])
    projections, cnn_rows = [], []
    policy.encoder.project.register_forward_hook(lambda *_: projections.append(1))
    policy.encoder.cnn.register_forward_hook(lambda module, inputs, output: cnn_rows.append(inputs[0].shape[0]))
    rng = np.random.default_rng(0)
    observations = [observation(rng) for _ in range(9)]
    predictions = calls = 0
    previous_history: set[bytes] = set()
    for t, obs in enumerate(observations):
        before = len(projections), sum(cnn_rows)
        policy.select_action(obs)
        if policy.calls_last_prediction:
            predictions += 1
            calls += policy.calls_last_prediction
            # The history is this frame and the one before (at reset: this one twice). Only frames the
            # previous prediction's history did not hold go through the CNN.
            history = {observations[max(t - 1, 0)]["pixels"].tobytes(), obs["pixels"].tobytes()}
            assert len(projections) - before[0] == 1
            assert sum(cnn_rows) - before[1] == len(history - previous_history)
            previous_history = history
        else:
            assert (len(projections), sum(cnn_rows)) == before
    assert predictions >= 3 and calls > predictions  # several denoiser calls per prediction, one encoder run
    if predictions == len(observations):  # replanning every tick: each frame went through the CNN once
        assert sum(cnn_rows) == len(observations)


@pytest.mark.parametrize("state", [True, False], ids=["pixels+state", "pixels"])
def test_bad_camera_observations_get_one_line_errors(state):
    policy = make_pixel_policy(state=state)
    rng = np.random.default_rng(0)
    good = observation(rng, state)
    if state:
        with pytest.raises(ValueError, match=r"dict observations with keys \['pixels', 'state'\]"):
            policy.select_action({"pixels": good["pixels"]})
        with pytest.raises(ValueError, match="state observation must have shape"):
            policy.select_action({"pixels": good["pixels"], "state": np.zeros(3, np.float32)})
        with pytest.raises(ValueError, match="NaN or infinite"):
            policy.select_action({"pixels": good["pixels"], "state": np.array([np.nan, 0], np.float32)})
        with pytest.raises(ValueError, match="outside the observation space's bounds"):
            policy.select_action({"pixels": good["pixels"], "state": np.array([3.0, 0], np.float32)})
    with pytest.raises(ValueError, match=r"observation must have shape \(16, 16, 3\)"):
        frame = np.zeros((8, 8, 3), np.uint8)
        policy.select_action({"pixels": frame, "state": good["state"]} if state else frame)
    with pytest.raises(ValueError, match="uint8 pixels"):
        frame = np.full((SIZE, SIZE, 3), 300.0)
        policy.select_action({"pixels": frame, "state": good["state"]} if state else frame)


def test_relative_actions_of_a_camera_policy_refer_to_its_proprioception():
    policy = make_pixel_policy(relative=True)
    obs = {k: torch.as_tensor(v) for k, v in history(np.random.default_rng(3), batch=2).items()}
    torch.testing.assert_close(policy.codec.reference(obs), obs["state"][:, -1, :2])


def test_a_training_step_reaches_the_convolutions():
    policy = make_pixel_policy().train()
    rng = np.random.default_rng(0)
    obs = history(rng, batch=8)
    batch = {
        "obs.pixels": torch.as_tensor(obs["pixels"]),
        "obs.state": torch.as_tensor(obs["state"]),
        "action": torch.as_tensor(rng.uniform(-1, 1, (8, HORIZON, ACTIONS)).astype(np.float32)),
    }
    loss = policy.compute_loss(batch)
    loss.backward()
    first_conv = policy.encoder.cnn[0].weight
    assert torch.isfinite(loss) and first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_policy_windows_cut_dict_observations_per_key():
    frames = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    states = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    episode = Episode(
        {"pixels": frames, "state": states}, np.zeros((3, 2)), np.zeros(3), np.zeros(3), np.zeros(3), True
    )
    obs, actions = policy_windows([episode], obs_horizon=2, action_horizon=4)
    assert obs["pixels"].shape == (3, 2, 2, 2, 3) and obs["state"].shape == (3, 2, 2) and actions.shape == (3, 4, 2)
    assert obs["pixels"][:, :, 0, 0, 0].tolist() == [[0, 0], [0, 1], [1, 2]]
    assert obs["state"][:, :, 0].tolist() == [[0, 0], [0, 1], [1, 2]]


# ---------------------------------------------------------------------------------------------- proprioception
def test_proprioception_keeps_the_robots_own_state_only():
    env = gym.make("worldsim/PushT-v0", obs_type="state_pixels", image_size=32)
    wrapped = Proprioception(env, [0, 1])
    check_env(wrapped, skip_render_check=True)
    obs, info = wrapped.reset(seed=4)
    assert obs["state"].shape == (2,) and obs["pixels"].shape == (32, 32, 3)
    np.testing.assert_array_equal(obs["state"], info["state"][:2])  # the pusher; the block's pose is dropped
    assert wrapped.observation_space["state"].shape == (2,)
    recorded = {"pixels": np.zeros((5, 32, 32, 3), np.uint8), "state": np.arange(30, dtype=np.float32).reshape(5, 6)}
    np.testing.assert_array_equal(select_proprioception(recorded, [0, 1])["state"], recorded["state"][:, :2])
    with pytest.raises(ValueError, match="must name dimensions of the 6-dim state"):
        Proprioception(env, [0, 6])
    env.close()


# ---------------------------------------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def exported_pixels(tmp_path_factory):
    policy = make_pixel_policy(relative=True)
    path = tmp_path_factory.mktemp("pixels") / "policy.onnx"
    report = export_policy(policy, path, real_obs=history(np.random.default_rng(1), batch=4))
    return policy, path, report


def test_a_camera_policy_exports_its_encoder_and_step_with_parity(exported_pixels):
    _, path, report = exported_pixels
    assert report.max_abs_diff <= 1e-4 and set(report.checks) == {"frames", "encoder", "step"}
    assert path.with_name("policy.encoder.onnx").is_file() and path.with_name("policy.frames.onnx").is_file()


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_runner_matches_torch_and_encodes_once_per_control_step(exported_pixels, name):
    policy, path, _ = exported_pixels
    runner = OnnxPolicy(path, strategy=name, **STRATEGY_KWARGS[name])
    policy.set_strategy(name, **STRATEGY_KWARGS[name])
    policy.seed(7)
    runner.seed(7)
    encodes = []
    session = runner.encoder_session

    class Counting:
        def run(self, *args, **kwargs):
            encodes.append(1)
            return session.run(*args, **kwargs)

    runner.encoder_session = Counting()
    rng = np.random.default_rng(2)
    torch_frames = policy.frame_cache.encoded_frames  # the policy is shared by this module's tests
    for _ in range(9):
        obs = observation(rng)
        before = len(encodes)
        np.testing.assert_allclose(runner.select_action(obs), policy.select_action(obs), atol=1e-4)
        assert len(encodes) - before == (1 if runner.calls_last_prediction else 0)
    # Both runtimes put the same number of frames through their CNN.
    assert runner.frame_cache.encoded_frames == policy.frame_cache.encoded_frames - torch_frames > 0


def test_a_camera_export_without_its_frames_graph_is_refused(exported_pixels, tmp_path):
    _, path, _ = exported_pixels
    for role in ("", ".encoder"):
        source = path.with_name(f"policy{role}.onnx")
        (tmp_path / source.name).write_bytes(source.read_bytes())
    with pytest.raises(FileNotFoundError, match="policy.frames.onnx"):
        OnnxPolicy(tmp_path / "policy.onnx")


def test_a_frames_graph_of_another_export_is_refused(exported_pixels, tmp_path):
    policy, path, _ = exported_pixels
    export_policy(policy, tmp_path / "other.onnx")
    for role in ("", ".encoder"):
        source = path.with_name(f"policy{role}.onnx")
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / "policy.frames.onnx").write_bytes((tmp_path / "other.frames.onnx").read_bytes())
    with pytest.raises(ExportFormatError, match=r"policy.frames.onnx belongs to other.onnx, not policy.onnx"):
        OnnxPolicy(tmp_path / "policy.onnx")


def test_an_export_without_its_encoder_is_refused(exported_pixels, tmp_path):
    _, path, _ = exported_pixels
    lonely = tmp_path / "policy.onnx"
    lonely.write_bytes(path.read_bytes())
    with pytest.raises(FileNotFoundError, match="policy.encoder.onnx"):
        OnnxPolicy(lonely)


# ---------------------------------------------------------------------------------------------- shipped
SHIPPED_TASKS = [name for name in task_names() if load_task(name).policy_checkpoint and load_task(name).entry_point]


def layout(space):
    if isinstance(space, gym.spaces.Dict):
        return {key: layout(part) for key, part in space.spaces.items()}
    return space.shape, space.dtype


@pytest.mark.parametrize("name", SHIPPED_TASKS)
def test_every_shipped_policy_takes_what_its_task_env_gives(name):
    task = load_task(name)
    policy = DiffusionPolicy.from_pretrained(task.policy_checkpoint, strategy="ddim", steps=2)
    env = task.make_env()
    # Shapes and dtypes, key by key (bounds: a checkpoint older than the observation checks records none).
    assert layout(policy.observation_space) == layout(env.observation_space)
    obs, _ = env.reset(seed=0)
    action = policy.select_action(obs)
    env.close()
    assert env.action_space.contains(action)
    # A camera task's policy sees the robot's own state only; its task file says which dimensions those are.
    assert policy.config.obs_type == ("pixels" if task.proprio_dims else "state")
    assert policy.config.state_dim == len(task.proprio_dims or [])
