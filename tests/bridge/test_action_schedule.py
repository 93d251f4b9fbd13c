"""ActionSchedule: merge offsets, planned switches, late and stale chunks, and the safe actions."""

from __future__ import annotations

import numpy as np
import pytest

from worldsim.bridge.action_schedule import ActionSchedule


def chunk(obs_tick: int, horizon: int = 4) -> np.ndarray:
    """Actions that name the tick they were planned for."""
    return (obs_tick + np.arange(horizon, dtype=np.float32))[:, None]


def run(schedule: ActionSchedule, ticks: range) -> list[tuple[float, int]]:
    return [(float(a[0]), source) for a, source in (schedule.action(t) for t in ticks)]


def test_first_chunk_is_used_at_once_and_actions_follow_the_ticks():
    schedule = ActionSchedule((1,), np.float32, delay_ticks=2, safe_action="hold")
    schedule.offer(chunk(0), obs_tick=0, now_tick=0)
    assert run(schedule, range(4)) == [(0, 0), (1, 0), (2, 0), (3, 0)]


def test_an_early_chunk_waits_for_its_planned_switch():
    schedule = ActionSchedule((1,), np.float32, delay_ticks=2, safe_action="hold")
    schedule.offer(chunk(0, horizon=8), 0, 0)
    assert run(schedule, range(2)) == [(0, 0), (1, 0)]
    schedule.offer(chunk(1, horizon=8) + 100, obs_tick=1, now_tick=2)  # arrived before tick 3 = 1 + delay
    assert run(schedule, range(2, 5)) == [(2, 0), (103, 1), (104, 1)]
    schedule.offer(chunk(4, horizon=8) + 200, obs_tick=4, now_tick=5)  # arrives a tick early: not used yet
    assert run(schedule, range(5, 7)) == [(105, 1), (206, 4)]
    assert schedule.late_chunks == 0


def test_a_late_chunk_is_merged_at_its_offset_and_counted():
    schedule = ActionSchedule((1,), np.float32, delay_ticks=1, safe_action="hold")
    schedule.offer(chunk(0, horizon=8), 0, 0)
    run(schedule, range(3))
    schedule.offer(chunk(1, horizon=8) + 100, obs_tick=1, now_tick=3)
    assert run(schedule, range(3, 5)) == [(103, 1), (104, 1)]
    assert schedule.late_chunks == 1


def test_a_chunk_entirely_in_the_past_is_dropped():
    schedule = ActionSchedule((1,), np.float32, delay_ticks=1, safe_action="hold")
    schedule.offer(chunk(0, horizon=8), 0, 0)
    schedule.offer(chunk(1) + 100, obs_tick=1, now_tick=5)
    assert schedule.stale_chunks == 1 and run(schedule, range(5, 6)) == [(5, 0)]


@pytest.mark.parametrize(("mode", "expected"), [("hold", 3.0), ("zero", 0.0)])
def test_the_safe_action_covers_ticks_no_chunk_reaches(mode, expected):
    schedule = ActionSchedule((1,), np.float32, delay_ticks=1, safe_action=mode)
    schedule.offer(chunk(0), 0, 0)
    assert run(schedule, range(6)) == [(0, 0), (1, 0), (2, 0), (3, 0), (expected, -1), (expected, -1)]


def test_hold_with_nothing_applied_is_an_error_and_bad_arguments_are_refused():
    with pytest.raises(RuntimeError, match="no action has been applied"):
        ActionSchedule((1,), np.float32, delay_ticks=0, safe_action="hold").action(0)
    with pytest.raises(ValueError, match="safe_action"):
        ActionSchedule((1,), np.float32, delay_ticks=0, safe_action="brake")
    with pytest.raises(ValueError, match="delay_ticks"):
        ActionSchedule((1,), np.float32, delay_ticks=-1, safe_action="hold")
