"""Real-time chunking's frozen prefix: the actions that run while a chunk is computed come back unchanged
from every strategy that inpaints, and the rest of the chunk is sampled around them."""

import numpy as np
import pytest

from tests.policies.test_diffusion_policy import ACTION_DIM, HORIZON, OBS_DIM, make_policy
from worldsim.policies.strategies import soft_mask_levels

INPAINTING = {"rtc": {"steps": 5}, "rtc_hard": {"steps": 5, "soft": False}, "rti": {"k": 3}}


def _strategy(policy, name):
    policy.set_strategy(name.split("_")[0], **INPAINTING[name])


def _prefix(rng, d, batch=2):
    """Raw actions inside the test policy's action space, the gripper (dim 2) exactly ±1."""
    prefix = rng.uniform(-0.9, 0.9, (batch, d, ACTION_DIM)).astype(np.float32)
    prefix[..., 2] = np.sign(prefix[..., 2])
    return prefix


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("name", INPAINTING)
def test_every_inpainting_strategy_returns_the_prefix_exactly(name, relative):
    policy = make_policy(relative=relative)
    _strategy(policy, name)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2, 2, OBS_DIM)).astype(np.float32)
    policy.predict_chunks(obs, executed_steps=0)  # the episode's first chunk: nothing is frozen
    for d in (1, 3, HORIZON - 1):
        prefix = _prefix(rng, d)
        chunk = policy.predict_chunks(obs + 0.1 * d, executed_steps=4, prefix=prefix)
        assert chunk.shape == (2, HORIZON, ACTION_DIM)
        np.testing.assert_array_equal(chunk[:, :d], prefix)
        # The rest is sampled, not copied: it differs from the prefix's last action somewhere.
        assert np.abs(chunk[:, d:, :2] - prefix[:, -1:, :2]).max() > 1e-3


def test_naive_strategies_ignore_the_prefix():
    """ddim (and rti told not to freeze) sample the same chunk with or without a prefix, given the same noise."""
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(1, 2, OBS_DIM)).astype(np.float32)
    prefix = _prefix(rng, 3, batch=1)
    for name, kwargs in (("ddim", {"steps": 5}), ("rti", {"k": 3, "freeze_prefix": False})):
        policy = make_policy()
        chunks = []
        for given in (None, prefix):
            policy.set_strategy(name, **kwargs)
            policy.seed(7)
            policy.predict_chunks(obs, executed_steps=0)
            chunks.append(policy.predict_chunks(obs, executed_steps=2, prefix=given))
        np.testing.assert_array_equal(chunks[0], chunks[1])
        assert not np.allclose(chunks[1][:, :3, :2], prefix[..., :2])


def test_single_prediction_takes_a_prefix_too():
    policy = make_policy()
    policy.set_strategy("rtc", steps=5)
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(2, OBS_DIM)).astype(np.float32)
    policy.predict_chunk(obs)
    prefix = _prefix(rng, 2, batch=1)[0]
    np.testing.assert_array_equal(policy.predict_chunk(obs, executed_steps=2, prefix=prefix)[:2], prefix)


def test_bad_prefixes_are_refused_with_the_reason():
    policy = make_policy()
    policy.set_strategy("rtc")
    obs = np.zeros((2, OBS_DIM), np.float32)
    with pytest.raises(ValueError, match=r"frozen prefix must have shape \[1, d, 3\]"):
        policy.predict_chunk(obs, prefix=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="leaves nothing of the 8-action chunk"):
        policy.predict_chunk(obs, prefix=np.zeros((HORIZON, ACTION_DIM)))
    with pytest.raises(ValueError, match="frozen prefix contains NaN"):
        policy.predict_chunk(obs, prefix=np.full((2, ACTION_DIM), np.nan))


def test_soft_mask_decays_over_the_overlap():
    levels = soft_mask_levels(horizon=8, frozen=2, executed=3)
    assert levels[:2] == [0.0, 0.0]  # frozen
    assert levels[5:] == [1.0, 1.0, 1.0]  # past the previous chunk's end: from noise
    overlap = levels[2:5]
    assert all(0.0 < a < b < 1.0 for a, b in zip(overlap[:-1], overlap[1:], strict=False))
    # Nothing left to overlap: a hard mask.
    assert soft_mask_levels(horizon=8, frozen=4, executed=6) == [0.0] * 4 + [1.0] * 4


def test_training_time_prefix_conditioning_gives_a_clean_prefix_left_out_of_the_loss():
    """Each training chunk's first d actions (d drawn up to prefix_conditioning) reach the network clean and
    do not count in the loss."""
    import torch

    policy = make_policy(seed=3)
    policy.config.prefix_conditioning = 5
    seen = {}

    class Recording(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x_t, levels, cond, **kwargs):
            seen["x_t"], seen["levels"] = x_t.detach(), levels.detach()
            pred = self.inner(x_t, levels, cond, **kwargs)
            seen["pred"] = pred
            return pred

    policy.denoiser = Recording(policy.denoiser)
    rng = np.random.default_rng(0)
    batch = {
        "obs": torch.as_tensor(rng.normal(size=(64, 2, OBS_DIM)), dtype=torch.float32),
        "action": torch.as_tensor(rng.uniform(-1, 1, (64, HORIZON, ACTION_DIM)), dtype=torch.float32),
    }
    batch["action"][..., 2] = batch["action"][..., 2].sign()
    torch.manual_seed(0)
    loss = policy.compute_loss(batch)
    clean_tokens = seen["levels"] == 0
    lengths = clean_tokens.sum(1)
    # A prefix, of every length from 0 to 5 in a batch of 64, and never a clean token after a noisy one.
    assert set(lengths.tolist()) == set(range(6))
    assert torch.equal(clean_tokens, torch.arange(HORIZON)[None] < lengths[:, None])
    clean = policy.codec.to_model(batch["action"], policy.codec.reference(batch["obs"]))
    # (level 0 of the cosine schedule keeps a residual noise of sigma(0) ~ 2e-4: allow five of it)
    residual = 5 * float(policy.schedule.sigma(torch.zeros(())))
    torch.testing.assert_close(seen["x_t"][clean_tokens], clean[clean_tokens], atol=residual, rtol=0)
    assert (seen["x_t"][~clean_tokens] - clean[~clean_tokens]).abs().max() > 100 * residual
    # The prefix's predictions do not reach the loss: their gradient is zero, the others' is not.
    (grad,) = torch.autograd.grad(loss, seen["pred"])
    assert grad[clean_tokens].abs().max() == 0 and grad[~clean_tokens].abs().max() > 0


def test_prefix_conditioning_must_leave_a_token_to_learn():
    from worldsim.policies.config import DiffusionPolicyConfig

    with pytest.raises(ValueError, match="policy.prefix_conditioning"):
        DiffusionPolicyConfig(horizon=8, prefix_conditioning=8)
