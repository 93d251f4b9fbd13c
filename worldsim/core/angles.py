"""State dimensions that are angles, found in recorded data: reported modulo 2 pi, and their wrapping; or
given as a cosine and sine pair.

Both models meet the first (gym-pusht's block angle, the Fetch blocks' Euler angles): the policy encodes each
as sine and cosine, the world model takes its per-step change the short way round the circle. One
detection rule serves both, so a task's angles are the same dimensions in either model. The world model
keeps a cosine and sine pair (worldsim's Push-T block) on the unit circle.
"""

from __future__ import annotations

import numpy as np

from worldsim.core.array_ops import as_array_like, namespace

TURN = 2 * np.pi

CIRCLE_TOLERANCE = 1e-3
"""Two dimensions whose squares sum to 1 within this in every recorded state are an angle's cos and sin."""


def angle_dims(episodes: list[np.ndarray]) -> tuple[int, ...]:
    """The state dimensions that are angles reported modulo 2 pi: their recorded values span one turn
    (at least 95% of 2 pi, at most 2 pi) and some step between consecutive observations jumps by more than
    three quarters of a turn, which a continuous signal sampled finely enough to be controlled does not do
    and a wrapped angle does each time it crosses the seam (gym-pusht's block angle).
    ``episodes``: each episode's states ``[T, D]``."""
    episodes = [np.asarray(e, np.float64) for e in episodes]
    states = np.concatenate(episodes)
    if states.ndim != 2 or not len(states):
        return ()
    span = states.max(0) - states.min(0)
    jumps = np.zeros(states.shape[1], bool)
    for e in episodes:
        if len(e) > 1:
            jumps |= (np.abs(np.diff(e, axis=0)) > 0.75 * TURN).any(0)
    one_turn = (span >= 0.95 * TURN) & (span <= 1.001 * TURN)
    return tuple(int(d) for d in np.flatnonzero(one_turn & jumps))


def wrap_angle(angle: float) -> float:
    """One angle into ``[-pi, pi)``: the short way round (an expert's heading error, say)."""
    return float((angle + np.pi) % TURN - np.pi)


def wrap_angles(x, dims: tuple[int, ...]):
    """``x [..., D]`` (numpy or torch) with the dimensions ``dims`` wrapped into ``[-pi, pi)``; the others
    unchanged. Out of place, so it is safe on tensors that autograd tracks."""
    if not dims:
        return x
    mask = np.zeros(x.shape[-1])
    mask[list(dims)] = 1.0
    wrapped = namespace(x).remainder(x + np.pi, TURN) - np.pi
    return x + as_array_like(mask, x) * (wrapped - x)


def unit_circle_pairs(episodes: list[np.ndarray]) -> list[tuple[int, int]]:
    """Disjoint pairs of state dimensions whose squares sum to 1 (within ``CIRCLE_TOLERANCE``) in every
    state of ``episodes`` (each ``[T, D]``): an angle given as its cos and sin."""
    if not episodes:
        return []
    states = np.concatenate([np.asarray(e, np.float64) for e in episodes])
    squares = states**2
    pairs, taken = [], set()
    for i in range(states.shape[1]):
        for j in range(i + 1, states.shape[1]):
            if i in taken or j in taken:
                continue
            if np.abs(squares[:, i] + squares[:, j] - 1.0).max() < CIRCLE_TOLERANCE:
                pairs.append((i, j))
                taken |= {i, j}
    return pairs


def onto_unit_circle(x, pairs):
    """``x [..., D]`` (numpy or torch) with each pair ``(cos, sin)`` of ``pairs`` scaled to length 1 (a pair at
    the origin becomes ``(1, 0)``); the other dimensions unchanged. Out of place."""
    if not pairs:
        return x
    xp = namespace(x)
    cos, sin = [i for i, _ in pairs], [j for _, j in pairs]
    length = xp.sqrt(x[..., cos] ** 2 + x[..., sin] ** 2)
    safe = length > 1e-6
    new_cos = xp.where(safe, x[..., cos] / xp.where(safe, length, 1.0), 1.0 + 0 * length)
    new_sin = xp.where(safe, x[..., sin] / xp.where(safe, length, 1.0), 0 * length)
    out = x * 1.0
    out[..., cos] = new_cos
    out[..., sin] = new_sin
    return out
