"""The live control loop's timing, simulated: asynchronous chunks under inference delay, without a clock.

A real robot keeps moving while the policy thinks. The :class:`DelaySimulator` replays exactly what the
bridge's :class:`~worldsim.bridge.control_loop.ControlLoop` does, tick by tick, with the policy called
in-process and the delay given in ticks instead of measured on a clock:

- the episode's first chunk is awaited (the loop's clock starts once it is there);
- every ``replan_every`` ticks, when no request is in flight, the policy is asked for a chunk from the
  newest ``obs_horizon`` observations (with the actions that run before the chunk takes over, the frozen
  prefix, when ``send_prefix``);
- the chunk arrives ``compute_ticks`` ticks later (fixed, or drawn per request) and takes over at
  ``obs_tick + delay_ticks`` or on arrival if later, through the same
  :class:`~worldsim.bridge.action_schedule.ActionSchedule` the loop uses; meanwhile the previous chunk
  keeps running.

Episodes run in lockstep as one batch (``policy.predict_chunks``), so a benchmark of hundreds of episodes
costs one network call per denoising step, not one per episode; each episode has its own schedule and
judge. The policy's side of the contract: ``reset()``, ``obs_horizon``, ``n_action_steps``, ``horizon``
and ``predict_chunks(obs_histories, executed_steps=, prefix=)``.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worldsim.bridge.action_schedule import ChunkTiming
from worldsim.bridge.control_loop import EpisodeResult, LoopStats


@dataclass
class DelayConfig(ChunkTiming):
    """The chunk timing the live loop uses (``ChunkTiming``), plus when the simulated chunks arrive."""

    compute_ticks: int | Sequence[int] | None = None
    """Ticks from a request to its chunk's arrival: an int, or a list drawn from uniformly at each request
    (one draw for the whole batch); None: ``delay_ticks`` (a policy that answers just in time)."""
    record: bool = True
    """Keep a per-tick trace (``action`` and ``obs_tick``, as the live loop's) in each ``EpisodeResult``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ticks = [self.delay_ticks] if self.compute_ticks is None else np.atleast_1d(self.compute_ticks).tolist()
        if not ticks or any(type(t) is not int or t < 0 for t in ticks):
            raise ValueError(
                f"compute_ticks must be an int >= 0 or a non-empty list of them, got {self.compute_ticks!r}"
            )
        if 0 in ticks and self.delay_ticks:
            raise ValueError("compute_ticks of 0 (synchronous inference) needs delay_ticks=0")
        self._compute_choices = ticks


class DelaySimulator:
    """Runs episodes of ``policy`` under ``config``'s inference delay, as the live control loop would.

    ``seed`` draws the compute delays when ``config.compute_ticks`` is a list.
    """

    def __init__(self, policy: Any, config: DelayConfig | None = None, *, seed: int | None = 0) -> None:
        self.policy = policy
        self.config = config or DelayConfig()
        self.replan_every = self.config.replan_every or int(policy.n_action_steps)
        self._rng = np.random.default_rng(seed)

    def run_episodes(
        self, envs: Sequence[Any], seeds: Sequence[int | None], observers: Sequence[Any] | None = None
    ) -> list[EpisodeResult]:
        """One episode in each env, reset with its seed, stepped together; ``observers[i].observe(obs,
        reward, info)`` (a task's judge, say) sees every step of episode ``i``."""
        if len(envs) != len(seeds) or (observers is not None and len(observers) != len(envs)) or not envs:
            raise ValueError("run_episodes needs one seed (and one observer, if any) per env, and at least one env")
        cfg = self.config
        count = len(envs)
        first = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]
        histories = [
            collections.deque([obs] * self.policy.obs_horizon, maxlen=self.policy.obs_horizon) for obs in first
        ]
        self.policy.reset()
        chunks = self._predict(histories, executed_steps=0, prefix=None)
        schedules = []
        for chunk in chunks:
            schedule = cfg.schedule(chunk.shape[1:], chunk.dtype)
            schedule.offer(chunk, 0, 0)
            schedules.append(schedule)
        stats = [LoopStats(requests=1, chunks=1) for _ in range(count)]
        traces = [{"action": [], "obs_tick": []} for _ in range(count)]
        rewards = np.zeros(count)
        ends = [(False, False, {}) for _ in range(count)]
        alive = np.ones(count, bool)
        in_flight: tuple[np.ndarray, int, int] | None = None  # chunks, observation tick, arrival tick
        last_request, tick = 0, 0
        while alive.any():
            if in_flight is not None and in_flight[2] <= tick:
                self._deliver(in_flight, tick, schedules, stats)
                in_flight = None
            if in_flight is None and tick - last_request >= self.replan_every:
                arrival = tick + int(self._rng.choice(cfg._compute_choices))
                prefix = None
                if cfg.send_prefix and cfg.delay_ticks:
                    prefix = np.stack([s.upcoming(tick, cfg.delay_ticks) for s in schedules])
                chunks = self._predict(histories, executed_steps=tick - last_request, prefix=prefix)
                for s in stats:
                    s.requests += 1
                in_flight, last_request = (chunks, tick, arrival), tick
                if arrival == tick:  # synchronous inference: the chunk is there before the tick's action
                    self._deliver(in_flight, tick, schedules, stats)
                    in_flight = None
            overdue = in_flight is not None and in_flight[1] + cfg.delay_ticks <= tick
            for i in np.flatnonzero(alive):
                action, obs_tick = schedules[i].action(tick)
                obs, reward, terminated, truncated, info = envs[i].step(action)
                histories[i].append(obs)
                rewards[i] += float(reward)
                if observers is not None:
                    observers[i].observe(obs, reward, info)
                stats[i].fallback_ticks += obs_tick < 0
                stats[i].overdue_ticks += overdue
                stats[i].deadline_misses += obs_tick < 0 or overdue
                traces[i]["action"].append(np.array(action))
                traces[i]["obs_tick"].append(obs_tick)
                stats[i].ticks = tick + 1
                stopped = cfg.max_ticks is not None and tick + 1 >= cfg.max_ticks
                if terminated or truncated or stopped:
                    alive[i] = False
                    ends[i] = (bool(terminated), bool(truncated), info)
            tick += 1
        results = []
        for i in range(count):
            stats[i].late_chunks, stats[i].stale_chunks = schedules[i].late_chunks, schedules[i].stale_chunks
            terminated, truncated, info = ends[i]
            results.append(
                EpisodeResult(
                    seed=seeds[i],
                    ticks=stats[i].ticks,
                    total_reward=float(rewards[i]),
                    success=bool(info.get("is_success", False)),
                    terminated=terminated,
                    truncated=truncated,
                    stats=stats[i],
                    trace={key: np.asarray(values) for key, values in traces[i].items()} if cfg.record else None,
                )  # fmt: skip
            )
        return results

    def run_episode(self, env: Any, seed: int | None = None, observer: Any = None) -> EpisodeResult:
        """One episode (a batch of one)."""
        return self.run_episodes([env], [seed], None if observer is None else [observer])[0]

    def _predict(self, histories, *, executed_steps: int, prefix: np.ndarray | None) -> np.ndarray:
        obs = _stack([_stack(list(history)) for history in histories])
        return np.asarray(self.policy.predict_chunks(obs, executed_steps=executed_steps, prefix=prefix))

    @staticmethod
    def _deliver(in_flight, tick: int, schedules, stats) -> None:
        chunks, obs_tick, _ = in_flight
        for chunk, schedule, s in zip(chunks, schedules, stats, strict=True):
            s.chunks += 1
            s.arrival_ticks.append(tick - obs_tick)
            schedule.offer(chunk, obs_tick, tick)


def _stack(observations: list) -> Any:
    """Observations stacked on a new first axis; dict observations (a camera with proprioception) per key."""
    if isinstance(observations[0], dict):
        return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}
    return np.stack(observations)
