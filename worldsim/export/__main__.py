"""``python -m worldsim.export policy CHECKPOINT OUT.onnx``: export with a parity check (until the CLI lands)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worldsim.export", description=__doc__)
    parser.add_argument("kind", choices=["policy"], help="what to export")
    parser.add_argument("checkpoint", help="a checkpoint directory or a shipped name such as pusht-state")
    parser.add_argument("out", help="the .onnx file to write")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest |torch - onnxruntime| accepted")
    args = parser.parse_args(argv)

    from worldsim.export.policy_export import export_policy
    from worldsim.policies.diffusion_policy import DiffusionPolicy

    policy = DiffusionPolicy.from_pretrained(args.checkpoint)
    print(export_policy(policy, args.out, tolerance=args.tolerance, source=str(args.checkpoint)))


if __name__ == "__main__":
    main()
