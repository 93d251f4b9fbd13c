import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.world_model.conftest import PointMass, pixel_model
from worldsim.core.normalizer import Normalizer
from worldsim.world_model.autoencoder import AutoencoderConfig, ConvAutoencoder
from worldsim.world_model.data import NoisyExpert, RandomWalkActor, collect_episodes
from worldsim.world_model.rewards import PushTCoverageReward
from worldsim.world_model.tokenizers import ActionEncoder, PixelTokenizer, StateTokenizer


def test_collect_episodes_records_consistent_transitions():
    env = PointMass()
    episodes = collect_episodes(env, [RandomWalkActor(env.action_space, seed=0)], 3, seed=7, max_steps=12,
                                progress=False)  # fmt: skip
    assert [len(e) for e in episodes] == [12, 12, 12]
    for e in episodes:
        assert e.observations.shape == (13, 2) and e.actions.shape == (12, 2) and e.actions.dtype == np.float32
        np.testing.assert_allclose(e.observations[1:], np.clip(e.observations[:-1] + 0.2 * e.actions, -1, 1), atol=1e-6)
    again = collect_episodes(env, [RandomWalkActor(env.action_space, seed=0)], 3, seed=7, max_steps=12, progress=False)
    np.testing.assert_array_equal(episodes[2].actions, again[2].actions)


def test_random_walk_moves_smoothly_and_reflects_off_the_bounds():
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    actor = RandomWalkActor(space, step_scale=0.1, seed=0)
    actions = np.stack([actor(None, None) for _ in range(500)])
    assert all(space.contains(a) for a in actions)
    # Gaussian steps of std 0.1 x the half-range 1: E|step| = 0.1 sqrt(2 / pi) = 0.080 (measured 0.076; the
    # mean of 998 steps has a standard error of 0.002).
    assert np.abs(np.diff(actions, axis=0)).mean() == pytest.approx(0.1 * np.sqrt(2 / np.pi), rel=0.1)
    # It reaches the walls (measured: within 0.003 of -1 on both axes) but bounces back instead of sitting
    # on them, as clipping alone would.
    assert (actions.min(0) < -0.99).all() and not (np.abs(actions) == 1).any()
    discrete = RandomWalkActor(gym.spaces.Discrete(3), seed=0)
    assert {discrete(None, None) for _ in range(50)} == {0, 1, 2}


def test_noisy_expert_and_actor_errors():
    space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    noisy = NoisyExpert(lambda obs, info: np.array([1.8, 0.0]), space, noise_std=0.5, seed=0)
    actions = np.stack([noisy(None, None) for _ in range(200)])
    # The oracle: the rule drawn with another generator, many times. The noise std is a fraction of the
    # half-range (2), so the draws have std 1 before clipping. Tolerances: about 4 standard errors of 200 draws.
    oracle = np.clip(np.array([1.8, 0.0]) + 0.5 * 2.0 * np.random.default_rng(1).normal(size=(200_000, 2)), -2, 2)
    np.testing.assert_allclose(actions.mean(0), oracle.mean(0), atol=0.25)
    np.testing.assert_allclose(actions.std(0), oracle.std(0), rtol=0.15)
    assert (actions[:, 0] == 2.0).mean() == pytest.approx((oracle[:, 0] == 2.0).mean(), abs=0.14)
    with pytest.raises(ValueError, match="bounded"):
        RandomWalkActor(gym.spaces.Box(-np.inf, np.inf, (2,)))
    with pytest.raises(ValueError, match="max_steps"):
        collect_episodes(PointMass(), [RandomWalkActor(space)], 1, ignore_termination=True)


def test_state_tokenizer_round_trip():
    data = np.random.default_rng(0).uniform(-3, 5, (100, 4))
    tokenizer = StateTokenizer(Normalizer.fit(data, "minmax"))
    tokens = tokenizer.encode(data[:7])
    assert tokens.shape == (7, 1, 4)
    # min-max: each dimension's fitted range maps onto [-1, 1]
    low, high = data.min(0), data.max(0)
    np.testing.assert_allclose(tokens[:, 0], 2 * (data[:7] - low) / (high - low) - 1, atol=1e-5)
    np.testing.assert_allclose(tokenizer.decode(tokens), data[:7], atol=1e-5)


