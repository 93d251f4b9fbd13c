"""Check and time the trainer's CUDA paths on a GPU: NCCL under torchrun, bf16 autocast, torch.compile.

    python benchmarks/gpu_training.py          # on a machine with an NVIDIA GPU

- Training samples/s of the shared trainer (``scale.py``'s worker: synthetic Push-T windows, one torchrun
  process, NCCL) for the shipped policy size (width 96, depth 3) and a larger one (256, 4), at two batch
  sizes, in fp32 and bf16, and with ``torch.compile`` for two of them.
- The real entry points end to end: ``torchrun -m worldsim.policies.train --distributed --mixed-precision
  bf16`` (records a few expert episodes, trains, evaluates) and ``torchrun -m worldsim.world_model.train
  --distributed``; each checkpoint then loads on the CPU.
- Which onnxruntime providers the machine's onnxruntime offers (``export_gpu.py`` needs CUDA's).

Writes ``benchmarks/results/gpu_training.json`` with the device named. Without a CUDA device it says so
and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_result  # noqa: E402
from export_gpu import device_name  # noqa: E402
from scale import ROOT, timed_training  # noqa: E402

STEPS = 200
PARTS = ("throughput", "end_to_end")
# (width, depth, global batch, mixed precision, compile)
GRID = [
    (96, 3, 256, "no", False),
    (96, 3, 256, "bf16", False),
    (96, 3, 256, "no", True),
    (96, 3, 4096, "no", False),
    (96, 3, 4096, "bf16", False),
    (256, 4, 256, "no", False),
    (256, 4, 4096, "no", False),
    (256, 4, 4096, "bf16", False),
    (256, 4, 4096, "bf16", True),
]


def throughput() -> list[dict]:
    rows = []
    for width, depth, batch, precision, compiled in GRID:
        options = ("--width", str(width), "--depth", str(depth), "--mixed-precision", precision)
        try:
            row = timed_training(1, STEPS, batch, options + (("--compile",) if compiled else ()))
        except subprocess.CalledProcessError as error:
            rows.append({"width": width, "depth": depth, "global_batch": batch, "mixed_precision": precision,
                         "compile": compiled, "failed": f"exit status {error.returncode}"})  # fmt: skip
            print(f"FAILED: {rows[-1]}", flush=True)
            continue
        rows.append(row)
        print(
            f"width {width} depth {depth} batch {batch} {precision} compile={compiled}: "
            f"{row['samples_per_s']:.0f} samples/s ({row['steps_per_s']:.1f} steps/s) on {row['device']}",
            flush=True,
        )
    return rows


def run_torchrun(module_args: list[str]) -> tuple[dict, bool]:
    """``torchrun --standalone --nproc_per_node=1 -m <module_args>``: its figures, and whether it succeeded."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", *module_args]
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    print(completed.stdout[-1500:], completed.stderr[-3000:], sep="\n", flush=True)
    result = {
        "command": "torchrun --standalone --nproc_per_node=1 -m " + " ".join(module_args),
        "returncode": completed.returncode,
        "seconds": time.perf_counter() - start,
    }
    return result, completed.returncode == 0


def end_to_end(workdir: Path) -> dict:
    """The training commands a user types, on the GPU, then their checkpoints loaded on the CPU."""
    from worldsim.policies.diffusion_policy import DiffusionPolicy
    from worldsim.world_model.model import WorldModel

    policy_out, world_model_out = workdir / "policy", workdir / "world_model"
    policy, ok = run_torchrun([
        "worldsim.policies.train", "--task", "worldsim/PushT-v0", "--dataset-id", "worldsim/pusht/gpu-check-v0",
        "--data-path", str(workdir / "data"), "--collect", "30", "--out", str(policy_out), "--steps", "600",
        "--batch-size", "256", "--eval-every", "100000", "--eval-episodes", "3", "--checkpoint-every", "300",
        "--distributed", "--mixed-precision", "bf16",
    ])  # fmt: skip
    if ok:
        loaded = DiffusionPolicy.from_pretrained(policy_out, strategy="ddim", steps=10)
        losses = [row["loss"] for row in loaded.metadata["history"] if "loss" in row]
        policy |= {"first_loss": losses[0], "last_loss": losses[-1], "loss_fell": losses[-1] < losses[0],
                   "loads_on_cpu": str(next(loaded.parameters()).device) == "cpu"}  # fmt: skip
    world_model, ok = run_torchrun([
        "worldsim.world_model.train", "--env", "worldsim/PushT-v0", "--episodes", "30", "--steps", "600",
        "--out", str(world_model_out), "--no-progress", "--distributed",
    ])  # fmt: skip
    if ok:
        loaded = WorldModel.from_pretrained(world_model_out)
        held_out = loaded.metadata["training"]["held_out"]
        world_model |= {**held_out, "beats_copy_last": held_out["one_step_mse"] < held_out["copy_last_mse"],
                        "loads_on_cpu": str(next(loaded.parameters()).device) == "cpu"}  # fmt: skip
    return {"policy": policy, "world_model": world_model}


def onnxruntime_providers() -> list[str] | str:
    try:
        import onnxruntime
    except ImportError as error:
        return f"onnxruntime not importable: {error}"
    return onnxruntime.get_available_providers()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS),
        help="run only these; the others are kept from the previous results file, with the date they ran",
    )  # fmt: skip
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing measured, nothing written (run this on a machine with an NVIDIA GPU)")
        return
    path = RESULTS / "gpu_training.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    result = {"device": device_name(), "torch": torch.__version__, "onnxruntime_providers": onnxruntime_providers()}
    with tempfile.TemporaryDirectory() as tmp:
        for part in PARTS:
            if part in args.parts:
                result[part] = throughput() if part == "throughput" else end_to_end(Path(tmp))
            elif part in previous:
                result[part] = previous[part]
                result[f"{part}_kept_from_run_of"] = previous["machine"]["date"]
    write_result("gpu_training", result)


if __name__ == "__main__":
    main()
