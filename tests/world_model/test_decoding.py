"""Choosing, per state dimension, between integrating a delta token's change and reading its absolute part."""

import numpy as np
import pytest

from tests.world_model.conftest import PointMass, state_model
from worldsim.world_model import decoding
from worldsim.world_model.data import RandomWalkActor, collect_episodes
from worldsim.world_model.model import WorldModel


def rollout_errors(errors_by_decoding):
    """A stand-in for the held-out rollouts: each dimension's error depends on how the tokenizer decodes it."""

    def fake(model, episodes, horizons, *, session=None, seed=0):
        absolute = set(model.tokenizer.absolute_dims)
        per_dim = [errors_by_decoding[d]["absolute" if d in absolute else "integrated"] for d in range(2)]
        return {str(h): {"model_mse_per_dim": per_dim} for h in horizons}

    return fake


def test_each_dimension_takes_the_decoding_with_the_lower_held_out_error(monkeypatch, tmp_path):
    # dimension 0 is set by the action (its absolute part is accurate), dimension 1 drifts (its change is)
    monkeypatch.setattr(decoding, "open_loop_errors", rollout_errors(
        [{"absolute": 0.001, "integrated": 0.04}, {"absolute": 0.08, "integrated": 0.06}]
    ))  # fmt: skip
    model = state_model(delta=True)
    result = decoding.choose_absolute_dims(model, episodes=[])
    assert result["absolute_dims"] == [0] and model.tokenizer.absolute_dims == (0,)
    assert result["integrated_mse_per_dim"] == pytest.approx([0.04, 0.06])
    assert result["absolute_mse_per_dim"] == pytest.approx([0.001, 0.08])
    model.save_pretrained(tmp_path / "wm")
    assert WorldModel.from_pretrained(tmp_path / "wm").tokenizer.absolute_dims == (0,)


def test_a_plain_state_tokenizer_is_left_alone():
    model = state_model(delta=False)
    assert decoding.choose_absolute_dims(model, episodes=[]) == {"absolute_dims": [], "measured": False}


def test_a_real_rollout_choice_keeps_the_lower_error_per_dimension():
    """Untrained but randomized point-mass model, real held-out rollouts: the reported errors are the two
    decodings' own, and the choice follows them dimension by dimension."""
    env = PointMass()
    episodes = collect_episodes(env, [RandomWalkActor(env.action_space, seed=0)], 3, seed=5, max_steps=12,
                                progress=False)  # fmt: skip
    model = state_model(delta=True)
    result = decoding.choose_absolute_dims(model, episodes, horizons=(1, 10))
    integrated, absolute = np.array(result["integrated_mse_per_dim"]), np.array(result["absolute_mse_per_dim"])
    assert result["absolute_dims"] == [d for d in range(2) if absolute[d] < integrated[d]]
    assert not np.allclose(integrated, absolute)  # the two decodings do differ on an untrained model
