"""Check the exported models on a GPU: CUDA and TensorRT (fp32, fp16) against onnxruntime's CPU provider.

    python benchmarks/export_gpu.py           # on a machine with an NVIDIA GPU and onnxruntime-gpu

For the shipped Push-T policy (RTI, whole chunks) and state world model (a streamed rollout), each GPU
provider runs the same seeded computation as the CPU provider: the largest difference (tolerance 1e-4
in fp32, 1e-2 in fp16), the provider that really ran, and the latency per control step / frame. Writes
benchmarks/results/export_gpu.json with the device named. Without a CUDA device it says so and writes
nothing.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import latency_ms, write_result  # noqa: E402

from worldsim.export.providers import ProviderChoice, cuda_device_count  # noqa: E402

# name -> (providers to ask for, TensorRT fp16, tolerance against the CPU provider)
CHOICES = {
    "cuda": (("cuda", "cpu"), False, 1e-4),
    "tensorrt_fp32": (("tensorrt", "cpu"), False, 1e-4),
    "tensorrt_fp16": (("tensorrt", "cpu"), True, 1e-2),
}


def device_name() -> str:
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    return subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip() or "unknown GPU"


Run = Callable[[ProviderChoice], tuple[np.ndarray, Any, Callable[[], object]]]


def compare_providers(run: Run, engines: Path, step_name: str) -> dict:
    """``run(choice) -> (outputs, runner, one_step)`` on the CPU provider, then on each GPU choice."""
    reference, cpu, cpu_step = run(ProviderChoice(prefer=("cpu",)))
    rows = {"cpu": {"providers": cpu.providers, step_name: latency_ms(cpu_step, repeats=300)}}
    for name, (prefer, fp16, tolerance) in CHOICES.items():
        got, runner, one_step = run(ProviderChoice(prefer=prefer, fp16=fp16, engine_cache=str(engines)))
        diff = float(np.abs(got - reference).max())
        rows[name] = {
            "providers": runner.providers,
            "max_abs_diff_vs_cpu": diff,
            "tolerance": tolerance,
            "within_tolerance": diff <= tolerance,
            step_name: latency_ms(one_step, repeats=300),
        }
    return rows


def policy_rows(path: Path, engines: Path) -> dict:
    from worldsim.export.onnx_policy import OnnxPolicy

    obs = np.random.default_rng(0).uniform(-0.5, 0.5, size=(40, 2, 6)).astype(np.float32)

    def chunks(choice: ProviderChoice):
        policy = OnnxPolicy(path, strategy="rti", k=10, n_action_steps=8, seed=0, providers=choice)
        return np.stack([policy.predict_chunk(o) for o in obs]), policy, lambda: policy.predict_chunk(obs[0])

    return compare_providers(chunks, engines, "rti_step")


def world_model_rows(path: Path, engines: Path) -> dict:
    from worldsim.export.onnx_world_model import OnnxWorldModelSession
    from worldsim.export.world_model_export import env_rollout
    from worldsim.world_model.model import WorldModel

    observations, actions = env_rollout(WorldModel.from_pretrained("wm-pusht-state"), 100, seed=0)

    def rollout(choice: ProviderChoice):
        session = OnnxWorldModelSession(path, providers=choice, seed=0)
        session.reset(observations[:1])
        return np.stack([session.step(a) for a in actions]), session, lambda: session.step(actions[0])

    return compare_providers(rollout, engines, "frame")


def main() -> None:
    if cuda_device_count() == 0:
        print("no CUDA device on this machine: the CUDA/TensorRT check needs a GPU; nothing measured")
        return
    from worldsim.export.policy_export import export_policy
    from worldsim.export.world_model_export import export_world_model
    from worldsim.policies.diffusion_policy import DiffusionPolicy

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        export_policy(DiffusionPolicy.from_pretrained("pusht-state"), folder / "policy.onnx")
        export_world_model("wm-pusht-state", folder / "wm.onnx")
        result = {
            "device": device_name(),
            "policy_pusht_state": policy_rows(folder / "policy.onnx", folder / "engines"),
            "world_model_pusht_state": world_model_rows(folder / "wm.onnx", folder / "engines"),
        }
    write_result("export_gpu", result)


if __name__ == "__main__":
    main()
