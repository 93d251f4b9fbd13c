"""Actions relative to the current observation: coding, warm starts that move with the reference, training."""

import numpy as np
import pytest
import torch

from tests.policies.test_diffusion_policy import ACTION_DIM, HORIZON, OBS_DIM, STRATEGY_KWARGS, K, make_policy
from worldsim.core.normalizer import Normalizer
from worldsim.policies.action_codec import ActionCodec, fit_relative_normalizer, shift_chunk
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.strategies import STRATEGIES, ChunkContext


def references(seed=0, batch=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, HORIZON, ACTION_DIM, generator=g), torch.randn(batch, OBS_DIM, generator=g)


def test_config_names_one_observation_dimension_per_action_dimension():
    base = dict(obs_shape=(OBS_DIM,), action_dim=ACTION_DIM, discrete_dims=(2,))
    assert DiffusionPolicyConfig(**base, relative_to_obs=(0, 1, -1)).relative_to_obs == (0, 1, -1)
    with pytest.raises(ValueError, match="one entry per action dimension"):
        DiffusionPolicyConfig(**base, relative_to_obs=(0, 1))
    with pytest.raises(ValueError, match="outside the 4 observation"):
        DiffusionPolicyConfig(**base, relative_to_obs=(0, 4, -1))
    with pytest.raises(ValueError, match=r"discrete action dimensions \[2\] cannot be relative"):
        DiffusionPolicyConfig(**base, relative_to_obs=(0, 1, 2))
    with pytest.raises(ValueError, match="state observations"):
        DiffusionPolicyConfig(obs_shape=(8, 8, 3), obs_type="pixels", action_dim=2, relative_to_obs=(0, 1))


def test_codec_round_trips_relative_chunks_and_refuses_other_normalizer_shapes():
    policy = make_policy(relative=True)
    codec = policy.codec
    actions, obs = references()
    history = torch.stack([obs, obs], 1)
    reference = codec.reference(history)
    np.testing.assert_array_equal(reference[:, :2].numpy(), obs[:, :2].numpy())
    assert (reference[:, 2] == 0).all()  # the gripper stays absolute
    model = codec.to_model(actions, reference)
    # Per chunk position: the model sees (action - reference - offset[h]) / scale[h].
    stats = codec.normalizer
    expected = (actions[:, 3, 0] - obs[:, 0] - float(stats.offset[3, 0])) / float(stats.scale[3, 0])
    torch.testing.assert_close(model[:, 3, 0], expected)
    torch.testing.assert_close(codec.to_raw(model, reference), actions)
    with pytest.raises(ValueError, match="per chunk position"):
        ActionCodec(policy.config, Normalizer.fit(np.zeros((4, 5, ACTION_DIM))))


def test_a_carried_over_chunk_is_the_same_raw_actions_shifted():
    codec = make_policy(relative=True).codec
    chunk, _ = references(1)
    old, new = torch.randn(3, ACTION_DIM), torch.randn(3, ACTION_DIM)
    old[:, 2] = new[:, 2] = 0
    moved = codec.carry_over(chunk, 2, old, new)
    torch.testing.assert_close(codec.to_raw(moved, new), shift_chunk(codec.to_raw(chunk, old), 2))
    # Through the sampler too, as RTI asks for it.
    sampler = ChunkContext(denoiser=None, cond=None, schedule=None, parameterization="epsilon", num_train_steps=K,
                           like=chunk, codec=codec, reference=new)  # fmt: skip
    torch.testing.assert_close(sampler.warm_guess(chunk, old, 2), moved)


def test_noisy_tokens_move_only_their_clean_part():
    codec = make_policy(relative=True).codec
    chunk, _ = references(2)
    old, new = torch.randn(3, ACTION_DIM), torch.randn(3, ACTION_DIM)
    signal = np.linspace(1.0, 0.2, HORIZON)  # alpha of each token where it lands (new position j)
    alpha = torch.as_tensor(signal, dtype=chunk.dtype)[None, :, None]
    landed = torch.cat([alpha[:, :1], alpha[:, :-1]], 1)  # a token at old position j + 1 lands at j
    # Linear in the signal: a noise-free token scaled by alpha moves like alpha times the clean token.
    moved = codec.carry_over(landed * chunk, 1, old, new, signal=signal)
    expected = alpha * codec.carry_over(chunk, 1, old, new)
    torch.testing.assert_close(moved[:, :-1], expected[:, :-1], atol=1e-5, rtol=1e-5)


