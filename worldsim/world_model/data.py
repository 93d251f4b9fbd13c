"""Training data for world models from any Gymnasium environment: rollouts of scripted or random actors.

A world model must see what happens *off* the expert's path too (a policy evaluated inside the model
will leave it), so rollouts mix actors: a smooth random walk over a Box action space (uniform draws for
Discrete), and any expert with Gaussian action noise. Episodes use the Minari-compatible
:class:`~worldsim.envs.datasets.Episode` of the datasets module, so recorded Minari demonstrations
(``load_demonstrations``) and fresh rollouts feed the same windowing (``sequence_windows``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from worldsim.core.episodes import Episode, flatten_dict_observations

if TYPE_CHECKING:  # for annotations only: collecting world-model data needs none of the MuJoCo tasks
    from worldsim.envs.experts import Expert


class Actor(Protocol):
    """Chooses actions during data collection: ``reset()`` per episode, then ``actor(obs, info) -> action`` with
    the observation and info dict the env's last ``reset`` or ``step`` returned (the
    :class:`~worldsim.envs.experts.Expert` protocol, so any expert is an actor)."""

    def reset(self) -> None: ...

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray | int: ...


class RandomWalkActor:
    """Smooth random actions: a Box action drifts by Gaussian steps of ``step_scale`` (a fraction of the
    box's half-range) and reflects off its bounds; a Discrete action is drawn uniformly.

    Position-controlled tasks such as Push-T need the walk: independent uniform targets make the
    effector jump across the table and almost never push anything.
    """

    def __init__(self, action_space: gym.spaces.Space, *, step_scale: float = 0.1, seed: int | None = None):
        if not isinstance(action_space, gym.spaces.Box | gym.spaces.Discrete):
            raise ValueError(f"RandomWalkActor supports Box and Discrete action spaces, got {action_space}")
        if isinstance(action_space, gym.spaces.Box) and not action_space.is_bounded():
            raise ValueError("RandomWalkActor needs a bounded Box action space")
        if step_scale <= 0:
            raise ValueError(f"step_scale must be positive, got {step_scale}")
        self.action_space = action_space
        self.step_scale = step_scale
        self._rng = np.random.default_rng(seed)
        self._current: np.ndarray | None = None

    def reset(self) -> None:
        self._current = None

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray | int:
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return int(space.start + self._rng.integers(space.n))
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        if self._current is None:
            self._current = self._rng.uniform(low, high)
        proposal = self._current + self._rng.normal(0.0, self.step_scale * (high - low) / 2)
        # Reflect at the bounds so the walk does not stick to the walls of the box.
        proposal = np.where(proposal > high, 2 * high - proposal, proposal)
        proposal = np.where(proposal < low, 2 * low - proposal, proposal)
        self._current = np.clip(proposal, low, high)
        return self._current.astype(space.dtype)


class NoisyExpert:
    """An :class:`~worldsim.envs.experts.Expert` (``expert(obs, info) -> action``, e.g. worldsim's scripted
    experts) with Gaussian noise of ``noise_std`` (a fraction of the Box half-range) added to every action,
    clipped to the action space; for a Discrete action space, ``noise_std`` is the share of steps that take a
    uniformly random action instead. The expert sees the env's real observations, so it corrects the noise."""

    def __init__(
        self, expert: Expert, action_space: gym.spaces.Box | gym.spaces.Discrete, *, noise_std: float,
        seed: int | None = None,
    ):  # fmt: skip
        if not isinstance(action_space, gym.spaces.Box | gym.spaces.Discrete):
            raise ValueError(f"NoisyExpert needs a Box or Discrete action space, got {action_space}")
        if noise_std < 0 or (isinstance(action_space, gym.spaces.Discrete) and noise_std > 1):
            raise ValueError(f"noise_std must be >= 0 (a probability for a Discrete space), got {noise_std}")
        self.expert = expert
        self.action_space = action_space
        self.noise_std = noise_std
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        if hasattr(self.expert, "reset"):
            self.expert.reset()

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray | int:
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            action = self.expert(obs, info)
            explore = self._rng.random() < self.noise_std
            return int(space.start + self._rng.integers(space.n)) if explore else int(action)
        action = np.asarray(self.expert(obs, info), dtype=np.float64)
        half_range = (self.action_space.high - self.action_space.low) / 2
        action = action + self._rng.normal(0.0, self.noise_std, action.shape) * half_range
        return np.clip(action, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)


def collect_episodes(
    env: gym.Env,
    actors: list[Actor],
    num_episodes: int,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    ignore_termination: bool = False,
    progress: bool = True,
) -> list[Episode]:
    """Roll ``num_episodes`` episodes; episode ``i`` is reset with seed ``seed + i`` and driven by
    ``actors[i % len(actors)]``.

    An episode ends on termination or truncation, or after ``max_steps`` steps. ``ignore_termination``
    keeps stepping through terminations (a world model learns what happens after a fall too, and long
    open-loop test sequences need it); an env that raises when stepped past its end stops there.
    """
    if not actors:
        raise ValueError("collect_episodes needs at least one actor")
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if ignore_termination and max_steps is None:
        raise ValueError("ignore_termination needs max_steps, or an episode might never end")
    episodes = []
    for index in tqdm(range(num_episodes), desc="rollouts", disable=not progress):
        actor = actors[index % len(actors)]
        actor.reset()
        obs, info = env.reset(seed=seed + index)
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        success, ended = False, False
        while True:
            action = actor(obs, info)
            try:
                obs, reward, terminated, truncated, info = env.step(action)
            except Exception:
                if not ended:
                    raise
                break  # an env that refuses to step past its end: the episode stops where it ended
            ended = ended or terminated
            success = success or bool(info.get("is_success", False))
            for store, value in zip(
                (observations, actions, rewards, terminations, truncations),
                (obs, action, reward, terminated, truncated),
                strict=True,
            ):
                store.append(value)
            done = (terminated and not ignore_termination) or truncated
            if done or (max_steps is not None and len(actions) >= max_steps):
                break
        episodes.append(
            Episode(
                observations=_stack(observations),
                actions=np.asarray(actions, dtype=np.float32 if isinstance(env.action_space, gym.spaces.Box) else None),
                rewards=np.asarray(rewards, dtype=np.float32),
                terminations=np.asarray(terminations, dtype=bool),
                truncations=np.asarray(truncations, dtype=bool),
                success=success,
            )
        )
    return episodes


def _stack(items: list):
    if isinstance(items[0], dict):
        return {key: _stack([item[key] for item in items]) for key in items[0]}
    return np.stack([np.asarray(item) for item in items])


def flat_state_space(space: gym.spaces.Space) -> gym.spaces.Box:
    """The Box a state world model sees for ``space``: a Box as it is; a Dict of flat float Boxes (a
    goal-conditioned task's ``observation`` / ``achieved_goal`` / ``desired_goal``) as one vector, its keys in
    the space's order (Gymnasium's ``flatten`` order, the policy's too). A one-line error for anything else."""
    if isinstance(space, gym.spaces.Box):
        return space
    if isinstance(space, gym.spaces.Dict) and all(
        isinstance(part, gym.spaces.Box) and part.dtype != np.uint8 for part in space.spaces.values()
    ):
        flat = gym.spaces.flatten_space(space)
        return gym.spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32)
    raise ValueError(f"world models take Box observations or a Dict of float Boxes, got {space}")


