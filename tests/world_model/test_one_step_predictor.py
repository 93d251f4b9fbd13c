"""The one-step predictor inside a state tokenizer: its numpy network, the residual tokens, its training."""

import numpy as np
import pytest
import torch

from tests.world_model.conftest import PointMass, state_model
from worldsim.core.episodes import Episode
from worldsim.core.normalizer import Normalizer
from worldsim.world_model.action_encoder import ActionEncoder
from worldsim.world_model.model import WorldModel
from worldsim.world_model.one_step_predictor import OneStepPredictor
from worldsim.world_model.predictor_training import fit_one_step_predictor
from worldsim.world_model.session import SessionConfig, StreamingSession
from worldsim.world_model.state_tokenizer import StateTokenizer


def random_walk_episodes(count: int, steps: int = 40, seed: int = 0) -> list[Episode]:
    env, rng = PointMass(), np.random.default_rng(seed)
    episodes = []
    for i in range(count):
        obs, _ = env.reset(seed=seed + i)
        observations, actions = [obs], rng.uniform(-1, 1, (steps, 2)).astype(np.float32)
        for action in actions:
            observations.append(env.step(action)[0])
        zeros = np.zeros(steps)
        episodes.append(Episode(np.stack(observations), actions, zeros, zeros, zeros, False))
    return episodes


def point_mass_parts():
    episodes = random_walk_episodes(20)
    tokenizer = StateTokenizer.fit([e.observations for e in episodes], mode="meanstd", delta=True)
    actions = ActionEncoder(PointMass().action_space, Normalizer.fit(np.array([[-1.0, -1.0], [1.0, 1.0]]), "minmax"))
    return episodes, tokenizer, actions


def random_predictor(in_dim: int, out_dim: int, seed: int = 0) -> tuple[OneStepPredictor, torch.nn.Sequential]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(in_dim, 8), torch.nn.SiLU(), torch.nn.Linear(8, out_dim))
    layers = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net if isinstance(m, torch.nn.Linear)]
    return OneStepPredictor(layers), net


def test_the_numpy_network_computes_what_torch_does_on_both_array_kinds():
    predictor, net = random_predictor(5, 3)
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    expected = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(predictor(x), expected, atol=1e-5)
    np.testing.assert_allclose(predictor(torch.from_numpy(x)).numpy(), expected, atol=1e-5)
    again = OneStepPredictor.from_tensors(predictor.tensors("p"), "p", 2)
    np.testing.assert_array_equal(again(x), predictor(x))
    with pytest.raises(ValueError, match="takes 5 inputs, got an array of shape"):
        predictor(x[:, :4])
    with pytest.raises(ValueError, match="lacks the one-step predictor's p.2.weight"):
        OneStepPredictor.from_tensors(predictor.tensors("p"), "p", 3)


def test_tokens_carry_the_change_less_the_prediction_and_decode_back():
    episodes, tokenizer, actions = point_mass_parts()
    predictor, net = random_predictor(4 + actions.cond_dim, 2)
    residuals = np.random.default_rng(1).normal(0, 0.2, (50, 2))
    tokenizer = tokenizer.with_predictor(predictor, residuals)
    obs = episodes[0].observations.astype(np.float32)
    conds = actions.conditions(episodes[0].actions)
    tokens = tokenizer.encode(obs, actions=conds)
    # The residual part, computed by hand for frame 3 (the frame before 2 is 1, the action is action 2).
    change = lambda a, b: (a - b - tokenizer.delta_normalizer.offset) / tokenizer.delta_normalizer.scale  # noqa: E731
    inputs = np.concatenate([tokenizer.normalizer.normalize(obs[2]), change(obs[2], obs[1]), conds[2]])
    predicted = net(torch.from_numpy(inputs[None].astype(np.float32))).detach().numpy()[0]
    scale = tokenizer.residual_normalizer
    expected = (change(obs[3], obs[2]) - predicted - scale.offset) / scale.scale
    np.testing.assert_allclose(tokens[3, 0, 2:], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tokens[0, 0, 2:], -scale.offset / scale.scale, atol=1e-6)  # frame 0: no residual
    for i in range(1, len(obs)):
        decoded = tokenizer.decode(tokens[i : i + 1], obs[i - 1 : i], before=obs[max(i - 2, 0)][None],
                                   actions=conds[i - 1 : i])  # fmt: skip
        np.testing.assert_allclose(decoded[0], obs[i], atol=1e-5)
    last = tokenizer.decode_sequence(tokens[2:6], obs[1:2], before=obs[0:1], actions=conds[1:5])
    np.testing.assert_allclose(last[0], obs[5], atol=1e-5)
    states, settled = tokenizer.settle(tokens[4:5], obs[3:4], before=obs[2:3], actions=conds[3:4])
    np.testing.assert_allclose(states[0], obs[4], atol=1e-5)
    np.testing.assert_allclose(settled, tokens[4:5], atol=1e-4)
    frames, conditions = torch.from_numpy(tokens), torch.from_numpy(conds)
    rebased = tokenizer.rebase(frames[4:5], frames[3:4], before_tokens=frames[2:3], actions=conditions[3:4])
    np.testing.assert_allclose(rebased.numpy(), tokens[4:5], atol=1e-4)
    with pytest.raises(ValueError, match="needs the frame before"):
        tokenizer.decode(tokens[1:2], obs[:1])
    with pytest.raises(ValueError, match="expected 39 action conditioning rows, got 40"):
        tokenizer.encode(obs[:40], actions=conds)


