"""The training loop shared by every worldsim model, readable top to bottom.

AdamW, linear warm-up then cosine decay, gradient clipping, an exponential moving average (EMA) of the
weights for inference, per-epoch shuffling from a seeded generator, a progress bar, periodic
evaluation, and checkpoints in worldsim's one format that resume exactly where they stopped.

The model only has to provide ``compute_loss(batch) -> scalar tensor`` (a mean over the batch); the data
is a dict of tensors sharing their first dimension (one row per training example) or a memory-mapped
:class:`~worldsim.core.streaming_data.WindowDataset`, read by a ``DataLoader`` with ``num_workers``.

The same loop runs unchanged under ``torchrun --nproc_per_node=N`` (one machine or several) with
``TrainerConfig(distributed=True)``: DistributedDataParallel averages the gradients, ``batch_size`` is
the global batch and each rank trains on its slice of it, logged metrics are averaged over the ranks, and
rank 0 alone evaluates, shows progress and writes checkpoints. See docs/training_at_scale.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from worldsim.core.checkpoint import load_latest, save_rotating
from worldsim.core.distributed import DistributedContext, init_distributed, rank_seed
from worldsim.core.streaming_data import EpochBatchSampler, WindowDataset, as_windows

MIXED_PRECISION = ("no", "bf16")
STATE_NAME = "train_state"


@dataclass
class TrainerConfig:
    steps: int = 20_000
    batch_size: int = 256
    """The global batch: under torchrun each of the N processes takes batch_size / N rows of it."""
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
    num_workers: int = 0
    """DataLoader processes that read batches ahead (worth it for on-disk datasets); 0 reads in this process."""
    distributed: bool = False
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK): NCCL on GPUs, else gloo."""
    mixed_precision: str = "no"
    """``"bf16"``: compute the loss under bfloat16 autocast. Needs a CUDA device (refused on CPU)."""
    compile: bool = False
    """``torch.compile`` the loss computation (the first steps are slow while it compiles)."""
    device: str | None = None
    """Where a single-process run trains: ``None`` leaves the model where the caller put it, ``"auto"`` takes
    the first CUDA GPU when there is one (else the CPU), or a torch device such as ``"cpu"`` or ``"cuda:1"``.
    Under torchrun each rank trains on its own GPU instead."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        resolve_device(self.device)


def resolve_device(name: str | None) -> torch.device | None:
    """``TrainerConfig.device`` as a torch device (None stays None); a GPU that is not there is refused."""
    if name is None:
        return None
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from error
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The training commands' ``--device``, checked while parsing: a bad one is refused before any work."""

    def checked(name: str) -> str:
        try:
            resolve_device(name)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return name

    parser.add_argument(
        "--device", default="auto", type=checked,
        help="auto (CUDA when there is a GPU), cpu, cuda or cuda:N (torchrun: each rank's GPU)",
    )  # fmt: skip


