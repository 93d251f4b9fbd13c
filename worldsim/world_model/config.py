"""Typed configuration of the world model and of its training runs: the one definition of their fields.

The ``worldsim`` command's ``train world-model`` and ``train self-forcing`` configs are these dataclasses
(Hydra structured configs); a checkpoint records them in its JSON. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields

from worldsim.core.schedules import PARAMETERIZATIONS, SCHEDULES
from worldsim.core.trainer_config import TrainerConfig
from worldsim.core.validation import check_choice, check_number
from worldsim.envs.tasks import TaskSpec

NETWORKS: tuple[str, ...] = ("transformer", "unet")


@dataclass
class WorldModelConfig:
    """Network size, diffusion settings and the attention pattern shared by training and streaming."""

    network: str = "transformer"
    """``transformer``: a causal transformer over frame tokens with a bounded KV cache (state, or pixel frames
    through the autoencoder tokenizer); ``unet``: a pixel-space U-Net over the frame and the last
    ``window_frames`` frames stacked (pixel observations only; DIAMOND's design)."""
    width: int = 128
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    parameterization: str = "v_prediction"
    schedule: str = "cosine"
    """The noise schedule, built by the core's factory: ``cosine`` or ``flow``."""
    num_train_steps: int | None = None
    """The schedule's training grid; None: continuous levels."""
    sequence_frames: int = 10
    """Frames per training window (the first one has no action leading to it)."""
    sink_frames: int = 1
    window_frames: int = 8
    context_noise: float = 0.1
    context_prob: float = 0.5
    unet_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    """U-Net: channels of each stage (each halves the resolution; chosen for 2 CPU cores at 64x64)."""
    unet_copy_skip: bool = False
    """U-Net: predict the next frame as the newest context frame plus a learned change (needs
    ``parameterization=sample``), so an untrained network copies and an object's pixels stay put unless moved."""
    unet_coord_channels: bool = False
    """U-Net: each pixel's x and y as two more input channels (CoordConv), so an action can say where."""
    unet_change_weight: float = 0.0
    """U-Net: the training loss weighs each pixel that changes from the newest context frame to the target
    by ``1 + unet_change_weight`` (what moves is a few percent of a frame's pixels). 0: a plain mean."""
    unet_action_channels: bool = False
    """U-Net: the action leading to the frame as input channels, constant over the frame (with
    ``unet_coord_channels`` a convolution can place a target position in the frame)."""
    one_step_predictor: bool = True
    """State models with delta tokens: a deterministic MLP (:mod:`~worldsim.world_model.one_step_predictor`)
    predicts each frame's change from the two frames before and the action, and the diffusion model samples
    only its residual (a diffusion model alone resolves a push to about a tenth of its size)."""
    predictor_steps: int = 20000
    """Training steps of the one-step predictor (batches of 256 transitions), before the diffusion model's."""
    predictor_input_noise: float = 0.3
    """The one-step predictor is trained on input frames moved by Gaussian noise of this many change scales
    per dimension (the target still the true next frame), so a rollout's own small errors are led back instead
    of growing (the balanced pendulum's expert rollouts: 36,600x copy-last at 50 steps without, 0.51 with)."""
    predictor_clean_fraction: float = 0.0
    """Fraction of each predictor batch's transitions given their true input frames, the rest moved by
    ``predictor_input_noise``, to keep one-step precision on recorded states. 0 (noise on every input): 0.5
    measured on the suite bought LunarLander's random-walk h1 (0.50 -> 0.38x copy-last, still above 0.3) and
    the pendulum's expert h10 / h50 (9.2 / 332 -> 4.9 / 26) at the cost of LunarLander's expert h50 (0.05 ->
    0.86) and the pendulum's random walk at 50 steps (0.98 -> 1.06, above copy-last; docs/bring_your_own_env.md)."""

    def __post_init__(self) -> None:
        check_choice("model.network", self.network, NETWORKS)
        if self.network == "unet":
            if self.sink_frames != 0 or self.sequence_frames != self.window_frames + 1:
                raise ValueError(
                    "a U-Net world model sees the last window_frames frames: it needs model.sink_frames=0 and "
                    f"model.sequence_frames = window_frames + 1 = {self.window_frames + 1}, got "
                    f"{self.sink_frames} and {self.sequence_frames}"
                )
        check_number("model.unet_change_weight", self.unet_change_weight, low=0)
        for option in ("unet_coord_channels", "unet_action_channels", "unet_change_weight"):
            if getattr(self, option) and self.network != "unet":
                raise ValueError(f"model.{option} is a U-Net option; model.network is {self.network}")
        if self.unet_copy_skip and (self.network != "unet" or self.parameterization != "sample"):
            raise ValueError(
                "model.unet_copy_skip adds the last frame to a clean-frame prediction: it needs model.network=unet "
                f"and model.parameterization=sample, got {self.network} and {self.parameterization}"
            )
        check_choice("model.parameterization", self.parameterization, PARAMETERIZATIONS)
        check_choice("model.schedule", self.schedule, SCHEDULES)
        for name in ("width", "depth", "heads"):
            check_number(f"model.{name}", getattr(self, name), low=1, integer=True)
        check_number("model.num_train_steps", self.num_train_steps, low=2, integer=True, allow_none=True)
        check_number("model.sequence_frames", self.sequence_frames, low=2, integer=True)
        check_number("model.sink_frames", self.sink_frames, low=0, integer=True)
        check_number("model.window_frames", self.window_frames, low=1, integer=True)
        check_number("model.predictor_steps", self.predictor_steps, low=1, integer=True)
        check_number("model.predictor_input_noise", self.predictor_input_noise, low=0)
        check_number("model.predictor_clean_fraction", self.predictor_clean_fraction, low=0, high=1)
        check_number("model.context_noise", self.context_noise, low=0, high=1)
        check_number("model.context_prob", self.context_prob, low=0, high=1)
        if self.width % self.heads:
            raise ValueError(f"model.width ({self.width}) must be a multiple of model.heads ({self.heads})")

    @classmethod
    def from_dict(cls, data: dict) -> WorldModelConfig:
        """The config a checkpoint recorded (older ones wrote the schedule as a dict)."""
        data = dict(data)
        if isinstance(data.get("schedule"), dict):
            legacy = data.pop("schedule")
            data["schedule"], data["num_train_steps"] = legacy.get("name", "cosine"), legacy.get("num_train_steps")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown world-model config field(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass
class AutoencoderConfig:
    """The pixel tokenizer's autoencoder: frame side, width, latent channels, foreground loss weight, grid."""

    image_size: int = 64
    """Frame side in pixels (training takes it from the env)."""
    channels: int = 32
    latent_channels: int = 8
    foreground_weight: float = 10.0
    downsample: int = 16
    """Frame side / latent grid side: 16 (a 4x4 grid for 64x64 frames) or 8."""

    def __post_init__(self) -> None:
        if self.image_size % 16 or self.image_size < 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if self.downsample not in (8, 16):
            raise ValueError(f"downsample must be 8 or 16, got {self.downsample}")
        if self.channels < 1 or self.latent_channels < 1:
            raise ValueError("channels and latent_channels must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def world_model_trainer_defaults() -> TrainerConfig:
    return TrainerConfig(
        steps=3000, batch_size=64, learning_rate=1e-3, warmup_steps=300, ema_decay=0.995, log_every=250,
        device="auto",
    )  # fmt: skip


def autoencoder_trainer_defaults() -> TrainerConfig:
    return TrainerConfig(
        steps=2000, batch_size=32, learning_rate=2e-3, warmup_steps=200, ema_decay=0.99, log_every=250,
        device="auto",
    )  # fmt: skip


@dataclass
class TrainWorldModelConfig:
    """Everything a world-model training run takes; the defaults are worldsim's one recipe."""

    task: TaskSpec = field(default_factory=TaskSpec)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    training: TrainerConfig = field(default_factory=world_model_trainer_defaults)
    out: str = ""
    """Checkpoint directory (required; the command defaults it to ``checkpoint`` in its output folder)."""
    state_dir: str | None = None
    """Also keep resumable training states here (the command uses its output folder)."""
    episodes: int = 300
    """Rollout episodes to train on (seeds ``training.seed + i``); more are held out after them."""
    max_steps: int = 300
    """Steps per rollout episode."""
    through_termination: bool = True
    """Keep stepping rollouts past a termination (to ``max_steps``): the model also learns what follows a
    fall or a crash, so short random episodes still make long training windows."""
    held_out_episodes: int = 10
    use_demonstrations: bool = False
    """Train on the task's demonstration dataset (``task.dataset_id``) instead of fresh rollouts."""
    data_path: str | None = None
    """Minari datasets root for ``use_demonstrations``; None: ``$MINARI_DATASETS_PATH``."""
    state_normalization: str = "meanstd"
    """State models: how each state dimension (and its change) is scaled, ``meanstd`` or ``minmax``."""
    state_delta: bool = True
    """State models: tokens also carry each frame's change since the previous one, and a generated frame is
    the previous observation plus its predicted change (precise dynamics in raw units)."""
    tokens_per_frame: int = 4
    """Pixel models: latent tokens per frame."""
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    """Pixel models: the autoencoder tokenizer (its ``image_size`` comes from the env)."""
    autoencoder_training: TrainerConfig = field(default_factory=autoencoder_trainer_defaults)
    autoencoder_from: str | None = None
    """Pixel models: reuse this world-model checkpoint's autoencoder instead of training one."""
    init_from: str | None = None
    """Start from this world-model checkpoint's weights and tokenizer (fine-tuning; same config)."""
    resume: bool = False
    """Continue from the training state kept in ``state_dir``."""
    threads: int = 1
    """torch CPU threads (0: torch's default)."""

    def __post_init__(self) -> None:
        for name in ("episodes", "max_steps", "held_out_episodes", "tokens_per_frame"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads must be a non-negative integer, got {self.threads!r}")
        check_choice("state_normalization", self.state_normalization, ("meanstd", "minmax"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def self_forcing_trainer_defaults() -> TrainerConfig:
    return TrainerConfig(
        steps=1000, batch_size=64, learning_rate=2e-4, warmup_steps=100, ema_decay=0.995, log_every=250, seed=1,
        device="auto",
    )  # fmt: skip


@dataclass
class SelfForcingConfig:
    """A self-forcing fine-tune of a trained world model; the defaults are the shipped ``wm-pusht-state-sf``'s."""

    checkpoint: str = ""
    """The world model to fine-tune (a shipped name or a directory); required."""
    out: str = ""
    """Checkpoint directory to write; required."""
    episodes: int = 150
    """Rollout episodes to draw windows from (of the env the checkpoint recorded)."""
    windows: int = 8000
    """Self-forcing windows (own rollouts) per round."""
    rounds: int = 4
    """Times the own windows are re-rolled with the weights reached so far."""
    training: TrainerConfig = field(default_factory=self_forcing_trainer_defaults)
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("episodes", "windows", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.training.steps < self.rounds:
            raise ValueError(f"rounds ({self.rounds}) must not exceed training.steps ({self.training.steps})")
