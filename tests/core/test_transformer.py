import math

import pytest
import torch

from worldsim.core import plans
from worldsim.core.losses import diffusion_forcing_loss
from worldsim.core.sampling import denoise
from worldsim.core.schedules import CosineSchedule
from worldsim.core.transformer import CausalTransformer, TransformerConfig


def make_model(tokens_per_frame=1, cond_dim=3, depth=3, seed=0):
    torch.manual_seed(seed)
    model = CausalTransformer(
        TransformerConfig(
            in_dim=5, cond_dim=cond_dim, width=32, depth=depth, heads=2, tokens_per_frame=tokens_per_frame
        )
    )
    # adaLN-zero starts as the identity; random weights make every path matter for the comparisons.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.2)
    return model.eval()


def inputs(model, frames, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = frames * model.config.tokens_per_frame
    x = torch.randn(batch, t, 5, generator=g)
    level = torch.rand(batch, t, generator=g)
    cond = torch.randn(batch, t, 3, generator=g)
    return x, level, cond


def stream(model, x, level, cond, cache):
    p = model.config.tokens_per_frame
    outs = []
    with torch.no_grad():
        for f in range(x.shape[1] // p):
            sl = slice(f * p, (f + 1) * p)
            outs.append(model(x[:, sl], level[:, sl], cond[:, sl], cache, update_cache=True))
    return torch.cat(outs, 1)


@pytest.mark.parametrize("tokens_per_frame", [1, 3])
def test_cached_stream_equals_full_causal_forward(tokens_per_frame):
    model = make_model(tokens_per_frame)
    x, level, cond = inputs(model, frames=10)
    cache = model.new_cache(2, sink_frames=2, window_frames=8)
    with torch.no_grad():
        full = model(x, level, cond)
    torch.testing.assert_close(stream(model, x, level, cond, cache), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tokens_per_frame", [1, 2])
@pytest.mark.parametrize("sink,window", [(0, 1), (0, 3), (1, 3), (2, 4), (3, 2)])
def test_bounded_cache_equals_windowed_reference(tokens_per_frame, sink, window):
    """After evictions the cache must match the full-sequence forward with the same bounded pattern."""
    model = make_model(tokens_per_frame)
    x, level, cond = inputs(model, frames=14)
    cache = model.new_cache(2, sink_frames=sink, window_frames=window)
    with torch.no_grad():
        reference = model(x, level, cond, attention_window=(sink, window))
        unbounded = model(x, level, cond)
    streamed = stream(model, x, level, cond, cache)
    torch.testing.assert_close(streamed, reference, atol=1e-5, rtol=1e-5)
    assert (streamed - unbounded).abs().max() > 1e-2  # the bound really changed what frames see


def test_cache_read_only_call_then_commit():
    """A read-only call (denoising a frame) followed by a commit equals streaming that frame directly."""
    model = make_model()
    x, level, cond = inputs(model, frames=6)
    cache = model.new_cache(2, sink_frames=1, window_frames=3)
    stream(model, x[:, :5], level[:, :5], cond[:, :5], cache)
    with torch.no_grad():
        peek = model(x[:, 5:], level[:, 5:], cond[:, 5:], cache)
        assert cache.num_frames == 4
        committed = model(x[:, 5:], level[:, 5:], cond[:, 5:], cache, update_cache=True)
    torch.testing.assert_close(peek, committed)
    assert cache.frames_seen == 6


def test_cache_memory_is_constant_over_1000_frames():
    model = make_model(depth=1)
    cache = model.new_cache(1, sink_frames=2, window_frames=6)
    pointers, nbytes = (cache.keys.data_ptr(), cache.values.data_ptr()), cache.nbytes
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(1000):
            model(torch.randn(1, 1, 5, generator=g), torch.zeros(1, 1), torch.randn(1, 1, 3, generator=g), cache,
                  update_cache=True)  # fmt: skip
    assert (cache.keys.data_ptr(), cache.values.data_ptr()) == pointers
    assert cache.nbytes == nbytes and cache.num_frames == 8 and cache.frames_seen == 1000


def test_ema_sink_blends_evicted_frames():
    model = make_model()
    x, level, cond = inputs(model, frames=8)
    pinned = model.new_cache(2, sink_frames=1, window_frames=2)
    ema = model.new_cache(2, sink_frames=1, window_frames=2, ema_decay=0.5)
    stream(model, x, level, cond, pinned)
    stream(model, x, level, cond, ema)
    # First-layer keys depend on their own frame only: the window agrees, the sink has moved.
    torch.testing.assert_close(ema.keys[0, :, :, 1:3], pinned.keys[0, :, :, 1:3])
    assert (ema.keys[0, :, :, :1] - pinned.keys[0, :, :, :1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="ema_decay"):
        model.new_cache(1, sink_frames=0, window_frames=2, ema_decay=0.9)


def test_global_and_per_token_conditioning_agree():
    model = make_model()
    x, level, _ = inputs(model, frames=4)
    g = torch.randn(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x, level, g), model(x, level, g[:, None].expand(2, 4, 3)))


def test_bad_input_raises_clear_errors():
    model = make_model()
    x, level, cond = inputs(model, frames=4)
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[..., :4], level, cond)
    with pytest.raises(ValueError, match="level must have shape"):
        model(x, level[:, :3], cond)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        model(x, level + 1.5, cond)
    with pytest.raises(ValueError, match="NaN"):
        model(x.clone().fill_(float("nan")), level, cond)
    with pytest.raises(ValueError, match="cond must have shape"):
        model(x, level, cond[:, :2])
    with pytest.raises(ValueError, match="takes cond"):
        model(x, level)
    with pytest.raises(ValueError, match="heads"):
        TransformerConfig(in_dim=3, width=30, heads=4)
    model3 = make_model(tokens_per_frame=3)
    with pytest.raises(ValueError, match="multiple of 3"):
        model3(x, level, cond)


def toy_sequences(batch, generator):
    """Sinusoids with a random phase and frequency: learnable structure along the sequence."""
    t = torch.arange(16, dtype=torch.float32)
    phase = torch.rand(batch, 1, generator=generator) * 2 * math.pi
    freq = 0.2 + 0.3 * torch.rand(batch, 1, generator=generator)
    angle = phase + freq * t
    return torch.stack([torch.cos(angle), torch.sin(angle)], -1)


def test_training_lowers_the_loss_and_samples_the_toy_task():
    torch.manual_seed(0)
    model = CausalTransformer(TransformerConfig(in_dim=2, width=64, depth=2, heads=4))
    schedule = CosineSchedule(100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        loss = diffusion_forcing_loss(model, toy_sequences(64, g), schedule, generator=g, shared_level_prob=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    # Samples lie near the unit circle like the data (pure noise would not).
    with torch.no_grad():
        samples = denoise(
            lambda x, lv, c: model(x, lv, c), torch.randn(32, 16, 2, generator=g), plans.full_sequence(16, 20),
            schedule, parameterization="epsilon", clip_x0=1.5,
        )  # fmt: skip
    radius = samples.norm(dim=-1)
    assert (radius - 1).abs().mean() < 0.25
