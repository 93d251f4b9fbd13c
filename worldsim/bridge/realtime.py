"""Real-time scheduling of the calling thread for the span of a control episode (Linux ``SCHED_FIFO``).

A control loop at 200 Hz has 5 ms per tick. On a shared machine the kernel's ordinary scheduler may hand
the loop's core to another process for longer than that now and then (one tick in 10,000 in
``docs/live_control.md``'s runs, with the loop pinned to its own core and the garbage collector paused):
a ``SCHED_FIFO`` thread is preempted only by higher real-time priorities, which is what robot control
stacks ask of the kernel for their loops. The loop sleeps between ticks (it waits on its socket), so it
does not starve the core. Needs ``CAP_SYS_NICE`` (root, or ``setcap cap_sys_nice+ep`` on the interpreter).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PRIORITIES = range(1, 100)
"""``SCHED_FIFO``'s priorities on Linux; 99 is the highest (kernel threads often run at 50)."""


def check_priority(priority: int | None, name: str = "realtime_priority") -> None:
    """Raise a one-line error unless ``priority`` is None or a ``SCHED_FIFO`` priority."""
    if priority is not None and (isinstance(priority, bool) or priority not in PRIORITIES):
        raise ValueError(f"{name} must be None or an integer in 1..99 (SCHED_FIFO), got {priority!r}")


@contextlib.contextmanager
def realtime_scheduling(priority: int | None) -> Iterator[None]:
    """Run the body with the calling thread under ``SCHED_FIFO`` at ``priority``, then restore its policy;
    ``None`` changes nothing. Raises a one-line ``PermissionError`` where the process may not do so."""
    check_priority(priority)
    if priority is None:
        yield
        return
    if not hasattr(os, "sched_setscheduler"):
        raise PermissionError(f"realtime_priority={priority} needs Linux's SCHED_FIFO, which this OS lacks")
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError as error:
        raise PermissionError(
            f"realtime_priority={priority} needs CAP_SYS_NICE (run as root or setcap cap_sys_nice+ep on the "
            f"interpreter), or leave it None: {error.strerror}"
        ) from None
    try:
        yield
    finally:
        os.sched_setscheduler(0, before[0], before[1])
