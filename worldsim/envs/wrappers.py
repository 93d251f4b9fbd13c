"""Gymnasium 1.x wrappers: observation history, action chunks, per-action delay, execution noise (DART),
proprioception cut from a camera env's state."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array


def _check_positive(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class ObservationHistory(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Observe the last ``n`` observations, oldest first.

    A Box observation of shape ``S`` becomes a Box of shape ``(n, *S)``; a Dict observation becomes a Dict
    of such stacks, one per key (``gymnasium.vector.utils.batch_space`` semantics). At reset the history is
    filled with ``n`` copies of the first observation, as Diffusion Policy pads the start of an episode.

    Args:
        env: the environment to wrap.
        n: number of observations kept (``n >= 1``).
    """

    def __init__(self, env: gym.Env, n: int) -> None:
        _check_positive("n", n)
        gym.utils.RecordConstructorArgs.__init__(self, n=n)
        gym.ObservationWrapper.__init__(self, env)
        self.n = int(n)
        self.observation_space = batch_space(env.observation_space, self.n)
        self._history: deque = deque(maxlen=self.n)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._history.clear()
        self._history.extend([obs] * self.n)
        return self._stacked(), info

    def observation(self, observation):
        self._history.append(observation)
        return self._stacked()

    def _stacked(self):
        out = create_empty_array(self.env.observation_space, self.n)
        return concatenate(self.env.observation_space, list(self._history), out)


