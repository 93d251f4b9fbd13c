"""Roll a policy out in a Gymnasium env and measure what the benchmark reports."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from worldsim.envs.wrappers import InferenceLatency
from worldsim.policies.base import Policy


@dataclass
class EpisodeStats:
    success: bool
    total_reward: float
    max_score: float
    steps: int


def evaluate_policy(
    policy: Policy,
    env_id: str,
    *,
    episodes: int,
    seed: int = 0,
    latency_ticks: int = 0,
    env_kwargs: dict | None = None,
    score_key: str | None = None,
    progress: bool = True,
) -> dict:
    """Success rate, rewards, network calls and latency per control step, and action smoothness.

    Episode ``i`` resets with ``seed + i``. ``latency_ticks`` wraps the env in
    :class:`~worldsim.envs.wrappers.InferenceLatency`. ``score_key`` names a per-step ``info`` value whose
    maximum is averaged (e.g. PushT's ``"coverage"``). Network calls are read from the policy's
    ``calls_last_prediction`` when it has one.
    """
    env = gym.make(env_id, **(env_kwargs or {}))
    if latency_ticks:
        env = InferenceLatency(env, latency_ticks)
    stats: list[EpisodeStats] = []
    latencies, calls, changes = [], [], []
    for episode in tqdm(range(episodes), disable=not progress, desc=f"eval {env_id}", unit="ep"):
        obs, _ = env.reset(seed=seed + episode)
        policy.reset()
        previous, total, best, steps, success = None, 0.0, 0.0, 0, False
        while True:
            start = time.perf_counter()
            action = policy.select_action(obs)
            latencies.append(time.perf_counter() - start)
            calls.append(getattr(policy, "calls_last_prediction", np.nan))
            if previous is not None:
                changes.append(float(np.mean((action - previous) ** 2)))
            previous = action
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            steps += 1
            success = success or bool(info.get("is_success", False))
            if score_key is not None:
                best = max(best, float(info[score_key]))
            if terminated or truncated:
                break
        stats.append(EpisodeStats(success, total, best, steps))
    env.close()
    latencies_ms = np.asarray(latencies) * 1e3
    return {
        "episodes": episodes,
        "success_rate": float(np.mean([s.success for s in stats])),
        "mean_reward": float(np.mean([s.total_reward for s in stats])),
        "mean_max_score": float(np.mean([s.max_score for s in stats])) if score_key else None,
        "mean_steps": float(np.mean([s.steps for s in stats])),
        "calls_per_step": float(np.nanmean(calls)),
        "latency_ms_p50": float(np.percentile(latencies_ms, 50)),
        "latency_ms_p99": float(np.percentile(latencies_ms, 99)),
        "smoothness_mse": float(np.mean(changes)) if changes else 0.0,
        "latency_ticks": latency_ticks,
    }
