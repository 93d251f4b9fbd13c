"""Train a diffusion policy on demonstrations, CleanRL-style: read it top to bottom.

    python -m worldsim.policies.train --task worldsim/PushT-v0 --dataset-id worldsim/pusht/expert-v0 \
        --out runs/pusht-state

The dataset is a Minari dataset (see ``python -m worldsim.envs.collect``); it is recorded first when
``--collect N`` is given and it does not exist yet. The EMA weights are evaluated in the environment
every ``--eval-every`` steps and saved, with the exact command line, to ``--out``; ``--resume`` continues
from the training state kept there.

Data-parallel over N processes (GPUs, or CPU processes with gloo), ``--batch-size`` being the global batch::

    torchrun --nproc_per_node=2 -m worldsim.policies.train --task worldsim/PushT-v0 \
        --dataset-id worldsim/pusht/expert-v0 --out runs/pusht-state --distributed

(several machines: see docs/training_at_scale.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import worldsim  # noqa: E402, F401  (registers the environments)
from worldsim.core.distributed import DistributedContext, init_distributed  # noqa: E402
from worldsim.core.episodes import policy_windows  # noqa: E402
from worldsim.core.trainer import MIXED_PRECISION, Trainer, TrainerConfig, add_device_argument  # noqa: E402
from worldsim.envs.datasets import collect_dataset, fit_normalizers, load_demonstrations  # noqa: E402
from worldsim.policies.action_codec import fit_relative_normalizer  # noqa: E402
from worldsim.policies.config import DiffusionPolicyConfig  # noqa: E402
from worldsim.policies.diffusion_policy import DiffusionPolicy  # noqa: E402
from worldsim.policies.evaluation import evaluate_policy  # noqa: E402

# What worldsim knows about its own tasks; for another env pass --discrete-dims / --score-key.
TASKS = {
    "worldsim/PushT-v0": {"discrete_dims": (), "score_key": "coverage"},
    "worldsim/PickPlace-v0": {"discrete_dims": (3,), "score_key": None},
}
# What a fine-tuned checkpoint records of the one it started from, so its full recipe stays reproducible.
INHERITED = ("dataset_id", "train_command", "train_steps", "train_minutes", "init_from")
EVAL_SEED = 100_000  # evaluation episodes never reuse the demonstrations' reset seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="Gymnasium env id")
    parser.add_argument(
        "--dataset-id", required=True, nargs="+", help="Minari dataset id; several are trained on together"
    )
    parser.add_argument("--data-path", default=None, help="Minari datasets root (default $MINARI_DATASETS_PATH)")
    parser.add_argument("--collect", type=int, default=0, help="record this many expert episodes if missing")
    parser.add_argument("--collect-seed", type=int, default=0, help="seed of the episodes --collect records")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--obs-horizon", type=int, default=2)
    parser.add_argument("--n-action-steps", type=int, default=8)
    parser.add_argument("--num-train-steps", type=int, default=100, help="K of the cosine DDPM grid")
    parser.add_argument("--parameterization", default="epsilon", choices=["epsilon", "sample", "v_prediction"])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--shared-level-prob", type=float, default=0.5)
    parser.add_argument("--discrete-dims", type=int, nargs="*", default=None)
    parser.add_argument(
        "--relative-to-obs", type=int, nargs="+", default=None, metavar="OBS_DIM",
        help="per action dimension, the observation dimension it is predicted relative to (-1: absolute)",
    )  # fmt: skip
    parser.add_argument("--score-key", default=None)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--checkpoint-every", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    add_device_argument(parser)
    parser.add_argument("--init-from", default=None, help="start from this policy checkpoint's weights (fine-tuning)")
    parser.add_argument("--resume", action="store_true", help="continue from the training state kept in --out")
    parser.add_argument("--distributed", action="store_true", help="data-parallel training under torchrun")
    parser.add_argument("--mixed-precision", default="no", choices=MIXED_PRECISION, help="bf16 needs a CUDA GPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training loss")
    args = parser.parse_args(argv)
    if args.collect and len(args.dataset_id) > 1:
        parser.error("--collect records one dataset: give a single --dataset-id with it")
    return args


def check_init_from(parent: DiffusionPolicyConfig, config: DiffusionPolicyConfig, name: str) -> None:
    """Raise unless ``parent``'s weights fit ``config``: the prediction target may change (re-targeting the
    output is fine-tuning too), the sizes and data layout may not."""
    ours = config.to_dict()
    differs = {key: (theirs, ours[key]) for key, theirs in parent.to_dict().items() if theirs != ours[key]}
    differs.pop("parameterization", None)
    if differs:
        raise ValueError(
            f"--init-from {name}: its config differs from this run's in "
            + ", ".join(f"{key} ({theirs} there, {mine} here)" for key, (theirs, mine) in differs.items())
            + "; pass the same sizes"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python -m worldsim.policies.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    known = TASKS.get(args.task, {"discrete_dims": (), "score_key": None})
    discrete_dims = tuple(args.discrete_dims) if args.discrete_dims is not None else known["discrete_dims"]
    score_key = args.score_key or known["score_key"]
    # Under torchrun every process runs this script: join the group now, so that rank 0 alone records data
    # and reports.
    context = init_distributed() if args.distributed else DistributedContext()

    def report(message: str) -> None:
        if context.is_main:
            print(message)

    # 1. Demonstrations -> (observation history, action chunk) windows and normalization statistics.
    if args.collect and context.is_main:
        try:
            load_demonstrations(args.dataset_id[0], path=args.data_path)
        except ValueError:
            collect_dataset(args.task, args.dataset_id[0], args.collect, seed=args.collect_seed, path=args.data_path)
    context.barrier()
    episodes = [
        episode
        for dataset_id in args.dataset_id
        for episode in load_demonstrations(dataset_id, args.task, path=args.data_path)
    ]
    obs, actions = policy_windows(episodes, args.obs_horizon, args.horizon)
    normalizers = fit_normalizers(episodes)
    report(f"{len(episodes)} episodes, {len(obs)} training windows from {', '.join(args.dataset_id)}")

    # 2. The policy, sized for a CPU.
    env = gym.make(args.task)
    config = DiffusionPolicyConfig(
        obs_shape=env.observation_space.shape, action_dim=env.action_space.shape[0], obs_horizon=args.obs_horizon,
        horizon=args.horizon, n_action_steps=args.n_action_steps, num_train_steps=args.num_train_steps,
        parameterization=args.parameterization, width=args.width, depth=args.depth, heads=args.heads,
        obs_feature_dim=args.width, shared_level_prob=args.shared_level_prob, discrete_dims=discrete_dims,
        relative_to_obs=tuple(args.relative_to_obs or ()),
        action_low=tuple(env.action_space.low.tolist()), action_high=tuple(env.action_space.high.tolist()),
    )  # fmt: skip
    env.close()
    obs_normalizer, action_normalizer = normalizers["observation"], normalizers["action"]
    if config.relative_to_obs:
        action_normalizer = fit_relative_normalizer(config, obs, actions, action_normalizer.mode)
    parent = None
    if args.init_from:
        # The weights were fitted to the parent's normalization statistics, so they come along with them.
        parent = DiffusionPolicy.from_pretrained(args.init_from)
        check_init_from(parent.config, config, args.init_from)
        obs_normalizer, action_normalizer = parent.obs_normalizer, parent.codec.normalizer
    policy = DiffusionPolicy(config, obs_normalizer=obs_normalizer, action_normalizer=action_normalizer)
    if args.init_from:
        policy.load_state_dict(parent.state_dict())
    report(f"policy: {sum(p.numel() for p in policy.parameters()) / 1e6:.2f} M parameters")

    # 3. Train; evaluate the EMA weights in the environment now and then.
    def evaluate(model: DiffusionPolicy, step: int) -> dict:
        model.set_strategy("ddim", steps=10)
        result = evaluate_policy(
            model, args.task, episodes=args.eval_episodes, seed=EVAL_SEED, score_key=score_key, progress=False
        )
        return {"eval_success_rate": result["success_rate"], "eval_mean_reward": result["mean_reward"]}

    started = time.time()

    def save(model: DiffusionPolicy, step: int) -> None:
        model.save_pretrained(
            args.out,
            extra={
                "task": args.task,
                "dataset_id": args.dataset_id[0] if len(args.dataset_id) == 1 else args.dataset_id,
                "train_command": command,
                "train_steps": step,
                "train_minutes": round((time.time() - started) / 60, 1),
                "history": trainer.history,
                "init_from": None
                if parent is None
                else {"checkpoint": args.init_from, **{k: parent.metadata.get(k) for k in INHERITED}},
            },
        )

    data = {"obs": torch.from_numpy(np.ascontiguousarray(obs, np.float32)), "action": torch.from_numpy(actions)}
    trainer_config = TrainerConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=args.warmup,
        ema_decay=args.ema_decay, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
        log_every=200, distributed=context.in_group, mixed_precision=args.mixed_precision, compile=args.compile,
        device=args.device,
    )  # fmt: skip
    # The resumable state goes to <out>/train_state/ (and the one before it to <out>/train_state.prev/).
    trainer = Trainer(policy, data, trainer_config, output_dir=args.out, evaluate=evaluate, save=save)
    if args.resume:
        trainer.load_state(args.out)
        report(f"resuming at step {trainer.step}")
    trainer.fit()
    if context.is_main:
        final = evaluate(trainer.ema_model, trainer.step)
        print(f"done in {(time.time() - started) / 60:.1f} min: {final}; checkpoint in {args.out}")


if __name__ == "__main__":
    main()
