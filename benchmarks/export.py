"""Benchmark ONNX export: batch-1 step latency torch eager vs onnxruntime, RTI control steps, parity, size.

    python benchmarks/export.py --policy pickplace-state      # a shipped name or a checkpoint directory

Writes benchmarks/results/export.json (torch and onnxruntime measured in the same process, alternating).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import latency_ms, write_result  # noqa: E402

from worldsim.export.onnx_policy import OnnxPolicy  # noqa: E402
from worldsim.export.policy_export import PolicyStep, export_policy  # noqa: E402
from worldsim.policies.diffusion_policy import DiffusionPolicy  # noqa: E402


def policy_figures(name: str, repeats: int, control_steps: int) -> dict:
    policy = DiffusionPolicy.from_pretrained(name)
    c = policy.config
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.onnx"
        report = export_policy(policy, path, source=name)
        runner = OnnxPolicy(path, strategy="rti", k=3, seed=0)
        rng = np.random.default_rng(0)
        obs = rng.normal(size=(1, c.obs_horizon, *c.obs_shape)).astype(np.float32)
        x = rng.normal(size=(1, c.horizon, c.action_dim)).astype(np.float32)
        level = np.full((1, c.horizon), 0.5, np.float32)
        step = PolicyStep(policy).eval()
        tensors = [torch.from_numpy(a) for a in (obs, x, level)]
        feeds = {"obs": obs, "x": x, "level": level}

        def torch_step():
            with torch.inference_mode():
                step(*tensors)

        def onnx_step():
            runner.session.run(["pred"], feeds)

        # Alternate the two in rounds so machine load affects both alike.
        rounds = {"torch": [], "onnxruntime": []}
        for _ in range(5):
            rounds["torch"].append(latency_ms(torch_step, repeats=repeats // 5))
            rounds["onnxruntime"].append(latency_ms(onnx_step, repeats=repeats // 5))
        step_latency = {k: _merge(v) for k, v in rounds.items()}

        observations = rng.normal(size=(control_steps, *c.obs_shape)).astype(np.float32)
        policy.set_strategy("rti", k=3)
        policy.reset()
        runner.reset()
        control = {
            "torch": _control_latency(policy, observations),
            "onnxruntime": _control_latency(runner, observations),
        }
        return {
            "checkpoint": name,
            "file_bytes": report.file_bytes,
            "parity_max_abs_diff": report.max_abs_diff,
            "parity_tolerance": report.tolerance,
            "providers": report.providers,
            "step_latency_batch1": step_latency,
            "onnx_over_torch_p50": step_latency["onnxruntime"]["p50_ms"] / step_latency["torch"]["p50_ms"],
            "rti_control_step_k3": control,
            "targets": {
                "onnx_step_latency_over_torch": {
                    "target": "<= 0.4",
                    "measured": step_latency["onnxruntime"]["p50_ms"] / step_latency["torch"]["p50_ms"],
                },
                "parity": {"target": "<= 1e-4", "measured": report.max_abs_diff},
            },
        }


def _merge(rounds: list[dict]) -> dict:
    return {
        "p50_ms": float(np.median([r["p50_ms"] for r in rounds])),
        "p99_ms": float(np.max([r["p99_ms"] for r in rounds])),
        "repeats": int(sum(r["repeats"] for r in rounds)),
    }


def _control_latency(policy, observations: np.ndarray) -> dict:
    """Per-tick select_action latency over an episode, the first (full DDPM) tick excluded."""
    import time

    samples = []
    for obs in observations:
        start = time.perf_counter()
        policy.select_action(obs)
        samples.append((time.perf_counter() - start) * 1e3)
    samples = np.asarray(samples[1:])
    return {"p50_ms": float(np.percentile(samples, 50)), "p99_ms": float(np.percentile(samples, 99)),
            "ticks": len(samples)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", nargs="*", default=["pusht-state", "pickplace-state"])
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--control-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "policies": {}}
    for name in args.policy:
        figures = policy_figures(name, args.repeats, args.control_steps)
        result["policies"][name] = figures
        print(f"{name}: torch {figures['step_latency_batch1']['torch']['p50_ms']:.2f} ms vs onnxruntime "
              f"{figures['step_latency_batch1']['onnxruntime']['p50_ms']:.2f} ms per step "
              f"({figures['onnx_over_torch_p50']:.2f}x), parity {figures['parity_max_abs_diff']:.1e}")  # fmt: skip
    write_result("export", result)


if __name__ == "__main__":
    main()
