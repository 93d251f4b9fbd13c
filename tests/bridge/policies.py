"""Test-only models for the bridge: a Push-T expert behind the Policy API, deterministic stateful dummies,
a tick-counting environment, and a numpy world-model session."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

from worldsim.envs.experts import PushTExpert


class PushTExpertPolicy:
    """The scripted Push-T expert as a Policy: closed loop, one action per observation, repeated into a chunk.

    The expert acts from ``info["state"]``, which for ``worldsim/PushT-v0``'s state observations is the
    observation itself, so the policy hands it the observation it was given."""

    observation_space = gym.spaces.Box(-1.05, 1.05, (6,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    obs_horizon = 2
    horizon = 8
    n_action_steps = 1

    def __init__(self, seed: int = 0) -> None:
        self._expert = PushTExpert(seed=seed)

    def reset(self) -> None:
        self._expert.reset()

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        return self._expert(obs, {"state": np.asarray(obs)})

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        return np.repeat(self.select_action(obs_history[-1])[None], self.horizon, axis=0)


class CountingPolicy:
    """Deterministic and stateful: each chunk depends on every observation since the last reset."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    obs_horizon = 2
    horizon = 4
    n_action_steps = 2

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.total = 0.0

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        return self.predict_chunk(np.stack([obs] * self.obs_horizon))[0]

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.total += float(obs_history.sum())
        steps = np.arange(self.horizon, dtype=np.float32)[:, None]
        return (np.array([self.calls, self.total], np.float32) + steps).astype(np.float32)


class TickPolicy:
    """Plans ``chunk[j] = t + j`` from an observation ``t`` (a tick count), optionally taking ``delay_s``:
    an action applied at tick ``k`` equals ``k`` exactly when the loop merged its chunk at the right offset."""

    observation_space = gym.spaces.Box(0.0, 1e6, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1e6, (1,), np.float32)
    obs_horizon = 1
    horizon = 16
    n_action_steps = 1

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def reset(self) -> None:
        """Stateless."""

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        return self.predict_chunk(obs[None])[0]

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        return (obs_history[-1, 0] + np.arange(self.horizon, dtype=np.float32))[:, None]


class RecordingPolicy(TickPolicy):
    """A TickPolicy that sees three observations and appends to ``events`` each history it is asked about, and
    ``None`` for each ``reset`` (the server handles a connection's requests in order, so the events are too)."""

    obs_horizon = 3

    def __init__(self, events: list[np.ndarray | None]) -> None:
        super().__init__()
        self.events = events

    def reset(self) -> None:
        self.events.append(None)

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        self.events.append(np.array(obs_history))
        return super().predict_chunk(obs_history)


class PrefixTickPolicy(TickPolicy):
    """Plans ``chunk[j] = 100 t + j`` from observation ``t`` (so an action names its chunk and offset), keeps
    a frozen prefix it is sent as its chunk's first actions, and records every ``(executed_steps, prefix)``.
    ``predict_chunks`` is the batched form the ``DelaySimulator`` calls."""

    horizon = 8
    n_action_steps = 3

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[int | None, np.ndarray | None]] = []

    def predict_chunk(self, obs_history, *, executed_steps=None, prefix=None) -> np.ndarray:
        self.requests.append((executed_steps, None if prefix is None else np.array(prefix)))
        chunk = (100 * obs_history[-1, 0] + np.arange(self.horizon, dtype=np.float32))[:, None]
        if prefix is not None:
            chunk[: len(prefix)] = prefix
        return chunk

    def predict_chunks(self, obs_histories, *, executed_steps, prefix=None) -> np.ndarray:
        return np.stack(
            [
                self.predict_chunk(history, executed_steps=executed_steps, prefix=None if prefix is None else prefix[i])
                for i, history in enumerate(obs_histories)
            ]
        )


def slow_tick_policy() -> TickPolicy:
    return TickPolicy(delay_s=0.015)


class TickEnv:
    """Observation = number of steps taken; records every action it receives."""

    observation_space = TickPolicy.observation_space
    action_space = TickPolicy.action_space

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self.actions: list[np.ndarray] = []
        self.steps = 0

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict]:
        self.steps = 0
        self.actions = []
        return np.zeros(1, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.actions.append(np.array(action))
        self.steps += 1
        return np.array([self.steps], np.float32), 0.0, False, self.steps >= self.max_steps, {}


class IntegratorSession:
    """A world-model stand-in with real state: ``next_obs = decay * obs + action`` from the last context frame;
    the context actions set an action bias that every step adds."""

    observation_space = gym.spaces.Box(-100.0, 100.0, (4,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    decay = np.float32(0.5)

    def __init__(self) -> None:
        self.obs: np.ndarray | None = None
        self.bias = np.zeros(4, np.float32)
        self.steps = 0

    def reset(self, context_obs: np.ndarray, context_actions: np.ndarray) -> None:
        if len(context_actions) != len(context_obs) - 1:
            raise ValueError("context needs one action between each two frames")
        self.obs = context_obs[-1].copy()
        self.bias = context_actions.mean(axis=0) if len(context_actions) else np.zeros(4, np.float32)
        self.steps = 0

    def step(self, action: np.ndarray) -> np.ndarray:
        self.obs = (self.decay * self.obs + action + self.bias).astype(np.float32)
        self.steps += 1
        return self.obs
