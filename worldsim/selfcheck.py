"""A one-minute tour of the denoising core: ``python -m worldsim.selfcheck``.

1. Exact (oracle) denoisers: DDPM and DDIM plans reproduce a two-mode distribution on both schedules.
2. A small transformer learns a toy sequence task with the Diffusion Forcing loss, then every plan
   samples it: full DDPM, DDIM-10, a rolling window and a warm start; each reports its network calls.
3. Streaming through the bounded KV cache: memory stays flat over 1,000 frames.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from worldsim.core import plans
from worldsim.core.losses import diffusion_forcing_loss
from worldsim.core.rolling import RollingDenoiser
from worldsim.core.sampling import denoise
from worldsim.core.schedules import CosineSchedule, FlowMatchingSchedule
from worldsim.core.transformer import CausalTransformer, TransformerConfig

SEQUENCE = 16


def mixture_posterior_mean(schedule, means=(-2.0, 2.0), std=0.3, weights=(0.3, 0.7)):
    def denoiser(x, level, cond=None):
        a, s = schedule.alpha(level)[..., None], schedule.sigma(level)[..., None]
        var = a * a * std**2 + s * s
        logs = np.stack([np.log(w) - 0.5 * (x - a * m) ** 2 / var for m, w in zip(means, weights, strict=True)])
        resp = np.exp(logs - logs.max(0))
        resp /= resp.sum(0)
        posts = np.stack([m + a * std**2 / var * (x - a * m) for m in means])
        return (resp * posts).sum(0)

    return denoiser


def oracle_section(rng) -> None:
    print("1. Oracle denoisers on a two-mode mixture (modes -2 / +2, weights 0.3 / 0.7; true mean 0.80, std 1.85)")
    for schedule in (CosineSchedule(100), FlowMatchingSchedule()):
        for name, eta in (("DDIM", 0.0), ("DDPM", 1.0)):
            out = denoise(
                mixture_posterior_mean(schedule), rng.standard_normal((20000, 1, 1)), plans.full_sequence(1, 100),
                schedule, parameterization="sample", eta=eta, generator=rng,
            )  # fmt: skip
            print(
                f"   {schedule.name:6s} {name}: mean {out.mean():+.2f}  std {out.std():.2f}  "
                f"right mode {(out > 0).mean():.2f}"
            )


def toy_batch(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Points travelling round the unit circle with a random phase and speed."""
    t = torch.arange(SEQUENCE, dtype=torch.float32)
    phase = torch.rand(batch, 1, generator=generator) * 2 * math.pi
    speed = 0.2 + 0.3 * torch.rand(batch, 1, generator=generator)
    angle = phase + speed * t
    return torch.stack([angle.cos(), angle.sin()], -1)


def circle_error(x: torch.Tensor) -> float:
    return float((x.norm(dim=-1) - 1).abs().mean())


def training_section(steps: int, generator: torch.Generator) -> CausalTransformer:
    print(f"\n2. Training a 2x64 transformer for {steps} steps (Diffusion Forcing loss, cosine schedule)")
    model = CausalTransformer(TransformerConfig(in_dim=2, width=64, depth=2, heads=4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = CosineSchedule(100)
    start = time.perf_counter()
    for i in range(steps):
        loss = diffusion_forcing_loss(
            model, toy_batch(64, generator), schedule, shared_level_prob=0.5, generator=generator
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i % max(steps // 5, 1) == 0 or i == steps - 1:
            print(f"   step {i:4d}  loss {loss.item():.4f}")
    print(f"   {steps / (time.perf_counter() - start):.0f} steps/s")
    return model.eval()


@torch.inference_mode()
def sampling_section(model: CausalTransformer, generator: torch.Generator) -> None:
    schedule = CosineSchedule(100)
    net = lambda x, level, cond: model(x, level, cond)
    noise = torch.randn(64, SEQUENCE, 2, generator=generator)
    print(f"\n   Sampling the trained model (distance from the unit circle; the noise: {circle_error(noise):.3f})")
    for name, plan in (
        ("DDPM-100", plans.full_sequence(SEQUENCE, 100)),
        ("DDIM-10", plans.full_sequence(SEQUENCE, 10)),
    ):
        eta = 1.0 if name.startswith("DDPM") else 0.0
        out = denoise(net, noise, plan, schedule, parameterization="epsilon", eta=eta, clip_x0=1.5, generator=generator)
        print(f"   {name:22s} error {circle_error(out):.3f}   {plan.num_model_calls / SEQUENCE:6.2f} calls per token")
    rolling = RollingDenoiser(net, schedule, window=8, parameterization="epsilon", clip_x0=1.5)
    emitted = [rolling.tick(noise[:, i : i + 1]).emitted for i in range(SEQUENCE)]
    stream = torch.cat([e for e in emitted if e is not None], 1)
    print(f"   {'rolling window 8':22s} error {circle_error(stream):.3f}   {1.0:6.2f} calls per token")
    guess = toy_batch(64, generator) * 1.15  # a previous solution, a little off the circle
    plan = plans.warm_start(SEQUENCE, 0.1, 3, renoise=True)
    out = denoise(net, guess, plan, schedule, parameterization="epsilon", clip_x0=1.5, generator=generator)
    print(f"   {'warm start k=0.1, 3':22s} error {circle_error(out):.3f} (guess {circle_error(guess):.3f})   "
          f"{plan.num_model_calls / SEQUENCE:6.2f} calls per token")  # fmt: skip


@torch.inference_mode()
def cache_section(model: CausalTransformer, generator: torch.Generator) -> None:
    print("\n3. Streaming 1,000 frames through a bounded KV cache (2 sink + 16 window frames)")
    cache = model.new_cache(1, sink_frames=2, window_frames=16)
    sizes = []
    for i in range(1000):
        model(torch.randn(1, 1, 2, generator=generator), torch.zeros(1, 1), None, cache, update_cache=True)
        if i in (9, 99, 999):
            sizes.append((i + 1, cache.nbytes))
    for frames, nbytes in sizes:
        print(f"   after {frames:5d} frames: cache {nbytes / 1024:.1f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description="A one-minute tour of worldsim's denoising core.")
    parser.add_argument("--steps", type=int, default=400, help="training steps for the toy model")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    oracle_section(rng)
    model = training_section(args.steps, generator)
    sampling_section(model, generator)
    cache_section(model, generator)
    print("\nselfcheck done")


if __name__ == "__main__":
    main()