class _Loss(nn.Module):
    """``forward`` = the model's ``compute_loss``: DistributedDataParallel and torch.compile wrap forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.compute_loss(batch)


class Trainer:
    """Trains ``model`` on ``data``; ``ema_model`` holds the averaged weights to evaluate and ship.

    ``evaluate(ema_model, step) -> dict`` runs every ``eval_every`` steps; ``save(ema_model, step)``
    writes the user-facing artifact at checkpoints and at the end, beside the resumable training state
    kept in ``output_dir``: ``train_state/`` (``train_state.safetensors`` + ``.json``) and the one before it,
    ``train_state.prev/``. Under torchrun both callbacks run on rank 0 only.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Mapping[str, torch.Tensor] | WindowDataset,
        config: TrainerConfig,
        *,
        output_dir: str | Path | None = None,
        evaluate: Callable[[nn.Module, int], dict] | None = None,
        save: Callable[[nn.Module, int], None] | None = None,
    ):
        self.dist = init_distributed() if config.distributed else DistributedContext()
        self.config = config
        self.replace_data(data)
        device = self.dist.device or resolve_device(config.device)
        if device is not None:
            model.to(device)
        self.device = next(model.parameters()).device
        if config.mixed_precision == "bf16" and self.device.type != "cuda":
            raise ValueError(
                f"mixed_precision='bf16' needs the model on a CUDA device, it is on {self.device}; "
                "use mixed_precision='no' on CPU"
            )
        self.model = model
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.evaluate, self.save = evaluate, save
        if self.dist.in_group:
            self.dist.broadcast([*model.parameters(), *model.buffers()])  # every rank starts from rank 0's model
            # Distinct noise on every rank (else they would all draw the same diffusion noise), reproducibly.
            torch.manual_seed(rank_seed(config.seed, self.dist.rank))
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.history: list[dict] = []

    def replace_data(self, data: Mapping[str, torch.Tensor] | WindowDataset) -> None:
        """Train on ``data`` from the next step on, in a fresh epoch order (e.g. windows regenerated by the
        model itself; the constructor starts this way). A resumable state does not record the swap: resume
        such runs by repeating it."""
        self.data = as_windows(data)
        self.num_examples = len(self.data)
        self.sampler = EpochBatchSampler(
            self.num_examples, self.config.batch_size, seed=self.config.seed, rank=self.dist.rank,
            world_size=self.dist.world_size,
        )  # fmt: skip
        self.epoch, self.batch_in_epoch = 0, 0

    def _lr_factor(self, step: int) -> float:
        warmup = self.config.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(self.config.steps - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches from the current (epoch, batch) position on.

        The order is a function of (seed, epoch) alone, so a resumed run replays exactly the same batches;
        workers may read ahead, but the position advances only with the batches consumed.
        """
        self.sampler.epoch, self.sampler.batch = self.epoch, self.batch_in_epoch
        loader = DataLoader(
            self.data, sampler=self.sampler, batch_size=None, num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda" and self.config.num_workers > 0,
            # Its own generator: otherwise the loader draws its worker seed from the global RNG and a resumed
            # run's random stream would shift by one draw.
            generator=torch.Generator().manual_seed(self.config.seed),
        )  # fmt: skip
        for batch in loader:
            self.batch_in_epoch += 1
            if self.batch_in_epoch == self.sampler.batches_per_epoch:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            yield {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def _loss_function(self) -> nn.Module:
        """``compute_loss`` as one fit runs it: under DistributedDataParallel (gradients averaged over the
        ranks) and torch.compile when asked.

        Built anew for every :meth:`fit` and dropped at its end, so that no wrapper and none of its pending
        communication handles outlive the run (their late destruction at interpreter exit can abort it).
        """
        loss: nn.Module = _Loss(self.model)
        if self.dist.in_group:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            loss = DistributedDataParallel(loss, device_ids=device_ids)
        return torch.compile(loss) if self.config.compile else loss

    def _precision(self) -> contextlib.AbstractContextManager:
        if self.config.mixed_precision == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

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
        config, main = self.config, self.dist.is_main
        stop = config.steps if until is None else min(until, config.steps)
        self.model.train()
        bar = tqdm(
            total=config.steps, initial=self.step, disable=not (config.progress and main), desc="train", unit="step"
        )
        # Summed on the device and read only when logging: no host synchronisation on the other steps.
        running = torch.zeros((), dtype=torch.float64, device=self.device)
        count, started = 0, time.perf_counter()
        batches, loss_function = self._batches(), self._loss_function()
        while self.step < stop:
            batch = next(batches)
            with self._precision():
                loss = loss_function(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # under DistributedDataParallel this also averages the gradients over the ranks
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            self._update_ema()
            running, count = running + loss.detach(), count + 1
            bar.update(1)
            if self.step % config.log_every == 0 or self.step == config.steps:
                record = {
                    "step": self.step,
                    "loss": self.dist.mean(running).item() / count,
                    "grad_norm": float(grad_norm),  # the same on every rank: computed from averaged gradients
                    "lr": self.scheduler.get_last_lr()[0],
                    "steps_per_s": count / (time.perf_counter() - started),
                }
                self.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                running, count, started = torch.zeros_like(running), 0, time.perf_counter()
            if main and self.evaluate is not None and config.eval_every and self.step % config.eval_every == 0:
                metrics = self.evaluate(self.ema_model, self.step)
                self.history.append({"step": self.step, **metrics})
                bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                self.model.train()
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.save_state()
        batches.close()  # stops the DataLoader workers
        bar.close()
        if not (config.checkpoint_every and self.step % config.checkpoint_every == 0):
            self.save_state()  # unless the last step just did (a second copy would push out train_state.prev)
        return self.history

    def _rng_states(self) -> dict[str, torch.Tensor]:
        """Every rank's random-number-generator states (a collective: all ranks call it together)."""
        states = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            f"rng.{kind}.{rank}": value
            for kind, state in states.items()
            for rank, value in enumerate(self.dist.gather(state))
        }

    def save_state(self) -> None:
        """Write the resumable training state and, through ``save``, the user-facing artifact.

        Under torchrun every rank must call it (their random states are gathered); rank 0 writes.
        """
        rng = self._rng_states()
        if self.dist.is_main:
            if self.save is not None:
                self.save(self.ema_model, self.step)
            if self.output_dir is not None:
                self._write_state(rng)
        self.dist.barrier()  # no rank runs ahead (or exits) before the checkpoint is complete

    def _write_state(self, rng: dict[str, torch.Tensor]) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema_model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        for param_id, state in optimizer["state"].items():
            for key, value in state.items():
                tensors[f"optimizer.{param_id}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        meta = {
            "kind": STATE_NAME,
            "trainer": asdict(self.config),
            "world_size": self.dist.world_size,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "param_groups": optimizer["param_groups"],
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
        }
        save_rotating(self.output_dir, tensors | rng, json.loads(json.dumps(meta, default=float)), name=STATE_NAME)

    def load_state(self, directory: str | Path) -> None:
        """Resume from the state :meth:`save_state` wrote to ``directory`` (same model and data).

        A damaged newest state (a checksum mismatch, say) is refused with a warning and the previous one,
        ``train_state.prev``, is loaded instead. Under torchrun every rank loads (from a shared filesystem).
        """
        tensors, meta = load_latest(directory, name=STATE_NAME, kind=STATE_NAME)
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
        rank = self.dist.rank
        if meta["world_size"] == self.dist.world_size:
            torch.set_rng_state(tensors[f"rng.cpu.{rank}"])
            if self.device.type == "cuda" and f"rng.cuda.{rank}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"], self.device)
        else:
            # Data order and weights carry over; the random streams of a different set of ranks cannot.
            warnings.warn(
                f"{directory} was written by {meta['world_size']} processes, this run has {self.dist.world_size}: "
                "resuming with fresh random streams, so the run will not repeat the original bit for bit",
                stacklevel=2,
            )
            torch.manual_seed(rank_seed(self.config.seed, rank, self.step))
