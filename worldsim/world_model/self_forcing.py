"""Self-forcing fine-tuning: train on windows whose context is the model's own open-loop rollout.

Teacher-forced training only ever shows the model true context, but a stream conditions on its own,
slightly wrong frames, and the errors compound (exposure bias). Here each training window is re-rolled
by the model itself from its first true frame with the window's actions (batched, no cache, the same
DDIM steps as streaming); the generated frames become the context and the *true* last frame the only
target, so the model learns to pull a drifted context back towards the truth (Self-Forcing, DAgger).
The own windows are re-rolled ``--rounds`` times during the fine-tune, each time with the weights reached
so far (their EMA), as DAgger iterates: the model keeps training on the mistakes it makes now, not on
those of its starting point. (Self-Forcing proper re-rolls every batch, which costs a rollout per step.)

    worldsim train self-forcing checkpoint=wm-pusht-state out=runs/wm-pusht-state-sf
"""

from __future__ import annotations

import dataclasses
import time

import torch

from worldsim.core.array_ops import randn_like
from worldsim.core.plans import frozen_prefix
from worldsim.core.sampling import denoise
from worldsim.core.trainer import Trainer, resolve_device
from worldsim.envs.tasks import TaskSpec, task_for_env
from worldsim.world_model.config import SelfForcingConfig
from worldsim.world_model.decoding import decide_decoding
from worldsim.world_model.held_out import one_step_error
from worldsim.world_model.model import WorldModel
from worldsim.world_model.state_tokenizer import StateTokenizer


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
    tokenizer = model.tokenizer
    delta = isinstance(tokenizer, StateTokenizer) and tokenizer.delta
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
            if delta:  # as a stream commits it: the frame before plus the generated change
                # (a one-step predictor's frame before the window's first one is unknown: it repeats, as a
                # stream's first frame does)
                x[:, k : k + 1] = tokenizer.rebase(
                    x[:, k : k + 1], x[:, k - 1 : k], before_tokens=x[:, max(k - 2, 0) : max(k - 1, 1)],
                    actions=token_cond[:, k],
                )  # fmt: skip
        out[chunk, 1 : t - 1] = x[:, p : (t - 1) * p].reshape(n, t - 2, p, d).to(out.device)
    target = torch.zeros(m, t, dtype=torch.bool)
    target[:, -1] = True
    return {"frames": out, "cond": cond, "target": target}


def self_force(cfg: SelfForcingConfig) -> WorldModel:
    """Fine-tune ``cfg.checkpoint`` on its own rollouts and save it to ``cfg.out``; returns the EMA model."""
    from worldsim.world_model.train import gather_episodes

    if not cfg.checkpoint or not cfg.out:
        raise ValueError("self-forcing needs checkpoint= (the model to fine-tune) and out= (where to write it)")
    t = cfg.training
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(t.seed)
    started = time.perf_counter()
    # On the training device from the start, so the first round's own windows are rolled there too.
    model = WorldModel.from_pretrained(cfg.checkpoint).to(resolve_device(t.device))
    meta = model.metadata
    if "env_id" not in meta:
        raise ValueError(f"{cfg.checkpoint} records no training env (env_id) to roll out")
    expert = _recorded_expert(meta) or task_for_env(meta["env_id"]).expert
    task = TaskSpec(env_id=meta["env_id"], env_kwargs=meta.get("env_kwargs", {}), expert=expert)
    train, held_out, _ = gather_episodes(task, cfg.episodes, 300, 10, seed=t.seed * 10_000, progress=t.progress)
    teacher = model.training_data(train, stride=2)
    generator = torch.Generator().manual_seed(t.seed)
    # Teacher-forced windows stay in the mix (every frame a target) so the fine-tune does not forget them.
    targeted = {**teacher, "target": torch.ones(teacher["frames"].shape[:2], dtype=torch.bool)}

    def mixed_data(roller: WorldModel) -> dict[str, torch.Tensor]:
        pick = torch.randperm(len(teacher["frames"]), generator=generator)[: cfg.windows]
        own = own_rollout_windows(roller, {k: v[pick] for k, v in teacher.items()}, generator=generator)
        return {k: torch.cat([targeted[k], own[k]]) for k in own}

    held_out_data = model.training_data(held_out, stride=7)
    before = one_step_error(model, held_out_data, generator=torch.Generator().manual_seed(0))
    data = mixed_data(model)
    model.train().requires_grad_(True)
    if hasattr(model.tokenizer, "autoencoder"):
        model.tokenizer.autoencoder.requires_grad_(False)
    trainer = Trainer(model, data, t)
    for round_index in range(cfg.rounds):
        if round_index:
            trainer.replace_data(mixed_data(trainer.ema_model))
        trainer.fit(until=t.steps * (round_index + 1) // cfg.rounds)
    after = one_step_error(trainer.ema_model, held_out_data, generator=torch.Generator().manual_seed(0))
    decoding = decide_decoding(trainer.ema_model, held_out)  # the fine-tuned weights may decode otherwise
    minutes = (time.perf_counter() - started) / 60
    print(f"held-out one-step MSE {before['one_step_mse']:.5f} -> {after['one_step_mse']:.5f} (normalized)")
    training = {
        "minutes": round(minutes, 1), "threads": cfg.threads, "held_out": after, "held_out_before": before,
        "decoding": decoding,
        "self_forcing_windows": min(cfg.windows, len(teacher["frames"])), "rounds": cfg.rounds,
        "base_train_config": meta.get("train_config"), "base_command": meta.get("command"),
        "base_training": meta.get("training"),
    }  # fmt: skip
    extra = {k: meta[k] for k in ("env_id", "env_kwargs", "expert") if k in meta}
    trainer.ema_model.save_pretrained(
        cfg.out, extra={**extra, "train_config": dataclasses.asdict(cfg), "training": training}
    )
    print(f"saved {cfg.out} after {minutes:.1f} min")
    return trainer.ema_model


def _recorded_expert(meta: dict) -> str | None:
    """The scripted expert the base model's rollouts used (its training config's task), if recorded."""
    config = meta.get("train_config") or {}
    return (config.get("task") or {}).get("expert") or meta.get("expert")
