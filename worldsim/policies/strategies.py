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
rtc        real-time chunking: the actions that run while the chunk is          steps
           computed stay frozen, the rest are inpainted from the previous
           chunk (a soft mask written as per-token start levels) in ``steps``
=========  ==================================================================  =======================

Under inference delay (``docs/live_control.md``) a prediction may come with a *frozen prefix*: the actions
the robot executes while the chunk is computed. Strategies that inpaint (``rtc``, and ``rti`` unless told
``freeze_prefix=False``) return it unchanged as the chunk's first actions and denoise the rest around it;
the others ignore it, and the stale actions are dropped when the chunk takes over (naive switching).
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
    prefix: object = None
    """Normalized actions ``[B, d, action_dim]`` that run before this chunk takes over (the frozen prefix of
    real-time chunking), or None."""
    calls: int = 0

    @property
    def num_frozen(self) -> int:
        return 0 if self.prefix is None else int(self.prefix.shape[1])

    def with_prefix(self, chunk):
        """``chunk`` with its first actions replaced, exactly, by the frozen prefix."""
        if not self.num_frozen:
            return chunk
        return namespace(chunk).concatenate([self.prefix, chunk[:, self.num_frozen :]], 1)

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
    inpaints: bool = False
    """Whether a frozen prefix (``ChunkContext.prefix``) is kept as the chunk's first actions."""

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
    ``freeze_prefix``: under inference delay, keep the actions that run while the chunk is computed and
    warm-start only the rest (RTI + real-time chunking's hard mask); False drops them (naive switching).
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
        freeze_prefix: bool = True,
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
        self.inpaints = bool(freeze_prefix)
        self._previous = None
        self._previous_reference = None
        self._plans: dict[tuple[int, int, bool, int], Plan] = {}  # built once: a control loop asks every tick

    def reset(self) -> None:
        self._previous = None

    def plan(self, horizon: int, num_train_steps: int, *, renoise: bool, frozen: int = 0) -> Plan:
        """Levels from ``k/K`` to 0 in ``calls`` equal steps for every action but the ``frozen`` first ones,
        which stay at 0 (after a row at 0 when re-noising); by default ``k/K, (k-1)/K, ..., 0``."""
        key = (horizon, num_train_steps, renoise, frozen)
        if key not in self._plans:
            if self.k > num_train_steps:
                raise ValueError(f"rti k={self.k} exceeds the model's {num_train_steps} training steps")
            # With fewer calls than k, keep every level on the training grid (one call per grid step already is).
            grid = num_train_steps if self.calls < self.k else None
            starts = [0.0] * frozen + [self.k / num_train_steps] * (horizon - frozen)
            self._plans[key] = plans.per_token_start(starts, self.calls, renoise=renoise, grid_steps=grid)
        return self._plans[key]

    def sample(self, sampler: ChunkContext, executed_steps: int):
        horizon, steps = sampler.like.shape[1], sampler.num_train_steps
        frozen = sampler.num_frozen if self.inpaints else 0
        keep = sampler.with_prefix if frozen else (lambda chunk: chunk)
        if not self.warm_start:
            chunk = sampler.run(keep(sampler.noise()), self.plan(horizon, steps, renoise=False, frozen=frozen), eta=1.0)
        elif self._previous is None:
            cold = self.cold_start_steps or steps
            plan = plans.frozen_prefix(horizon, frozen, cold)
            chunk = sampler.run(keep(sampler.noise()), plan, eta=1.0 if self.cold_start_steps is None else 0.0)
        else:
            guess = keep(sampler.warm_guess(self._previous, self._previous_reference, executed_steps))
            chunk = sampler.run(guess, self.plan(horizon, steps, renoise=self.renoise, frozen=frozen), eta=self.eta)
        chunk = keep(chunk)
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


def soft_mask_levels(horizon: int, frozen: int, executed: int) -> list[float]:
    """Real-time chunking's soft mask (Black et al. 2025, eq. 5) as per-token start levels ``1 - weight``.

    The ``frozen`` first actions keep the previous chunk exactly (level 0); the actions the previous chunk
    also planned (up to ``horizon - executed``) keep it with a weight that decays exponentially to 0; the
    actions past its end start from noise (level 1).
    """
    overlap_end = max(horizon - executed, frozen)
    levels = []
    for i in range(horizon):
        if i < frozen:
            levels.append(0.0)
        elif i < overlap_end:
            c = (overlap_end - i) / (overlap_end - frozen + 1)
            levels.append(1.0 - c * (np.exp(c) - 1.0) / (np.e - 1.0))
        else:
            levels.append(1.0)
    return levels


class RTCStrategy(Strategy):
    """Real-time chunking (RTC; Black, Galliker and Levine 2025) through the core's plans.

    While a chunk is computed the robot keeps executing the previous one; those actions (the frozen
    prefix ``d``) are kept exactly, and the rest of the chunk is inpainted so that it continues them.
    ``soft=True`` also keeps the previous chunk's later actions as a partial guess, trusted less the
    further they lie (RTC's soft mask, here as per-token start levels: the guess is forward-diffused to
    each action's level and everything is denoised to 0 in ``steps`` calls); ``soft=False`` is the hard
    mask (prefix frozen, the rest from noise). The first chunk of an episode, and any prediction without
    a prefix, is plain ``steps``-step sampling. ``eta``: 0 deterministic DDIM steps, 1 DDPM. The model
    needs no retraining: Diffusion Forcing training already shows it clean tokens beside noisy ones.
    """

    name = "rtc"
    inpaints = True

    def __init__(self, steps: int = 10, *, soft: bool = True, eta: float = 0.0, n_action_steps: int | None = None):
        check_number("rtc steps", steps, low=1, integer=True)
        check_number("rtc n_action_steps", n_action_steps, low=1, integer=True, allow_none=True)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"rtc eta must be between 0 (DDIM) and 1 (DDPM), got {eta}")
        self.steps = steps
        self.soft = soft
        self.eta = eta
        self.n_action_steps = n_action_steps
        self._previous = None
        self._previous_reference = None

    def reset(self) -> None:
        self._previous = None

    def sample(self, sampler: ChunkContext, executed_steps: int):
        horizon, frozen = sampler.like.shape[1], sampler.num_frozen
        grid = sampler.num_train_steps
        if not frozen:
            chunk = sampler.run(sampler.noise(), plans.full_sequence(horizon, self.steps), eta=self.eta)
        else:
            if self._previous is not None and self.soft:
                guess = sampler.warm_guess(self._previous, self._previous_reference, executed_steps)
                starts = soft_mask_levels(horizon, frozen, executed_steps)
            else:
                guess = sampler.noise()
                starts = [0.0] * frozen + [1.0] * (horizon - frozen)
            plan = plans.per_token_start(starts, self.steps, renoise=True, grid_steps=grid)
            chunk = sampler.with_prefix(sampler.run(sampler.with_prefix(guess), plan, eta=self.eta))
        self._previous, self._previous_reference = chunk, sampler.reference
        return chunk


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (DDPMStrategy, DDIMStrategy, RTIStrategy, RollingStrategy, RTCStrategy)
}


def make_strategy(name: str, **kwargs) -> Strategy:
    """A strategy by name: ``ddpm``, ``ddim``, ``rti``, ``rolling`` or ``rtc``, with its keyword options."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"strategy {name!r} has no option(s) {', '.join(unknown)}; its options: {', '.join(accepted)}")
    return cls(**kwargs)
