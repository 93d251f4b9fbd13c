"""Expert-takeover demonstrations: the policy drives, the scripted expert takes over, and only the expert's part
is recorded.

    worldsim takeover task=pusht episodes=400 seed=500000          # dataset worldsim/pusht/expert1000-takeover-v0

A policy trained by imitation drifts into states the demonstrations never show, and nothing in them says how
to recover from there (the covariate shift DAgger answers). Here each episode is driven by the policy for a
random number of steps, then handed to a fresh expert, which finishes the task from wherever the policy left
it. The expert's segment, starting at the handover observation, is kept as one demonstration when it
succeeds; the policy's own actions are never recorded. Training on these segments together with the
original demonstrations (``worldsim train policy extra_datasets=[<takeover>]``) teaches the policy to finish
from its own states.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gymnasium as gym
import minari
import numpy as np
import torch
from minari.data_collector import EpisodeBuffer
from tqdm.auto import tqdm

from worldsim.envs.datasets import EpisodeRecorder, check_new_dataset_id, datasets_root, default_expert, write_dataset
from worldsim.envs.experts import Expert
from worldsim.envs.tasks import ensure_registered
from worldsim.policies.base import Policy


@dataclass
class TakeoverStats:
    """What happened to the episodes of one recording."""

    episodes: int = 0
    policy_finished: int = 0
    """Episodes that ended (mostly: the policy succeeded) before their handover step: nothing to record."""
    recorded: int = 0
    """Expert segments that succeeded and were kept."""
    expert_failed: int = 0
    """Expert segments that did not succeed within ``expert_steps``: dropped."""
    recorded_steps: int = 0


def _succeeded(terminated: bool, info: dict) -> bool:
    return bool(info.get("is_success", terminated))


def takeover_episodes(
    policy: Policy,
    env: gym.Env,
    make_expert: Callable[..., Expert],
    episodes: int,
    seed: int,
    handover_steps: tuple[int, int],
    expert_steps: int,
    stats: TakeoverStats,
) -> Iterator[EpisodeBuffer]:
    """Yield the kept expert segments; ``stats`` is updated as episodes finish.

    Episode ``i`` depends on ``seed + i`` alone: its reset seed, its handover step (drawn uniformly from
    ``handover_steps``, inclusive), its expert (``make_expert(seed=seed + i)``) and, for a policy that draws
    its noise from torch's global generator (a ``DiffusionPolicy`` without its own ``generator``), the
    policy's sampling noise: that generator is reseeded. ``env`` must not truncate before
    ``max(handover_steps) + expert_steps``.
    """
    for index in range(episodes):
        episode_seed = seed + index
        handover = int(np.random.default_rng(episode_seed).integers(handover_steps[0], handover_steps[1] + 1))
        stats.episodes += 1
        torch.manual_seed(episode_seed)
        obs, info = env.reset(seed=episode_seed)
        policy.reset()
        finished = False
        for _ in range(handover):
            obs, _, terminated, truncated, info = env.step(policy.select_action(obs))
            if terminated or truncated or _succeeded(terminated, info):
                finished = True
                break
        if finished:
            stats.policy_finished += 1
            continue
        expert = make_expert(seed=episode_seed)
        expert.reset()
        recorder = EpisodeRecorder(stats.recorded, episode_seed, obs, info)
        success = False
        for step in range(expert_steps):
            action = expert(obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            success = success or _succeeded(terminated, info)
            out_of_time = step == expert_steps - 1 and not terminated
            recorder.add(action, obs, reward, terminated, truncated or out_of_time, info)
            if terminated or truncated:
                break
        if not success:
            stats.expert_failed += 1
            continue
        stats.recorded += 1
        stats.recorded_steps += len(recorder.actions)
        yield recorder.buffer()


def collect_takeover_dataset(
    policy: Policy,
    env_id: str,
    dataset_id: str,
    episodes: int,
    seed: int = 0,
    *,
    handover_steps: tuple[int, int] = (10, 290),
    expert_steps: int = 300,
    expert: Callable[..., Expert] | None = None,
    env_kwargs: dict | None = None,
    path: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[minari.MinariDataset, TakeoverStats]:
    """Record expert-takeover segments from ``episodes`` policy rollouts into a new Minari dataset.

    Args:
        policy: any object with the policy API (``reset()``, ``select_action(obs)``), e.g. a
            ``DiffusionPolicy`` drawing its noise from torch's global generator.
        env_id: the Gymnasium id; its observations must be what ``policy`` reads.
        dataset_id: new Minari id; must not exist yet.
        episodes: number of policy rollouts (>= 1); fewer segments are kept (see ``TakeoverStats``).
        seed: seed of the first rollout; rollout ``i`` (its reset, handover step, expert and torch's global
            generator) is seeded with ``seed + i`` alone.
        handover_steps: inclusive range of the policy's steps before the expert takes over.
        expert_steps: most steps the expert gets to succeed.
        expert: a factory ``expert(seed=...)`` of an :class:`~worldsim.envs.experts.Expert` (``reset()``,
            ``expert(obs, info) -> action``; it starts from the handover observation and info); default: the
            task's scripted expert.
        env_kwargs: keyword arguments of ``gymnasium.make`` (e.g. ``{"obs_type": "state"}``).
        path: datasets root; defaults to ``$MINARI_DATASETS_PATH``.
        progress: show a progress bar.
    """
    make_expert = default_expert(env_id, expert)
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    low, high = handover_steps
    if not 0 <= low <= high:
        raise ValueError(f"handover_steps must be (low, high) with 0 <= low <= high, got {handover_steps!r}")
    if expert_steps < 1:
        raise ValueError(f"expert_steps must be positive, got {expert_steps!r}")
    stats = TakeoverStats()
    with datasets_root(path):
        check_new_dataset_id(dataset_id)
        # Long enough that the time limit never cuts the expert short.
        ensure_registered(env_id)
        env = gym.make(env_id, max_episode_steps=high + expert_steps + 1, **(env_kwargs or {}))
        try:
            segments = takeover_episodes(policy, env, make_expert, episodes, seed, handover_steps, expert_steps, stats)
            bar = tqdm(segments, desc=f"takeover {dataset_id}", disable=not progress)
            dataset = write_dataset(
                dataset_id,
                bar,
                env,
                algorithm_name=f"expert takeover from {type(policy).__name__} rollouts",
                description=(
                    f"Expert-takeover demonstrations of {env_id}: the policy drove for {low}-{high} steps, then "
                    f"the scripted expert finished; only the expert's successful segments are recorded."
                ),
            )
        finally:
            env.close()
    return dataset, stats
