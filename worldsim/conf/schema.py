"""The ``worldsim`` command's typed configs, registered in Hydra's ConfigStore.

Every field is defined once, by a library dataclass: the training commands' primary configs *are* the
library's ``TrainPolicyConfig``, ``TrainWorldModelConfig`` and ``SelfForcingConfig``, and the groups are
``task`` (:class:`~worldsim.envs.tasks.TaskSpec`), ``policy``
(:class:`~worldsim.policies.config.DiffusionPolicyConfig`), ``strategy``
(:class:`~worldsim.policies.config.StrategySpec`) and ``training``
(:class:`~worldsim.core.trainer_config.TrainerConfig`). The YAML files beside this module only choose and
override values. The commands that only run library functions (eval, serve, export, ...) get a small
dataclass here that composes those library configs with the command's own arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from worldsim.core.trainer_config import TrainerConfig
from worldsim.envs.tasks import TaskSpec
from worldsim.policies.config import DiffusionPolicyConfig, StrategySpec, TrainPolicyConfig
from worldsim.world_model.config import SelfForcingConfig, TrainWorldModelConfig
from worldsim.world_model.streaming import SessionConfig


@dataclass
class CollectCommand:
    """``worldsim collect``: record a task's expert demonstrations as a Minari dataset."""

    task: TaskSpec = field(default_factory=TaskSpec)
    episodes: int | None = None
    """Default: the task's ``demo_episodes``."""
    seed: int | None = None
    """Default: the task's ``demo_seed``."""
    data_format: str = "hdf5"
    path: str | None = None
    """Minari datasets root; default ``$MINARI_DATASETS_PATH``."""


@dataclass
class TakeoverCommand:
    """``worldsim takeover``: the task's expert finishing from a policy's states (recovery demonstrations)."""

    task: TaskSpec = field(default_factory=TaskSpec)
    strategy: StrategySpec = field(default_factory=lambda: StrategySpec("ddim", {"steps": 10}))
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
class EvalCommand:
    """``worldsim eval``: roll a policy out with a strategy and report success (or return), calls, latency."""

    task: TaskSpec = field(default_factory=TaskSpec)
    strategy: StrategySpec = field(default_factory=StrategySpec)
    checkpoint: str | None = None
    """Default: the task's shipped policy. A ``.onnx`` file runs the exported policy without torch."""
    episodes: int = 20
    seed: int = 100_000
    policy_seed: int | None = None
    """Reseed the policy's noise with ``policy_seed + episode`` (torch and ONNX draw the same noise)."""
    per_action_delay_ticks: int = 0
    """Stall the world this many ticks before every action (``PerActionDelay``: a blocking controller's
    worst case). For a chunked policy under real inference delay use ``asynchronous`` instead."""
    asynchronous: dict[str, Any] = field(default_factory=dict)
    """Non-empty: run the episodes as the live control loop would, chunks computed while the previous one
    keeps running, with these :class:`~worldsim.bridge.DelayConfig` options (e.g.
    ``asynchronous.delay_ticks=4 asynchronous.merge=ensemble``); see docs/live_control.md."""
    obs_check: str = "error"
    """An observation outside the observation space: ``error``, ``clip`` or ``warn``."""


@dataclass
class BenchCommand:
    """``worldsim bench``: run a benchmark script of the source tree and keep its JSON."""

    name: str = "policy"
    """A script of the source tree's ``benchmarks/`` folder: core, envs, policy, world_model, bridge, export, ..."""
    args: list[str] = field(default_factory=list)
    """Extra command-line arguments of the script."""


@dataclass
class ServeCommand:
    """``worldsim serve``: serve a policy or a world model over the ZeroMQ bridge."""

    task: TaskSpec = field(default_factory=TaskSpec)
    strategy: StrategySpec = field(default_factory=StrategySpec)
    """The served policy's strategy; its options default to the policy's recorded ones (its task's RTI)."""
    kind: str = "policy"
    """``policy`` or ``world-model``."""
    checkpoint: str | None = None
    """Default: the task's shipped policy (or world model with ``kind=world-model``)."""
    onnx: str | None = None
    """Serve an exported policy instead, without torch."""
    session: SessionConfig = field(default_factory=SessionConfig)
    """World models: how each client's streaming session samples."""
    address: str = "tcp://127.0.0.1:5555"
    curve_secret: str | None = None
    allow: list[str] = field(default_factory=list)
    """CURVE: public key files or folders of admitted clients."""
    insecure: bool = False
    session_timeout_s: float = 30.0
    max_sessions: int = 16
    max_context_frames: int = 64
    obs_check: str = "error"
    """A served policy's response to an observation outside its observation space."""


@dataclass
class ExportCommand:
    """``worldsim export policy|world-model``: export a checkpoint's denoiser step to ONNX with a parity check."""

    task: TaskSpec = field(default_factory=TaskSpec)
    kind: str = "policy"
    """``policy`` or ``world-model``."""
    checkpoint: str | None = None
    """Default: the task's shipped checkpoint of that kind."""
    out: str | None = None
    """Default: ``model.onnx`` in the run's output folder."""
    tolerance: float = 1e-4


@dataclass
class PlayCommand:
    """``worldsim play``: drive a pixel world model live, or record a scripted play."""

    checkpoint: str = "wm-pusht-pixels"
    session: SessionConfig = field(default_factory=SessionConfig)
    headless: bool = False
    frames: int = 200
    scale: int = 6
    seed: int = 0
    out: str | None = None
    """Headless recording; default ``play.gif`` in the run's output folder."""


@dataclass
class DemoCommand:
    """``worldsim demo``: the policies, a dream rollout, a live bridge loop and an ONNX export, with a report."""

    fast: bool = False
    """A quick pass (CI): one episode per row, a short video and control loop."""
    tasks: list[str] = field(default_factory=lambda: ["pusht", "pickplace"])
    """Options of the ``task`` config group."""
    strategies: list[str] = field(default_factory=lambda: ["ddpm", "rti"])
    episodes: int = 10
    seed: int = 100_000
    camera_task: str = "pusht_pixels"
    """The task of the camera part: its shipped visuomotor policy drives one episode, recorded as video."""
    dream_checkpoint: str = "wm-pusht-pixels"
    dream_frames: int = 120
    loop_seconds: float = 4.0
    loop_rate_hz: float = 50.0
    parts: list[str] = field(default_factory=lambda: ["policies", "camera", "dream", "bridge", "export"])


COMMANDS: dict[str, type] = {
    "collect": CollectCommand,
    "takeover": TakeoverCommand,
    "train_policy": TrainPolicyConfig,
    "train_world_model": TrainWorldModelConfig,
    "train_self_forcing": SelfForcingConfig,
    "eval": EvalCommand,
    "bench": BenchCommand,
    "serve": ServeCommand,
    "export": ExportCommand,
    "play": PlayCommand,
    "demo": DemoCommand,
}
GROUPS: dict[str, type | None] = {
    "task": TaskSpec,
    "policy": DiffusionPolicyConfig,
    "strategy": StrategySpec,
    "training": TrainerConfig,
    "world_model": None,
}
"""Config groups and the library dataclass each option fills (``world_model`` options set several nodes of
``TrainWorldModelConfig`` at once: the env's observations, the data and the model's sizes)."""


def register() -> None:
    """Store every schema: ``schema_<command>`` for the primary configs, ``<group>/schema`` for groups."""
    store = ConfigStore.instance()
    for name, node in COMMANDS.items():
        store.store(name=f"schema_{name}", node=node)
    for group, node in GROUPS.items():
        if node is not None:
            store.store(group=group, name="schema", node=node)
