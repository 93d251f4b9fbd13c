import numpy as np
import pytest
import torch

from tests.world_model.conftest import TINY, pixel_model, state_model
from tests.world_model.session_checks import assert_rejects_bad_streams
from worldsim.core.plans import Plan, frozen_prefix
from worldsim.core.rolling import RollingDenoiser
from worldsim.core.sampling import denoise
from worldsim.world_model.session import SessionConfig, StreamingSession


def record_tokens(model):
    """Spy on the tokenizer: every frame a session returns, as the tokens it decoded."""
    seen = []
    decode = model.tokenizer.decode

    def spy(tokens, previous=None, **predictor_inputs):
        seen.append(torch.as_tensor(tokens).clone())
        return decode(tokens, previous, **predictor_inputs)

    model.tokenizer.decode = spy
    return seen


def context(model, frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    space = model.observation_space
    if space.dtype == np.uint8:
        obs = rng.integers(0, 256, (frames, *space.shape), dtype=np.uint8)
    else:
        obs = rng.uniform(-1, 1, (frames, *space.shape)).astype(np.float32)
    actions = rng.uniform(-1, 1, (frames - 1, 2)).astype(np.float32)
    return obs, actions


def reference_inputs(model, obs, context_actions, actions):
    tokens = torch.as_tensor(model.tokenizer.encode(obs)).float()
    encoder = model.action_encoder
    cond = torch.cat([encoder.no_action(1), encoder.encode(context_actions)]) if len(obs) > 1 else encoder.no_action(1)
    return list(tokens), list(cond), list(encoder.encode(actions))


@pytest.mark.parametrize("make", [state_model, pixel_model])
@pytest.mark.parametrize("steps,context_level", [(1, 0.0), (3, 0.0), (2, 0.1)])
def test_autoregressive_stream_equals_uncached_reference(make, steps, context_level):
    """Cached streaming = denoising each new frame after the full (bounded-attention) history, no cache.

    Generated frames enter the history re-noised to ``context_level`` (held there by the plan), real
    context frames clean.
    """
    model = make()
    p, d = model.tokens_per_frame, model.tokenizer.token_dim
    # A context longer than the cache (committed frame by frame), then a stream past its capacity.
    obs, context_actions = context(model, TINY.sink_frames + TINY.window_frames + 2)
    actions = np.random.default_rng(1).uniform(-1, 1, (6, 2)).astype(np.float32)
    session = StreamingSession(model, SessionConfig(steps=steps, context_level=context_level), seed=3)
    session.reset(obs, context_actions)
    streamed = record_tokens(model)
    for action in actions:
        session.step(action)

    frames, conds, action_conds = reference_inputs(model, obs, context_actions, actions)
    frame_levels = [0.0] * len(frames)
    generator = torch.Generator().manual_seed(3)
    window = (TINY.sink_frames, TINY.window_frames)
    with torch.no_grad():
        for i, cond in enumerate(action_conds):
            noise = torch.randn(1, p, d, generator=generator)
            history = torch.cat(frames).reshape(1, -1, d)
            x = torch.cat([history, noise], 1)
            token_cond = torch.stack([*conds, cond]).repeat_interleave(p, 0)[None]
            levels = frozen_prefix(x.shape[1], history.shape[1], steps).levels.copy()
            levels[:, : history.shape[1]] = np.repeat(frame_levels, p)
            out = denoise(
                lambda x_t, level, c: model.denoiser(x_t, level, c, attention_window=window),
                x, Plan(levels), model.schedule, parameterization=model.config.parameterization, cond=token_cond,
            )  # fmt: skip
            new = out[:, -p:]
            torch.testing.assert_close(streamed[i], new, atol=1e-4, rtol=1e-4)
            if context_level > 0:
                commit_noise = torch.randn(1, p, d, generator=generator)
                new = model.schedule.add_noise(new, commit_noise, torch.full((1, p), context_level))
            frames.append(new[0])
            frame_levels.append(context_level)
            conds.append(cond)


@pytest.mark.parametrize("window", [2, 3])
def test_rolling_stream_equals_uncached_reference(window):
    """Within the cache's capacity, the rolling session equals the same RollingDenoiser run on the full history."""
    config = TINY.__class__(**{**TINY.__dict__, "window_frames": 12})
    model = state_model(config=config)
    d = model.tokenizer.token_dim
    obs, context_actions = context(model, 2)
    actions = np.random.default_rng(1).uniform(-1, 1, (8, 2)).astype(np.float32)
    session = StreamingSession(
        model, SessionConfig(sampling="rolling", rolling_window=window, context_level=0.0), seed=5
    )
    session.reset(obs, context_actions)
    streamed = record_tokens(model)
    for action in actions:
        session.step(action)

    frames, conds, action_conds = reference_inputs(model, obs, context_actions, actions)
    last = {}

    def full_history(x, level, cond):
        prefix = torch.stack(frames)[None, :, 0]
        prefix_cond = torch.stack(conds)[None]
        out = model.denoiser(
            torch.cat([prefix, x], 1), torch.cat([torch.zeros(1, prefix.shape[1]), level], 1),
            torch.cat([prefix_cond, cond], 1),
        )[:, prefix.shape[1]:]  # fmt: skip
        last["call"] = (x, level, out)
        return out

    rolling = RollingDenoiser(
        full_history, model.schedule, window=window, parameterization=model.config.parameterization
    )
    generator = torch.Generator().manual_seed(5)
    pending = []
    with torch.no_grad():
        for i, cond in enumerate(action_conds):
            pending.append(cond)
            emitted = rolling.tick(torch.randn(1, 1, d, generator=generator), token_cond=cond[None, None]).emitted
            x, level, pred = last["call"]
            preview, _ = model.schedule.split(pred[:, -1:], x[:, -1:], level[:, -1:], model.config.parameterization)
            torch.testing.assert_close(streamed[i], preview, atol=1e-4, rtol=1e-4)
            if emitted is not None:
                frames.append(emitted[0])
                conds.append(pending.pop(0))
    # A frame leaves the window (and is committed) once it is clean, window - 1 ticks after it entered.
    assert len(frames) == len(obs) + len(actions) - (window - 1)


@pytest.mark.parametrize(
    "config",
    [
        SessionConfig(steps=2),
        SessionConfig(steps=1, context_level=0.0),
        SessionConfig(sampling="rolling", rolling_window=2),
        SessionConfig(steps=1, ema_decay=0.9),
        SessionConfig(steps=1, sink_frames=0),
    ],
)
def test_memory_is_constant_over_a_long_stream(config):
    model = state_model()
    session = StreamingSession(model, config, seed=0)
    obs, _ = context(model, 1)
    session.reset(obs)
    action = np.array([0.3, -0.2], np.float32)
    session.step(action)
    sizes, pointers = set(), set()
    for i in range(300):
        out = session.step(action)
        assert np.isfinite(out).all()
        if i >= 10:
            sizes.add(session.memory_bytes)
            pointers.add((session.cache.keys.data_ptr(), session.cache.values.data_ptr()))
    assert sizes == {session.memory_bytes} and session.memory_bytes > 0
    assert len(pointers) == 1  # the cache's buffers were allocated once and never replaced
    assert session.cache.frames_seen > 300 and session.cache.num_frames == session.cache.capacity_frames


def test_reset_with_seed_is_deterministic_and_seeds_differ():
    model = state_model()
    obs, actions = context(model, 3)
    session = StreamingSession(model, SessionConfig(steps=2))
    runs = []
    for seed in (1, 1, 2):
        session.reset(obs, actions, seed=seed)
        runs.append(np.stack([session.step(np.zeros(2, np.float32)) for _ in range(5)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_discrete_actions():
    model = state_model(discrete=True)
    session = StreamingSession(model, SessionConfig(steps=1), seed=0)
    obs, _ = context(model, 2)
    session.reset(obs, np.array([2]))
    assert session.step(3).shape == (2,)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        session.step(4)
    with pytest.raises(ValueError, match="scalar integer"):
        session.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="integers"):
        session.step(1.5)


def test_bad_inputs_raise_clear_errors():
    model = state_model()
    session = StreamingSession(model, SessionConfig())
    assert_rejects_bad_streams(session, obs_dim=2)
    with pytest.raises(ValueError, match=r"context_obs must have shape"):
        session.reset(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="need the 2 actions"):
        session.reset(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="rolling window"):
        StreamingSession(model, SessionConfig(sampling="rolling", rolling_window=4, window_frames=3))
    with pytest.raises(ValueError, match="sampling"):
        SessionConfig(sampling="pyramid")
