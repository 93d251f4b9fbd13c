"""A fixed-rate control loop on the robot side, with asynchronous inference on a served policy.

Every tick the loop applies one action to the environment (a Gymnasium env, or a robot adapter with the
same ``reset``/``step`` signatures). It sends the observation history to the policy server every
``replan_every`` ticks and keeps executing the current chunk while the next one is computed; the new chunk
takes over at the right offset (see ``ActionSchedule``). The loop never blocks past a tick's deadline on
the network: when no chunk covers a tick — the server is slow, dead or restarting — a watchdog applies the
documented safe action, and the client reconnects in the background of the loop's own waits.
"""

from __future__ import annotations

import collections
import gc
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worldsim.bridge.action_schedule import ChunkTiming
from worldsim.bridge.connection import NotConnectedError
from worldsim.bridge.policy_client import PolicyClient
from worldsim.bridge.realtime import check_priority, realtime_scheduling


@dataclass
class ControlLoopConfig(ChunkTiming):
    """How the robot-side control loop runs: its tick rate and how long it waits, on top of the chunk timing
    it shares with the offline ``DelaySimulator`` (``ChunkTiming``: when a requested chunk takes over, how
    often it asks for one, how chunks merge, what it applies when no chunk covers a tick, when to stop)."""

    rate_hz: float = 50.0
    """Control ticks per second; each tick applies one action."""
    sync_wait: float = 0.5
    """With ``delay_ticks=0``: the fraction of the period the loop may wait for the chunk; the rest is
    left for applying the action."""
    first_chunk_timeout_s: float = 5.0
    """Longest wait for the chunk an episode starts with (the clock starts once it is there)."""
    record: bool = False
    """Keep a per-tick trace (actions, where they came from, lateness) in each ``EpisodeResult``."""
    pause_gc: bool = True
    """Pause Python's cyclic garbage collector while an episode runs (it is on again between episodes): a
    full collection can stop the loop for milliseconds, a whole tick at 200 Hz. Reference counting still
    frees everything an episode makes that is not a cycle."""
    realtime_priority: int | None = None
    """Run the loop's thread under Linux's ``SCHED_FIFO`` at this priority (1-99) while an episode runs, so
    that ordinary processes never take its core for a tick (:mod:`worldsim.bridge.realtime`; needs
    ``CAP_SYS_NICE``). None: the ordinary scheduler."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_priority(self.realtime_priority)
        if self.rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, got {self.rate_hz}")
        if not 0.0 < self.sync_wait < 1.0:
            raise ValueError(f"sync_wait must be in (0, 1), got {self.sync_wait}")


@dataclass
class LoopStats:
    """Counters of one episode. A deadline miss is a tick whose action did not come from a chunk
    (``fallback_ticks``), that ran on an older chunk because the one due by then (requested at tick ``t``,
    due at ``t + delay_ticks``) had not arrived (``overdue_ticks``), or whose action was applied after the
    tick's end (``late_ticks``)."""

    ticks: int = 0
    deadline_misses: int = 0
    fallback_ticks: int = 0
    overdue_ticks: int = 0
    late_ticks: int = 0
    requests: int = 0
    chunks: int = 0
    late_chunks: int = 0
    stale_chunks: int = 0
    lost_requests: int = 0
    reconnects: int = 0
    round_trip_s: list[float] = field(default_factory=list)
    """Per chunk after the first (the chunks asked for on the tick path): from sending the observations to
    receiving the chunk."""
    compute_s: list[float] = field(default_factory=list)
    """Per chunk after the first: the part of the round trip the policy spent computing (reported by the
    server)."""
    first_chunk_round_trip_s: float | None = None
    """The episode's first chunk, awaited before the clock starts (a strategy's cold start: off the tick path)."""
    first_chunk_compute_s: float | None = None
    """The policy's compute time for the first chunk."""
    arrival_ticks: list[int] = field(default_factory=list)
    """Per chunk after the first: the ticks from its observation to its arrival, the inference delay ``d``
    measured live (compare ``delay_ticks``; the ``DelaySimulator`` replays such delays offline)."""


