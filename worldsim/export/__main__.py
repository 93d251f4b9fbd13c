"""Export a checkpoint's denoiser step to ONNX with a parity check:

    python -m worldsim.export policy CHECKPOINT OUT.onnx
    python -m worldsim.export world-model CHECKPOINT OUT.onnx

Prints the parity figure and the file sizes (the Hydra ``worldsim export`` command calls the same functions).
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m worldsim.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{policy,world-model}")
    policy = kinds.add_parser("policy", help="a diffusion policy's denoiser step")
    world_model = kinds.add_parser(
        "world-model", help="a world model's denoiser step with its KV cache (and a pixel model's frame codec)"
    )
    for sub, example in ((policy, "pusht-state"), (world_model, "wm-pusht-state")):
        sub.add_argument("checkpoint", help=f"a checkpoint directory or a shipped name such as {example}")
        sub.add_argument("out", help="the .onnx file to write")
        sub.add_argument("--tolerance", type=float, default=1e-4, help="largest |torch - onnxruntime| accepted")
    world_model.add_argument(
        "--slot-frames", type=int, default=None, help="cache slots in the graph (default: the model's sink + window)"
    )
    world_model.add_argument(
        "--real-steps",
        type=int,
        default=20,
        help="steps of the checkpoint's environment whose frames join the parity check (0: none)",
    )
    args = parser.parse_args(argv)

    if args.kind == "policy":
        from worldsim.export.policy_export import export_policy
        from worldsim.policies.diffusion_policy import DiffusionPolicy

        policy = DiffusionPolicy.from_pretrained(args.checkpoint)
        print(export_policy(policy, args.out, tolerance=args.tolerance, source=str(args.checkpoint)))
        return

    from worldsim.export.world_model_export import export_world_model

    report = export_world_model(
        args.checkpoint, args.out, tolerance=args.tolerance, real_steps=args.real_steps, slot_frames=args.slot_frames
    )
    print(report)
    print("parity per check: " + ", ".join(f"{name} {diff:.2e}" for name, diff in report.checks.items()))


if __name__ == "__main__":
    main()