def test_a_predictor_needs_delta_tokens_and_its_residual_scale():
    _, tokenizer, actions = point_mass_parts()
    predictor, _ = random_predictor(4 + actions.cond_dim, 2)
    with pytest.raises(ValueError, match="comes with the normalizer of its residual"):
        StateTokenizer(tokenizer.normalizer, tokenizer.delta_normalizer, predictor=predictor)
    with pytest.raises(ValueError, match="needs a delta tokenizer"):
        StateTokenizer(tokenizer.normalizer, None, predictor=predictor, residual_normalizer=tokenizer.normalizer)


@pytest.mark.parametrize("input_noise", [0.0, 0.3])
def test_training_learns_the_point_masss_dynamics(input_noise):
    episodes, tokenizer, actions = point_mass_parts()
    fitted, record = fit_one_step_predictor(
        tokenizer, actions, episodes[:16], random_walk_episodes(4, seed=100), steps=1500, seed=0,
        input_noise=input_noise,
    )  # fmt: skip
    # next = clip(pos + 0.2 a): a function of the inputs, so the held-out error falls far below no change's.
    assert record["held_out_mse"] < 0.05 * record["held_out_mse_of_no_change"]
    assert fitted.predictor is not None and fitted.residual_normalizer.scale.max() < 0.5


def test_a_clean_fraction_keeps_recorded_states_exact_and_is_checked():
    """Noise of 3 change scales on every input blurs the point mass's fit on its own recorded states; with half
    of each batch left clean the held-out error (on true inputs) comes back down, at the same seed and steps."""
    episodes, tokenizer, actions = point_mass_parts()
    held_out = random_walk_episodes(4, seed=100)
    errors = {}
    for fraction in (0.0, 0.5):
        _, record = fit_one_step_predictor(
            tokenizer, actions, episodes[:16], held_out, steps=1500, seed=0, input_noise=3.0, clean_fraction=fraction
        )  # fmt: skip
        assert record["clean_fraction"] == fraction
        errors[fraction] = record["held_out_mse"]
    assert errors[0.5] < 0.5 * errors[0.0]
    with pytest.raises(ValueError, match=r"clean_fraction must lie in \[0, 1\], got 1.5"):
        fit_one_step_predictor(tokenizer, actions, episodes[:4], [], steps=1, seed=0, clean_fraction=1.5)


def test_the_config_refuses_a_clean_fraction_outside_zero_to_one():
    from worldsim.world_model.config import WorldModelConfig

    with pytest.raises(ValueError, match=r"model.predictor_clean_fraction must lie in \[0, 1\], got -0.1"):
        WorldModelConfig(predictor_clean_fraction=-0.1)


def test_a_checkpoint_keeps_the_predictor(tmp_path):
    model = state_model(predictor=True)
    model.save_pretrained(tmp_path / "wm")
    loaded = WorldModel.from_pretrained(tmp_path / "wm").tokenizer
    x = np.random.default_rng(0).normal(size=(3, model.tokenizer.predictor.in_dim)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predictor(x), model.tokenizer.predictor(x))
    np.testing.assert_array_equal(loaded.residual_normalizer.scale, model.tokenizer.residual_normalizer.scale)


def test_a_predictor_models_session_takes_one_step_unless_told():
    from worldsim.world_model.session import SessionConfig, StreamingSession

    assert StreamingSession(state_model(predictor=True)).steps == 1
    assert StreamingSession(state_model(delta=True)).steps == 2
    assert StreamingSession(state_model(predictor=True), SessionConfig(steps=3)).steps == 3
    with pytest.raises(ValueError, match="steps and rolling_window must be >= 1, got 0, 3"):
        SessionConfig(steps=0)


@pytest.mark.parametrize("bounded", [True, False])
def test_a_stream_pushed_off_the_data_stays_within_the_recorded_span(bounded):
    """A predictor biased to move the point 5 change scales per frame (far off anything recorded), streamed
    60 frames on one action: clipped to the tokenizer's range, every frame stays inside it and the stream
    settles at its edge; without a range the same stream leaves it."""
    episodes, fitted, actions = point_mass_parts()
    low, high = fitted.state_range
    weights = np.zeros((2, 4 + actions.cond_dim))
    pushing = OneStepPredictor([(weights, np.full(2, 5.0))])
    tokenizer = StateTokenizer(
        fitted.normalizer, fitted.delta_normalizer, predictor=pushing, residual_normalizer=fitted.delta_normalizer,
        state_range=fitted.state_range if bounded else None,
    )  # fmt: skip
    model = WorldModel(state_model().config, tokenizer, actions, PointMass().observation_space).eval()
    session = StreamingSession(model, SessionConfig(), seed=0)
    session.reset(episodes[0].observations[:1])
    frames = np.stack([session.step(np.zeros(2, np.float32)) for _ in range(60)])
    assert np.isfinite(frames).all()
    outside = (frames < low - 1e-6) | (frames > high + 1e-6)
    if bounded:
        assert not outside.any()
        np.testing.assert_allclose(frames[-1], high, atol=1e-5)  # pushed up in both dimensions, held at the edge
    else:
        assert outside.any() and (frames[-1] > fitted.state_range[1]).all()
