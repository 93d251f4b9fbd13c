"""The training loop shared by every worldsim model, readable top to bottom.

AdamW, linear warm-up then cosine decay, gradient clipping, an exponential moving average (EMA) of the
weights for inference, per-epoch shuffling from a seeded generator, a progress bar, periodic
evaluation, and checkpoints in worldsim's one format that resume where they stopped.

The model only has to provide ``compute_loss(batch) -> scalar tensor``; the data is a dict of tensors
sharing their first dimension (one row per training example).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from worldsim.core.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class TrainerConfig:
    steps: int = 20_000
    batch_size: int = 256
    learning_rate: float = 3e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    grad_clip_norm: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 100
    eval_every: int = 0
    checkpoint_every: int = 0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


class Trainer:
    """Trains ``model`` on ``data``; ``ema_model`` holds the averaged weights to evaluate and ship.

    ``evaluate(ema_model, step) -> dict`` runs every ``eval_every`` steps; ``save(ema_model, step)``
    writes the user-facing artifact at checkpoints and at the end, beside the resumable training state
    kept in ``output_dir`` (``train_state.safetensors`` + ``.json``).
    """

    def __init__(
        self,
        model: nn.Module,
        data: dict[str, torch.Tensor],
        config: TrainerConfig,
        *,
        output_dir: str | Path | None = None,
        evaluate: Callable[[nn.Module, int], dict] | None = None,
        save: Callable[[nn.Module, int], None] | None = None,
    ):
        sizes = {key: len(value) for key, value in data.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"training data must be tensors with one shared first dimension, got sizes {sizes}")
        self.num_examples = next(iter(sizes.values()))
        if self.num_examples < config.batch_size:
            raise ValueError(f"{self.num_examples} training examples are fewer than one batch of {config.batch_size}")
        self.model, self.data, self.config = model, data, config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.evaluate, self.save = evaluate, save
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: list[dict] = []

    def _lr_factor(self, step: int) -> float:
        warmup = self.config.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(self.config.steps - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def _epoch_order(self) -> torch.Tensor:
        # Derived from (seed, epoch) alone, so a resumed run replays exactly the same batches.
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_examples, generator=g)

    def _next_batch(self) -> dict[str, torch.Tensor]:
        per_epoch = self.num_examples // self.config.batch_size
        if self.batch_in_epoch >= per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
        order = self._epoch_order()
        start = self.batch_in_epoch * self.config.batch_size
        index = order[start : start + self.config.batch_size]
        self.batch_in_epoch += 1
        return {key: value[index] for key, value in self.data.items()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up of the decay (as diffusers' EMAModel) so early averages are not dominated by init.
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for ema, live in zip(self.ema_model.parameters(), self.model.parameters(), strict=True):
            ema.lerp_(live, 1 - decay)
        for ema, live in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
            ema.copy_(live)

    def fit(self, until: int | None = None) -> list[dict]:
        """Train to ``config.steps`` (or stop early at step ``until``, saving a resumable state)."""
        config = self.config
        stop = config.steps if until is None else min(until, config.steps)
        self.model.train()
        bar = tqdm(total=config.steps, initial=self.step, disable=not config.progress, desc="train", unit="step")
        running, count, started = 0.0, 0, time.perf_counter()
        while self.step < stop:
            loss = self.model.compute_loss(self._next_batch())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            self._update_ema()
            running, count = running + loss.item(), count + 1
            bar.update(1)
            if self.step % config.log_every == 0 or self.step == config.steps:
                record = {
                    "step": self.step,
                    "loss": running / count,
                    "grad_norm": float(grad_norm),
                    "lr": self.scheduler.get_last_lr()[0],
                    "steps_per_s": count / (time.perf_counter() - started),
                }
                self.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                running, count, started = 0.0, 0, time.perf_counter()
            if self.evaluate is not None and config.eval_every and self.step % config.eval_every == 0:
                metrics = self.evaluate(self.ema_model, self.step)
                self.history.append({"step": self.step, **metrics})
                bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                self.model.train()
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.save_state()
        bar.close()
        self.save_state()
        return self.history

    def save_state(self) -> None:
        """Write the resumable training state and, through ``save``, the user-facing artifact."""
        if self.save is not None:
            self.save(self.ema_model, self.step)
        if self.output_dir is None:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema_model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        for param_id, state in optimizer["state"].items():
            for key, value in state.items():
                tensors[f"optimizer.{param_id}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        meta = {
            "kind": "train_state",
            "trainer": asdict(self.config),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "param_groups": optimizer["param_groups"],
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "rng": torch.get_rng_state().tolist(),
        }
        save_checkpoint(self.output_dir, tensors, json.loads(json.dumps(meta, default=float)), name="train_state")

    def load_state(self, directory: str | Path) -> None:
        """Resume from a state written by :meth:`save_state` (same model and data)."""
        tensors, meta = load_checkpoint(directory, name="train_state", kind="train_state")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema_model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, param_id, name = key.split(".", 2)
                state.setdefault(int(param_id), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.scheduler.load_state_dict(meta["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        self.history = meta["history"]
        torch.set_rng_state(torch.tensor(meta["rng"], dtype=torch.uint8))
