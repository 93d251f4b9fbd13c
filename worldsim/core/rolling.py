"""The rolling denoiser: the streaming engine that emits one clean token (or frame) per network call.

It holds a window of up to ``window`` slots (a slot is ``tokens_per_slot`` tokens: one action, or the
patch tokens of one frame) at staggered noise levels. Each tick admits a fresh slot at ``top_level``,
runs ``substeps`` batched denoiser calls that move every slot down one notch of ``top_level / window``,
and emits the oldest slot once it is clean. From an empty window the first slot comes out after
``window`` ticks; after that, one per tick (Rolling Forcing, Streaming Diffusion Policy).

``warm_start`` fills the window from a previous solution instead, forward-diffused to the staggered
levels, so emission starts on the next tick; with ``top_level = k < 1`` this is the RTI warm start on a
rolling window. Like the rest of the core it runs on torch tensors or numpy arrays.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from worldsim.core.array_ops import as_array_like, namespace, randn_like
from worldsim.core.sampling import Denoiser
from worldsim.core.schedules import NoiseSchedule, Parameterization
from worldsim.core.updates import step


class RollingOutput(NamedTuple):
    """One tick of the rolling denoiser: the slot that left the window clean (None while it fills) and the
    clean estimate ``pred_original_sample`` of every slot of the window at the tick's last network call."""

    emitted: Any
    pred_original_sample: Any


