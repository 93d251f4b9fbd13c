"""Plans: every sampler is a table of per-token noise levels, walked row by row.

A :class:`Plan` is plain data, ``levels[r, t]`` for row ``r`` and token ``t``: row 0 is where the tokens
start, the last row where they end. Between two rows each token moves from one level to the next (see
:func:`worldsim.core.updates.step`); a transition in which some token goes down costs one network call.
The builders cover full-sequence denoising, autoregressive and pyramid/rolling schedules (Diffusion
Forcing's scheduling matrix), warm starts (RTI), frozen-prefix inpainting and per-token starts (real-time
chunking's soft mask).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Plan:
    """``levels``: float array ``[rows, tokens]`` in [0, 1], shared by every batch element."""

    levels: np.ndarray

    def __post_init__(self) -> None:
        levels = np.asarray(self.levels, dtype=np.float64)
        if levels.ndim != 2 or levels.shape[0] < 1 or levels.shape[1] < 1:
            raise ValueError(f"a plan's levels must have shape [rows >= 1, tokens >= 1], got {levels.shape}")
        if not np.isfinite(levels).all() or levels.min() < 0 or levels.max() > 1:
            raise ValueError("a plan's levels must be finite and inside [0, 1]")
        levels.setflags(write=False)
        object.__setattr__(self, "levels", levels)

    @property
    def num_tokens(self) -> int:
        return self.levels.shape[1]

    @property
    def start(self) -> np.ndarray:
        return self.levels[0]

    @property
    def end(self) -> np.ndarray:
        return self.levels[-1]

    def transitions(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Pairs ``(current, next)`` of level rows, skipping rows that change nothing."""
        for current, nxt in zip(self.levels[:-1], self.levels[1:], strict=True):
            if (current != nxt).any():
                yield current, nxt

    @property
    def num_model_calls(self) -> int:
        """Network calls needed to walk the plan (transitions where some token is denoised)."""
        return sum(int((nxt < cur).any()) for cur, nxt in self.transitions())

    def renoises(self) -> bool:
        """Whether some token's level ever rises (a warm start that re-noises its guess)."""
        return any((nxt > cur).any() for cur, nxt in self.transitions())


def _check_count(name: str, value: int, minimum: int) -> None:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


def from_levels(step_levels: Sequence[float], num_tokens: int) -> Plan:
    """Every token walks the same descending list of levels, e.g. RTI-DP's ``[0.03, 0.02, 0.01, 0]``."""
    _check_count("num_tokens", num_tokens, 1)
    steps = np.asarray(step_levels, dtype=np.float64)
    if steps.ndim != 1 or len(steps) < 1:
        raise ValueError("step_levels must be a non-empty list of levels")
    if (np.diff(steps) > 0).any():
        raise ValueError(f"step_levels must not increase, got {list(step_levels)}")
    return Plan(np.repeat(steps[:, None], num_tokens, axis=1))


def full_sequence(num_tokens: int, num_steps: int, start_level: float = 1.0) -> Plan:
    """All tokens together from ``start_level`` to 0 in ``num_steps`` equal steps (DDPM / DDIM-N)."""
    _check_count("num_steps", num_steps, 1)
    return from_levels(np.linspace(start_level, 0.0, num_steps + 1), num_tokens)


def pyramid(num_tokens: int, num_steps: int, uncertainty: int) -> Plan:
    """Diffusion Forcing's scheduling matrix ``level[m, t] = clip(S + t * u - m, 0, S) / S``.

    Each token takes ``num_steps`` (S) steps; token ``t`` starts ``t * uncertainty`` rows after token 0.
    ``uncertainty = 0`` is full-sequence denoising, ``1`` a rolling window (levels rising along the
    sequence, one notch per row), ``num_steps`` autoregressive generation.
    """
    _check_count("num_tokens", num_tokens, 1)
    _check_count("num_steps", num_steps, 1)
    _check_count("uncertainty", uncertainty, 0)
    rows = num_steps + (num_tokens - 1) * uncertainty + 1
    m = np.arange(rows)[:, None]
    t = np.arange(num_tokens)[None, :]
    return Plan(np.clip(num_steps + t * uncertainty - m, 0, num_steps) / num_steps)


