"""Typed configuration of the diffusion policy: the one definition of its fields and defaults.

The ``worldsim`` command's ``policy`` config group builds this dataclass (Hydra structured config), the
Python API takes it as it is, and a checkpoint records it in its JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from worldsim.core.schedules import PARAMETERIZATIONS, SCHEDULES
from worldsim.core.trainer_config import TrainerConfig
from worldsim.core.validation import check_choice, check_number
from worldsim.envs.tasks import TaskSpec

OBS_TYPES = ("state", "pixels")
NORMALIZATIONS = ("minmax", "meanstd", "identity")
DISCRETE_RULES = ("scale", "clip")
DERIVED_FIELDS = (
    "obs_shape", "obs_keys", "action_dim", "obs_type", "state_dim", "action_low", "action_high", "obs_low", "obs_high",
    "angle_dims",
)  # fmt: skip
"""Fields taken from the env's spaces and data when a policy is trained (``train_policy`` fills them in)."""
TASK_FIELDS = ("discrete_dims", "relative_to_obs")
"""Fields that are task facts (``TaskSpec``), copied into the policy when it is trained."""


@dataclass
class DiffusionPolicyConfig:
    """Shapes, horizons, the noise schedule, the network, and how discrete action dimensions are handled.

    The defaults are worldsim's one recipe (docs/bring_your_own_env.md). The chunk convention:
    ``obs_history`` holds observations ``t - obs_horizon + 1 .. t`` and the chunk holds actions
    ``t .. t + horizon - 1`` (its first action is the one for the current tick). The fields in
    ``DERIVED_FIELDS`` and ``TASK_FIELDS`` describe the env and the task: training fills them in, so leave
    them unset in a training config.
    """

    obs_shape: tuple[int, ...] | None = None
    """Shape of one observation (derived from the env)."""
    action_dim: int | None = None
    """Number of action dimensions (derived from the env)."""
    obs_type: str = "state"
    """``state`` (a flat vector) or ``pixels`` (uint8 ``[H, W, 3]`` camera frames, ``obs_shape``), derived
    from the env."""
    obs_keys: tuple[str, ...] = ()
    """Dict observations, derived from the env's Dict space. A state policy: the keys whose values are
    flattened and concatenated, in this order, into the state vector (goal-conditioned envs). A pixel
    policy: ``(image_key, state_key)``, the camera frame and the state vector it takes ``proprio_dims``
    from. Empty: array observations."""
    state_dim: int = 0
    """A pixel policy's proprioceptive state beside its frames (derived from the env; 0: pixels only; the
    task's ``proprio_dims`` choose it from a full state). ``relative_to_obs``, ``obs_low`` and
    ``obs_high`` then refer to this vector."""
    image_shift: int = 4
    """Pixel policies: training frames are shifted by up to this many pixels (pad and random crop, as DrQ;
    one shift per history), never at inference. 0: no augmentation."""
    obs_horizon: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    """Actions executed per predicted chunk (a task may set its own: ``task.n_action_steps``)."""
    num_train_steps: int = 100
    """K, the training grid of the noise schedule (RTI's warm-start level k counts on it)."""
    schedule: str = "cosine"
    """The noise schedule, built by the core's factory: ``cosine`` (DDPM squaredcos_cap_v2) or ``flow``."""
    parameterization: str = "sample"
    """What the network predicts: ``sample`` (x0), ``epsilon``, ``v_prediction`` or ``velocity``."""
    clip_sample: float | None = None
    """Clamp each step's clean estimate to ``[-clip_sample, clip_sample]`` in normalized units (Diffusion
    Policy's ``clip_sample``, 1.0 with min-max normalization's range). None: no clamp (the default; required by
    other normalizations, where the bound would cut actions at that many standard deviations). Returned
    actions are clipped to the action space either way."""
    width: int = 96
    depth: int = 3
    heads: int = 4
    obs_feature_dim: int | None = None
    """Width of the observation encoding; None: ``width``."""
    per_step_conditioning: bool = False
    """Project the observation encoding once per chunk position (``[B, horizon, feature_dim]``, one linear map
    each) instead of giving every action token the same vector. Without it a chunk whose shape depends on the
    observation (a balancing controller's decaying correction) must be learnt through the interaction of the
    tokens' positions with one shared vector, which a short CPU training does not reach: on
    InvertedDoublePendulum's demonstrations the denoiser, trained as a plain regressor for 600 steps, explained
    8% of the first 40 steps' action variance with the shared vector and 93% with per-position ones (a plain
    MLP on the same features 96%; docs/bring_your_own_env.md)."""
    shared_level_prob: float = 0.5
    """Fraction of training chunks noised at one shared level; the rest get a level per action, which
    the rolling strategy needs (Diffusion Forcing)."""
    prefix_conditioning: int = 0
    """Training-time real-time chunking: each training chunk's first ``d`` actions, ``d`` drawn uniformly
    from ``0 .. prefix_conditioning``, are given clean (level 0) and left out of the loss, so the policy
    learns to continue a frozen prefix (the actions that run while it computes; strategy ``rtc``). 0: off."""
    normalization: str = "meanstd"
    """How observations and actions are scaled: ``meanstd`` (standardized per dimension, the default),
    ``minmax`` (to [-1, 1]; worldsim's shipped Push-T and PickPlace policies, with ``clip_sample=1.0``) or
    ``identity``. Standardizing won on the generalization suite (docs/bring_your_own_env.md): min-max squeezes
    a dimension whose demonstrations mostly sit in a sliver of its range (a lander's or a pendulum's steady
    state beside its rare large excursions) into a sliver of [-1, 1]."""
    discrete_dims: tuple[int, ...] = ()
    """Action dimensions that are discrete ±1 commands (a gripper): named, never guessed."""
    discrete_rule: str = "scale"
    """RTI-DP's rule: ``scale`` divides those dimensions by ``1 / discrete_scale`` in the training data;
    ``clip`` leaves training alone and shrinks them in each warm-start guess to ``sign(g) * discrete_scale``.
    Either way outputs are snapped to ±1."""
    discrete_scale: float = 0.1
    relative_to_obs: tuple[int, ...] = ()
    """For each action dimension, the observation dimension it is predicted relative to (the action
    minus that observation at the tick of the prediction), or -1 for an absolute dimension; empty: all
    absolute. Push-T's targets are relative to the pusher's position ``(0, 1)``: the chunk then codes
    small offsets, normalized per chunk position, instead of positions anywhere on the table."""
    action_low: tuple[float, ...] = field(default_factory=tuple)
    action_high: tuple[float, ...] = field(default_factory=tuple)
    angle_dims: tuple[int, ...] = ()
    """State dimensions that are angles reported modulo 2 pi (derived from the demonstrations: a dimension
    spanning one turn that jumps by more than half a turn between steps). The encoder sees each as its sine
    and cosine, so 0.01 and 6.27 rad are neighbours rather than the two ends of the normalized range."""
    obs_low: tuple[float, ...] = field(default_factory=tuple)
    """The observation space's bounds (flat; empty: unbounded), against which inputs are checked."""
    obs_high: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.discrete_dims = tuple(int(d) for d in self.discrete_dims)
        self.obs_keys = tuple(str(k) for k in self.obs_keys)
        self.relative_to_obs = tuple(int(d) for d in self.relative_to_obs)
        self.angle_dims = tuple(int(d) for d in self.angle_dims)
        for name in ("action_low", "action_high", "obs_low", "obs_high"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        check_choice("policy.obs_type", self.obs_type, OBS_TYPES)
        check_choice("policy.schedule", self.schedule, SCHEDULES)
        check_choice("policy.parameterization", self.parameterization, PARAMETERIZATIONS)
        check_choice("policy.normalization", self.normalization, NORMALIZATIONS)
        check_choice("policy.discrete_rule", self.discrete_rule, DISCRETE_RULES)
        for name in ("obs_horizon", "horizon", "num_train_steps", "width", "depth", "heads"):
            check_number(f"policy.{name}", getattr(self, name), low=1, integer=True)
        check_number("policy.n_action_steps", self.n_action_steps, low=1, high=self.horizon, integer=True)
        check_number("policy.obs_feature_dim", self.obs_feature_dim, low=1, integer=True, allow_none=True)
        check_number("policy.shared_level_prob", self.shared_level_prob, low=0, high=1)
        if not isinstance(self.per_step_conditioning, bool):  # a string such as "no" would switch it on
            raise ValueError(f"policy.per_step_conditioning must be true or false, got {self.per_step_conditioning!r}")
        check_number("policy.prefix_conditioning", self.prefix_conditioning, low=0, high=self.horizon - 1, integer=True)
        check_number("policy.clip_sample", self.clip_sample, low=0, allow_none=True)
        if self.clip_sample is not None and self.normalization != "minmax":
            raise ValueError(
                f"policy.clip_sample={self.clip_sample} clamps actions to min-max's [-1, 1] range, but with "
                f"normalization={self.normalization} it would cut them at {self.clip_sample} standard deviations; "
                "set policy.clip_sample=null"
            )
        check_number("policy.state_dim", self.state_dim, low=0, integer=True)
        check_number("policy.image_shift", self.image_shift, low=0, high=32, integer=True)
        check_number("policy.discrete_scale", self.discrete_scale, low=1e-6, high=1)
        if self.width % self.heads:
            raise ValueError(f"policy.width ({self.width}) must be a multiple of policy.heads ({self.heads})")
        if self.obs_shape is not None:
            self.obs_shape = tuple(int(s) for s in self.obs_shape)
            self._check_shapes()

    @property
    def complete(self) -> bool:
        """Whether the env-derived fields are filled in (a policy can only be built from a complete config)."""
        return self.obs_shape is not None and self.action_dim is not None

    @property
    def feature_dim(self) -> int:
        return self.obs_feature_dim or self.width

    @property
    def state_size(self) -> int:
        """Length of the state vector the policy normalizes: the observation (state policies) or the
        proprioception (pixel policies)."""
        return self.obs_shape[0] if self.obs_type == "state" else self.state_dim

    @property
    def state_feature_size(self) -> int:
        """Width of one normalized state as the encoder takes it: each angle dimension becomes sine and cosine."""
        return self.state_size + len(self.angle_dims)

    @property
    def multipart(self) -> bool:
        """Whether an observation is a dict ``{"pixels", "state"}`` (a pixel policy with proprioception)."""
        return self.obs_type == "pixels" and self.state_dim > 0

    def _check_shapes(self) -> None:
        if self.obs_type == "state" and len(self.obs_shape) != 1:
            raise ValueError(f"state observations must be flat, got shape {self.obs_shape}")
        if self.obs_type == "pixels" and (len(self.obs_shape) != 3 or self.obs_shape[-1] != 3):
            raise ValueError(f"pixel observations must be [H, W, 3], got shape {self.obs_shape}")
        check_number("policy.action_dim", self.action_dim, low=1, integer=True)
        for name, expected in (("action_low", self.action_dim), ("action_high", self.action_dim)):
            if getattr(self, name) and len(getattr(self, name)) != expected:
                raise ValueError(f"policy.{name} needs {expected} values, got {len(getattr(self, name))}")
        if self.obs_type == "state" and self.state_dim:
            raise ValueError("policy.state_dim is for pixel policies (a state policy's state is its observation)")
        if self.multipart and len(self.obs_keys) != 2:
            raise ValueError(
                f"a pixel policy with proprioception needs obs_keys (image_key, state_key), got {self.obs_keys}"
            )
        for name in ("obs_low", "obs_high"):
            if getattr(self, name) and len(getattr(self, name)) != self.state_size:
                raise ValueError(f"policy.{name} needs {self.state_size} values, got {len(getattr(self, name))}")
        bad = [d for d in self.discrete_dims if not 0 <= d < self.action_dim]
        if bad:
            raise ValueError(f"discrete_dims {bad} are outside the {self.action_dim} action dimensions")
        bad = [d for d in self.angle_dims if not 0 <= d < self.state_size]
        if bad or len(set(self.angle_dims)) != len(self.angle_dims):
            raise ValueError(
                f"angle_dims {list(self.angle_dims)} must be distinct state dimensions (0 .. {self.state_size - 1})"
            )
        if self.relative_to_obs:
            self._check_relative()

    def _check_relative(self) -> None:
        if not self.state_size:
            raise ValueError("relative_to_obs needs state observations or proprioception (it names their dimensions)")
        if len(self.relative_to_obs) != self.action_dim:
            raise ValueError(
                f"relative_to_obs needs one entry per action dimension ({self.action_dim}), "
                f"-1 for an absolute one; got {self.relative_to_obs}"
            )
        bad = [d for d in self.relative_to_obs if not -1 <= d < self.state_size]
        if bad:
            raise ValueError(f"relative_to_obs {bad} are outside the {self.state_size} observation dimensions")
        relative_discrete = [d for d in self.discrete_dims if self.relative_to_obs[d] >= 0]
        if relative_discrete:
            raise ValueError(f"discrete action dimensions {relative_discrete} cannot be relative (use -1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiffusionPolicyConfig:
        """The config a checkpoint or export recorded; an unknown field is named in a one-line error."""
        if not isinstance(data, dict):
            raise ValueError(f"a policy config must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown policy config field(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass
class StrategySpec:
    """A strategy as configs name it: ``name`` and the options that change it from the policy's own defaults
    (a trained policy records the options its task tuned, e.g. RTI's k; empty options run with those)."""

    name: str = "rti"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from worldsim.policies.strategies import STRATEGIES  # the strategies import this module

        check_choice("strategy.name", self.name, tuple(STRATEGIES))
        self.options = dict(self.options)


EVAL_SEED = 100_000
"""Evaluation episodes never reuse the demonstrations' reset seeds."""


def policy_trainer_defaults() -> TrainerConfig:
    """The recipe's trainer settings.

    Batch 64: a step's cost grows with its batch (on a CPU in proportion), and within a fixed time the
    generalization suite, given about 3.5 times the steps at a quarter of the batch, met the same targets
    and gained most on the imprecise tasks (gym-pusht 43% against 20% in 20 minutes, FetchPickAndPlace
    100% against 94%; LunarLander's DDIM 0.95 against 1.00; docs/bring_your_own_env.md). The shipped Push-T
    policy trained with batch 256: ``training=policy_pusht`` reproduces it.
    """
    return TrainerConfig(
        steps=15_000, batch_size=64, learning_rate=1e-3, warmup_steps=500, ema_decay=0.999, eval_every=5_000,
        checkpoint_every=1_000, log_every=200, device="auto",
    )  # fmt: skip


@dataclass
class TrainPolicyConfig:
    """Everything a policy training run takes; the defaults are worldsim's one recipe."""

    task: TaskSpec = field(default_factory=TaskSpec)
    policy: DiffusionPolicyConfig = field(default_factory=DiffusionPolicyConfig)
    training: TrainerConfig = field(default_factory=policy_trainer_defaults)
    out: str = ""
    """Checkpoint directory (required; the command defaults it to ``checkpoint`` in its output folder)."""
    extra_datasets: list[str] = field(default_factory=list)
    """Further Minari datasets trained on together with the task's (e.g. expert-takeover recoveries)."""
    data_path: str | None = None
    """Minari datasets root; None: ``$MINARI_DATASETS_PATH``."""
    collect: bool = True
    """Record the task's demonstrations with its expert when its dataset is missing."""
    threads: int = 2
    """torch CPU threads (0: torch's default)."""
    eval_episodes: int = 20
    """Episodes of each evaluation in the env (every ``training.eval_every`` steps; 0 steps: none)."""
    eval_strategy: StrategySpec = field(default_factory=lambda: StrategySpec("ddim", {"steps": 10}))
    rti_max_pairs: int = 256
    """Observation pairs RTI's offline rule uses to choose k (0: skip, keep the task's or the default k)."""
    init_from: str | None = None
    """Start from this policy checkpoint's weights and normalization (fine-tuning)."""
    resume: bool = False
    """Continue from the training state kept in ``out``."""

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads must be a non-negative integer, got {self.threads!r}")
        if isinstance(self.eval_episodes, bool) or not isinstance(self.eval_episodes, int) or self.eval_episodes < 0:
            raise ValueError(f"eval_episodes must be a non-negative integer, got {self.eval_episodes!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