def test_absolute_policies_shift_exactly_in_model_space():
    codec = make_policy().codec
    chunk, _ = references(3)
    assert not codec.position_dependent and codec.reference(torch.zeros(3, 2, OBS_DIM)) is None
    assert torch.equal(codec.carry_over(chunk, 3), shift_chunk(chunk, 3))


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_drives_a_relative_policy(name):
    policy = make_policy(relative=True)
    policy.set_strategy(name, **STRATEGY_KWARGS[name])
    rng = np.random.default_rng(0)
    policy.reset()
    actions = np.stack([policy.select_action(rng.normal(size=OBS_DIM).astype(np.float32)) for _ in range(12)])
    assert actions.shape == (12, ACTION_DIM) and np.isfinite(actions).all()
    assert set(np.unique(actions[:, 2])) <= {-1.0, 1.0}


def test_actions_follow_the_reference():
    """Moving the observation's reference dimensions moves the sampled actions with it, given the same
    network output: the network sees normalized observations, so compare with the encoder held fixed."""
    policy = make_policy(relative=True)
    policy.set_strategy("ddim", steps=5)
    policy.encoder.forward = lambda obs: torch.zeros(obs.shape[0], policy.config.obs_feature_dim)
    obs = np.zeros((2, OBS_DIM), np.float32)
    moved = obs.copy()
    moved[:, :2] += [0.5, -0.25]
    chunks = []
    for history in (obs, moved):
        policy.generator = torch.Generator().manual_seed(0)
        chunks.append(policy.predict_chunk(history))
    np.testing.assert_allclose(chunks[1][:, :2] - chunks[0][:, :2], np.tile([0.5, -0.25], (HORIZON, 1)), atol=1e-5)
    np.testing.assert_array_equal(chunks[1][:, 2], chunks[0][:, 2])


def test_rti_warm_start_is_the_previous_chunk_moved_to_the_new_reference(monkeypatch):
    policy = make_policy(relative=True)
    policy.set_strategy("rti", k=3)
    seen = []
    original = ChunkContext.warm_guess

    def spy(sampler, previous, previous_reference, executed):
        guess = original(sampler, previous, previous_reference, executed)
        codec = sampler.codec
        seen.append((codec.to_raw(previous, previous_reference), codec.to_raw(guess, sampler.reference)))
        return guess

    monkeypatch.setattr(ChunkContext, "warm_guess", spy)
    rng = np.random.default_rng(0)
    for _ in range(3):
        policy.select_action(rng.normal(size=OBS_DIM).astype(np.float32))
    assert len(seen) == 2
    for previous_raw, guess_raw in seen:
        torch.testing.assert_close(guess_raw, shift_chunk(previous_raw, 1))


def test_relative_normalizer_is_fitted_per_chunk_position():
    config = DiffusionPolicyConfig(obs_shape=(OBS_DIM,), action_dim=2, horizon=HORIZON, relative_to_obs=(1, -1))
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(50, 2, OBS_DIM))
    actions = obs[:, -1:, [1, 1]] + np.linspace(0, 1, HORIZON)[None, :, None] * rng.uniform(-1, 1, (50, 1, 2))
    normalizer = fit_relative_normalizer(config, obs, actions, "minmax")
    assert normalizer.shape == (HORIZON, 2)
    assert normalizer.scale[0, 0] == 1.0  # the first action sits on its reference: passed through, not divided by 0
    assert normalizer.scale[-1, 0] > normalizer.scale[1, 0]  # later positions range further


def test_save_load_round_trip_keeps_the_relative_coding(tmp_path):
    policy = make_policy(relative=True)
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = type(policy).from_pretrained(tmp_path / "ckpt")
    assert loaded.config.relative_to_obs == (0, 1, -1) and loaded.codec.normalizer.shape == (HORIZON, ACTION_DIM)
    obs = np.random.default_rng(4).normal(size=(2, OBS_DIM)).astype(np.float32)
    chunks = []
    for p in (policy, loaded):
        p.set_strategy("rti", k=3)
        p.generator = torch.Generator().manual_seed(5)
        chunks.append([p.predict_chunk(obs, executed_steps=1) for _ in range(3)])
    np.testing.assert_array_equal(np.stack(chunks[0]), np.stack(chunks[1]))
