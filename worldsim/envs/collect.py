"""Record scripted-expert demonstrations to a Minari dataset.

python -m worldsim.envs.collect --task worldsim/PushT-v0 --episodes 100 --dataset-id worldsim/pusht/expert-v0

Add ``--num-envs N`` to record with N environment processes in parallel (``gymnasium.vector.AsyncVectorEnv``).
"""

from __future__ import annotations

import argparse
import os

# Headless rendering for pixel datasets; must be set before MuJoCo is imported.
os.environ.setdefault("MUJOCO_GL", "egl")

from worldsim.envs.datasets import EXPERTS, collect_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(EXPERTS), help="environment id")
    parser.add_argument("--episodes", type=int, default=100, help="number of episodes (default 100)")
    parser.add_argument("--dataset-id", required=True, help="Minari dataset id, e.g. worldsim/pusht/expert-v0")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (default 0)")
    parser.add_argument("--obs-type", default="state", choices=["state", "pixels", "state_pixels"])
    parser.add_argument("--image-size", type=int, default=96, help="side of pixel observations (default 96)")
    parser.add_argument("--data-format", default="hdf5", choices=["hdf5", "arrow"], help="Minari backend")
    parser.add_argument("--path", default=None, help="datasets root (default: $MINARI_DATASETS_PATH)")
    parser.add_argument("--num-envs", type=int, default=1, help="environment processes recording in parallel")
    args = parser.parse_args(argv)
    dataset = collect_dataset(
        args.task,
        args.dataset_id,
        args.episodes,
        args.seed,
        obs_type=args.obs_type,
        image_size=args.image_size,
        data_format=args.data_format,
        path=args.path,
        num_envs=args.num_envs,
    )
    print(f"wrote {dataset.total_episodes} episodes, {dataset.total_steps} steps to {dataset.spec.data_path}")


if __name__ == "__main__":
    main()