@dataclass
class EpisodeResult:
    """The outcome of one :meth:`ControlLoop.run_episode`.

    ``seed``: the env's reset seed; ``ticks``: actions applied; ``total_reward``: the sum of the env's
    rewards; ``success``: the last step's ``info["is_success"]`` (False when the env does not report it);
    ``terminated`` / ``truncated``: how the env ended the episode (both False when ``max_ticks`` stopped it);
    ``stats``: the episode's deadline misses, requests, chunks and round-trip times.
    """

    seed: int | None
    ticks: int
    total_reward: float
    success: bool
    terminated: bool
    truncated: bool
    stats: LoopStats
    trace: dict[str, np.ndarray] | None
    """With ``record``: ``action [T, *A]``, ``obs_tick [T]`` (tick of the observation whose chunk gave the
    action, -1 for the safe action), ``late [T]`` (bool), ``time_s [T]`` (when the action was applied)."""


def chunk_boundary_jumps(results: list[EpisodeResult]) -> dict:
    """Smoothness of recorded episodes: the mean L2 change between consecutive applied actions where the
    source chunk changes (``boundary_jump``) and where it does not (``within_jump``), and their ratio.

    A ratio near 1 means switching chunks is no rougher than following one; None where a kind of step never
    occurs (chunks of one action have no within-chunk steps)."""
    boundary, within = [], []
    for result in results:
        if result.trace is None:
            raise ValueError("chunk_boundary_jumps needs episodes recorded with record=True")
        actions = result.trace["action"].reshape(len(result.trace["action"]), -1).astype(np.float64)
        source = result.trace["obs_tick"]
        change = np.linalg.norm(np.diff(actions, axis=0), axis=1)
        switched = source[1:] != source[:-1]
        boundary.extend(change[switched])
        within.extend(change[~switched])
    b = float(np.mean(boundary)) if boundary else None
    w = float(np.mean(within)) if within else None
    return {"boundary_jump": b, "within_jump": w, "jump_ratio": b / w if b is not None and w else None}


def _stack(history: collections.deque) -> np.ndarray | dict[str, np.ndarray]:
    """Observations stacked on a new first axis, oldest first; dict observations (a camera with
    proprioception, from an env with a ``Dict`` observation space) per key."""
    first = history[0]
    if type(first) is not np.ndarray and isinstance(first, Mapping):
        return {key: np.stack([obs[key] for obs in history]) for key in first}
    return np.stack(history)


