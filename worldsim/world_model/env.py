"""A trained world model as a Gymnasium environment: policies, wrappers and vector envs run inside the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.core.episodes import Episode
from worldsim.envs.tasks import ensure_registered
from worldsim.world_model.data import flat_state_env
from worldsim.world_model.model import WorldModel
from worldsim.world_model.session import SessionConfig, StreamingSession

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
TerminationFn = Callable[[np.ndarray], bool]


def load_task_env(env_id: str, env_kwargs: dict) -> gym.Env:
    ensure_registered(env_id)
    return gym.make(env_id, **env_kwargs)


class WorldModelEnv(gym.Env):
    """Steps a :class:`~worldsim.world_model.model.WorldModel` instead of a simulator (a neural game engine).

    ``reset`` takes real context, from a real environment or from recorded episodes, and starts a
    :class:`~worldsim.world_model.session.StreamingSession` on it; every ``step(action)`` generates the
    next observation with the model. Memory is constant however long an episode lasts.

    ## Action space
    The model's: the action space of the environment it was trained on (Box or Discrete).

    ## Observation space
    The model's: a float32 Box for state models (predictions are clipped into it), a
    ``Box(0, 255, (S, S, 3), uint8)`` for pixel models.

    ## Rewards and info
    From the user: ``reward_fn(obs, action, next_obs) -> float`` on the generated observations (e.g.
    :class:`~worldsim.world_model.rewards.PushTCoverageReward` for Push-T states). Without one the
    reward is 0. The model itself has no learned reward head. When the reward function also has an
    ``info(next_obs) -> dict`` method, every step's ``info`` carries what it returns (Push-T: ``coverage``
    and ``is_success``, as the simulator's), so a task's success rule judges episodes inside the model.

    ## Termination and truncation
    ``termination_fn(next_obs) -> bool`` decides termination (never, without one). The episode is
    truncated after ``max_episode_steps`` steps when given.

    ## Starting state
    ``context_env`` (an id or an instance): the real environment is reset with a seed drawn from this
    environment's ``np_random`` and its first observation is the context; ``reset(options={"context_seed":
    s})`` resets it with ``s`` instead, so the model starts where the simulator does with ``reset(seed=s)``.
    ``reset(options={"context": obs[F, ...], "context_actions": actions[F - 1, ...]})`` starts from given
    real observations (a state of your own) whatever the configured source. With ``match_seeds=True``,
    ``reset(seed=s)`` itself resets the real environment with ``s``: an evaluation that seeds episodes
    (``evaluate_policy``) then starts the model and the simulator from the same states. ``context_episodes``: an
    episode and a start step are drawn from ``np_random``; the context is ``context_frames``
    observations and the actions between them. Without either, the environment the checkpoint was
    trained on (recorded in its JSON) is used. The session's noise generator is seeded from
    ``np_random`` too, so ``reset(seed=...)`` makes the whole episode deterministic.

    ## Arguments
    ``WorldModelEnv(model=..., context_env=None, context_episodes=None, context_frames=1, session=None,
    reward_fn=None, termination_fn=None, max_episode_steps=None, render_mode=None, match_seeds=False)``. ``model`` is a
    ``WorldModel`` or a checkpoint name or path (a string keeps the environment cheap to pickle into
    vector-env workers). ``session`` is a :class:`~worldsim.world_model.session.SessionConfig`
    (autoregressive or rolling sampling, cache sizes, context noise). ``render()``
    (``render_mode="rgb_array"``) returns the latest generated frame of a pixel model.

    ## Version history
    - v0: initial version.
    - v0 (worldsim 0.1): ``context_seed`` and ``context`` reset options, ``match_seeds``; ``info`` from the
      reward function.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        *,
        model: WorldModel | str,
        context_env: str | gym.Env | None = None,
        context_episodes: list[Episode] | None = None,
        context_frames: int = 1,
        session: SessionConfig | None = None,
        reward_fn: RewardFn | None = None,
        termination_fn: TerminationFn | None = None,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        match_seeds: bool = False,
    ):
        self.model = WorldModel.from_pretrained(model) if isinstance(model, str) else model
        if context_env is not None and context_episodes is not None:
            raise ValueError("give context_env or context_episodes, not both")
        if context_frames < 1:
            raise ValueError(f"context_frames must be >= 1, got {context_frames}")
        if context_env is not None and context_frames != 1:
            raise ValueError("context from a real environment is its first observation: context_frames must be 1")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.observation_space = self.model.observation_space
        self.action_space = self.model.action_space
        self._pixels = self.observation_space.dtype == np.uint8
        if render_mode is not None and not self._pixels:
            raise ValueError("render() needs a pixel world model; this one predicts states")
        if context_episodes is not None:
            usable = [e for e in context_episodes if len(e) >= context_frames]
            if not usable:
                raise ValueError(f"no context episode has {context_frames} observations")
            for episode in usable:
                if np.asarray(episode.observations).shape[1:] != self.observation_space.shape:
                    raise ValueError(
                        f"context episodes hold observations of shape {np.asarray(episode.observations).shape[1:]}, "
                        f"the model's are {self.observation_space.shape}"
                    )
            self._episodes = usable
            self._context_env = None
        else:
            if context_env is None:
                meta = self.model.metadata
                if "env_id" not in meta:
                    raise ValueError("this model records no training environment: pass context_env or context_episodes")
                context_env = load_task_env(meta["env_id"], meta.get("env_kwargs", {}))
            elif isinstance(context_env, str):
                context_env = load_task_env(context_env, {})
            context_env = flat_state_env(context_env)  # a Dict of float Boxes as the model's flat vector
            if context_env.observation_space.shape != self.observation_space.shape:
                raise ValueError(
                    f"context_env observations have shape {context_env.observation_space.shape}, "
                    f"the model's are {self.observation_space.shape}"
                )
            self._context_env = context_env
            self._episodes = None
        self.context_frames = context_frames
        self.reward_fn = reward_fn
        self.termination_fn = termination_fn
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        if match_seeds and self._context_env is None:
            raise ValueError("match_seeds resets a real environment: pass context_env (or none, for the model's own)")
        self.match_seeds = match_seeds
        self.session = StreamingSession(self.model, session)
        self._obs: np.ndarray | None = None
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        options = dict(options or {})
        unknown = sorted(set(options) - {"context_seed", "context", "context_actions"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; use context_seed, or context and context_actions")
        if "context" in options:
            context = np.asarray(options["context"])
            if context.shape[1:] != self.observation_space.shape:
                raise ValueError(
                    f"reset context must be observations [F, *{self.observation_space.shape}], got {context.shape}"
                )
            actions = options.get("context_actions")
        elif self._context_env is not None:
            drawn = seed if self.match_seeds and seed is not None else int(rng.integers(2**31 - 1))
            context_seed = options.get("context_seed", drawn)
            context, _ = self._context_env.reset(seed=int(context_seed))
            context, actions = np.asarray(context)[None], None
        elif "context_seed" in options:
            raise ValueError("context_seed resets a real environment: this one draws context from recorded episodes")
        else:
            episode = self._episodes[int(rng.integers(len(self._episodes)))]
            start = int(rng.integers(len(episode) - self.context_frames + 2))
            context = np.asarray(episode.observations)[start : start + self.context_frames]
            actions = episode.actions[start : start + self.context_frames - 1]
        self.session.reset(context, actions, seed=int(rng.integers(2**63 - 1)))
        self._obs = self._observation(context[-1])
        self._steps = 0
        return self._obs, {"context_frames": len(context)}

    def step(self, action):
        if self._obs is None:
            raise ValueError("call reset() before step()")
        next_obs = self._observation(self.session.step(action))
        reward = 0.0 if self.reward_fn is None else float(self.reward_fn(self._obs, np.asarray(action), next_obs))
        terminated = False if self.termination_fn is None else bool(self.termination_fn(next_obs))
        self._steps += 1
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        self._obs = next_obs
        info = {"model_steps": self.session.num_steps}
        if hasattr(self.reward_fn, "info"):
            info |= self.reward_fn.info(next_obs)
        return next_obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._obs is None:
            return None
        return self._obs.copy()

    def close(self) -> None:
        if self._context_env is not None:
            self._context_env.close()

    def _observation(self, obs: np.ndarray) -> np.ndarray:
        if self._pixels:
            return np.array(obs, dtype=np.uint8)  # a copy: context frames are views into recorded episodes
        space = self.observation_space
        return np.clip(obs, space.low, space.high).astype(space.dtype)


def make_neural_pusht(**kwargs) -> WorldModelEnv:
    """``worldsim/NeuralPushT-v0``: the shipped PushT state world model as an environment.

    Defaults: model ``wm-pusht-state``, context from a real ``worldsim/PushT-v0`` reset, and the
    simulator's coverage reward and success termination computed on the predicted states. Any keyword of
    :class:`WorldModelEnv` overrides them.
    """
    from worldsim.world_model.rewards import PushTCoverageReward

    coverage = PushTCoverageReward()
    kwargs.setdefault("model", "wm-pusht-state")
    kwargs.setdefault("reward_fn", coverage)
    kwargs.setdefault("termination_fn", coverage.terminated)
    return WorldModelEnv(**kwargs)