class RollingDenoiser:
    """A window of slots at staggered noise levels: one network call per tick, one clean slot out per tick."""

    def __init__(
        self,
        denoiser: Denoiser,
        schedule: NoiseSchedule,
        *,
        window: int,
        parameterization: Parameterization,
        tokens_per_slot: int = 1,
        top_level: float = 1.0,
        substeps: int = 1,
        eta: float = 0.0,
        clip_x0: float | None = None,
        generator=None,
    ):
        if window < 1 or substeps < 1 or tokens_per_slot < 1:
            raise ValueError("window, substeps and tokens_per_slot must all be >= 1")
        if not 0.0 < top_level <= 1.0:
            raise ValueError(f"top_level must be in (0, 1], got {top_level}")
        self.denoiser = denoiser
        self.schedule = schedule
        self.window = window
        self.parameterization = parameterization
        self.tokens_per_slot = tokens_per_slot
        self.top_level = top_level
        self.substeps = substeps
        self.eta = eta
        self.clip_x0 = clip_x0
        self.generator = generator
        self.num_calls = 0
        self.reset()

    def reset(self) -> None:
        """Empty the window (a new episode or stream)."""
        self._x = None
        self._token_cond = None
        # Remaining sub-notches per slot; level = top_level * remaining / (window * substeps). Integers
        # keep the staggered levels exact however long the stream runs.
        self._remaining: list[int] = []

    @property
    def num_slots(self) -> int:
        return len(self._remaining)

    @property
    def levels(self) -> np.ndarray:
        """Current noise level of each slot, oldest first."""
        return self.top_level * np.asarray(self._remaining, dtype=np.float64) / (self.window * self.substeps)

    @property
    def tokens(self):
        """The window's current (partly noisy) tokens ``[B, slots * tokens_per_slot, ...]``, or None."""
        return self._x

    def replace_tokens(self, tokens) -> None:
        """Swap the window's tokens for ``tokens`` of the same shape, at the same levels: for a caller whose
        token coordinates change between ticks (actions relative to a moving reference)."""
        if self._x is None or tuple(tokens.shape) != tuple(self._x.shape):
            current = None if self._x is None else tuple(self._x.shape)
            raise ValueError(f"replacement tokens of shape {tuple(tokens.shape)} do not fit the window {current}")
        self._x = tokens

    def _token_levels(self, x, remaining: np.ndarray):
        levels = self.top_level * remaining / (self.window * self.substeps)
        per_token = np.repeat(levels, self.tokens_per_slot)
        return namespace(x).broadcast_to(as_array_like(per_token, x), tuple(x.shape[:2]))

    def _check_slot(self, name: str, tokens, slots: int) -> None:
        expected_tokens = slots * self.tokens_per_slot
        if tokens.ndim < 2 or tokens.shape[1] != expected_tokens:
            raise ValueError(f"{name} must have shape [batch, {expected_tokens}, ...], got {tuple(tokens.shape)}")
        if self._x is not None and (tokens.shape[0] != self._x.shape[0] or tokens.shape[2:] != self._x.shape[2:]):
            raise ValueError(f"{name} of shape {tuple(tokens.shape)} does not match the window {tuple(self._x.shape)}")

    def warm_start(self, tokens, token_cond=None) -> None:
        """Fill ``window - 1`` slots from a clean guess, re-noised to levels ``top * (i + 1) / window``.

        ``tokens``: ``[B, (window - 1) * tokens_per_slot, ...]``, oldest first (e.g. the previous action
        chunk shifted by the executed step). The next :meth:`tick` emits a slot.
        """
        self.reset()
        self._check_slot("warm_start tokens", tokens, self.window - 1)
        remaining = np.arange(1, self.window) * self.substeps
        zeros = self._token_levels(tokens, np.zeros_like(remaining))
        targets = self._token_levels(tokens, remaining)
        self._x = step(
            self.schedule, tokens, None, zeros, targets, self.parameterization, noise=randn_like(tokens, self.generator)
        ).prev_sample
        self._token_cond = token_cond
        self._remaining = [int(r) for r in remaining]

    def tick(self, new_tokens, *, cond=None, token_cond=None) -> RollingOutput:
        """Admit ``new_tokens`` (``[B, tokens_per_slot, ...]`` at ``top_level``), denoise one notch.

        ``cond`` is passed to the denoiser as it is (global conditioning for this call); ``token_cond``
        (``[B, tokens_per_slot, C]``) stays attached to the admitted slot. Returns a :class:`RollingOutput`:
        the emitted clean slot ``[B, tokens_per_slot, ...]`` (None while the window is still filling) and
        the network's clean estimate of every slot of the window at its last call, oldest first.
        """
        if cond is not None and token_cond is not None:
            raise ValueError("pass either a global `cond` or a per-slot `token_cond`, not both")
        if (token_cond is None) != (self._token_cond is None) and self._x is not None:
            raise ValueError("token_cond must be given on every tick of a window that uses it, and only then")
        self._check_slot("new_tokens", new_tokens, 1)
        xp = namespace(new_tokens)
        self._x = new_tokens if self._x is None else xp.concatenate([self._x, new_tokens], 1)
        if token_cond is not None:
            previous = self._token_cond
            self._token_cond = token_cond if previous is None else xp.concatenate([previous, token_cond], 1)
        self._remaining.append(self.window * self.substeps)

        remaining = np.asarray(self._remaining)
        for _ in range(self.substeps):
            level = self._token_levels(self._x, remaining)
            next_level = self._token_levels(self._x, remaining - 1)
            pred = self.denoiser(self._x, level, self._token_cond if token_cond is not None else cond)
            self.num_calls += 1
            noise = randn_like(self._x, self.generator) if self.eta > 0 else None
            self._x, estimate = step(
                self.schedule, self._x, pred, level, next_level, self.parameterization,
                eta=self.eta, noise=noise, clip_x0=self.clip_x0,
            )  # fmt: skip
            remaining = remaining - 1
        self._remaining = [int(r) for r in remaining]

        if self._remaining[0] > 0:
            return RollingOutput(None, estimate)
        p = self.tokens_per_slot
        emitted, self._x = self._x[:, :p], self._x[:, p:]
        if self._token_cond is not None:
            self._token_cond = self._token_cond[:, p:]
        self._remaining.pop(0)
        if not self._remaining:
            self._x, self._token_cond = None, None
        return RollingOutput(emitted, estimate)
