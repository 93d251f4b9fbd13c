"""Choosing, per state dimension, between integrating a delta token's change and reading its absolute part."""

import numpy as np
import pytest

from tests.world_model.conftest import PointMass, state_model
from worldsim.core.angles import unit_circle_pairs
from worldsim.core.episodes import Episode
from worldsim.world_model import decoding, held_out
from worldsim.world_model.data import RandomWalkActor, collect_episodes
from worldsim.world_model.model import WorldModel


def circle_episode(steps: int = 20) -> Episode:
    """A turning block's (cos, sin), as Push-T reports its angle."""
    angle = np.linspace(0.0, 3.0, steps + 1)
    zeros = np.zeros(steps)
    return Episode(np.c_[np.cos(angle), np.sin(angle)], np.zeros((steps, 2), np.float32), zeros, zeros.astype(bool),
                   zeros.astype(bool), False)  # fmt: skip


def rollout_errors(errors_by_decoding):
    """A stand-in for the held-out rollouts: each dimension's error depends on how the tokenizer decodes it."""

    def fake(model, episodes, horizons, *, session=None, seed=0):
        absolute = set(model.tokenizer.absolute_dims)
        per_dim = [errors_by_decoding[d]["absolute" if d in absolute else "integrated"] for d in range(2)]
        return {str(h): {"model_mse_per_dim": per_dim} for h in horizons}

    return fake


# dimension 1's absolute error: worse, better by less than half, better by more than half
@pytest.mark.parametrize("dim1_absolute, chosen", [(0.08, [0]), (0.05, [0]), (0.02, [0, 1])])
def test_a_dimension_reads_its_absolute_part_only_where_that_halves_its_held_out_error(
    monkeypatch, tmp_path, dim1_absolute, chosen
):
    # dimension 0 is set by the action (its absolute part is accurate), dimension 1 drifts (its change is)
    monkeypatch.setattr(decoding, "open_loop_errors", rollout_errors(
        [{"absolute": 0.001, "integrated": 0.04}, {"absolute": dim1_absolute, "integrated": 0.06}]
    ))  # fmt: skip
    model = state_model(delta=True)
    result = decoding.choose_absolute_dims(model, episodes=[])
    assert result["absolute_dims"] == chosen and model.tokenizer.absolute_dims == tuple(chosen)
    assert result["integrated_mse_per_dim"] == pytest.approx([0.04, 0.06])
    assert result["absolute_mse_per_dim"] == pytest.approx([0.001, dim1_absolute])
    model.save_pretrained(tmp_path / "wm")
    assert WorldModel.from_pretrained(tmp_path / "wm").tokenizer.absolute_dims == tuple(chosen)


@pytest.mark.parametrize("dim1_absolute, chosen", [(0.08, []), (0.01, [0, 1])])
def test_an_angles_cos_and_sin_are_decoded_the_same_way(monkeypatch, dim1_absolute, chosen):
    """Alone, dimension 0 would read its absolute part; paired with its sin it goes with the pair's sum."""
    monkeypatch.setattr(decoding, "open_loop_errors", rollout_errors(
        [{"absolute": 0.001, "integrated": 0.04}, {"absolute": dim1_absolute, "integrated": 0.06}]
    ))  # fmt: skip
    model = state_model(delta=True)
    result = decoding.choose_absolute_dims(model, episodes=[circle_episode()])
    assert result["decided_together"] == [[0, 1]]
    assert result["absolute_dims"] == chosen and model.tokenizer.absolute_dims == tuple(chosen)


def test_only_dimensions_on_the_unit_circle_pair_up():
    block = circle_episode()
    near = Episode(block.observations * 1.01, *[getattr(block, f) for f in ("actions", "rewards", "terminations",
                   "truncations", "success")])  # fmt: skip
    assert unit_circle_pairs([block.observations]) == [(0, 1)]
    assert unit_circle_pairs([block.observations, near.observations]) == []  # squares summing to 1.02: no angle
    assert unit_circle_pairs([]) == []


def test_a_plain_state_tokenizer_is_left_alone():
    model = state_model(delta=False)
    assert decoding.choose_absolute_dims(model, episodes=[]) == {"absolute_dims": [], "measured": False}


def test_real_rollouts_report_each_decodings_own_errors():
    """Untrained but randomized point-mass model, real held-out rollouts: the errors reported for each decoding
    are those of the held-out rollouts run with that decoding alone."""
    env = PointMass()
    episodes = collect_episodes(env, [RandomWalkActor(env.action_space, seed=0)], 3, seed=5, max_steps=12,
                                progress=False)  # fmt: skip
    model = state_model(delta=True)
    tokenizer = model.tokenizer
    result = decoding.choose_absolute_dims(model, episodes, horizons=(1, 10))
    for name, dims in (("integrated", ()), ("absolute", (0, 1))):
        model.tokenizer = tokenizer.with_absolute_dims(dims)
        alone = held_out.open_loop_errors(model, episodes, (1, 10), seed=0)
        expected = (np.array(alone["1"]["model_mse_per_dim"]) + np.array(alone["10"]["model_mse_per_dim"])) / 2
        assert result[f"{name}_mse_per_dim"] == pytest.approx(expected)
    assert not np.allclose(result["integrated_mse_per_dim"], result["absolute_mse_per_dim"])  # they do differ


def test_a_failed_measurement_leaves_the_model_as_it_was():
    model = state_model(delta=True)
    tokenizer = model.tokenizer
    with pytest.raises(ValueError, match="open_loop_errors needs at least one episode"):
        decoding.choose_absolute_dims(model, episodes=[])
    assert model.tokenizer is tokenizer


def test_a_choice_that_is_worse_decoded_together_is_dropped(monkeypatch):
    """Dimension 0 alone reads better absolutely, but rollouts that mix the two decodings (coupled
    dimensions, as through a one-step predictor) come further from the recording than integrating both."""

    def one_at_a_time(model, episodes, horizons, *, session=None, seed=0):
        absolute = set(model.tokenizer.absolute_dims)
        per_dim = {0: [0.04, 0.06], 2: [0.001, 0.08]}.get(len(absolute), [0.5, 0.06])
        return {str(h): {"model_mse_per_dim": per_dim} for h in horizons}

    monkeypatch.setattr(decoding, "open_loop_errors", one_at_a_time)
    monkeypatch.setattr(decoding, "unit_circle_pairs", lambda episodes: [])
    result = decoding.choose_absolute_dims(state_model(delta=True), episodes=[])
    # only dimension 0 passes alone; read absolutely beside an integrated 1, the rollouts' error is 0.56 > 0.10
    assert result["absolute_dims"] == []
    assert result["chosen_together_mse_per_dim"] == pytest.approx([0.5, 0.06])
