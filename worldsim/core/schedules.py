"""Noise schedules on a continuous per-token level in [0, 1] (0 = clean data, 1 = pure noise).

A schedule is pure math in the style of diffusers' schedulers: no model inside. Every schedule is a
Gaussian path ``x_t = alpha(level) * x0 + sigma(level) * eps``; with the time derivatives of alpha and
sigma it converts between every prediction type, so a network trained for one parameterization can be
sampled by any update. All functions accept numpy arrays or torch tensors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

from worldsim.core.array_ops import clip, namespace

Parameterization = Literal["epsilon", "sample", "v_prediction", "velocity"]
PARAMETERIZATIONS: tuple[str, ...] = ("epsilon", "sample", "v_prediction", "velocity")

# Divisions by alpha or sigma at the ends of the path (alpha = 0 at pure noise, sigma = 0 at clean data)
# are clamped here; the affected conversions are ill-posed there and samplers avoid them.
_TINY = 1e-12


def _safe(x):
    """Keep the sign, keep |x| >= _TINY."""
    xp = namespace(x)
    return xp.where(x >= 0, clip(x, _TINY), clip(x, high=-_TINY))


class NoiseSchedule(ABC):
    """``alpha``, ``sigma`` and their derivatives as functions of the noise level."""

    name: str
    num_train_steps: int | None = None
    """The discrete training grid ``{1/K, ..., 1}`` when the schedule has one (levels are drawn from it in
    training); None for a continuous schedule."""

    @abstractmethod
    def alpha(self, level): ...

    @abstractmethod
    def sigma(self, level): ...

    @abstractmethod
    def d_alpha(self, level):
        """d alpha / d level."""

    @abstractmethod
    def d_sigma(self, level):
        """d sigma / d level."""

    def config(self) -> dict:
        """JSON-serializable description, inverted by :func:`schedule_from_config`."""
        return {"name": self.name}

    def add_noise(self, x0, noise, level):
        """Forward diffusion ``q(x_level | x0)``; ``level`` is per token ``[B, T]`` for ``x0 [B, T, ...]``."""
        a, s = _expand(self.alpha(level), x0), _expand(self.sigma(level), x0)
        return a * x0 + s * noise

    def target(self, x0, noise, level, parameterization: Parameterization):
        """The regression target of a network trained with ``parameterization``."""
        a, s = _expand(self.alpha(level), x0), _expand(self.sigma(level), x0)
        if parameterization == "epsilon":
            return noise
        if parameterization == "sample":
            return x0
        if parameterization == "v_prediction":
            return a * noise - s * x0
        if parameterization == "velocity":
            return _expand(self.d_alpha(level), x0) * x0 + _expand(self.d_sigma(level), x0) * noise
        raise ValueError(_unknown(parameterization))

    def split(self, pred, x_t, level, parameterization: Parameterization):
        """Recover ``(x0, eps)`` from a prediction of any parameterization at ``x_t``."""
        a, s = _expand(self.alpha(level), x_t), _expand(self.sigma(level), x_t)
        if parameterization == "epsilon":
            return (x_t - s * pred) / _safe(a), pred
        if parameterization == "sample":
            return pred, (x_t - a * pred) / _safe(s)
        if parameterization == "v_prediction":
            # Solve [a s; -s a] [x0; eps] = [x_t; v]; the determinant is a^2 + s^2.
            det = a * a + s * s
            return (a * x_t - s * pred) / det, (s * x_t + a * pred) / det
        if parameterization == "velocity":
            # Solve [a s; a' s'] [x0; eps] = [x_t; u].
            da, ds = _expand(self.d_alpha(level), x_t), _expand(self.d_sigma(level), x_t)
            det = _safe(a * ds - s * da)
            return (ds * x_t - s * pred) / det, (a * pred - da * x_t) / det
        raise ValueError(_unknown(parameterization))

    def convert(self, pred, x_t, level, source: Parameterization, target: Parameterization):
        """Convert a prediction between parameterizations at the same ``x_t`` and level."""
        if source == target:
            return pred
        x0, eps = self.split(pred, x_t, level, source)
        return self.target(x0, eps, level, target)

    def snr(self, level):
        """Signal-to-noise ratio alpha^2 / sigma^2."""
        a, s = self.alpha(level), self.sigma(level)
        return a * a / _safe(s * s)


class CosineSchedule(NoiseSchedule):
    """Variance-preserving cosine schedule: the DDPM ``squaredcos_cap_v2`` family.

    ``alpha_bar(level) = f(level) / f(0)`` with ``f(t) = cos((t + s) / (1 + s) * pi / 2) ** 2``. With
    ``num_train_steps = K`` the level ``(t + 1) / K`` is exactly diffusers' discrete timestep ``t``: the
    betas ``1 - alpha_bar_t / alpha_bar_{t-1}`` capped at ``max_beta`` only bite at the last step, so
    ``alpha_bar`` is floored at ``alpha_bar((K - 1) / K) * (1 - max_beta)``, reproducing that grid.
    Without ``num_train_steps`` the schedule is continuous and reaches ``alpha = 0`` at level 1.
    """

    name = "cosine"

    def __init__(self, num_train_steps: int | None = 100, s: float = 0.008, max_beta: float = 0.999):
        if num_train_steps is not None and num_train_steps < 2:
            raise ValueError(f"num_train_steps must be >= 2 or None, got {num_train_steps}")
        if not 0 < max_beta < 1:
            raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
        self.num_train_steps = num_train_steps
        self.s = s
        self.max_beta = max_beta
        self._f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
        if num_train_steps is None:
            self._floor = 0.0
        else:
            last = self._alpha_bar_exact((num_train_steps - 1) / num_train_steps)
            self._floor = last * (1 - max_beta)

    def config(self) -> dict:
        return {"name": self.name, "num_train_steps": self.num_train_steps, "s": self.s, "max_beta": self.max_beta}

    def _theta(self, level):
        return (level + self.s) / (1 + self.s) * (math.pi / 2)

    def _alpha_bar_exact(self, level: float) -> float:
        return math.cos(self._theta(level)) ** 2 / self._f0

    def alpha_bar(self, level):
        xp = namespace(level)
        return clip(xp.cos(self._theta(level)) ** 2 / self._f0, self._floor, 1.0)

    def alpha(self, level):
        return namespace(level).sqrt(self.alpha_bar(level))

    def sigma(self, level):
        return namespace(level).sqrt(1.0 - self.alpha_bar(level))

    def d_alpha(self, level):
        # The smooth curve's slope, also inside the floored last step: a zero slope there would make the
        # velocity target vanish at level 1 and the velocity parameterization uninvertible.
        xp = namespace(level)
        return -xp.sin(self._theta(level)) * (math.pi / (2 * (1 + self.s))) / math.sqrt(self._f0)

    def d_sigma(self, level):
        return -self.alpha(level) * self.d_alpha(level) / _safe(self.sigma(level))


class FlowMatchingSchedule(NoiseSchedule):
    """Rectified flow: ``x_t = (1 - level) * x0 + level * eps``; the velocity is ``eps - x0``.

    ``num_train_steps``: an optional training grid, as for the cosine schedule (continuous when None)."""

    name = "flow"

    def __init__(self, num_train_steps: int | None = None):
        if num_train_steps is not None and num_train_steps < 2:
            raise ValueError(f"num_train_steps must be >= 2 or None, got {num_train_steps}")
        self.num_train_steps = num_train_steps

    def config(self) -> dict:
        return {"name": self.name, "num_train_steps": self.num_train_steps}

    def alpha(self, level):
        return 1.0 - level

    def sigma(self, level):
        return level

    def d_alpha(self, level):
        return 0.0 * level - 1.0

    def d_sigma(self, level):
        return 0.0 * level + 1.0


SCHEDULES: tuple[str, ...] = ("cosine", "flow")


def make_schedule(name: str, num_train_steps: int | None = None) -> NoiseSchedule:
    """The schedule a model config names: ``cosine`` or ``flow``, on a training grid of ``num_train_steps``
    (None: continuous levels)."""
    return schedule_from_config({"name": name, "num_train_steps": num_train_steps})


def schedule_from_config(config: dict) -> NoiseSchedule:
    """Rebuild a schedule from :meth:`NoiseSchedule.config` (checkpoints and ONNX metadata use this)."""
    kwargs = dict(config)
    name = kwargs.pop("name", None)
    if name == CosineSchedule.name:
        return CosineSchedule(**kwargs)
    if name == FlowMatchingSchedule.name:
        return FlowMatchingSchedule(**kwargs)
    raise ValueError(f"unknown noise schedule {name!r}; known: 'cosine', 'flow'")


def _expand(coef, like):
    """Per-token coefficients ``[B, T]`` broadcast over the token's feature dimensions."""
    while coef.ndim < like.ndim:
        coef = coef[..., None]
    return coef


def _unknown(parameterization: str) -> str:
    return f"unknown parameterization {parameterization!r}; known: {', '.join(PARAMETERIZATIONS)}"