class ControlLoop:
    """Runs ``env`` at ``config.rate_hz`` on actions from the policy behind ``client``; the env's observations
    are arrays, or dicts of arrays for a policy whose observation space is a ``Dict``."""

    def __init__(self, env: Any, client: PolicyClient, config: ControlLoopConfig | None = None) -> None:
        self.env = env
        self.client = client
        self.config = config or ControlLoopConfig()
        info = client.connect(self.config.first_chunk_timeout_s)
        self.obs_horizon = int(info.body["obs_horizon"])
        self.replan_every = self.config.replan_every or int(info.body["n_action_steps"])
        self.schedule = self.config.schedule(info.action_space.shape, info.action_space.dtype)
        self._in_flight: tuple[int, int, float] | None = None  # request id, observation tick, send time
        self._last_request_tick = 0

    def run_episode(self, seed: int | None = None) -> EpisodeResult:
        with realtime_scheduling(self.config.realtime_priority):
            if not self.config.pause_gc or not gc.isenabled():
                return self._run_episode(seed)
            gc.disable()
            try:
                return self._run_episode(seed)
            finally:
                gc.enable()

    def _run_episode(self, seed: int | None) -> EpisodeResult:
        cfg = self.config
        period = 1.0 / cfg.rate_hz
        stats = LoopStats()
        trace: dict[str, list] = {"action": [], "obs_tick": [], "late": [], "time_s": []}
        reconnects_before = self.client.connection.reconnects
        chunk_counters = (self.schedule.late_chunks, self.schedule.stale_chunks)
        obs, _ = self.env.reset(seed=seed)
        self.client.reset(cfg.first_chunk_timeout_s)
        self.schedule.clear()
        self._in_flight = None
        # The first observation fills the whole history, as the policy's own queue does in-process and as its
        # training windows were padded (docs/protocol.md, "Start of an episode").
        history = collections.deque([obs] * self.obs_horizon, maxlen=self.obs_horizon)
        self._last_request_tick = 0
        self._request(history, 0, stats)
        self._first_chunk(stats)

        total_reward, terminated, truncated, info = 0.0, False, False, {}
        start = time.perf_counter()
        tick = 0
        last_request = 0
        while True:
            deadline = start + (tick + 1) * period
            self._receive(0.0, tick, stats)
            if self._in_flight is None and tick - last_request >= self.replan_every:
                last_request = tick
                self._request(history, tick, stats)
            if cfg.delay_ticks == 0 and self._in_flight is not None and self._in_flight[1] == tick:
                self._wait_until(deadline - period * (1.0 - cfg.sync_wait), tick, stats, until_reply=True)
            overdue = self._in_flight is not None and self._in_flight[1] + cfg.delay_ticks <= tick
            action, obs_tick = self.schedule.action(tick)
            applied = time.perf_counter()
            late = applied > deadline
            obs, reward, terminated, truncated, info = self.env.step(action)
            history.append(obs)
            total_reward += float(reward)
            stats.fallback_ticks += obs_tick < 0
            stats.overdue_ticks += overdue
            stats.late_ticks += late
            stats.deadline_misses += obs_tick < 0 or overdue or late
            if cfg.record:
                for key, value in (
                    ("action", np.array(action)),
                    ("obs_tick", obs_tick),
                    ("late", late),
                    ("time_s", applied - start),
                ):
                    trace[key].append(value)
            tick += 1
            if terminated or truncated or (cfg.max_ticks is not None and tick >= cfg.max_ticks):
                break
            now = time.perf_counter()
            if now > start + (tick + 1) * period:  # a whole period behind: restart the clock, do not burst
                start = now - tick * period
            self._wait_until(start + tick * period, tick, stats, until_reply=False)

        stats.ticks = tick
        stats.late_chunks = self.schedule.late_chunks - chunk_counters[0]
        stats.stale_chunks = self.schedule.stale_chunks - chunk_counters[1]
        stats.reconnects = self.client.connection.reconnects - reconnects_before
        return EpisodeResult(
            seed=seed,
            ticks=tick,
            total_reward=total_reward,
            success=bool(info.get("is_success", False)),
            terminated=bool(terminated),
            truncated=bool(truncated),
            stats=stats,
            trace={key: np.asarray(values) for key, values in trace.items()} if cfg.record else None,
        )

    def _first_chunk(self, stats: LoopStats) -> None:
        if self._in_flight is None:
            raise NotConnectedError(f"could not ask {self.client.connection.address} for the first chunk")
        deadline = time.perf_counter() + self.config.first_chunk_timeout_s
        while self._in_flight is not None:
            if time.perf_counter() >= deadline or self.client.connection.in_flight == 0:
                raise TimeoutError(
                    f"no first chunk from {self.client.connection.address} within {self.config.first_chunk_timeout_s} s"
                )
            self._receive(deadline - time.perf_counter(), 0, stats)

    def _request(self, history: collections.deque, tick: int, stats: LoopStats) -> None:
        obs_history = _stack(history)
        # The actions that run before this chunk takes over: a delay-aware policy keeps them (real-time chunking).
        delay = self.config.delay_ticks
        prefix = self.schedule.upcoming(tick, delay) if self.config.send_prefix and delay and tick else None
        # The round trip starts before the send: a thread descheduled right after handing the request to ZeroMQ
        # (common on a loaded machine, when the server wakes up) would otherwise start the clock after the server
        # had already computed, and report a round trip shorter than the server's compute time.
        sent = time.perf_counter()
        try:
            request_id = self.client.submit(obs_history, prefix=prefix, executed_steps=tick - self._last_request_tick)
        except NotConnectedError:
            return  # the watchdog covers the ticks; the connection is renewed while we wait
        self._in_flight = (request_id, tick, sent)
        self._last_request_tick = tick
        stats.requests += 1

    def _receive(self, timeout_s: float, tick: int, stats: LoopStats) -> bool:
        """Take in at most one chunk that arrives within ``timeout_s``; whether one did."""
        reply = self.client.poll(max(timeout_s, 0.0))
        if reply is not None and self._in_flight is not None and reply.request_id == self._in_flight[0]:
            _, obs_tick, sent = self._in_flight
            self._in_flight = None
            stats.chunks += 1
            round_trip = time.perf_counter() - sent
            if obs_tick:
                stats.round_trip_s.append(round_trip)
                stats.compute_s.append(reply.compute_s)
                stats.arrival_ticks.append(tick - obs_tick)
            else:
                stats.first_chunk_round_trip_s, stats.first_chunk_compute_s = round_trip, reply.compute_s
            self.schedule.offer(reply.actions, obs_tick, tick)
            return True
        if self._in_flight is not None and self.client.connection.in_flight == 0:
            self._in_flight = None  # given up on by the connection (timeout): ask again when due
            stats.lost_requests += 1
        return False

    def _wait_until(self, until: float, tick: int, stats: LoopStats, until_reply: bool) -> None:
        while (remaining := until - time.perf_counter()) > 0:
            if self._receive(remaining, tick, stats) and until_reply:
                return