def test_delta_state_tokens_carry_the_standardized_change():
    rng = np.random.default_rng(1)
    episodes = [np.cumsum(rng.normal(0, 0.01, (50, 3)), 0) + rng.uniform(-2, 2, 3) for _ in range(4)]
    tokenizer = StateTokenizer.fit(episodes, mode="meanstd", delta=True)
    assert tokenizer.token_dim == 6 and tokenizer.delta
    obs = episodes[0][:8]
    tokens = tokenizer.encode(obs)
    # the change part: (x_t - x_{t-1} - mean change) / std change, over all recorded steps; none for frame 0
    steps = np.concatenate([np.diff(e, axis=0) for e in episodes])
    expected = (np.diff(obs, axis=0) - steps.mean(0)) / steps.std(0)
    np.testing.assert_allclose(tokens[1:, 0, 3:], expected, rtol=1e-4, atol=1e-4)
    # decoding onto the previous observation gives the state back, in numpy and in torch alike
    np.testing.assert_allclose(tokenizer.decode(tokens[1:], obs[:-1]), obs[1:], atol=1e-9)
    torch_tokens = tokenizer.encode(torch.as_tensor(obs))
    np.testing.assert_allclose(torch_tokens.numpy(), tokens, atol=1e-9)
    # a token whose absolute part disagrees with its change is re-based onto the frame before
    drifted = tokens[2:3].copy()
    drifted[:, 0, :3] += 5.0
    np.testing.assert_allclose(tokenizer.rebase(drifted, tokens[1:2]), tokens[2:3], atol=1e-9)
    with pytest.raises(ValueError, match="pass previous"):
        tokenizer.decode(tokens)
    restored = StateTokenizer.from_tensors(tokenizer.tensors(), tokenizer.config())
    np.testing.assert_allclose(restored.encode(obs), tokens, atol=1e-5)


@pytest.mark.parametrize("mode", ["meanstd", "minmax"])
def test_dimensions_that_never_or_barely_change_stay_put_under_a_wrong_change(mode):
    """A fixed goal, and a blocked finger that moves 2e-6 once per episode (FetchPush): a unit error in
    their predicted (normalized) change moves them by < 1e-5."""
    rng = np.random.default_rng(2)
    finger = np.zeros((30, 1))
    finger[0] = -1.7e-6
    episodes = [np.c_[np.cumsum(rng.normal(0, 0.1, (30, 2)), 0), np.full((30, 1), 0.45), finger] for _ in range(3)]
    tokenizer = StateTokenizer.fit(episodes, mode=mode, delta=True)
    tokens = tokenizer.encode(episodes[0])
    tokens[:, 0, 4:] += 1.0  # one unit of error in every change
    decoded = tokenizer.decode(tokens[1:], episodes[0][:-1])
    assert np.abs(decoded[:, 2] - 0.45).max() < 1e-5 and np.abs(decoded[:, 3]).max() < 1e-5
    assert np.abs(decoded[:, :2] - episodes[0][1:, :2]).min() > 0.01  # the moving dimensions do move


