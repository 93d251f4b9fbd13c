"""Self-forcing fine-tuning: train on windows whose context is the model's own open-loop rollout.

Teacher-forced training only ever shows the model true context, but a stream conditions on its own,
slightly wrong frames, and the errors compound (exposure bias). Here each training window is re-rolled
by the model itself from its first true frame with the window's actions (batched, no cache, the same
DDIM steps as streaming); the generated frames become the context and the *true* last frame the only
target, so the model learns to pull a drifted context back towards the truth (Self-Forcing, DAgger).
The own windows are re-rolled ``--rounds`` times during the fine-tune, each time with the weights reached
so far (their EMA), as DAgger iterates: the model keeps training on the mistakes it makes now, not on
those of its starting point. (Self-Forcing proper re-rolls every batch, which costs a rollout per step.)

    python -m worldsim.world_model.self_forcing --checkpoint worldsim/checkpoints/wm-pusht-state \\
        --out worldsim/checkpoints/wm-pusht-state-sf
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from worldsim.core.array_ops import randn_like
from worldsim.core.plans import frozen_prefix
from worldsim.core.sampling import denoise
from worldsim.core.trainer import Trainer, TrainerConfig, add_device_argument, resolve_device
from worldsim.world_model.held_out import one_step_error
from worldsim.world_model.model import WorldModel


@torch.no_grad()
def own_rollout_windows(
    model: WorldModel, data: dict[str, torch.Tensor], *, steps: int = 2, batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Windows ``[true first frame, generated frames..., true last frame]`` with ``target`` on the last one.

    The rollouts run on the model's device; the windows come back where ``data`` is (the trainer's copy).
    """
    frames, cond = data["frames"], data["cond"]
    m, t, p, d = frames.shape
    config = model.config
    device = next(model.parameters()).device
    out = frames.clone()
    for start in range(0, m, batch_size):
        chunk = slice(start, start + batch_size)
        n = len(frames[chunk])
        x = frames[chunk].reshape(n, t * p, d).to(device, copy=True)
        token_cond = cond[chunk].to(device).repeat_interleave(p, dim=1)
        for k in range(1, t - 1):
            # Frame k from the model's own frames before it; later frames are not visible (causal).
            end = (k + 1) * p
            x[:, k * p : end] = randn_like(x[:, k * p : end], generator)
            x[:, :end] = denoise(
                model.denoiser, x[:, :end], frozen_prefix(end, k * p, steps), model.schedule,
                parameterization=config.parameterization, cond=token_cond[:, :end], generator=generator,
            )  # fmt: skip
        out[chunk, 1 : t - 1] = x[:, p : (t - 1) * p].reshape(n, t - 2, p, d).to(out.device)
    target = torch.zeros(m, t, dtype=torch.bool)
    target[:, -1] = True
    return {"frames": out, "cond": cond, "target": target}


def main(argv: list[str] | None = None) -> None:
    from worldsim.world_model.train import DataConfig, gather_episodes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="world model to fine-tune (name or directory)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--episodes", type=int, default=150, help="rollout episodes to draw windows from")
    parser.add_argument("--windows", type=int, default=8000, help="self-forcing windows (own rollouts) per round")
    parser.add_argument("--rounds", type=int, default=4, help="times the own windows are re-rolled")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < args.rounds:
        parser.error(f"--rounds must be between 1 and --steps ({args.steps}), got {args.rounds}")
    command = "python -m worldsim.world_model.self_forcing " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    # On the training device from the start, so the first round's own windows are rolled there too.
    model = WorldModel.from_pretrained(args.checkpoint).to(resolve_device(args.device))
    meta = model.metadata
    data_config = DataConfig(meta["env_id"], meta.get("env_kwargs", {}), args.episodes, seed=args.seed * 10_000)
    train, held_out, _ = gather_episodes(data_config, progress=not args.no_progress)
    teacher = model.training_data(train, stride=2)
    generator = torch.Generator().manual_seed(args.seed)
    # Teacher-forced windows stay in the mix (every frame a target) so the fine-tune does not forget them.
    targeted = {**teacher, "target": torch.ones(teacher["frames"].shape[:2], dtype=torch.bool)}

    def mixed_data(roller: WorldModel) -> dict[str, torch.Tensor]:
        pick = torch.randperm(len(teacher["frames"]), generator=generator)[: args.windows]
        own = own_rollout_windows(roller, {k: v[pick] for k, v in teacher.items()}, generator=generator)
        return {k: torch.cat([targeted[k], own[k]]) for k in own}

    held_out_data = model.training_data(held_out, stride=7)
    before = one_step_error(model, held_out_data, generator=torch.Generator().manual_seed(0))
    data = mixed_data(model)
    model.train().requires_grad_(True)
    if hasattr(model.tokenizer, "autoencoder"):
        model.tokenizer.autoencoder.requires_grad_(False)
    config = TrainerConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=100, ema_decay=0.995,
        log_every=250, seed=args.seed, progress=not args.no_progress, device=args.device,
    )  # fmt: skip
    trainer = Trainer(model, data, config)
    for round_index in range(args.rounds):
        if round_index:
            trainer.replace_data(mixed_data(trainer.ema_model))
        trainer.fit(until=args.steps * (round_index + 1) // args.rounds)
    after = one_step_error(trainer.ema_model, held_out_data, generator=torch.Generator().manual_seed(0))
    minutes = (time.perf_counter() - started) / 60
    print(f"held-out one-step MSE {before['one_step_mse']:.5f} -> {after['one_step_mse']:.5f}")
    training = {
        "minutes": round(minutes, 1), "threads": args.threads, "held_out": after, "held_out_before": before,
        "self_forcing_windows": min(args.windows, len(teacher["frames"])), "rounds": args.rounds,
        "base_command": meta.get("command"),
        "base_training": meta.get("training"),
    }  # fmt: skip
    extra = {k: meta[k] for k in ("env_id", "env_kwargs") if k in meta}
    trainer.ema_model.save(args.out, command=command, extra={**extra, "training": training})
    print(f"saved {args.out} after {minutes:.1f} min")


if __name__ == "__main__":
    main()