class ActionChunk(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Execute a chunk of ``n`` actions per step, as a policy that predicts action sequences does.

    The action space is the wrapped Box action space repeated ``n`` times: ``Box`` of shape
    ``(n, *action_shape)``. ``step(chunk)`` executes ``chunk[0], chunk[1], ...`` in order, stopping early
    when the episode terminates or is truncated, and returns the last observation, the **sum** of the
    rewards received, the last termination and truncation flags, and the last step's info with two extra
    keys: ``"executed_steps"`` (how many actions ran) and ``"step_rewards"`` (their rewards, a float array of
    that length).

    Args:
        env: the environment to wrap (its action space must be a Box).
        n: number of actions in a chunk (``n >= 1``).
    """

    def __init__(self, env: gym.Env, n: int) -> None:
        _check_positive("n", n)
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(f"ActionChunk needs a Box action space, got {env.action_space}")
        gym.utils.RecordConstructorArgs.__init__(self, n=n)
        gym.Wrapper.__init__(self, env)
        self.n = int(n)
        box = env.action_space
        self.action_space = spaces.Box(
            np.broadcast_to(box.low, (self.n, *box.shape)),
            np.broadcast_to(box.high, (self.n, *box.shape)),
            dtype=box.dtype,
        )

    def step(self, action):
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action chunk must have shape {self.action_space.shape}, got {action.shape}")
        rewards: list[float] = []
        for single in action:
            obs, reward, terminated, truncated, info = self.env.step(single)
            rewards.append(float(reward))
            if terminated or truncated:
                break
        info = {**info, "executed_steps": len(rewards), "step_rewards": np.array(rewards)}
        return obs, float(sum(rewards)), terminated, truncated, info


class PerActionDelay(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Simulate a policy that blocks the world for ``ticks`` control periods before **every** action.

    This is the worst case of a synchronous controller, not what a chunked policy on a live robot sees: the
    delay is charged even on the ticks a chunked policy only pops from its queue. For asynchronous chunks
    (the next chunk computed while the previous one keeps running, as the bridge's ``ControlLoop`` does)
    use :class:`~worldsim.bridge.DelaySimulator`. (Named ``InferenceLatency`` until December 2026.)

    While the policy "thinks", the world does not wait: on every ``step(action)`` the environment first
    advances ``ticks`` steps with the previously executed action (the one the robot is still holding), and
    only then applies ``action`` for one step. The observation returned is the one after that last step,
    the reward is the sum over all ``ticks + 1`` steps, and termination or truncation during the delay
    ends the step early (``action`` is then never applied). ``info`` is the last step's info plus
    ``"latency_steps"``: how many delay steps ran.

    After ``reset`` no action has been executed yet, so the first step applies its action at once: a
    real controller starts acting when its first decision arrives, which the simulator models as time
    standing still until then. ``ticks=0`` makes the wrapper transparent.

    Args:
        env: the environment to wrap.
        ticks: control periods of inference delay per step (``ticks >= 0``).
    """

    def __init__(self, env: gym.Env, ticks: int) -> None:
        _check_positive("ticks", ticks, minimum=0)
        gym.utils.RecordConstructorArgs.__init__(self, ticks=ticks)
        gym.Wrapper.__init__(self, env)
        self.ticks = int(ticks)
        self._held_action: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._held_action = None
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        total = 0.0
        delay_steps = 0
        if self._held_action is not None:
            for _ in range(self.ticks):
                obs, reward, terminated, truncated, info = self.env.step(self._held_action)
                total += float(reward)
                delay_steps += 1
                if terminated or truncated:
                    return obs, total, terminated, truncated, {**info, "latency_steps": delay_steps}
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._held_action = np.array(action, copy=True)
        return obs, total + float(reward), terminated, truncated, {**info, "latency_steps": delay_steps}


class ExecutionNoise(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Execute each action with Gaussian noise added: DART's noise injection for recording demonstrations.

    An expert recorded only along its own trajectories shows a policy nothing about recovering from the
    small errors imitation always makes; on an unstable system (a balanced pendulum) those errors grow
    until it falls. DART (Laskey et al., 2017) records the expert while its actions are executed with noise,
    so the demonstrations visit the states around its path, each labelled with what the expert would do
    there. ``step(action)`` applies ``action + N(0, (scale * half_range)^2)`` clipped into the Box action
    space (``half_range``: half its width per dimension) and reports what ran as ``info["executed_action"]``;
    a recorder wrapped around this one keeps the clean ``action`` as the label. The noise is drawn from a
    generator reseeded by each seeded ``reset``, so a recording is reproducible.

    Args:
        env: an environment with a bounded Box action space.
        scale: noise standard deviation as a fraction of each dimension's half range (``> 0``).
    """

    def __init__(self, env: gym.Env, scale: float) -> None:
        space = env.action_space
        if not isinstance(space, spaces.Box) or not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
            raise ValueError(f"ExecutionNoise needs a bounded Box action space, got {space}")
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a number > 0, got {scale!r}")
        gym.utils.RecordConstructorArgs.__init__(self, scale=scale)
        gym.Wrapper.__init__(self, env)
        self.scale = float(scale)
        self._half_range = (space.high.astype(np.float64) - space.low) / 2
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng([seed, 0xDA27])  # its own stream: not the env's or the expert's
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        space = self.action_space
        noise = self._rng.normal(size=space.shape) * self.scale * self._half_range
        executed = np.clip(np.asarray(action, np.float64) + noise, space.low, space.high).astype(space.dtype)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        return obs, reward, terminated, truncated, {**info, "executed_action": executed}


class Proprioception(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """A camera env's Dict observation with its state vector cut to the robot's own dimensions.

    worldsim's ``state_pixels`` observations carry the whole simulator state beside the frame (the pushed
    block's pose too); a visuomotor policy must see the object through its camera only, so this keeps the
    state dimensions ``dims`` (Push-T's pusher position ``(0, 1)``; PickPlace's gripper position and finger
    opening ``(0, 1, 2, 3)``). The task config's ``proprio_dims`` names them; :func:`select_proprioception`
    cuts recorded observations the same way, so a policy trains and runs on the same inputs.

    Spaces: ``Dict(pixels=Box(0, 255, (H, W, 3), uint8), state=Box(len(dims),))`` from the wrapped env's
    ``Dict(pixels=..., state=...)`` (``state_key`` names the state entry). Reward, termination and info are
    the wrapped env's.
    """

    def __init__(self, env: gym.Env, dims: tuple[int, ...] | list[int], state_key: str = "state"):
        gym.utils.RecordConstructorArgs.__init__(self, dims=list(dims), state_key=state_key)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict) or state_key not in space.spaces:
            raise ValueError(f"Proprioception needs a Dict observation space with a {state_key!r} entry, got {space}")
        state = space.spaces[state_key]
        self.dims = np.array([int(d) for d in dims], dtype=np.int64)
        if not len(self.dims) or not (0 <= self.dims).all() or not (self.dims < state.shape[-1]).all():
            raise ValueError(f"proprio_dims {list(dims)} must name dimensions of the {state.shape[-1]}-dim state")
        self.state_key = state_key
        self.observation_space = gym.spaces.Dict(
            {
                **space.spaces,
                state_key: gym.spaces.Box(state.low[self.dims], state.high[self.dims], dtype=state.dtype),
            }
        )

    def observation(self, observation: dict) -> dict:
        return select_proprioception(observation, self.dims, self.state_key)


def select_proprioception(observations: dict, dims, state_key: str = "state") -> dict:
    """Dict observations (one, or a recorded episode's ``[N, ...]``) with the state cut to ``dims``: what
    :class:`Proprioception` gives a policy, applied to recorded data."""
    return {**observations, state_key: np.asarray(observations[state_key])[..., np.asarray(dims, dtype=np.int64)]}