def test_an_angle_wrapped_at_the_seam_changes_the_short_way_round():
    """FetchPush's block angles sit near +-pi and cross the seam: taken raw, those 2 pi jumps set the change
    scale, so a unit error in a predicted change was 0.16 rad at rest; taken the short way round it stays
    on the scale of the angle's real motion, and decoding lands back in [-pi, pi)."""
    rng = np.random.default_rng(3)
    turning = [np.cumsum(rng.normal(0, 0.02, (200, 1)), 0) + np.pi - 0.05 for _ in range(4)]
    other = [np.cumsum(rng.normal(0, 0.02, (200, 1)), 0) for _ in range(4)]
    episodes = [np.c_[np.mod(a + np.pi, 2 * np.pi) - np.pi, b] for a, b in zip(turning, other, strict=True)]
    assert any((np.abs(np.diff(e[:, 0])) > np.pi).any() for e in episodes)  # the data crosses the seam
    tokenizer = StateTokenizer.fit(episodes, mode="meanstd", delta=True)
    assert tokenizer.angle_dims == (0,)
    scale = tokenizer.delta_normalizer.unnormalize(np.ones((1, 2))) - tokenizer.delta_normalizer.unnormalize(
        np.zeros((1, 2))
    )
    assert scale[0, 0] < 0.05  # the raw differences' standard deviation is 1.4 here
    # a state just below +pi moved by +0.03 comes back just above -pi, and encodes to the same change
    previous = np.array([[np.pi - 0.01, 0.0]])
    nxt = np.array([[-np.pi + 0.02, 0.0]])
    tokens = tokenizer.encode(nxt, previous)
    np.testing.assert_allclose(tokenizer.delta_normalizer.unnormalize(tokens[:, 0, 2:])[0, 0], 0.03, atol=1e-9)
    np.testing.assert_allclose(tokenizer.decode(tokens, previous), nxt, atol=1e-9)
    torch_decoded = tokenizer.decode(torch.as_tensor(tokens), torch.as_tensor(previous))
    np.testing.assert_allclose(torch_decoded.numpy(), nxt, atol=1e-9)
    restored = StateTokenizer.from_tensors(tokenizer.tensors(), tokenizer.config())
    assert restored.angle_dims == (0,)
    assert (
        StateTokenizer.from_tensors(tokenizer.tensors(), {"kind": "state", "mode": "meanstd", "delta": True}).angle_dims
        == ()
    )
    with pytest.raises(ValueError, match="angle_dims need a delta tokenizer"):
        StateTokenizer(tokenizer.normalizer, None, (0,))
    with pytest.raises(ValueError, match="outside a 2-dimensional state"):
        StateTokenizer(tokenizer.normalizer, tokenizer.delta_normalizer, (2,))


def test_pixel_tokens_are_cells_of_the_latent_grid():
    tokenizer = pixel_model().tokenizer
    latents = torch.randn(3, 4, 2, 2)
    tokens = tokenizer.latents_to_tokens(latents)
    assert tokens.shape == (3, 4, 4)
    torch.testing.assert_close(tokens[:, 1], latents[:, :, 0, 1])  # token (row 0, col 1) = that latent cell
    torch.testing.assert_close(tokenizer.tokens_to_latents(tokens), latents)
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    decoded = tokenizer.decode(tokenizer.encode(frames))
    assert decoded.shape == (2, 32, 32, 3) and decoded.dtype == np.uint8
    with pytest.raises(ValueError, match=r"images must have shape \[N, 32, 32, 3\]"):
        tokenizer.encode(frames[:, :16])


