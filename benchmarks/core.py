"""Benchmark the shared denoising core: denoiser latency, cached vs recomputed steps, rolling throughput.

    python benchmarks/core.py            # writes benchmarks/results/core.json and core.png

Latencies are wall-clock p50 / p99 / mean on ``--threads`` torch threads (default 1, the batch-1 inference
setting).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, latency_ms, write_result  # noqa: E402

from worldsim.core.rolling import RollingDenoiser  # noqa: E402
from worldsim.core.schedules import CosineSchedule  # noqa: E402
from worldsim.core.transformer import CausalTransformer, TransformerConfig  # noqa: E402

WIDTH, DEPTH, HEADS, TOKEN_DIM = 256, 4, 4, 16


def build_model() -> CausalTransformer:
    torch.manual_seed(0)
    config = TransformerConfig(in_dim=TOKEN_DIM, cond_dim=TOKEN_DIM, width=WIDTH, depth=DEPTH, heads=HEADS)
    return CausalTransformer(config).eval()


def forward_latency(model, tokens: int, repeats: int) -> dict:
    x, level, cond = torch.randn(1, tokens, TOKEN_DIM), torch.rand(1, tokens), torch.randn(1, TOKEN_DIM)
    return latency_ms(lambda: model(x, level, cond), repeats=repeats)


def cached_vs_recompute(model, past_frames: int, repeats: int) -> dict:
    x = torch.randn(1, past_frames + 1, TOKEN_DIM)
    level, cond = torch.zeros(1, past_frames + 1), torch.randn(1, TOKEN_DIM)
    cache = model.new_cache(1, sink_frames=0, window_frames=past_frames)
    model(x[:, :past_frames], level[:, :past_frames], cond, cache, update_cache=True)
    cached = latency_ms(lambda: model(x[:, -1:], level[:, -1:], cond, cache), repeats=repeats)
    full = latency_ms(lambda: model(x, level, cond), repeats=max(repeats // 4, 10))
    return {
        "past_frames": past_frames,
        "cached_step": cached,
        "full_recompute": full,
        "speedup_p50": full["p50_ms"] / cached["p50_ms"],
        "cache_bytes": cache.nbytes,
    }


def rolling_throughput(model, window: int, ticks: int, with_cache: bool) -> dict:
    """Tokens per second after warm-up; with_cache commits every emitted token to a sink + window cache."""
    schedule = CosineSchedule(100)
    cond = torch.randn(1, TOKEN_DIM)
    cache = model.new_cache(1, sink_frames=2, window_frames=32) if with_cache else None
    g = torch.Generator().manual_seed(0)
    if with_cache:
        rolling = RollingDenoiser(
            lambda x, lv, c: model(x, lv, c, cache), schedule, window=window, parameterization="epsilon"
        )
    else:
        rolling = RollingDenoiser(lambda x, lv, c: model(x, lv, c), schedule, window=window, parameterization="epsilon")
    for _ in range(window):  # fill the window
        rolling.tick(torch.randn(1, 1, TOKEN_DIM, generator=g), cond=cond)
    start = time.perf_counter()
    emitted = 0
    for _ in range(ticks):
        token = rolling.tick(torch.randn(1, 1, TOKEN_DIM, generator=g), cond=cond).emitted
        emitted += token.shape[1]
        if cache is not None:
            model(token, torch.zeros(1, 1), cond, cache, update_cache=True)
    seconds = time.perf_counter() - start
    return {
        "window": window,
        "kv_cache": "sink 2 + window 32, emitted tokens committed" if with_cache else None,
        "ticks": ticks,
        "tokens_per_second": emitted / seconds,
        "network_calls_per_token": 1 + int(with_cache),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = the batch-1 inference setting)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build_model()
    with torch.inference_mode():
        forward = {f"T={t}": forward_latency(model, t, args.repeats) for t in (16, 64)}
        cached = cached_vs_recompute(model, 256, args.repeats)
        rolling = {
            "policy_style_window16": rolling_throughput(model, 16, args.ticks, with_cache=False),
            "stream_style_window4_cached": rolling_throughput(model, 4, args.ticks, with_cache=True),
        }
    result = {
        "model": {"width": WIDTH, "depth": DEPTH, "heads": HEADS, "token_dim": TOKEN_DIM, "dtype": "float32"},
        "forward_latency_batch1_eager": forward,
        "cached_step_vs_full_recompute": cached,
        "rolling_denoiser": rolling,
    }
    write_result("core", result)
    for name, stats in forward.items():
        print(f"forward {name}: p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms")
    print(
        f"256 past frames: cached step p50 {cached['cached_step']['p50_ms']:.2f} ms vs full recompute "
        f"{cached['full_recompute']['p50_ms']:.2f} ms ({cached['speedup_p50']:.1f}x)"
    )
    for name, stats in rolling.items():
        print(f"rolling {name}: {stats['tokens_per_second']:.0f} tokens/s")

    labels = ["fwd T=16", "fwd T=64", "cached step\n(256 past)", "full recompute\n(257 frames)"]
    values = [
        forward["T=16"]["p50_ms"],
        forward["T=64"]["p50_ms"],
        cached["cached_step"]["p50_ms"],
        cached["full_recompute"]["p50_ms"],
    ]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, values, color=["#4c72b0", "#4c72b0", "#55a868", "#c44e52"])
    ax.set_ylabel("p50 latency, batch 1 (ms)")
    ax.set_title(f"Core denoiser ({DEPTH}x{WIDTH}) on CPU")
    fig.tight_layout()
    fig.savefig(RESULTS / "core.png", dpi=120)


if __name__ == "__main__":
    main()
