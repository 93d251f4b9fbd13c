"""Reward and termination functions computed from predicted observations, for :class:`WorldModelEnv`.

A world model predicts observations only; the task's reward must come from them. For Push-T's state
observation ``[pusher_x, pusher_y, block_x, block_y, cos, sin]`` the block pose is in the observation, so
the simulator's reward (goal coverage, rasterized on a grid) can be computed exactly from it. A
goal-conditioned env (Gymnasium-Robotics) carries its achieved and desired goals in the observation, and
its own public ``compute_reward`` judges them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from worldsim.envs.push_t import GOAL_POSE, WORKSPACE, t_rectangles


class PushTCoverageReward:
    """``reward(obs, action, next_obs) = min(coverage / success_coverage, 1)`` from a Push-T state observation,
    ``terminated(next_obs) = coverage >= success_coverage`` and ``info(next_obs)`` (coverage and success): the
    simulator's rules, on predicted states."""

    def __init__(self, success_coverage: float = 0.95, resolution: float = 0.002):
        if not 0.0 < success_coverage <= 1.0:
            raise ValueError(f"success_coverage must be in (0, 1], got {success_coverage}")
        self.success_coverage = success_coverage
        points = []
        for cx, cy, hw, hh in t_rectangles():
            xs = np.arange(cx - hw + resolution / 2, cx + hw, resolution)
            ys = np.arange(cy - hh + resolution / 2, cy + hh, resolution)
            points.append(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2))
        goal_angle = GOAL_POSE[2]
        rotation = np.array([[np.cos(goal_angle), -np.sin(goal_angle)], [np.sin(goal_angle), np.cos(goal_angle)]])
        self._goal_points = np.concatenate(points) @ rotation.T + np.asarray(GOAL_POSE[:2])

    def coverage(self, obs: np.ndarray) -> float:
        """Fraction of the goal T covered by the block of a state observation."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape != (6,):
            raise ValueError(f"a Push-T state observation has shape (6,), got {obs.shape}")
        position = obs[2:4] * WORKSPACE
        angle = np.arctan2(obs[5], obs[4])
        c, s = np.cos(angle), np.sin(angle)
        local = (self._goal_points - position) @ np.array([[c, -s], [s, c]])
        inside = np.zeros(len(local), dtype=bool)
        for cx, cy, hw, hh in t_rectangles():
            inside |= (np.abs(local[:, 0] - cx) <= hw) & (np.abs(local[:, 1] - cy) <= hh)
        return float(inside.mean())

    def __call__(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float:
        return min(self.coverage(next_obs) / self.success_coverage, 1.0)

    def terminated(self, next_obs: np.ndarray) -> bool:
        return self.coverage(next_obs) >= self.success_coverage

    def info(self, next_obs: np.ndarray) -> dict:
        """What the simulator's ``info`` reports of a state: ``coverage`` and ``is_success``."""
        coverage = self.coverage(next_obs)
        return {"coverage": coverage, "is_success": coverage >= self.success_coverage}


class GoalReachedReward:
    """A goal-conditioned env's rules on the flat state vectors of its world model: ``reward`` is the env's own
    ``compute_reward(achieved_goal, desired_goal, info)`` and ``info(next_obs)`` reports ``is_success`` when the
    achieved goal lies within the env's ``distance_threshold`` of the desired one (Gymnasium-Robotics' Fetch
    rule), beside that ``distance``.

    ``env``: the real env (its Dict observation space has ``achieved_goal`` and ``desired_goal``); the flat
    vector is that Dict flattened in its key order, as :func:`~worldsim.world_model.data.flat_state_space`.
    """

    def __init__(self, env: gym.Env):
        space, task = env.observation_space, env.unwrapped
        if not isinstance(space, gym.spaces.Dict) or not {"achieved_goal", "desired_goal"} <= set(space.spaces):
            raise ValueError(
                f"GoalReachedReward needs Dict observations with achieved_goal and desired_goal, got {space}"
            )
        if not hasattr(task, "compute_reward") or not hasattr(task, "distance_threshold"):
            raise ValueError(f"{type(task).__name__} has no compute_reward and distance_threshold (a goal env's rules)")
        self.space = space
        self.threshold = float(task.distance_threshold)
        self._compute_reward = task.compute_reward

    def _goals(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = gym.spaces.unflatten(self.space, np.asarray(obs, dtype=np.float64))
        return parts["achieved_goal"], parts["desired_goal"]

    def __call__(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float:
        achieved, desired = self._goals(next_obs)
        return float(self._compute_reward(achieved, desired, {}))

    def info(self, next_obs: np.ndarray) -> dict:
        achieved, desired = self._goals(next_obs)
        distance = float(np.linalg.norm(achieved - desired))
        return {"distance": distance, "is_success": distance < self.threshold}
