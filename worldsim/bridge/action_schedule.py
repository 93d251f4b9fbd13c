"""Which action to apply at each control tick, given chunks that arrive late and out of step with the ticks.

A chunk predicted from the observation of tick ``t`` holds the actions for ticks ``t, t+1, ...``. It takes
over from the chunk being executed at tick ``t + delay_ticks`` (or on arrival if later), so the action at
tick ``k`` is ``chunk[k - t]``: the offset is the number of ticks that passed since its observation. A
fixed ``delay_ticks`` makes the switch tick independent of network jitter as long as replies come within
it. Two ways to merge chunks:

- ``"switch"``: the newest chunk that has taken over gives the action; the actions an older chunk planned
  for the same ticks are dropped (what real-time chunking's frozen prefix is made for);
- ``"ensemble"``: every chunk that has taken over and plans the tick gives its action, averaged with
  weights ``exp(-ensemble_decay * i)``, ``i = 0`` for the oldest (ACT's temporal ensembling).

When no chunk covers a tick, the safe action is applied instead:

- ``"hold"``: repeat the last applied action (for position targets: stay where you are);
- ``"zero"``: all zeros (for velocity or delta commands: stop).

The bridge's ``ControlLoop`` and the offline ``DelaySimulator`` both execute chunks through this class, so
the simulator's figures are those of the live loop at the same delays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SafeAction = Literal["hold", "zero"]
SAFE_ACTIONS = ("hold", "zero")
Merge = Literal["switch", "ensemble"]
MERGES = ("switch", "ensemble")


@dataclass
class ChunkTiming:
    """How chunks are requested and executed under inference delay: the settings the live ``ControlLoop``
    and the offline ``DelaySimulator`` share (each adds its own)."""

    delay_ticks: int = 1
    """Ticks from an observation to the first action used from its chunk (the chunk takes over then, or on
    arrival if later); also the length of the frozen prefix sent with a request. 0: synchronous inference."""
    replan_every: int | None = None
    """Ticks between two requests (at most one is in flight); ``None``: the policy's ``n_action_steps``."""
    merge: Merge = "switch"
    """``"switch"`` to the newest chunk, or ``"ensemble"`` the chunks that plan a tick (see ``ActionSchedule``)."""
    ensemble_decay: float = 0.01
    """With ``merge="ensemble"``: the weight of the ``i``-th oldest chunk's action is ``exp(-ensemble_decay * i)``."""
    send_prefix: bool = True
    """Send each request the actions that run before its chunk takes over (``delay_ticks`` of them), so a
    delay-aware policy (real-time chunking) keeps them; other policies ignore them."""
    safe_action: SafeAction = "hold"
    """The action of a tick no chunk covers: ``"hold"`` repeats the last applied action, ``"zero"`` applies
    zeros."""
    max_ticks: int | None = None
    """Stop an episode after this many ticks even if the env does not end it."""

    def __post_init__(self) -> None:
        # ``type(...) is int``: a bool (an int subclass) is not a tick count.
        if type(self.delay_ticks) is not int or self.delay_ticks < 0:
            raise ValueError(f"delay_ticks must be an int >= 0, got {self.delay_ticks!r}")
        for name in ("replan_every", "max_ticks"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")
        if self.safe_action not in SAFE_ACTIONS:
            raise ValueError(f"safe_action must be one of {SAFE_ACTIONS}, got {self.safe_action!r}")
        if self.merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {self.merge!r}")

    def schedule(self, action_shape: tuple[int, ...], dtype: np.dtype) -> ActionSchedule:
        """An empty :class:`ActionSchedule` with these settings."""
        return ActionSchedule(action_shape, dtype, self.delay_ticks, self.safe_action, self.merge, self.ensemble_decay)


class ActionSchedule:
    """Merges chunks at the right offset and falls back to the safe action when none covers a tick."""

    def __init__(
        self,
        action_shape: tuple[int, ...],
        dtype: np.dtype,
        delay_ticks: int,
        safe_action: SafeAction,
        merge: Merge = "switch",
        ensemble_decay: float = 0.01,
    ):
        if delay_ticks < 0:
            raise ValueError(f"delay_ticks must be non-negative, got {delay_ticks}")
        if safe_action not in SAFE_ACTIONS:
            raise ValueError(f"safe_action must be one of {SAFE_ACTIONS}, got {safe_action!r}")
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        if not np.isfinite(ensemble_decay) or ensemble_decay < 0:
            raise ValueError(f"ensemble_decay must be a finite number >= 0, got {ensemble_decay}")
        self.delay_ticks = delay_ticks
        self.safe_action = safe_action
        self.merge = merge
        self.ensemble_decay = float(ensemble_decay)
        self._zero = np.zeros(action_shape, dtype)
        self._dtype = np.dtype(dtype)
        self.late_chunks = 0
        self.stale_chunks = 0
        self.clear()

    def clear(self) -> None:
        """Forget all chunks (a new episode)."""
        self._chunks: list[tuple[np.ndarray, int, int]] = []  # (chunk, observation tick, takeover tick), oldest first
        self._last: np.ndarray | None = None

    def offer(self, chunk: np.ndarray, obs_tick: int, now_tick: int) -> None:
        """A chunk predicted from the observation of ``obs_tick`` arrived before tick ``now_tick``."""
        if now_tick - obs_tick >= len(chunk):  # every action in it is already in the past
            self.stale_chunks += 1
            return
        if not self._chunks:  # nothing to keep executing: use it at once
            takeover = now_tick
        else:
            self.late_chunks += int(now_tick > obs_tick + self.delay_ticks)
            takeover = max(now_tick, obs_tick + self.delay_ticks)
        self._chunks.append((chunk, obs_tick, takeover))

    def action(self, tick: int) -> tuple[np.ndarray, int]:
        """The action for ``tick`` and the observation tick of the (newest) chunk it came from (-1: safe action)."""
        self._forget_before(tick)
        action, source = self._planned(tick)
        if action is not None:
            self._last = action
            return action, source
        if self.safe_action == "zero":
            return self._zero, -1
        if self._last is None:
            raise RuntimeError("no action has been applied yet, so there is none to hold")
        return self._last, -1

    def upcoming(self, tick: int, count: int) -> np.ndarray:
        """The actions ticks ``tick .. tick + count - 1`` will apply if no other chunk arrives: the frozen
        prefix of a chunk requested at ``tick`` whose reply takes over ``count`` ticks later. Changes nothing."""
        actions, last = [], self._last
        for future in range(tick, tick + count):
            action, _ = self._planned(future)
            if action is None:
                if self.safe_action == "zero":
                    action = self._zero
                elif last is None:
                    raise RuntimeError("no action has been applied yet, so there is none to hold")
                else:
                    action = last
            actions.append(action)
            last = action
        return np.stack(actions) if actions else np.zeros((0, *self._zero.shape), self._dtype)

    def _planned(self, tick: int) -> tuple[np.ndarray | None, int]:
        """The merged action of the chunks that have taken over by ``tick`` and plan it (None: no chunk does)."""
        active = [(chunk, obs_tick) for chunk, obs_tick, takeover in self._chunks if takeover <= tick]
        if not active:
            return None, -1
        if self.merge == "switch":
            chunk, obs_tick = active[-1]
            offset = tick - obs_tick
            return (chunk[offset], obs_tick) if 0 <= offset < len(chunk) else (None, -1)
        covering = [
            (chunk[tick - obs_tick], obs_tick) for chunk, obs_tick in active if 0 <= tick - obs_tick < len(chunk)
        ]
        if not covering:
            return None, -1
        weights = np.exp(-self.ensemble_decay * np.arange(len(covering)))
        stacked = np.stack([action for action, _ in covering]).astype(np.float64)
        merged = np.tensordot(weights / weights.sum(), stacked, axes=1).astype(self._dtype)
        return merged, covering[-1][1]

    def _forget_before(self, tick: int) -> None:
        """Drop chunks that can give no action from ``tick`` on: superseded ones (switch) or exhausted ones."""
        if self.merge == "switch":
            active = [i for i, (_, _, takeover) in enumerate(self._chunks) if takeover <= tick]
            if active:
                del self._chunks[: active[-1]]
        else:
            self._chunks = [entry for entry in self._chunks if tick - entry[1] < len(entry[0])]