@pytest.mark.parametrize("downsample, side", [(16, 2), (8, 4)])
def test_autoencoder_downsample_sets_the_latent_grid_and_survives_a_checkpoint(downsample, side):
    torch.manual_seed(0)
    config = AutoencoderConfig(image_size=32, channels=8, latent_channels=4, downsample=downsample)
    autoencoder = ConvAutoencoder(config).eval()
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    latents = autoencoder.encode(torch.from_numpy(frames))
    assert autoencoder.latent_side == side and latents.shape == (2, 4, side, side)
    assert autoencoder.decode(latents).shape == (2, 3, 32, 32)
    tokenizer = PixelTokenizer(autoencoder, None, tokens_per_frame=4)
    assert tokenizer.token_dim == 4 * (side // 2) ** 2
    restored = PixelTokenizer.from_tensors(tokenizer.tensors(), tokenizer.config())
    assert restored.autoencoder.config.downsample == downsample
    torch.testing.assert_close(restored.encode(frames), tokenizer.encode(frames))


def test_autoencoder_refuses_other_downsampling():
    with pytest.raises(ValueError, match="downsample must be 8 or 16, got 4"):
        AutoencoderConfig(downsample=4)


def test_action_encoder():
    box = ActionEncoder(gym.spaces.Box(-2.0, 2.0, (2,), np.float32), Normalizer.fit(np.array([[-2.0, -2], [2, 2]])))
    np.testing.assert_allclose(box.encode(np.array([[2.0, -2.0], [9.0, 0.0]])), [[1, -1, 1], [1, 0, 1]])  # clipped
    np.testing.assert_array_equal(box.no_action(2), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        box.encode(np.zeros((1, 3)))
    discrete = ActionEncoder(gym.spaces.Discrete(3, start=1))
    np.testing.assert_array_equal(discrete.encode(np.array([1, 3])), [[1, 0, 0, 1], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"\[1, 4\)"):
        discrete.encode(np.array([0]))
    with pytest.raises(ValueError, match="Box and Discrete"):
        ActionEncoder(gym.spaces.MultiBinary(3))


def test_pusht_reward_matches_the_simulator():
    os.environ.setdefault("MUJOCO_GL", "egl")
    env = gym.make("worldsim/PushT-v0")
    reward = PushTCoverageReward()
    env.action_space.seed(0)
    # Seeds whose block starts partly on the goal (measured coverage 0.25, 0.45 and 0.03; seeds 1-5 start at 0,
    # where agreement would prove nothing), then a few steps each. Both rules rasterize the T on the same 2 mm
    # grid, measured identical; 0.002 allows float32 observations to flip ~3 of the T's 1,575 cells.
    for seed in (0, 6, 7):
        obs, info = env.reset(seed=seed)
        assert info["coverage"] > 0.02
        for _ in range(4):
            assert reward.coverage(obs) == pytest.approx(info["coverage"], abs=0.002)
            obs, _, _, _, info = env.step(env.action_space.sample())
    goal = np.array([0.0, 0.5, 0.0, 0.0, np.cos(np.pi / 4), np.sin(np.pi / 4)], np.float32)
    assert reward(goal, None, goal) == 1.0 and reward.terminated(goal)
    env.close()


@pytest.mark.parametrize("delta", [True, False])
def test_decoded_states_are_kept_within_the_recorded_span_widened_by_a_tenth(delta):
    """A frame decoded past the data (a change far beyond any recorded, or an absolute part out of range) is
    clipped to the recorded span widened by 10% of it on each side, in numpy and torch; inside, nothing moves.
    The range travels in the tensors; a checkpoint from before it decodes unbounded."""
    episodes = [np.stack([np.linspace(0.0, 2.0, 30), np.linspace(-1.0, -0.5, 30)], 1), np.zeros((10, 2))]
    tokenizer = StateTokenizer.fit(episodes, mode="meanstd", delta=delta)
    low, high = tokenizer.state_range
    np.testing.assert_allclose(low, [-0.2, -1.1], atol=1e-6)  # spans 2.0 and 1.0 (the zeros included)
    np.testing.assert_allclose(high, [2.2, 0.1], atol=1e-6)
    previous = np.array([[1.9, -0.2]])
    far = np.array([[40.0, -30.0]])  # a step no recorded frame came near
    inside = np.array([[2.05, 0.05]])  # past the data, within the margin
    for target, expected in ((far, [[2.2, -1.1]]), (inside, inside)):
        tokens = tokenizer.encode(target, previous)
        np.testing.assert_allclose(tokenizer.decode(tokens, previous), expected, atol=1e-5)
        decoded = tokenizer.decode(torch.as_tensor(tokens), torch.as_tensor(previous, dtype=torch.float32))
        np.testing.assert_allclose(decoded.numpy(), expected, atol=1e-5)
    restored = StateTokenizer.from_tensors(tokenizer.tensors(), tokenizer.config())
    np.testing.assert_array_equal(restored.state_range[0], low)
    older = {k: v for k, v in tokenizer.tensors().items() if not k.startswith("tokenizer.range.")}
    unbounded = StateTokenizer.from_tensors(older, tokenizer.config())
    assert unbounded.state_range is None
    np.testing.assert_allclose(unbounded.decode(tokenizer.encode(far, previous), previous), far, rtol=1e-5)
    with pytest.raises(ValueError, match=r"state_range must be \(low, high\) of shape \(2,\) with low <= high"):
        StateTokenizer(tokenizer.normalizer, state_range=(high, low))


def test_a_cosine_and_sine_pair_is_decoded_back_onto_the_unit_circle():
    """A block's angle given as cos and sin (dims 1, 2) beside a position (dim 0): found in the data; a decoded
    frame whose pair left the circle (a change that moves both by +0.3) is scaled back onto it, in numpy and
    torch, and the position is untouched; the pairs travel in the config, older configs have none."""
    angles = np.linspace(0.0, 3.0, 40)
    episode = np.stack([np.linspace(-1, 1, 40), np.cos(angles), np.sin(angles)], 1)
    tokenizer = StateTokenizer.fit([episode], mode="meanstd", delta=True)
    assert tokenizer.circle_pairs == ((1, 2),)
    previous = np.array([[0.1, np.cos(1.0), np.sin(1.0)]])
    off = previous + np.array([[0.05, 0.3, 0.3]])
    expected = np.concatenate([off[:, :1], off[:, 1:] / np.linalg.norm(off[:, 1:])], 1)
    tokens = tokenizer.encode(off, previous)
    np.testing.assert_allclose(tokenizer.decode(tokens, previous), expected, atol=1e-5)
    decoded = tokenizer.decode(torch.as_tensor(tokens), torch.as_tensor(previous, dtype=torch.float32))
    np.testing.assert_allclose(decoded.numpy(), expected, atol=1e-5)
    assert StateTokenizer.from_tensors(tokenizer.tensors(), tokenizer.config()).circle_pairs == ((1, 2),)
    older = {k: v for k, v in tokenizer.config().items() if k != "circle_pairs"}
    assert StateTokenizer.from_tensors(tokenizer.tensors(), older).circle_pairs == ()
    with pytest.raises(ValueError, match=r"circle_pairs \(\(1, 2\), \(2, 0\)\) must be disjoint pairs"):
        StateTokenizer(tokenizer.normalizer, circle_pairs=((1, 2), (2, 0)))


def test_absolute_dims_are_read_from_the_absolute_part_and_the_rest_integrated():
    """A token whose absolute part and change disagree: dimension 0 (absolute) comes from the absolute part,
    dimension 1 from the previous state plus the change, in numpy and torch alike; a window of frames decodes
    one onto the next; the choice survives a checkpoint."""
    rng = np.random.default_rng(4)
    episodes = [np.cumsum(rng.normal(0, 0.05, (40, 2)), 0) for _ in range(3)]
    episodes.append(np.linspace(-1.0, 1.0, 40)[:, None].repeat(2, 1))  # the data span the values below
    tokenizer = StateTokenizer.fit(episodes, mode="meanstd", delta=True).with_absolute_dims((0,))
    previous = np.array([[0.2, -0.3]])
    tokens = tokenizer.encode(np.array([[0.25, -0.2]]), previous)
    tokens[:, 0, :2] = tokenizer.normalizer.normalize(np.array([[0.9, 0.9]]))  # the absolute part says (0.9, 0.9)
    np.testing.assert_allclose(tokenizer.decode(tokens, previous), [[0.9, -0.2]], atol=1e-9)
    torch_decoded = tokenizer.decode(torch.as_tensor(tokens), torch.as_tensor(previous))
    np.testing.assert_allclose(torch_decoded.numpy(), [[0.9, -0.2]], atol=1e-9)
    # committing re-encodes the decoded state: both parts now agree with it
    np.testing.assert_allclose(tokenizer.rebase(tokens, tokenizer.encode(previous, previous)),
                               tokenizer.encode(np.array([[0.9, -0.2]]), previous), atol=1e-9)  # fmt: skip
    window = np.concatenate([tokens, tokens])  # the same frame twice: dimension 1 moves twice, 0 stays at 0.9
    np.testing.assert_allclose(tokenizer.decode_sequence(window, previous), [[0.9, -0.1]], atol=1e-9)
    restored = StateTokenizer.from_tensors(tokenizer.tensors(), tokenizer.config())
    assert restored.absolute_dims == (0,)
    with pytest.raises(ValueError, match="absolute_dims need a delta tokenizer"):
        StateTokenizer(tokenizer.normalizer, None, (), (0,))
    with pytest.raises(ValueError, match=r"absolute_dims \(2,\) outside a 2-dimensional state"):
        tokenizer.with_absolute_dims((2,))
