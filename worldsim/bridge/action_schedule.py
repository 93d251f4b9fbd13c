"""Which action to apply at each control tick, given chunks that arrive late and out of step with the ticks.

A chunk predicted from the observation of tick ``t`` holds the actions for ticks ``t, t+1, ...``. It takes
over from the chunk being executed at tick ``t + delay_ticks`` (or on arrival if later), so the action at
tick ``k`` is ``chunk[k - t]``: the offset is the number of ticks that passed since its observation. A
fixed ``delay_ticks`` makes the switch tick independent of network jitter as long as replies come within
it. When no chunk covers a tick, the safe action is applied instead:

- ``"hold"``: repeat the last applied action (for position targets: stay where you are);
- ``"zero"``: all zeros (for velocity or delta commands: stop).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SafeAction = Literal["hold", "zero"]
SAFE_ACTIONS = ("hold", "zero")


class ActionSchedule:
    """Merges chunks at the right offset and falls back to the safe action when none covers a tick."""

    def __init__(self, action_shape: tuple[int, ...], dtype: np.dtype, delay_ticks: int, safe_action: SafeAction):
        if delay_ticks < 0:
            raise ValueError(f"delay_ticks must be non-negative, got {delay_ticks}")
        if safe_action not in SAFE_ACTIONS:
            raise ValueError(f"safe_action must be one of {SAFE_ACTIONS}, got {safe_action!r}")
        self.delay_ticks = delay_ticks
        self.safe_action = safe_action
        self._zero = np.zeros(action_shape, dtype)
        self.late_chunks = 0
        self.stale_chunks = 0
        self.clear()

    def clear(self) -> None:
        """Forget all chunks (a new episode)."""
        self._chunk: np.ndarray | None = None
        self._chunk_tick = 0
        self._pending: np.ndarray | None = None
        self._pending_tick = 0
        self._last: np.ndarray | None = None

    def offer(self, chunk: np.ndarray, obs_tick: int, now_tick: int) -> None:
        """A chunk predicted from the observation of ``obs_tick`` arrived before tick ``now_tick``."""
        if now_tick - obs_tick >= len(chunk):  # every action in it is already in the past
            self.stale_chunks += 1
            return
        if self._chunk is None or now_tick >= obs_tick + self.delay_ticks:
            self.late_chunks += int(self._chunk is not None and now_tick > obs_tick + self.delay_ticks)
            self._chunk, self._chunk_tick = chunk, obs_tick
            self._pending = None
        else:  # keep executing the current chunk until the planned switch
            self._pending, self._pending_tick = chunk, obs_tick

    def action(self, tick: int) -> tuple[np.ndarray, int]:
        """The action for ``tick`` and the observation tick of the chunk it came from (-1: safe action)."""
        if self._pending is not None and tick >= self._pending_tick + self.delay_ticks:
            self._chunk, self._chunk_tick, self._pending = self._pending, self._pending_tick, None
        offset = tick - self._chunk_tick
        if self._chunk is not None and 0 <= offset < len(self._chunk):
            self._last = self._chunk[offset]
            return self._last, self._chunk_tick
        if self.safe_action == "zero":
            return self._zero, -1
        if self._last is None:
            raise RuntimeError("no action has been applied yet, so there is none to hold")
        return self._last, -1