def autoregressive(num_tokens: int, num_steps: int) -> Plan:
    """One token after the other, each fully denoised in ``num_steps`` while later ones wait at 1."""
    return pyramid(num_tokens, num_steps, uncertainty=num_steps)


def frozen_prefix(num_tokens: int, num_frozen: int, num_steps: int, start_level: float = 1.0) -> Plan:
    """Inpainting: the first ``num_frozen`` tokens stay clean (level 0), the rest go from start to 0.

    With ``num_frozen = num_tokens - 1`` this is one autoregressive step with context; it is also
    real-time chunking's hard mask for the actions already committed.
    """
    _check_count("num_tokens", num_tokens, 1)
    _check_count("num_frozen", num_frozen, 0)
    if num_frozen >= num_tokens:
        raise ValueError(f"num_frozen ({num_frozen}) must be smaller than num_tokens ({num_tokens})")
    return per_token_start([0.0] * num_frozen + [start_level] * (num_tokens - num_frozen), num_steps)


def warm_start(
    num_tokens: int, start_level: float, num_steps: int, *, renoise: bool = False, grid_steps: int | None = None
) -> Plan:
    """RTI: start from a previous solution at ``start_level`` (k) and denoise it to 0 in ``num_steps``.

    ``renoise=False`` treats the guess as if it already sat at level k (RTI-DP's reference code);
    ``renoise=True`` adds a first row at level 0, so the clean guess is forward-diffused to level k
    before denoising (the principled reading of the warm start). ``grid_steps`` rounds the levels to
    multiples of ``1 / grid_steps``: a model trained on a discrete grid of K levels has never seen the
    levels in between, which equal steps from k/K would otherwise visit.
    """
    _check_count("num_tokens", num_tokens, 1)
    if not 0.0 < start_level <= 1.0:
        raise ValueError(f"start_level must be in (0, 1], got {start_level}")
    return per_token_start([start_level] * num_tokens, num_steps, renoise=renoise, grid_steps=grid_steps)


def per_token_start(
    start_levels: Sequence[float], num_steps: int, *, renoise: bool = False, grid_steps: int | None = None
) -> Plan:
    """Each token ``t`` walks from its own ``start_levels[t]`` to 0 in ``num_steps`` equal steps.

    A token that starts at 0 is frozen: it is never changed and the others are denoised around it
    (inpainting). Starts between 0 and 1 are partial warm starts: a token near 0 keeps most of its guess,
    one at 1 is sampled afresh (real-time chunking's soft mask over a previous chunk, written as levels).
    ``renoise`` and ``grid_steps`` as in :func:`warm_start`; the token with the highest start must get a
    distinct level on every row after rounding.
    """
    _check_count("num_steps", num_steps, 1)
    starts = np.asarray(start_levels, dtype=np.float64)
    if starts.ndim != 1 or len(starts) < 1:
        raise ValueError("start_levels must be a non-empty list with one level per token")
    if not np.isfinite(starts).all() or starts.min() < 0 or starts.max() > 1:
        raise ValueError(f"start levels must lie in [0, 1], got {starts.tolist()}")
    if starts.max() == 0:
        raise ValueError("at least one token must start above level 0, or there is nothing to denoise")
    fraction = np.linspace(1.0, 0.0, num_steps + 1)[:, None]
    plan = fraction * starts[None, :]
    if grid_steps is not None:
        _check_count("grid_steps", grid_steps, 1)
        plan = np.round(plan * grid_steps) / grid_steps
        if (np.diff(plan[:, int(np.argmax(starts))]) >= 0).any():
            raise ValueError(f"{num_steps} steps from level {starts.max()} to 0 need more than {grid_steps} grid steps")
    if renoise:
        plan = np.concatenate([np.zeros((1, len(starts))), plan])
    return Plan(plan)
