"""Task facts, in one place: which env, its demonstrations and expert, how success is judged, what ships.

A :class:`TaskSpec` is everything worldsim knows about a task that is not a model setting. worldsim's
own tasks are YAML files in ``worldsim/conf/task/`` (package data, also the ``task`` group of the
``worldsim`` command); :func:`load_task` reads one into a ``TaskSpec`` without Hydra. A user's env
needs no file: ``TaskSpec(env_id="MyEnv-v0")`` holds neutral defaults, and every setting a model needs
(shapes, bounds, normalization, discrete dimensions) is derived from the env's spaces and the data.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.core.callables import load_callable
from worldsim.envs.wrappers import Proprioception

TASK_CONFIGS = "conf/task"
"""Where worldsim's own task files live inside the package."""


@dataclass
class TaskSpec:
    """What a task is: the env, its demonstrations, how an episode is judged, and what worldsim ships for it."""

    env_id: str = ""
    """The Gymnasium id (``gymnasium.make``); required."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``gymnasium.make``, e.g. ``{obs_type: pixels, image_size: 64}``."""
    dataset_id: str | None = None
    """The Minari dataset of demonstrations; None derives ``<env name>/expert-v0`` (:meth:`demo_dataset_id`)."""
    expert: str | None = None
    """``package.module:factory`` of the scripted expert (see :class:`worldsim.envs.experts.Expert`), used to
    record demonstrations when the dataset is missing; None: the dataset must exist."""
    demo_episodes: int = 200
    """Expert episodes recorded when the dataset is missing."""
    demo_seed: int = 0
    """Episode ``i`` of the demonstrations resets with seed ``demo_seed + i``."""
    demo_action_noise: float = 0.0
    """Record the demonstrations with the expert's actions executed with this much Gaussian noise (a fraction
    of each action dimension's half range; DART), labelled with its clean actions; 0: none."""
    success: str | None = "is_success"
    """How an episode's success is judged: an ``info`` key (true at any step means success) or
    ``package.module:callable`` called as ``fn(obs, info) -> bool`` after every step. When the key never
    appears in an episode's infos, or with None, success is undefined and evaluation reports return."""
    score_key: str | None = None
    """A per-step ``info`` value whose episode maximum is reported (Push-T's ``coverage``)."""
    goal_error: str | None = None
    """The final goal error: an ``info`` key or ``package.module:callable`` ``fn(obs, info) -> float``,
    read after the last step (e.g. the object's distance to its goal)."""
    discrete_dims: list[int] | None = None
    """Action dimensions that are discrete ±1 commands (a gripper); None derives them from the demonstrations
    (the dimensions whose recorded values are all exactly -1 or +1)."""
    relative_to_obs: list[int] | None = None
    """Per action dimension, the observation dimension its policy predicts it relative to (-1: absolute);
    ``[]``: all absolute; None derives it from the demonstrations (see ``policies.recipe``)."""
    n_action_steps: int | None = None
    """Actions a policy of this task executes per chunk; None keeps the policy's setting."""
    proprio_dims: list[int] | None = None
    """Camera tasks (Dict observations ``{pixels, state}``): the state dimensions that are the robot's own
    (proprioception), the only ones a visuomotor policy sees beside its frames (``make_env`` wraps the env
    in :class:`~worldsim.envs.wrappers.Proprioception`); None: the state as the env gives it."""
    rti: dict[str, Any] = field(default_factory=dict)
    """RTI options recorded into a trained policy (its ``rti`` strategy's defaults); empty derives them
    (k by RTI-DP's offline rule)."""
    policy_checkpoint: str | None = None
    """The shipped policy of this task (a name under ``worldsim/checkpoints`` or a directory)."""
    world_model_checkpoint: str | None = None
    """The shipped world model of this task."""
    play_keys: dict[str, int] = field(default_factory=dict)
    """``worldsim play``: Discrete actions held down by keys (pygame key names, e.g. ``{left: 3, space: 1}``);
    the action while no listed key is held is ``0``. Empty: digit keys choose the action."""
    entry_point: str | None = None
    """worldsim's own tasks: the env's entry point, registered under ``env_id`` when worldsim is imported."""
    max_episode_steps: int | None = None
    """worldsim's own tasks: the registered time limit."""

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str):
            raise ValueError(f"task.env_id must be a Gymnasium id string, got {self.env_id!r}")
        for name in ("demo_episodes", "demo_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"task.{name} must be a non-negative integer, got {value!r}")
        noise = self.demo_action_noise
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise < float("inf"):
            raise ValueError(f"task.demo_action_noise must be a number >= 0, got {noise!r}")
        if self.n_action_steps is not None and (isinstance(self.n_action_steps, bool) or self.n_action_steps < 1):
            raise ValueError(f"task.n_action_steps must be >= 1 or null, got {self.n_action_steps!r}")
        for name in ("discrete_dims", "relative_to_obs", "proprio_dims"):
            value = getattr(self, name)
            if value is not None:
                if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                    raise ValueError(f"task.{name} must be a list of integers or null, got {value!r}")
                setattr(self, name, [int(v) for v in value])
        self.env_kwargs = dict(self.env_kwargs)
        self.rti = dict(self.rti)

    def require_env(self) -> str:
        """The env id, or a one-line error saying how to give it."""
        if not self.env_id:
            raise ValueError("task.env_id is not set: name a Gymnasium id (task.env_id=MyEnv-v0)")
        return self.env_id

    def demo_dataset_id(self) -> str:
        """``dataset_id``, or one derived from the env id (``MountainCarContinuous-v0`` gives
        ``mountaincarcontinuous/expert-v0``; with ``demo_action_noise=0.1``, ``.../expert-noise0p1-v0``)."""
        if self.dataset_id:
            return self.dataset_id
        namespace, _, name = self.require_env().rpartition("/")
        stem = re.sub(r"-v\d+$", "", name).lower()
        stem = re.sub(r"[^a-z0-9_]+", "_", stem).strip("_") or "env"
        # Minari ids allow no dot in a name: 0.1 is written 0p1.
        noise = f"-noise{self.demo_action_noise:g}".replace(".", "p") if self.demo_action_noise else ""
        return f"{(namespace.lower() + '/') if namespace else ''}{stem}/expert{noise}-v0"

    def make_env(self, **overrides) -> gym.Env:
        """``gymnasium.make(env_id, **env_kwargs, **overrides)``, importing the packages that register public
        envs (gym-pusht, Gymnasium-Robotics) when the id needs them."""
        env_id = self.require_env()
        ensure_registered(env_id)
        env = gym.make(env_id, **{**self.env_kwargs, **overrides})
        if self.proprio_dims:
            env = Proprioception(env, self.proprio_dims)
        return env

    def expert_factory(self):
        """The task's expert factory (``factory(seed=...) -> Expert``), or None when the task names none."""
        return load_callable(self.expert, what="task.expert") if self.expert else None

    def make_expert(self, seed: int | None = None):
        """A fresh scripted expert seeded with ``seed``, or a one-line error when the task names none."""
        if self.expert is None:
            raise ValueError(
                f"task {self.env_id!r} names no scripted expert (task.expert=package.module:Factory); record its "
                "demonstrations yourself with collect_dataset(..., expert=...)"
            )
        return self.expert_factory()(seed=seed)

    def judge(self) -> EpisodeJudge:
        """A fresh :class:`EpisodeJudge` of this task's success, score and goal-error rules."""
        return EpisodeJudge(self.success, self.score_key, self.goal_error)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class EpisodeJudge:
    """Reads one episode's step infos and says whether it succeeded, its best score and its final goal error.

    ``success`` stays None (undefined) when the task has no success rule or its info key never appeared:
    an env without a success signal is reported by its return, never as "0% success".
    """

    def __init__(self, success: str | None, score_key: str | None = None, goal_error: str | None = None):
        self._success_key = self._success_fn = None
        if success is not None:
            if ":" in success:
                self._success_fn = load_callable(success, what="task.success")
            else:
                self._success_key = success
        self._score_key = score_key
        self._goal_key = self._goal_fn = None
        if goal_error is not None:
            if ":" in goal_error:
                self._goal_fn = load_callable(goal_error, what="task.goal_error")
            else:
                self._goal_key = goal_error
        self.reset()

    def reset(self) -> None:
        self.success: bool | None = None
        self.score: float | None = None
        self.goal_error: float | None = None
        self.total_reward = 0.0
        self.steps = 0

    def observe(self, obs, reward: float, info: dict) -> None:
        """Take one step's outcome into account."""
        self.total_reward += float(reward)
        self.steps += 1
        if self._success_fn is not None:
            self.success = bool(self.success) or bool(self._success_fn(obs, info))
        elif self._success_key is not None and self._success_key in info:
            self.success = bool(self.success) or bool(np.asarray(info[self._success_key]).any())
        if self._score_key is not None:
            if self._score_key not in info:
                raise ValueError(f"task.score_key {self._score_key!r} is not in the env's info (keys: {sorted(info)})")
            value = float(info[self._score_key])
            self.score = value if self.score is None else max(self.score, value)
        if self._goal_fn is not None:
            self.goal_error = float(self._goal_fn(obs, info))
        elif self._goal_key is not None:
            if self._goal_key not in info:
                raise ValueError(f"task.goal_error {self._goal_key!r} is not in the env's info (keys: {sorted(info)})")
            self.goal_error = float(info[self._goal_key])


# Public envs whose ids are registered only once their package is imported.
_REGISTERING_PACKAGES = {"gym_pusht/": "gym_pusht"}
_ROBOTICS_PREFIXES = ("Fetch", "HandManipulate", "HandReach", "AdroitHand", "PointMaze", "AntMaze", "FrankaKitchen")


def ensure_registered(env_id: str) -> None:
    """Import and register what ``env_id`` needs before ``gymnasium.make`` (gym-pusht, Gymnasium-Robotics)."""
    robotics = env_id.startswith(_ROBOTICS_PREFIXES)
    if env_id not in gym.registry:
        for prefix, package in _REGISTERING_PACKAGES.items():
            if env_id.startswith(prefix):
                _import_or_explain(package, env_id)
        if robotics:
            gym.register_envs(_import_or_explain("gymnasium_robotics", env_id))
    if robotics:  # registered by anyone, built here: the accessors must work under the installed MuJoCo
        from worldsim.envs.public_experts import fix_gymnasium_robotics_joint_access

        fix_gymnasium_robotics_joint_access()


def _import_or_explain(package: str, env_id: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ValueError(f"{env_id} needs the package {package!r}: pip install -e '.[suite]'") from None


def task_names() -> list[str]:
    """The task files worldsim ships (options of the ``task`` config group)."""
    return sorted(p.stem for p in _task_dir().glob("*.yaml"))


def load_task(name: str) -> TaskSpec:
    """worldsim's task ``name`` (a file of ``worldsim/conf/task/``) as a :class:`TaskSpec`."""
    import yaml

    path = _task_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no task {name!r}; worldsim ships {', '.join(task_names())}")
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)  # the file's Hydra schema line; the dataclass is the schema here
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(TaskSpec)})
    if unknown:
        raise ValueError(f"{path}: unknown task field(s) {', '.join(unknown)}")
    return TaskSpec(**data)


def task_for_env(env_id: str) -> TaskSpec:
    """The shipped task whose env is ``env_id`` (one without ``env_kwargs`` first), else the neutral
    ``TaskSpec(env_id=env_id)``."""
    matches = [task for task in map(load_task, task_names()) if task.env_id == env_id]
    matches.sort(key=lambda task: bool(task.env_kwargs))
    return matches[0] if matches else TaskSpec(env_id=env_id)


def _task_dir() -> Path:
    return Path(str(resources.files("worldsim"))) / TASK_CONFIGS