def dict_state_env(env: gym.Env, space: gym.spaces.Space) -> gym.Env:
    """The inverse of :func:`flat_state_env`: an env of flat state vectors (a world model of a goal-conditioned
    task) seen through ``space``, the Dict of float Boxes the vectors were flattened from, so a policy trained
    on the Dict runs inside the model. A Box ``space`` leaves ``env`` as it is."""
    if isinstance(space, gym.spaces.Box):
        return env
    flat = flat_state_space(space)  # the one-line refusal of a space that is no flat vector
    if env.observation_space.shape != flat.shape:
        raise ValueError(
            f"the env's observations have shape {env.observation_space.shape}, {space} flattens to {flat.shape}"
        )

    def unflatten(vector: np.ndarray) -> dict:
        return gym.spaces.unflatten(space, np.asarray(vector, dtype=np.float64))

    return gym.wrappers.TransformObservation(env, unflatten, space)


def flatten_episodes(episodes: list[Episode], space: gym.spaces.Space) -> list[Episode]:
    """``episodes`` recorded in ``space`` with their observations as :func:`flat_state_space` vectors."""
    if isinstance(space, gym.spaces.Box):
        return episodes
    flat_state_space(space)  # the one-line refusal of a space it cannot flatten
    keys = tuple(space.spaces)
    return [dataclasses.replace(e, observations=flatten_dict_observations(e.observations, keys)) for e in episodes]


def flat_state_env(env: gym.Env) -> gym.Env:
    """``env`` as a state world model sees it: its observations as :func:`flat_state_space` vectors."""
    space = env.observation_space
    if isinstance(space, gym.spaces.Box):
        return env
    keys = tuple(space.spaces)

    def flatten(obs: dict) -> np.ndarray:
        return flatten_dict_observations({k: np.asarray(obs[k])[None] for k in keys}, keys)[0]

    return gym.wrappers.TransformObservation(env, flatten, flat_state_space(space))
