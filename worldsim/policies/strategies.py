"""Real-time inference strategies: interchangeable ways to sample an action chunk from one trained model.

Every strategy is a plan (or the rolling denoiser) of the shared core, so none of them is a separate
sampler. They work in the model's normalized action space on torch tensors or numpy arrays alike, which
lets the onnxruntime runner reuse them unchanged.

=========  ==================================================================  =======================
name       what one prediction does                                             network calls
=========  ==================================================================  =======================
ddpm       full DDPM from noise (``steps`` = the training grid K by default)   K
ddim       deterministic DDIM from noise in ``steps``                           steps
rti        first call: full DDPM; then warm-start from the previous chunk       K, then k (or
           shifted by the executed actions (last action repeated), denoised     ``calls``)
           from level k / K to 0 (RTI-DP); ``renoise`` forward-diffuses the
           guess to that level first; ``calls`` < k strides over the levels
rolling    a window of ``horizon`` actions at staggered levels (Streaming       first chunk, then 1
           Diffusion Policy): each call moves every action down one notch
           and emits the now-clean first action
=========  ==================================================================  =======================
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from worldsim.core import plans
from worldsim.core.array_ops import namespace, randn_like
from worldsim.core.plans import Plan
from worldsim.core.rolling import RollingDenoiser
from worldsim.core.sampling import denoise
from worldsim.core.schedules import NoiseSchedule, Parameterization
from worldsim.core.validation import check_number
from worldsim.policies.action_codec import ActionCodec, shift_chunk


@dataclass
class ChunkContext:
    """Everything a strategy needs for one prediction; the policy builds it per call."""

    denoiser: Callable
    cond: object
    schedule: NoiseSchedule
    parameterization: Parameterization
    num_train_steps: int
    like: object
    """An array of the chunk's shape ``[B, horizon, action_dim]``, dtype and device (for noise)."""
    clip_x0: float | None = None
    generator: object = None
    codec: ActionCodec | None = None
    """Moves chunks between predictions (shift, relative actions, the discrete rule); None: plain shift."""
    reference: object = None
    """This prediction's reference point ``[B, action_dim]`` for relative actions (``codec.reference``)."""
    calls: int = 0

    def noise(self):
        return randn_like(self.like, self.generator)

    def warm_guess(self, previous, previous_reference, executed: int):
        """The chunk predicted at ``previous_reference``, shifted by ``executed`` actions into this prediction."""
        if self.codec is None:
            return shift_chunk(previous, executed)
        return self.codec.prepare_guess(self.codec.carry_over(previous, executed, previous_reference, self.reference))

    def run(self, x, plan: Plan, eta: float):
        self.calls += plan.num_model_calls
        return denoise(
            self.denoiser, x, plan, self.schedule, parameterization=self.parameterization, cond=self.cond,
            eta=eta, clip_x0=self.clip_x0, generator=self.generator,
        )  # fmt: skip


class Strategy(ABC):
    """One way of sampling a chunk. Stateful strategies are reset with the episode."""

    name: ClassVar[str]
    n_action_steps: int | None = None
    """Actions executed per prediction; None keeps the policy's configured value."""

    def reset(self) -> None:  # noqa: B027 - stateless strategies have nothing to forget
        """Forget the previous episode (warm starts, rolling windows)."""

    @abstractmethod
    def sample(self, sampler: ChunkContext, executed_steps: int):
        """A normalized chunk ``[B, horizon, action_dim]``; ``executed_steps`` actions ran since the last one."""


class DDPMStrategy(Strategy):
    """Full DDPM from noise: ``steps`` stochastic steps (the training grid K by default)."""

    name = "ddpm"

    def __init__(self, steps: int | None = None, n_action_steps: int | None = None):
        check_number("ddpm steps", steps, low=1, integer=True, allow_none=True)
        check_number("ddpm n_action_steps", n_action_steps, low=1, integer=True, allow_none=True)
        self.steps = steps
        self.n_action_steps = n_action_steps

    def sample(self, sampler: ChunkContext, executed_steps: int):
        plan = plans.full_sequence(sampler.like.shape[1], self.steps or sampler.num_train_steps)
        return sampler.run(sampler.noise(), plan, eta=1.0)


