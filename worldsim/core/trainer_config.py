"""The shared trainer's settings (torch-free, so configs load without torch) and the device they name."""

from __future__ import annotations

import re
from dataclasses import dataclass

from worldsim.core.validation import check_choice, check_number

MIXED_PRECISION = ("no", "bf16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass
class TrainerConfig:
    """Steps, batch, optimizer, EMA, evaluation and checkpoint periods, seed, device, DDP and precision."""

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
    """Show a progress bar; without it, print one line per ``log_every`` steps instead (logs of long runs)."""
    num_workers: int = 0
    """DataLoader processes that read batches ahead (worth it for on-disk datasets); 0 reads in this process."""
    distributed: bool = False
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK): NCCL on GPUs, else gloo."""
    mixed_precision: str = "no"
    """``"bf16"``: compute the loss under bfloat16 autocast. Needs a CUDA device (refused on CPU)."""
    time_limit_minutes: float | None = None
    """Stop training after this many minutes of training steps (evaluations and checkpoints not counted), at
    ``steps`` at the latest. The cosine decay then advances with the larger of the step and the time
    fractions, so a run cut by its budget still ends annealed. None: no limit. Single-process runs only."""
    compile: bool = False
    """``torch.compile`` the loss computation (the first steps are slow while it compiles)."""
    device: str | None = None
    """Where a single-process run trains: ``None`` leaves the model where the caller put it, ``"auto"`` takes
    the first CUDA GPU when there is one (else the CPU), or a torch device such as ``"cpu"`` or ``"cuda:1"``.
    Under torchrun each rank trains on its own GPU instead."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            check_number(f"training.{name}", getattr(self, name), low=1, integer=True)
        for name in ("warmup_steps", "log_every", "eval_every", "checkpoint_every", "seed", "num_workers"):
            check_number(f"training.{name}", getattr(self, name), low=0, integer=True)
        check_number("training.learning_rate", self.learning_rate, low=0)
        check_number("training.weight_decay", self.weight_decay, low=0)
        check_number("training.grad_clip_norm", self.grad_clip_norm, low=0)
        check_number("training.ema_decay", self.ema_decay, low=0, high=0.999999)
        check_choice("training.mixed_precision", self.mixed_precision, MIXED_PRECISION)
        check_number("training.time_limit_minutes", self.time_limit_minutes, low=0, allow_none=True)
        if self.time_limit_minutes is not None and self.distributed:
            raise ValueError("training.time_limit_minutes applies to single-process runs (ranks would stop apart)")
        if self.device is not None and not _DEVICE.match(str(self.device)):
            raise ValueError(f"training.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


def resolve_device(name: str | None):
    """``TrainerConfig.device`` as a torch device (None stays None); a GPU that is not there is refused."""
    import torch

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
