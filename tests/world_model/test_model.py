import json

import numpy as np
import pytest
import torch

from tests.world_model.conftest import TINY, PointMass, pixel_model, state_model
from worldsim.core.checkpoint import CheckpointError
from worldsim.core.normalizer import Normalizer
from worldsim.core.trainer import Trainer, TrainerConfig
from worldsim.world_model.data import RandomWalkActor, collect_episodes
from worldsim.world_model.held_out import one_step_error
from worldsim.world_model.model import WorldModel, WorldModelConfig, resolve_checkpoint
from worldsim.world_model.self_forcing import own_rollout_windows
from worldsim.world_model.tokenizers import ActionEncoder, StateTokenizer


def test_tiny_model_trained_briefly_beats_copy_last_frame():
    """On held-out rollouts the trained model's one-step error is well below the copy-last-frame baseline."""
    torch.manual_seed(0)
    env = PointMass()
    actor = RandomWalkActor(env.action_space, step_scale=0.5, seed=0)
    train = collect_episodes(env, [actor], 40, seed=0, max_steps=40, progress=False)
    held_out = collect_episodes(env, [actor], 8, seed=1000, max_steps=40, progress=False)
    observations = np.concatenate([e.observations for e in train])
    actions = np.concatenate([e.actions for e in train])
    model = WorldModel(
        WorldModelConfig(width=64, depth=2, heads=2, sequence_frames=6, sink_frames=1, window_frames=3),
        StateTokenizer(Normalizer.fit(observations)),
        ActionEncoder(env.action_space, Normalizer.fit(actions)),
        env.observation_space,
    )
    data = model.training_data(train)
    held_out_data = model.training_data(held_out, stride=3)
    config = TrainerConfig(
        steps=400, batch_size=64, learning_rate=2e-3, warmup_steps=50, ema_decay=0.99, progress=False
    )
    trainer = Trainer(model, data, config)
    trainer.fit()
    errors = one_step_error(trainer.ema_model, held_out_data, generator=torch.Generator().manual_seed(0))
    assert errors["one_step_mse"] < 0.5 * errors["copy_last_mse"], errors


def test_training_levels_mix_near_clean_context_and_full_range():
    model = state_model()
    levels = model.training_levels(256, 16, torch.Generator().manual_seed(0))
    assert levels.shape == (256, 16)
    # The oracle is the rule itself: with probability p a level is uniform on [0, c) (context), else uniform on
    # (0, 1]. So P(level <= c) = p + (1 - p) c, and each side of c is uniform. 4,096 draws: 4 sigma ~ 0.03.
    p, c = model.config.context_prob, model.config.context_noise
    near_clean = levels <= c
    assert near_clean.float().mean().item() == pytest.approx(p + (1 - p) * c, abs=0.03)
    assert levels[near_clean].mean().item() == pytest.approx(c / 2, abs=0.005)
    assert levels[~near_clean].mean().item() == pytest.approx((1 + c) / 2, abs=0.025)


def test_loss_is_finite_and_has_gradients():
    model = state_model().train()
    data = {"frames": torch.randn(4, TINY.sequence_frames, 1, 2), "cond": torch.randn(4, TINY.sequence_frames, 3)}
    loss = model.compute_loss(data)
    loss.backward()
    assert torch.isfinite(loss) and model.denoiser.output.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("make", [state_model, pixel_model, lambda: state_model(discrete=True)])
def test_checkpoint_round_trip(tmp_path, make):
    model = make()
    model.save_pretrained(tmp_path / "ckpt", extra={"command": "python train.py --demo", "env_id": "PointMass"})
    loaded = WorldModel.from_pretrained(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert meta["command"] == "python train.py --demo" and loaded.metadata["env_id"] == "PointMass"
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    p, d = model.tokens_per_frame, model.tokenizer.token_dim
    x, level = torch.randn(1, 3 * p, d), torch.rand(1, 3 * p)
    cond = torch.randn(1, 3 * p, model.action_encoder.cond_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded.denoiser(x, level, cond), model.denoiser(x, level, cond))
        torch.testing.assert_close(loaded.tokenizer.decode(x[:, :p]), model.tokenizer.decode(x[:, :p]), atol=1, rtol=0)


def test_unknown_checkpoint_and_wrong_kind_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint directory 'wm-nonexistent' and no shipped world model"):
        resolve_checkpoint("wm-nonexistent")
    from worldsim.core.checkpoint import save_checkpoint

    save_checkpoint(tmp_path, {"w": torch.zeros(1)}, {"kind": "policy"})
    with pytest.raises(CheckpointError, match="not a 'world_model'"):
        WorldModel.from_pretrained(tmp_path)


def test_config_validation():
    with pytest.raises(ValueError, match="parameterization"):
        WorldModelConfig(parameterization="score")
    with pytest.raises(ValueError, match="sequence_frames"):
        WorldModelConfig(sequence_frames=1)
    with pytest.raises(ValueError, match="observation space"):
        env = PointMass()
        WorldModel(TINY, StateTokenizer(Normalizer.fit(np.zeros((2, 3)))), state_model().action_encoder,
                   env.observation_space)  # fmt: skip


def one_window_of_a_six_frame_model():
    """An untrained model with 6-frame windows and one random window for it: ``(model, obs, actions, data)``."""
    model = state_model(config=WorldModelConfig(width=32, depth=2, heads=2, sequence_frames=6, window_frames=6))
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (6, 2)).astype(np.float32)
    actions = rng.uniform(-1, 1, (1, 5, 2)).astype(np.float32)
    frames = torch.as_tensor(model.tokenizer.encode(obs)).float()[None]
    data = {"frames": frames, "cond": model.frame_conditions(actions)}
    return model, obs, actions, data


def test_self_forcing_windows_are_the_models_own_stream():
    """The generated context of a window equals what a streaming session produces from the same start."""
    from worldsim.world_model.session import SessionConfig, StreamingSession

    model, obs, actions, data = one_window_of_a_six_frame_model()
    own = own_rollout_windows(model, data, steps=2, generator=torch.Generator().manual_seed(7))
    session = StreamingSession(model, SessionConfig(steps=2, context_level=0.0), seed=7)
    session.reset(obs[:1])
    streamed = np.stack([session.step(a) for a in actions[0, :4]])
    np.testing.assert_allclose(model.tokenizer.decode(own["frames"][0, 1:5].numpy()), streamed, atol=1e-4)
    torch.testing.assert_close(own["frames"][0, [0, 5]], data["frames"][0, [0, 5]])  # true first and last
    assert own["target"].tolist() == [[False] * 5 + [True]]
    loss = model.train().compute_loss(own)
    assert torch.isfinite(loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_own_rollout_windows_on_a_gpu_model_match_the_cpu_ones():
    model, _, _, data = one_window_of_a_six_frame_model()
    on_cpu = own_rollout_windows(model, data, generator=torch.Generator().manual_seed(7))
    on_gpu = own_rollout_windows(model.to("cuda"), data, generator=torch.Generator().manual_seed(7))
    assert on_gpu["frames"].device.type == "cpu"  # back where the trainer keeps its data
    torch.testing.assert_close(on_gpu["frames"], on_cpu["frames"], atol=1e-4, rtol=1e-4)