class DDIMStrategy(Strategy):
    """Deterministic DDIM from noise in ``steps`` steps."""

    name = "ddim"

    def __init__(self, steps: int = 10, n_action_steps: int | None = None):
        check_number("ddim steps", steps, low=1, integer=True)
        check_number("ddim n_action_steps", n_action_steps, low=1, integer=True, allow_none=True)
        self.steps = steps
        self.n_action_steps = n_action_steps

    def sample(self, sampler: ChunkContext, executed_steps: int):
        return sampler.run(sampler.noise(), plans.full_sequence(sampler.like.shape[1], self.steps), eta=0.0)


class RTIStrategy(Strategy):
    """Real-Time Iteration (RTI-DP): warm-start each prediction from the previous one.

    ``k``: a warm-started call starts at level ``k / K`` on the training grid (RTI-DP's timestep list
    ``[2, 1, 0]`` is ``k = 3``) and, by default, takes ``k`` denoising steps, one per training step below
    it. ``calls`` (1 to k) walks the same stretch in fewer, evenly spaced steps on the training grid: the
    level k says how far the shifted guess is from the new solution (``choose_rti_k``), the number of
    calls is a separate speed knob. ``warm_start=False`` samples every call from
    noise with the same k-step plan (with ``k = K`` that is exactly full DDPM). ``cold_start_steps``: the
    first prediction of an episode is full DDPM as in RTI-DP (None), or DDIM in that many steps, so a live
    loop never waits for K calls. ``eta`` is the warm-started calls' sampler: 1 the stochastic DDPM step
    of RTI-DP, 0 deterministic DDIM steps from the guess (anything between interpolates).
    """

    name = "rti"

    def __init__(
        self,
        k: int = 3,
        *,
        renoise: bool = False,
        warm_start: bool = True,
        n_action_steps: int = 1,
        cold_start_steps: int | None = None,
        calls: int | None = None,
        eta: float = 1.0,
    ):
        check_number("rti k", k, low=1, integer=True)
        check_number("rti n_action_steps", n_action_steps, low=1, integer=True)
        check_number("rti calls", calls, integer=True, allow_none=True)
        check_number("rti cold_start_steps", cold_start_steps, integer=True, allow_none=True)
        if calls is not None and not 1 <= calls <= k:
            raise ValueError(f"rti calls must be between 1 and k={k}, got {calls}")
        if cold_start_steps is not None and cold_start_steps < 1:
            raise ValueError(f"cold_start_steps must be >= 1 or None, got {cold_start_steps}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"rti eta must be between 0 (DDIM) and 1 (DDPM), got {eta}")
        self.k = k
        self.eta = eta
        self.renoise = renoise
        self.warm_start = warm_start
        self.n_action_steps = n_action_steps
        self.cold_start_steps = cold_start_steps
        self.calls = calls or k
        self._previous = None
        self._previous_reference = None
        self._plans: dict[tuple[int, int, bool], Plan] = {}  # built once: a control loop asks every tick

    def reset(self) -> None:
        self._previous = None

    def plan(self, horizon: int, num_train_steps: int, *, renoise: bool) -> Plan:
        """Levels from ``k/K`` to 0 in ``calls`` equal steps for every action (after a row at 0 when
        re-noising); by default ``k/K, (k-1)/K, ..., 0``."""
        key = (horizon, num_train_steps, renoise)
        if key not in self._plans:
            if self.k > num_train_steps:
                raise ValueError(f"rti k={self.k} exceeds the model's {num_train_steps} training steps")
            # With fewer calls than k, keep every level on the training grid (one call per grid step already is).
            grid = num_train_steps if self.calls < self.k else None
            start = self.k / num_train_steps
            self._plans[key] = plans.warm_start(horizon, start, self.calls, renoise=renoise, grid_steps=grid)
        return self._plans[key]

    def sample(self, sampler: ChunkContext, executed_steps: int):
        horizon, steps = sampler.like.shape[1], sampler.num_train_steps
        if not self.warm_start:
            chunk = sampler.run(sampler.noise(), self.plan(horizon, steps, renoise=False), eta=1.0)
        elif self._previous is None and self.cold_start_steps is None:
            chunk = sampler.run(sampler.noise(), plans.full_sequence(horizon, steps), eta=1.0)
        elif self._previous is None:
            chunk = sampler.run(sampler.noise(), plans.full_sequence(horizon, self.cold_start_steps), eta=0.0)
        else:
            guess = sampler.warm_guess(self._previous, self._previous_reference, executed_steps)
            chunk = sampler.run(guess, self.plan(horizon, steps, renoise=self.renoise), eta=self.eta)
        self._previous, self._previous_reference = chunk, sampler.reference
        return chunk


class RollingStrategy(Strategy):
    """Streaming Diffusion Policy: one call per control step over a window of staggered levels.

    The first prediction of an episode is a full ``first_steps``-step DDIM chunk; its remaining actions
    are re-noised to the staggered levels to fill the window, so every later call emits one clean action.
    The returned chunk is that action followed by the window's partly denoised lookahead.
    """

    name = "rolling"

    def __init__(self, first_steps: int = 10):
        check_number("rolling first_steps", first_steps, low=1, integer=True)
        self.first_steps = first_steps
        self.n_action_steps = 1
        self._rolling: RollingDenoiser | None = None
        self._reference = None

    def reset(self) -> None:
        self._rolling = None
        self._reference = None

    def sample(self, sampler: ChunkContext, executed_steps: int):
        horizon = sampler.like.shape[1]
        if self._rolling is None:
            chunk = sampler.run(sampler.noise(), plans.full_sequence(horizon, self.first_steps), eta=0.0)
            self._rolling = RollingDenoiser(
                sampler.denoiser, sampler.schedule, window=horizon, parameterization=sampler.parameterization,
                clip_x0=sampler.clip_x0, generator=sampler.generator,
            )  # fmt: skip
            self._rolling.warm_start(chunk[:, 1:])
            self._reference = sampler.reference
            return chunk
        if sampler.codec is not None and sampler.codec.position_dependent:
            self._move_window(sampler)
        emitted = None
        for _ in range(max(executed_steps, 1)):
            calls_before = self._rolling.num_calls
            emitted = self._rolling.tick(sampler.noise()[:, :1], cond=sampler.cond).emitted
            sampler.calls += self._rolling.num_calls - calls_before
        return namespace(emitted).concatenate([emitted, self._rolling.tokens], 1)

    def _move_window(self, sampler: ChunkContext) -> None:
        """Re-code the window's partly noisy actions for this prediction: each moves one position forward
        and, for relative actions, to the new reference (the next tick treats them so)."""
        tokens = self._rolling.tokens
        xp = namespace(tokens)
        signal = np.ones(tokens.shape[1] + 1)
        signal[:-1] = sampler.schedule.alpha(self._rolling.levels)
        # Position 0 stands for the action already emitted; the shift drops it.
        full = xp.concatenate([tokens[:, :1], tokens], 1)
        moved = sampler.codec.carry_over(full, 1, self._reference, sampler.reference, signal=signal)
        self._rolling.replace_tokens(moved[:, :-1])
        self._reference = sampler.reference


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (DDPMStrategy, DDIMStrategy, RTIStrategy, RollingStrategy)
}


def make_strategy(name: str, **kwargs) -> Strategy:
    """A strategy by name: ``ddpm``, ``ddim``, ``rti`` or ``rolling``, with its keyword options."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"strategy {name!r} has no option(s) {', '.join(unknown)}; its options: {', '.join(accepted)}")
    return cls(**kwargs)
