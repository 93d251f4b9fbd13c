import pytest
import torch

from worldsim.core.losses import diffusion_forcing_loss, immiscible_noise, sample_levels
from worldsim.core.schedules import CosineSchedule, FlowMatchingSchedule


def test_sample_levels_grid_and_sharing():
    g = torch.Generator().manual_seed(0)
    levels = sample_levels(CosineSchedule(100), 64, 8, generator=g)
    assert torch.allclose((levels * 100).round(), levels * 100) and levels.min() >= 0.01 and levels.max() <= 1
    assert (levels.std(1) > 0).all()
    shared = sample_levels(CosineSchedule(100), 64, 8, shared_level_prob=1.0, generator=g)
    assert (shared == shared[:, :1]).all()
    flow = sample_levels(FlowMatchingSchedule(), 64, 8, generator=g)
    assert flow.min() > 0 and flow.max() <= 1
    with pytest.raises(ValueError, match="shared_level_prob"):
        sample_levels(CosineSchedule(), 2, 2, shared_level_prob=2.0)


def test_immiscible_assignment_is_a_closer_permutation():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(32, 4, 3, generator=g) + 2.0
    noise = torch.randn(32, 4, 3, generator=g)
    paired = immiscible_noise(x0, noise, "assignment")
    assert sorted(paired.reshape(32, -1).sum(1).tolist()) == pytest.approx(
        sorted(noise.reshape(32, -1).sum(1).tolist())
    )
    assert (paired - x0).pow(2).sum() < (noise - x0).pow(2).sum()


def test_immiscible_knn_keeps_the_nearest_candidate():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(16, 2, 2, generator=g)
    noise = torch.randn(16, 2, 2, generator=g)
    picked = immiscible_noise(x0, noise, "knn", knn_k=8, generator=g)
    assert ((picked - x0).pow(2).sum((1, 2)) <= (noise - x0).pow(2).sum((1, 2)) + 1e-6).all()
    with pytest.raises(ValueError, match="unknown immiscible"):
        immiscible_noise(x0, noise, "sinkhorn")


def test_mask_excludes_padding_tokens():
    x0 = torch.zeros(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])

    def model(x_t, level, cond):
        pred = torch.zeros_like(x_t)
        pred[~mask] = 1e6  # garbage where the data is padding
        return pred

    loss = diffusion_forcing_loss(model, x0, CosineSchedule(), parameterization="sample", mask=mask)
    assert loss.item() == 0.0
    with pytest.raises(ValueError, match="mask must have shape"):
        diffusion_forcing_loss(model, x0, CosineSchedule(), mask=mask[:, :3])


def test_element_weights_scale_each_value_in_its_token_mean():
    """With the clean sample as the target and a model that predicts zeros, the loss is the weighted mean of
    x0 squared, computed here by hand."""
    x0 = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    weights = torch.ones_like(x0)
    weights[:, :, 0] = 11.0

    def model(x_t, level, cond):
        return torch.zeros_like(x_t)

    loss = diffusion_forcing_loss(model, x0, CosineSchedule(), parameterization="sample", element_weights=weights)
    torch.testing.assert_close(loss, (weights * x0**2).mean())
    assert loss > 1.5 * (x0**2).mean()
    with pytest.raises(ValueError, match=r"element_weights must have the shape of x0, \[2, 3, 4\], got \[2, 3, 1\]"):
        diffusion_forcing_loss(model, x0, CosineSchedule(), element_weights=weights[..., :1])


def test_explicit_levels_and_frames():
    seen = {}

    def model(x_t, level, cond):
        seen["level"] = level
        return torch.zeros_like(x_t)

    x0 = torch.randn(2, 6, 3)
    levels = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.2, 0.9]])
    for weighting in ("none", "min_snr"):
        diffusion_forcing_loss(model, x0, CosineSchedule(), tokens_per_frame=2, levels=levels, weighting=weighting)
    assert torch.equal(seen["level"], levels.repeat_interleave(2, 1))
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        diffusion_forcing_loss(model, x0, CosineSchedule(), tokens_per_frame=2, levels=levels + 1)
    with pytest.raises(ValueError, match="frames"):
        diffusion_forcing_loss(model, x0, CosineSchedule(), tokens_per_frame=4)
    with pytest.raises(ValueError, match="NaN"):
        diffusion_forcing_loss(model, x0 * float("nan"), CosineSchedule())
