"""Typed configs of the ``worldsim`` command, registered in Hydra's ConfigStore.

Each sub-command has one top-level dataclass; the YAML files beside this module (package data) fill
its groups: ``task`` (which environment, dataset and shipped checkpoints), ``policy`` (the diffusion
policy's architecture), ``strategy`` (how it samples), ``world_model`` (the world model's architecture
and data) and ``training`` (the shared trainer's settings). Hydra validates every override against
these types. The CLI turns them into plain arguments: library code never sees a Hydra object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TaskConfig:
    env_id: str = MISSING
    dataset_id: str = MISSING
    demo_episodes: int = 200
    """Expert demonstrations recorded when the dataset is missing (``worldsim collect`` / training)."""
    demo_seed: int = 0
    """Seed those demonstrations are recorded with."""
    score_key: str | None = None
    """A per-step ``info`` value whose episode maximum is reported (Push-T's ``coverage``)."""
    discrete_dims: list[int] = field(default_factory=list)
    relative_to_obs: list[int] = field(default_factory=list)
    """Per action dimension, the observation dimension its policy predicts it relative to (-1: absolute);
    empty: absolute actions. Push-T's pusher targets are relative to the pusher, observation dims 0 and 1."""
    policy_n_action_steps: int | None = None
    """Actions executed per chunk by this task's policy; None keeps ``policy.n_action_steps``."""
    policy_checkpoint: str = MISSING
    """The shipped policy of this task (a name under ``worldsim/checkpoints`` or a directory)."""
    policy_rti_options: dict[str, Any] = field(default_factory=lambda: {"k": 10})
    """The RTI options the shipped policy runs with in the demo and the benchmarks."""
    world_model_checkpoint: str | None = None


@dataclass
class PolicyConfig:
    horizon: int = 16
    obs_horizon: int = 2
    n_action_steps: int = 8
    num_train_steps: int = 100
    parameterization: str = "sample"
    width: int = 96
    depth: int = 3
    heads: int = 4
    shared_level_prob: float = 0.5


@dataclass
class StrategyConfig:
    name: str = "rti"
    """``ddpm``, ``ddim``, ``rti`` or ``rolling``."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the strategy, e.g. ``{k: 10}`` for RTI or ``{steps: 10}`` for DDIM."""


@dataclass
class WorldModelConfig:
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``gymnasium.make`` for the rollouts, e.g. ``{obs_type: pixels, image_size: 64}``."""
    episodes: int = 300
    max_steps: int = 300
    width: int = 128
    depth: int = 3
    sequence_frames: int = 10
    sink_frames: int = 1
    window_frames: int = 8
    context_noise: float = 0.1
    tokens_per_frame: int = 4
    ae_steps: int = 2000
    ae_channels: int = 32


@dataclass
class TrainingConfig:
    steps: int = 20_000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 500
    ema_decay: float = 0.999
    eval_every: int = 2_000
    eval_episodes: int = 10
    checkpoint_every: int = 1_000
    seed: int = 0
    threads: int = 1
    device: str = "auto"
    """``auto`` (a CUDA GPU when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    distributed: bool = False
    """Run under ``torchrun`` with DistributedDataParallel (see docs/training_at_scale.md)."""


@dataclass
class CollectCommand:
    task: TaskConfig = MISSING
    episodes: int | None = None
    """Default: the task's ``demo_episodes``."""
    seed: int | None = None
    """Default: the task's ``demo_seed``."""
    obs_type: str = "state"
    image_size: int = 96
    data_format: str = "hdf5"
    path: str | None = None
    """Minari datasets root; default ``$MINARI_DATASETS_PATH``."""


@dataclass
class TakeoverCommand:
    task: TaskConfig = MISSING
    strategy: StrategyConfig = MISSING
    checkpoint: str | None = None
    """The policy that drives before the expert takes over; default: the task's shipped policy."""
    dataset_id: str | None = None
    """The new Minari dataset; default: the task's dataset id with ``-takeover`` before its version."""
    episodes: int = 400
    seed: int = 500_000
    handover_steps: list[int] = field(default_factory=lambda: [10, 290])
    """Inclusive range of the policy's steps before the expert takes over."""
    expert_steps: int = 300
    path: str | None = None
    """Minari datasets root; default ``$MINARI_DATASETS_PATH``."""


@dataclass
class TrainPolicyCommand:
    task: TaskConfig = MISSING
    policy: PolicyConfig = MISSING
    training: TrainingConfig = MISSING
    out: str | None = None
    """Checkpoint directory; default ``checkpoint`` in the run's output folder."""
    data_path: str | None = None


@dataclass
class TrainWorldModelCommand:
    task: TaskConfig = MISSING
    world_model: WorldModelConfig = MISSING
    training: TrainingConfig = MISSING
    out: str | None = None


@dataclass
class EvalCommand:
    task: TaskConfig = MISSING
    strategy: StrategyConfig = MISSING
    checkpoint: str | None = None
    """Default: the task's shipped policy. A ``.onnx`` file runs the exported policy without torch."""
    episodes: int = 20
    seed: int = 100_000
    latency_ticks: int = 0


@dataclass
class BenchCommand:
    name: str = "policy"
    """A script of the source tree's ``benchmarks/`` folder: core, envs, policy, world_model, bridge, export, ..."""
    args: list[str] = field(default_factory=list)
    """Extra command-line arguments of the script."""


@dataclass
class ServeCommand:
    task: TaskConfig = MISSING
    strategy: StrategyConfig = MISSING
    kind: str = "policy"
    """``policy`` or ``world-model``."""
    checkpoint: str | None = None
    """Default: the task's shipped policy (or world model with ``kind=world-model``)."""
    onnx: str | None = None
    """Serve an exported policy instead, without torch."""
    address: str = "tcp://127.0.0.1:5555"
    curve_secret: str | None = None
    insecure: bool = False


@dataclass
class ExportCommand:
    task: TaskConfig = MISSING
    kind: str = "policy"
    """``policy`` or ``world-model``."""
    checkpoint: str | None = None
    """Default: the task's shipped checkpoint of that kind."""
    out: str | None = None
    """Default: ``model.onnx`` in the run's output folder."""
    tolerance: float = 1e-4


@dataclass
class PlayCommand:
    checkpoint: str = "wm-pusht-pixels"
    sampling: str = "autoregressive"
    steps: int = 1
    headless: bool = False
    frames: int = 200
    scale: int = 6
    seed: int = 0
    out: str | None = None
    """Headless recording; default ``play.gif`` in the run's output folder."""


@dataclass
class DemoCommand:
    fast: bool = False
    """A quick pass (CI): one episode per row, a short video and control loop."""
    tasks: list[str] = field(default_factory=lambda: ["pusht", "pickplace"])
    """Options of the ``task`` config group."""
    strategies: list[str] = field(default_factory=lambda: ["ddpm", "rti"])
    episodes: int = 10
    seed: int = 100_000
    dream_checkpoint: str = "wm-pusht-pixels"
    dream_frames: int = 120
    loop_seconds: float = 4.0
    loop_rate_hz: float = 50.0
    parts: list[str] = field(default_factory=lambda: ["policies", "dream", "bridge", "export"])


COMMANDS: dict[str, type] = {
    "collect": CollectCommand,
    "takeover": TakeoverCommand,
    "train_policy": TrainPolicyCommand,
    "train_world_model": TrainWorldModelCommand,
    "eval": EvalCommand,
    "bench": BenchCommand,
    "serve": ServeCommand,
    "export": ExportCommand,
    "play": PlayCommand,
    "demo": DemoCommand,
}
GROUPS: dict[str, type] = {
    "task": TaskConfig,
    "policy": PolicyConfig,
    "strategy": StrategyConfig,
    "world_model": WorldModelConfig,
    "training": TrainingConfig,
}


def register() -> None:
    """Store every schema: ``schema_<command>`` for the primary configs, ``<group>/schema`` for groups."""
    store = ConfigStore.instance()
    for name, node in COMMANDS.items():
        store.store(name=f"schema_{name}", node=node)
    for group, node in GROUPS.items():
        store.store(group=group, name="schema", node=node)
