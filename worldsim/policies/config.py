"""Typed configuration of the diffusion policy (what the checkpoint's JSON records)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from worldsim.core.normalizer import NormalizationMode
from worldsim.core.schedules import Parameterization


@dataclass
class DiffusionPolicyConfig:
    """Shapes, horizons, the noise schedule, the network, and how discrete action dimensions are handled.

    The chunk convention: ``obs_history`` holds observations ``t - obs_horizon + 1 .. t`` and the chunk
    holds actions ``t .. t + horizon - 1`` (its first action is the one for the current tick).
    """

    obs_shape: tuple[int, ...]
    action_dim: int
    obs_type: Literal["state", "pixels"] = "state"
    obs_horizon: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    num_train_steps: int = 100
    parameterization: Parameterization = "epsilon"
    clip_sample: float | None = 1.0
    width: int = 256
    depth: int = 4
    heads: int = 4
    obs_feature_dim: int = 256
    shared_level_prob: float = 0.5
    """Fraction of training chunks noised at one shared level; the rest get a level per action, which
    the rolling strategy needs (Diffusion Forcing)."""
    normalization: NormalizationMode = "minmax"
    discrete_dims: tuple[int, ...] = ()
    """Action dimensions that are discrete ±1 commands (a gripper): named, never guessed."""
    discrete_rule: Literal["scale", "clip"] = "scale"
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

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(s) for s in self.obs_shape)
        self.discrete_dims = tuple(int(d) for d in self.discrete_dims)
        self.relative_to_obs = tuple(int(d) for d in self.relative_to_obs)
        self.action_low, self.action_high = tuple(self.action_low), tuple(self.action_high)
        if self.obs_type == "state" and len(self.obs_shape) != 1:
            raise ValueError(f"state observations must be flat, got shape {self.obs_shape}")
        if self.obs_type == "pixels" and (len(self.obs_shape) != 3 or self.obs_shape[-1] != 3):
            raise ValueError(f"pixel observations must be [H, W, 3], got shape {self.obs_shape}")
        if not 1 <= self.n_action_steps <= self.horizon:
            raise ValueError(f"n_action_steps must be in [1, horizon={self.horizon}], got {self.n_action_steps}")
        if self.obs_horizon < 1 or self.action_dim < 1:
            raise ValueError("obs_horizon and action_dim must be >= 1")
        bad = [d for d in self.discrete_dims if not 0 <= d < self.action_dim]
        if bad:
            raise ValueError(f"discrete_dims {bad} are outside the {self.action_dim} action dimensions")
        if self.relative_to_obs:
            self._check_relative()
        if not 0 < self.discrete_scale <= 1:
            raise ValueError(f"discrete_scale must be in (0, 1], got {self.discrete_scale}")

    def _check_relative(self) -> None:
        if self.obs_type != "state":
            raise ValueError("relative_to_obs needs state observations (it names observation dimensions)")
        if len(self.relative_to_obs) != self.action_dim:
            raise ValueError(
                f"relative_to_obs needs one entry per action dimension ({self.action_dim}), "
                f"-1 for an absolute one; got {self.relative_to_obs}"
            )
        bad = [d for d in self.relative_to_obs if not -1 <= d < self.obs_shape[0]]
        if bad:
            raise ValueError(f"relative_to_obs {bad} are outside the {self.obs_shape[0]} observation dimensions")
        relative_discrete = [d for d in self.discrete_dims if self.relative_to_obs[d] >= 0]
        if relative_discrete:
            raise ValueError(f"discrete action dimensions {relative_discrete} cannot be relative (use -1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiffusionPolicyConfig:
        return cls(**data)
