"""The pixel-space U-Net world model: its frame window, frame tokenizer, network, training loss, streaming
session, checkpoint and ONNX export."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from worldsim.core.episodes import Episode
from worldsim.core.normalizer import Normalizer
from worldsim.export.onnx_world_model import OnnxWorldModelSession
from worldsim.export.world_model_export import export_world_model
from worldsim.world_model.action_encoder import ActionEncoder
from worldsim.world_model.config import WorldModelConfig
from worldsim.world_model.frame_tokenizer import FrameTokenizer
from worldsim.world_model.frame_window import FrameWindow
from worldsim.world_model.model import WorldModel
from worldsim.world_model.session import SessionConfig, StreamingSession

UNET = WorldModelConfig(network="unet", sink_frames=0, window_frames=3, sequence_frames=4, unet_channels=[8, 16])
SIZE = 16


def unet_model(seed: int = 0, config: WorldModelConfig = UNET, randomize: bool = True) -> WorldModel:
    """An untrained 16x16 U-Net world model whose zero-initialized layers are randomized (outputs depend on
    inputs) unless ``randomize`` is off."""
    torch.manual_seed(seed)
    actions = ActionEncoder(
        gym.spaces.Box(-1.0, 1.0, (2,), np.float32), Normalizer.fit(np.array([[-1.0], [1.0]]) * np.ones(2))
    )
    space = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    model = WorldModel(config, FrameTokenizer(SIZE), actions, space)
    with torch.no_grad():
        for module in model.denoiser.modules() if randomize else ():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.1)
    return model.eval()


def episodes(n: int = 2, length: int = 12, seed: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [
        Episode(
            observations=rng.integers(0, 256, (length + 1, SIZE, SIZE, 3), dtype=np.uint8),
            actions=rng.uniform(-1, 1, (length, 2)).astype(np.float32),
            rewards=np.zeros(length, np.float32),
            terminations=np.zeros(length, bool),
            truncations=np.zeros(length, bool),
            success=False,
        )
        for _ in range(n)
    ]


def test_frame_window_pads_with_its_first_frame_then_slides():
    window = FrameWindow(batch_size=1, frames=3, frame_dim=2, cond_dim=1, no_action=np.zeros(1, np.float32))
    frame = lambda v: np.full((1, 1, 2), v, np.float32)  # noqa: E731
    window.append(frame(1), np.array([[0.0]]), np.array([[[5.0]]]))
    # Every slot holds the first frame; padding slots carry no action, the frame itself its own condition.
    np.testing.assert_array_equal(window.frames[0, :, 0], [1, 1, 1])
    np.testing.assert_array_equal(window.conds[0, :, 0], [0, 0, 5])
    nbytes = window.nbytes
    for v in (2, 3, 4):
        window.append(frame(v), np.array([[0.1 * v]]), np.array([[[float(v)]]]))
    np.testing.assert_array_equal(window.frames[0, :, 0], [2, 3, 4])
    np.testing.assert_allclose(window.levels[0], [0.2, 0.3, 0.4])
    np.testing.assert_array_equal(window.conds[0, :, 0], [2, 3, 4])
    assert window.num_frames == 3 and window.frames_seen == 4 and window.nbytes == nbytes
    with pytest.raises(ValueError, match="a frame window takes frames"):
        window.append(np.zeros((1, 1, 5), np.float32), np.zeros((1, 1)), np.zeros((1, 1, 1)))


def test_frame_tokenizer_round_trips_uint8_frames_exactly():
    tokenizer = FrameTokenizer(SIZE)
    frames = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    tokens = tokenizer.encode(frames)
    assert tokens.shape == (4, 1, 3 * SIZE * SIZE) and tokens.min() >= -1 and tokens.max() <= 1
    # channel-first order: the first SIZE * SIZE values are the red channel
    np.testing.assert_allclose(tokens[0, 0, : SIZE * SIZE], frames[0, :, :, 0].reshape(-1) / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(tokenizer.decode(tokens), frames)
    np.testing.assert_array_equal(tokenizer.decode(torch.from_numpy(tokens) + 0.003), frames)  # rounds back
    with pytest.raises(ValueError, match=r"frames must have shape \[N, 16, 16, 3\]"):
        tokenizer.encode(frames[:, :8])


def _inputs(model: WorldModel, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = model.unet_config
    d, k, cond = c.frame_dim, c.context_frames, c.cond_dim
    return [
        torch.randn(batch, 1, d, generator=g), torch.rand(batch, 1, generator=g),
        torch.randn(batch, 1, cond, generator=g), torch.rand(batch, k, d, generator=g) * 2 - 1,
        torch.rand(batch, k, generator=g) * 0.1, torch.randn(batch, k, cond, generator=g),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "index", "part"),
    [
        ("noisy frame", 0, None), ("level", 1, None), ("action", 2, None), ("oldest frame", 3, 0),
        ("newest frame", 3, -1), ("context level", 4, -1), ("newest context action", 5, -1),
    ],
)  # fmt: skip
def test_every_input_reaches_the_prediction(name, index, part):
    model = unet_model()
    inputs = _inputs(model)
    with torch.no_grad():
        base = model.denoiser.predict(*inputs)
        changed = [t.clone() for t in inputs]
        target = changed[index] if part is None else changed[index][:, part]
        target.mul_(0.5)
        assert base.shape == (2, 1, 3 * SIZE * SIZE)
        assert (model.denoiser.predict(*changed) - base).abs().max() > 1e-3, name


def test_the_oldest_frames_action_is_not_seen():
    """Training windows always start with "no action"; the network must not depend on that slot."""
    model = unet_model()
    inputs = _inputs(model)
    changed = [t.clone() for t in inputs]
    changed[5][:, 0] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(model.denoiser.predict(*changed), model.denoiser.predict(*inputs))


COPY_SKIP = dataclasses.replace(UNET, unet_copy_skip=True, parameterization="sample")
COORDS = dataclasses.replace(COPY_SKIP, unet_coord_channels=True)
ACTIONS = dataclasses.replace(COORDS, unet_action_channels=True)


@pytest.mark.parametrize("config", [COORDS, ACTIONS], ids=["embedding_only", "action_channels"])
def test_action_channels_bring_the_action_to_every_pixel(config):
    """With the embedding's action columns zeroed, the action reaches the prediction only through the action
    channels: it changes the frame with them and not without."""
    model = unet_model(config=config)
    c = model.unet_config
    assert model.denoiser.stem.in_channels == 12 * (c.context_frames + 1) + 2 + c.cond_dim * c.action_channels
    with torch.no_grad():
        model.denoiser.embed[0].weight[:, (c.context_frames + 1) * c.level_features :] = 0.0
        inputs = _inputs(model)
        changed = [t.clone() for t in inputs]
        changed[2].mul_(-1.0)
        difference = (model.denoiser.predict(*changed) - model.denoiser.predict(*inputs)).abs().max()
    assert (difference > 1e-3) == c.action_channels


def test_a_copy_skip_network_starts_by_copying_the_newest_context_frame():
    """With the clean frame as its target, the untrained network says "nothing moves": the newest frame."""
    inputs = _inputs(unet_model(config=COPY_SKIP, randomize=False))
    context = inputs[3]
    assert (context[:, -1] - context[:, 0]).abs().max() > 0.5  # the newest frame is told from the oldest
    for config, expected in ((COPY_SKIP, context[:, -1:]), (UNET, torch.zeros_like(context[:, -1:]))):
        with torch.no_grad():
            torch.testing.assert_close(unet_model(config=config, randomize=False).denoiser.predict(*inputs), expected)


def test_training_keeps_uint8_windows_and_the_loss_trains_the_network():
    model = unet_model().train()
    data = model.training_data(episodes())
    assert data["frames"].dtype == torch.uint8 and tuple(data["frames"].shape[1:]) == (4, 1, 3 * SIZE * SIZE)
    assert tuple(data["cond"].shape[1:]) == (4, model.action_encoder.cond_dim)
    loss = model.compute_loss({k: v[:8] for k, v in data.items()})
    loss.backward()
    assert torch.isfinite(loss) and model.denoiser.stem.weight.grad.abs().sum() > 0
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    batch = {k: v[:8] for k, v in data.items()}
    torch.manual_seed(0)
    with torch.no_grad():
        first = float(model.compute_loss(batch))
    for _ in range(30):
        optimizer.zero_grad()
        model.compute_loss(batch).backward()
        optimizer.step()
    torch.manual_seed(0)
    with torch.no_grad():
        assert float(model.compute_loss(batch)) < 0.85 * first


def test_the_change_weight_counts_only_pixels_that_change():
    """Windows whose target repeats the newest context frame lose nothing to the change weight; windows
    whose target differs weigh its pixels 1 + weight (same noise: same seed)."""
    batch = {k: v[:4] for k, v in unet_model().training_data(episodes()).items()}
    still = dict(batch, frames=batch["frames"].clone())
    still["frames"][:, -1] = still["frames"][:, -2]
    losses = {}
    for weight in (0.0, 10.0):
        model = unet_model(config=dataclasses.replace(COPY_SKIP, unet_change_weight=weight)).train()
        for name, windows in (("still", still), ("moving", batch)):
            torch.manual_seed(1)
            with torch.no_grad():
                losses[name, weight] = float(model.compute_loss(windows))
    assert losses["still", 10.0] == pytest.approx(losses["still", 0.0], rel=1e-6)
    assert losses["moving", 10.0] > 5.0 * losses["moving", 0.0]


def test_the_session_streams_quantized_frames_in_bounded_memory():
    model = unet_model()
    episode = episodes(1, 40)[0]
    session = StreamingSession(model, SessionConfig(steps=3, context_level=0.0), seed=0)
    session.reset(episode.observations[:2], episode.actions[:1])
    memory = session.memory_bytes
    for t in range(1, 35):
        frame = session.step(episode.actions[t])
        assert frame.dtype == np.uint8 and frame.shape == (SIZE, SIZE, 3)
        # The frame joins the context exactly as returned (rounded to uint8, committed clean at level 0).
        newest = session.cache.frames[0, -1].numpy()
        np.testing.assert_array_equal(model.tokenizer.decode(newest[None, None]), frame[None])
        assert session.memory_bytes == memory
    assert session.cache.frames_seen == 36 and session.cache.num_frames == 3


def test_bad_configurations_are_refused_clearly():
    with pytest.raises(ValueError, match="sequence_frames = window_frames \\+ 1 = 4"):
        dataclasses.replace(UNET, sequence_frames=6)
    with pytest.raises(ValueError, match="needs model.sink_frames=0"):
        dataclasses.replace(UNET, sink_frames=1)
    with pytest.raises(
        ValueError, match="unet_copy_skip .* needs model.network=unet and model.parameterization=sample"
    ):
        dataclasses.replace(UNET, unet_copy_skip=True)
    with pytest.raises(ValueError, match="unet_coord_channels is a U-Net option; model.network is transformer"):
        WorldModelConfig(unet_coord_channels=True)
    with pytest.raises(ValueError, match="unet_action_channels is a U-Net option; model.network is transformer"):
        WorldModelConfig(unet_action_channels=True)
    with pytest.raises(ValueError, match="unet_change_weight is a U-Net option; model.network is transformer"):
        WorldModelConfig(unet_change_weight=10.0)
    with pytest.raises(ValueError, match=r"model.unet_change_weight must lie in \[0, inf\], got -1.0"):
        dataclasses.replace(UNET, unet_change_weight=-1.0)
    with pytest.raises(ValueError, match="samples autoregressively"):
        StreamingSession(unet_model(), SessionConfig(sampling="rolling"))
    with pytest.raises(ValueError, match="cannot take a state tokenizer"):
        from tests.world_model.conftest import state_model

        state = state_model()
        WorldModel(UNET, state.tokenizer, state.action_encoder, state.observation_space)


@pytest.mark.parametrize("config", [UNET, COORDS, ACTIONS], ids=["plain", "coords", "actions"])
def test_checkpoint_round_trip(tmp_path, config):
    model = unet_model(config=config)
    model.save_pretrained(tmp_path / "unet")
    loaded = WorldModel.from_pretrained(tmp_path / "unet")
    assert loaded.config == model.config and loaded.tokenizer.config() == {"kind": "frames", "image_size": SIZE}
    inputs = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded.denoiser.predict(*inputs), model.denoiser.predict(*inputs))


@pytest.mark.parametrize(
    "config", [UNET, COPY_SKIP, COORDS, ACTIONS], ids=["plain", "copy_skip", "copy_skip_coords", "with_actions"]
)
def test_onnx_export_and_runner_match_torch(tmp_path, config):
    model = unet_model(config=config)
    episode = episodes(1, 30)[0]
    path = tmp_path / "unet.onnx"
    report = export_world_model(model, path, real_obs=episode.observations, real_actions=episode.actions)
    assert set(report.checks) == {"step_random", "step_stream"} and report.max_abs_diff <= 1e-4
    config = SessionConfig(steps=3)
    torch_session = StreamingSession(model, config)
    torch_session.generator = np.random.default_rng(5)
    runner = OnnxWorldModelSession(path, config, seed=5)
    for session in (torch_session, runner):
        session.reset(episode.observations[:3], episode.actions[:2])
    expected = np.stack([torch_session.step(a) for a in episode.actions[2:]])
    got = np.stack([runner.step(a) for a in episode.actions[2:]])
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and difference.mean() < 1e-3
    assert np.abs(np.diff(expected.astype(int), axis=0)).max() > 0  # the stream is not frozen
    assert runner.memory_bytes == torch_session.memory_bytes


def test_check_env_passes_for_a_unet_world_model_env():
    from gymnasium.utils.env_checker import check_env

    from worldsim.world_model.env import WorldModelEnv

    env = WorldModelEnv(model=unet_model(), context_episodes=episodes(2, 8), context_frames=2, render_mode="rgb_array")
    check_env(env)
    obs, info = env.reset(seed=0)
    assert info == {"context_frames": 2}
    next_obs, *_ = env.step(env.action_space.sample())
    assert next_obs.dtype == np.uint8 and next_obs.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(env.render(), next_obs)
