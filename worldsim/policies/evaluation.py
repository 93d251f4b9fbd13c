"""Roll a policy out in a task's env and measure what the benchmarks report.

Success is judged by the task's rule (:class:`~worldsim.envs.tasks.TaskSpec`'s ``success``: an ``info`` key
or a ``module:callable``). An env with no success signal gets ``success_rate = None`` and is judged by
its return: "0% success" is never reported for a task that cannot succeed.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from worldsim.envs.tasks import TaskSpec, task_for_env
from worldsim.envs.wrappers import PerActionDelay
from worldsim.policies.base import Policy


def evaluate_policy(
    policy: Policy,
    task: TaskSpec | str,
    *,
    episodes: int,
    seed: int = 0,
    policy_seed: int | None = None,
    per_action_delay_ticks: int = 0,
    progress: bool = True,
) -> dict:
    """Success (or return), goal error, network calls, latency and action smoothness over ``episodes``.

    ``task``: a :class:`TaskSpec`, or an env id (worldsim's own task of that env, else neutral defaults).
    Episode ``i`` resets the env with ``seed + i``; with ``policy_seed`` the policy's noise is reseeded
    with ``policy_seed + i`` too (``policy.seed``), so a torch policy and its ONNX export draw the same
    noise and the whole evaluation repeats exactly. ``per_action_delay_ticks`` wraps the env in
    :class:`~worldsim.envs.wrappers.PerActionDelay`.

    Latency is reported per control tick (``latency_ms_*``: every ``select_action`` call, including those
    that only pop a planned action) and per inference (``inference_ms_*``: the ticks that ran the network).
    """
    if isinstance(task, str):
        task = task_for_env(task)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    env = task.make_env()
    if per_action_delay_ticks:
        env = PerActionDelay(env, per_action_delay_ticks)
    judge = task.judge()
    outcomes: list[dict] = []
    latencies, inference, calls, changes = [], [], [], []
    for episode in tqdm(range(episodes), disable=not progress, desc=f"eval {task.env_id}", unit="ep"):
        obs, _ = env.reset(seed=seed + episode)
        if policy_seed is not None:
            policy.seed(policy_seed + episode)
        policy.reset()
        judge.reset()
        previous = None
        while True:
            start = time.perf_counter()
            action = policy.select_action(obs)
            elapsed = time.perf_counter() - start
            latencies.append(elapsed)
            step_calls = getattr(policy, "calls_last_prediction", np.nan)
            calls.append(step_calls)
            if step_calls:
                inference.append(elapsed)
            if previous is not None:
                changes.append(float(np.mean((np.asarray(action) - previous) ** 2)))
            previous = np.asarray(action)
            obs, reward, terminated, truncated, info = env.step(action)
            judge.observe(obs, reward, info)
            if terminated or truncated:
                break
        outcomes.append(judge_outcome(judge))
    env.close()
    return summarize(outcomes, latencies, inference, calls, changes) | {
        "episodes": episodes,
        "seed": seed,
        "policy_seed": policy_seed,
        "per_action_delay_ticks": per_action_delay_ticks,
    }


def judge_outcome(judge) -> dict:
    """One episode's outcome as ``summarize`` reads it, from the task's judge after the episode."""
    return {
        "success": judge.success, "return": judge.total_reward, "score": judge.score,
        "goal_error": judge.goal_error, "steps": judge.steps,
    }  # fmt: skip


def summarize(outcomes: list[dict], latencies, inference, calls, changes) -> dict:
    """The evaluation's figures from per-episode outcomes and per-tick measurements (latencies, calls and
    action changes may be empty, when the runner did not time single ticks: their figures are then None)."""
    successes = [o["success"] for o in outcomes]
    defined = any(s is not None for s in successes)
    returns = np.array([o["return"] for o in outcomes])
    scores = [o["score"] for o in outcomes if o["score"] is not None]
    errors = [o["goal_error"] for o in outcomes if o["goal_error"] is not None]
    latencies_ms, inference_ms = np.asarray(latencies) * 1e3, np.asarray(inference) * 1e3
    calls = np.asarray(calls, dtype=float)
    return {
        # Undefined (None) when the task has no success signal, rather than a misleading 0%.
        "success_rate": float(np.mean([bool(s) for s in successes])) if defined else None,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "mean_max_score": float(np.mean(scores)) if scores else None,
        "mean_goal_error": float(np.mean(errors)) if errors else None,
        "median_goal_error": float(np.median(errors)) if errors else None,
        "mean_steps": float(np.mean([o["steps"] for o in outcomes])),
        "calls_per_step": float(np.nanmean(calls)) if np.isfinite(calls).any() else None,
        "calls_per_inference": float(np.nanmean(calls[calls > 0])) if (calls > 0).any() else None,
        "latency_ms_p50": float(np.percentile(latencies_ms, 50)) if len(latencies_ms) else None,
        "latency_ms_p99": float(np.percentile(latencies_ms, 99)) if len(latencies_ms) else None,
        "inference_ms_p50": float(np.percentile(inference_ms, 50)) if len(inference_ms) else None,
        "inference_ms_p99": float(np.percentile(inference_ms, 99)) if len(inference_ms) else None,
        "smoothness_mse": float(np.mean(changes)) if changes else 0.0,
    }


def describe(result: dict) -> str:
    """One line: success (or return when success is undefined), calls and latencies."""
    if result["success_rate"] is None:
        spread = f"{result['mean_return']:.1f} ± {result['std_return']:.1f}"
        outcome = f"success undefined (the task has no success signal); return {spread}"
    else:
        outcome = f"success {result['success_rate']:.0%}, return {result['mean_return']:.1f}"
    if result.get("mean_goal_error") is not None:
        outcome += f", final goal error {result['mean_goal_error']:.4g} (raw units)"
    calls = result.get("calls_per_step")
    calls_text = "" if calls is None else f", {calls:.2f} calls/step"
    text = f"{outcome} over {result['episodes']} episodes{calls_text}"
    if result["latency_ms_p50"] is not None:
        text += f"; per tick p50 {result['latency_ms_p50']:.2f} ms p99 {result['latency_ms_p99']:.2f} ms"
    if result["inference_ms_p50"] is not None:
        text += f", per inference p50 {result['inference_ms_p50']:.2f} ms"
    return text
