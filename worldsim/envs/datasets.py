"""Demonstration datasets: record scripted-expert episodes to Minari, load them back as training windows.

Everything here is numpy; nothing imports torch. Datasets are ordinary Minari datasets (Farama's format),
so ``minari.load_dataset`` and the ``minari`` CLI read them too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.storage import get_dataset_path
from tqdm.auto import tqdm

from worldsim.core.episodes import Episode, observations_of
from worldsim.core.normalizer import NormalizationMode, Normalizer
from worldsim.envs.experts import Expert
from worldsim.envs.tasks import ensure_registered, task_for_env, task_names
from worldsim.envs.wrappers import ExecutionNoise


def default_expert(env_id: str, expert=None):
    """``expert`` if given, else the expert factory of the shipped task whose env is ``env_id``; a one-line
    error when there is neither."""
    factory = expert if expert is not None else task_for_env(env_id).expert_factory()
    if factory is None:
        raise ValueError(
            f"no scripted expert for {env_id!r}: pass expert=<factory of your controller>, or use a task that "
            f"names one ({', '.join(task_names())})"
        )
    return factory


def _is_worldsim_env(env_id: str) -> bool:
    return env_id.startswith("worldsim/")


@contextlib.contextmanager
def datasets_root(path: str | os.PathLike | None) -> Iterator[None]:
    """Point Minari at ``path`` for the duration (Minari reads its root only from the environment)."""
    if path is None:
        yield
        return
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(path).expanduser().resolve())
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def collect_dataset(
    env_id: str,
    dataset_id: str,
    num_episodes: int,
    seed: int = 0,
    *,
    seeds: Sequence[int] | None = None,
    obs_type: str = "state",
    image_size: int = 96,
    env_kwargs: dict | None = None,
    data_format: str = "hdf5",
    path: str | os.PathLike | None = None,
    author: str | None = None,
    code_permalink: str | None = None,
    progress: bool = True,
    num_envs: int = 1,
    expert: Callable[..., Expert] | None = None,
    action_noise: float = 0.0,
) -> minari.MinariDataset:
    """Record ``num_episodes`` episodes of a scripted expert into a new Minari dataset.

    Episode ``i`` is reset with seed ``seed + i`` (or ``seeds[i]``) and the expert's own generator is seeded
    with ``seed``, so a dataset is reproducible. Every episode is kept, successful or not (``is_success`` is
    recorded in the step infos when the env reports it). Pixel frames are stored losslessly. Episodes stream
    to disk as they are recorded; each one's reset seed is stored with it (Minari's episode ``seed``).

    With ``num_envs > 1`` the episodes are recorded by that many environment processes at once
    (``gymnasium.vector.AsyncVectorEnv``), each running the expert next to its simulator, and written in
    episode order. Each episode then gets its own expert, seeded with its reset seed, so the dataset is the
    same for any ``num_envs > 1``; its first episode equals the single-process one, later ones differ from it
    (there one expert generator runs on through all the episodes).

    Args:
        env_id: a Gymnasium id: the env of a shipped task (``worldsim/conf/task/``), or any env given ``expert``.
        dataset_id: Minari id, e.g. ``"worldsim/pusht/expert-v0"``; must not exist yet.
        num_episodes: number of episodes (>= 1).
        seed: first reset seed: episode ``i`` is reset with ``seed + i``; also the expert's seed.
        seeds: explicit reset seeds, one per episode (``len(seeds) == num_episodes``), instead of
            ``seed + i``, e.g. to record a benchmark's evaluation seeds; the expert is still seeded with
            ``seed`` (with ``num_envs > 1``: with each episode's reset seed).
        obs_type: the observation type of worldsim's tasks: ``"state"``, ``"pixels"`` or ``"state_pixels"``
            (other envs: pass their own options in ``env_kwargs``).
        image_size: side of pixel observations of worldsim's tasks.
        env_kwargs: keyword arguments of ``gymnasium.make`` for any env (e.g. ``{"obs_type": "state"}`` for
            gym-pusht, ``{"max_episode_steps": 100}``); for worldsim's tasks they join ``obs_type`` and
            ``image_size`` (which may also be given here; a non-default argument that differs is refused).
        data_format: Minari backend, ``"hdf5"`` or ``"arrow"``.
        path: datasets root; defaults to ``$MINARI_DATASETS_PATH`` (else ``~/.minari/datasets``).
        author: recorded in the dataset's metadata.
        code_permalink: link to the code version that made the data, recorded in the metadata.
        progress: show a progress bar.
        num_envs: environment processes recording in parallel (1: record in this process).
        expert: a factory of an :class:`~worldsim.envs.experts.Expert`, called as ``expert(seed=...)``; the
            expert is ``reset()`` before each episode and called as ``expert(obs, info) -> action`` with what
            the env's last ``reset`` or ``step`` returned. Default: the task's scripted expert. With
            ``num_envs > 1`` it must be importable by the env processes (defined at module level).
        action_noise: with a value > 0, the expert's actions are executed with Gaussian noise of this
            standard deviation (a fraction of each action dimension's half range; DART, see
            :class:`~worldsim.envs.wrappers.ExecutionNoise`): the dataset's ``action`` is the expert's clean
            action, the label a policy learns, and each step's info holds the ``executed_action``.

    Returns:
        The created ``minari.MinariDataset``.
    """
    make_expert = default_expert(env_id, expert)
    if not _is_worldsim_env(env_id) and obs_type != "state":
        raise ValueError(
            f"obs_type={obs_type!r} applies to worldsim's tasks only; pass {env_id}'s own options in env_kwargs"
        )
    if not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"num_episodes must be a positive int, got {num_episodes!r}")
    if seeds is not None:
        seeds = [int(value) for value in seeds]
        if len(seeds) != num_episodes:
            raise ValueError(f"seeds must hold one reset seed per episode: {len(seeds)} seeds for {num_episodes}")
    if data_format not in ("hdf5", "arrow"):
        raise ValueError(f"data_format must be 'hdf5' or 'arrow', got {data_format!r}")
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    env_kwargs = dict(env_kwargs or {})
    if _is_worldsim_env(env_id):
        # obs_type / image_size may also come in env_kwargs (e.g. from a task file); an argument that differs
        # from its default and from env_kwargs is a contradiction.
        for name, value, default in (("obs_type", obs_type, "state"), ("image_size", image_size, 96)):
            if name in env_kwargs and value != default and env_kwargs[name] != value:
                raise ValueError(f"{name}={value!r} contradicts env_kwargs[{name!r}]={env_kwargs[name]!r}")
        obs_type = env_kwargs.setdefault("obs_type", obs_type)
        if obs_type != "state":
            env_kwargs.setdefault("image_size", image_size)
    reset_seeds = seeds if seeds is not None else [seed + index for index in range(num_episodes)]
    with datasets_root(path):
        check_new_dataset_id(dataset_id)
        ensure_registered(env_id)
        env = gym.make(env_id, **env_kwargs)
        try:
            if action_noise:
                env = ExecutionNoise(env, action_noise)
            if num_envs == 1:
                controller = make_expert(seed=seed)
                buffers = (_record_episode(env, controller, index, reset_seeds[index]) for index in range(num_episodes))
            else:
                # The parallel recorder resets episode i with (its seed argument + i): with 0 there, the
                # env processes' wrapper looks the episode's real reset seed up in the table.
                table = _ExpertInTheLoop.SeedTable(make_expert, reset_seeds)
                buffers = (
                    dataclasses.replace(buffer, seed=reset_seeds[buffer.id])
                    for buffer in _record_in_parallel(
                        env_id, env_kwargs, num_episodes, 0, num_envs, table, action_noise
                    )
                )
            return write_dataset(
                dataset_id,
                tqdm(buffers, total=num_episodes, desc=f"collecting {dataset_id}", disable=not progress),
                env,
                algorithm_name=f"scripted expert ({getattr(make_expert, '__name__', type(make_expert).__name__)})",
                description=(
                    f"Scripted-expert demonstrations of {env_id} "
                    + (
                        f"({obs_type} observations)."
                        if _is_worldsim_env(env_id)
                        else f"(gymnasium.make kwargs {env_kwargs})."
                    )
                ),
                author=author,
                code_permalink=code_permalink,
                data_format=data_format,
            )
        finally:
            env.close()


def check_new_dataset_id(dataset_id: str) -> None:
    """Refuse an id that already names a dataset under Minari's current root, before anything is recorded."""
    if get_dataset_path(dataset_id).exists():
        raise ValueError(f"dataset {dataset_id!r} already exists; delete it or choose another id")


def write_dataset(
    dataset_id: str,
    buffers: Iterable[EpisodeBuffer],
    env: gym.Env,
    *,
    algorithm_name: str,
    description: str,
    author: str | None = None,
    code_permalink: str | None = None,
    data_format: str = "hdf5",
) -> minari.MinariDataset:
    """Stream episode buffers (recorded as they are iterated) into a new Minari dataset under the current root.

    An interrupted or failed recording leaves no half-written dataset under ``dataset_id``.
    """
    try:
        with warnings.catch_warnings():
            # Minari recommends these metadata for published datasets; local demonstrations may omit them.
            warnings.filterwarnings("ignore", message=r"`(author|author_email|code_permalink)` is set to None")
            # Minari's DataCollector needs jax (minari[create]); writing buffers directly does not.
            return minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=env,
                eval_env=env.spec,
                algorithm_name=algorithm_name,
                description=description,
                author=author,
                code_permalink=code_permalink,
                data_format=data_format,
                jpeg_encoding=False,
            )
    except BaseException:
        shutil.rmtree(get_dataset_path(dataset_id), ignore_errors=True)
        raise


def _stack(items: list):
    if isinstance(items[0], dict):
        return {key: _stack([item[key] for item in items]) for key in items[0]}
    return np.stack([np.asarray(item) for item in items])


class EpisodeRecorder:
    """Collects one episode's steps and hands them to Minari as an ``EpisodeBuffer``."""

    def __init__(self, index: int, seed: int, obs, info: dict):
        self.index, self.seed = index, seed
        self.observations, self.infos = [obs], [info]
        self.actions, self.rewards, self.terminations, self.truncations = [], [], [], []

    def add(self, action, obs, reward, terminated: bool, truncated: bool, info: dict) -> None:
        self.actions.append(action)
        self.observations.append(obs)
        self.rewards.append(reward)
        self.terminations.append(terminated)
        self.truncations.append(truncated)
        self.infos.append(info)

    def buffer(self) -> EpisodeBuffer:
        return EpisodeBuffer(
            id=self.index,
            seed=self.seed,
            observations=_stack(self.observations),
            actions=_stack(self.actions),
            rewards=self.rewards,
            terminations=self.terminations,
            truncations=self.truncations,
            infos=_stack(_aligned_infos(self.infos)),
        )


def _aligned_infos(infos: list[dict]) -> list[dict]:
    """The infos keys every step reports, one row per observation. A key the reset's info lacks (Gymnasium-
    Robotics reports ``is_success`` only from the first step) gets a zero row there, so it is kept; a key some
    step lacks is dropped (Minari needs one value per observation)."""
    reset, steps = infos[0], infos[1:]
    if not steps:
        return infos
    keys = [key for key in steps[0] if all(key in info for info in steps)]
    keys = [key for key in keys if key in reset or not isinstance(steps[0][key], dict)]
    first = {key: reset[key] if key in reset else np.zeros_like(np.asarray(steps[0][key])) for key in keys}
    return [first] + [{key: info[key] for key in keys} for info in steps]


def _record_episode(env: gym.Env, expert: Expert, index: int, seed: int) -> EpisodeBuffer:
    obs, info = env.reset(seed=seed)
    expert.reset()
    recorder = EpisodeRecorder(index, seed, obs, info)
    terminated = truncated = False
    while not (terminated or truncated):
        action = expert(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        recorder.add(action, obs, reward, terminated, truncated, info)
    return recorder.buffer()


EXPERT_ACTION = "expert_action"


class _ExpertInTheLoop(gym.Wrapper):
    """Runs the task's expert inside a vector sub-environment's process, next to the env it acts on.

    Every reset and every non-final step returns the expert's next action as ``info["expert_action"]``,
    so the main process only relays it back. Each reset starts a fresh expert seeded with the reset seed.
    A ``SeedTable`` factory makes a reset with seed ``i`` stand for episode ``i``: the env is then reset
    (and the expert seeded) with the table's ``reset_seeds[i]``.
    """

    class SeedTable:
        """An expert factory that also carries explicit per-episode reset seeds into the env processes."""

        def __init__(self, make_expert: Callable[..., Expert], reset_seeds: Sequence[int]):
            self.make_expert = make_expert
            self.reset_seeds = list(reset_seeds)

        def __call__(self, *, seed: int | None = None) -> Expert:
            return self.make_expert(seed=seed)

    def __init__(self, env: gym.Env, make_expert: Callable[..., Expert]):
        super().__init__(env)
        self._make_expert = make_expert
        self._expert: Expert | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if isinstance(self._make_expert, _ExpertInTheLoop.SeedTable) and seed is not None:
            seed = self._make_expert.reset_seeds[seed]
        obs, info = self.env.reset(seed=seed, options=options)
        self._expert = self._make_expert(seed=seed)
        self._expert.reset()  # as the single-process recording does before each episode
        return obs, {**info, EXPERT_ACTION: self._expert(obs, info)}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated):
            info = {**info, EXPERT_ACTION: self._expert(obs, info)}
        return obs, reward, terminated, truncated, info


def _expert_env(
    env_id: str, kwargs: dict, make_expert: Callable[..., Callable[[gym.Env], np.ndarray]], action_noise: float = 0.0
) -> gym.Env:
    ensure_registered(env_id)  # in each env process too
    env = gym.make(env_id, **kwargs)
    return _ExpertInTheLoop(ExecutionNoise(env, action_noise) if action_noise else env, make_expert)


def _row(batch, k: int):
    """Sub-environment ``k``'s entry of a batched observation (an array or a dict of them)."""
    if isinstance(batch, dict):
        return {key: _row(value, k) for key, value in batch.items()}
    return batch[k]


def _sub_info(infos: dict, k: int) -> dict:
    """Sub-environment ``k``'s own info dict out of a vector env's batched infos (``_key`` masks say who has what)."""
    return {
        key: _sub_info(value, k) if isinstance(value, dict) else value[k]
        for key, value in infos.items()
        if not key.startswith("_") and key != EXPERT_ACTION and infos[f"_{key}"][k]
    }


def _record_in_parallel(
    env_id: str,
    kwargs: dict,
    num_episodes: int,
    seed: int,
    num_envs: int,
    make_expert: Callable[..., Callable[[gym.Env], np.ndarray]],
    action_noise: float = 0.0,
) -> Iterator[EpisodeBuffer]:
    """Episodes ``0 .. num_episodes - 1`` recorded by ``num_envs`` processes, yielded in episode order.

    Sub-environments step in lockstep; one that finishes an episode is reset (and only it, autoreset being
    off) with the next episode's seed. Episodes finished ahead of their turn wait in memory (about one per
    process) so the dataset's order does not depend on timing or on ``num_envs``.
    """
    num_envs = min(num_envs, num_episodes)
    envs = gym.vector.AsyncVectorEnv(
        [functools.partial(_expert_env, env_id, kwargs, make_expert, action_noise)] * num_envs,
        # Fresh processes: a forked child inherits the parent's rendering (EGL) state and can hang in it.
        context="spawn",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
    )
    try:
        obs, infos = envs.reset(seed=[seed + k for k in range(num_envs)])
        # The episode each sub-environment is recording; None once no episode is left for it.
        recording: list[EpisodeRecorder | None] = [
            EpisodeRecorder(k, seed + k, _row(obs, k), _sub_info(infos, k)) for k in range(num_envs)
        ]
        actions = np.stack([infos[EXPERT_ACTION][k] for k in range(num_envs)])
        started, done, next_out = num_envs, {}, 0
        while next_out < num_episodes:
            obs, rewards, terminations, truncations, infos = envs.step(actions)
            starting: dict[int, int] = {}  # sub-environment -> the episode it starts now
            for k, recorder in enumerate(recording):
                if recorder is None:
                    continue  # idle: it keeps stepping with its last action, nothing is recorded
                terminated, truncated = bool(terminations[k]), bool(truncations[k])
                # A copy: ``actions`` is reused for the next step.
                recorder.add(actions[k].copy(), _row(obs, k), rewards[k], terminated, truncated, _sub_info(infos, k))
                if not (terminated or truncated):
                    actions[k] = infos[EXPERT_ACTION][k]
                    continue
                done[recorder.index] = recorder.buffer()
                recording[k] = None
                if started < num_episodes:
                    starting[k], started = started, started + 1
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
            if starting:
                seeds = [seed + starting[k] if k in starting else None for k in range(num_envs)]
                mask = np.array([k in starting for k in range(num_envs)])
                obs, infos = envs.reset(seed=seeds, options={"reset_mask": mask})
                for k, index in starting.items():
                    recording[k] = EpisodeRecorder(index, seed + index, _row(obs, k), _sub_info(infos, k))
                    actions[k] = infos[EXPERT_ACTION][k]
    finally:
        envs.close()


def recorded_reset_seeds(dataset_id: str, *, path: str | os.PathLike | None = None) -> list[int | None]:
    """The reset seed each episode of a local Minari dataset was recorded with (None where none was stored)."""
    with datasets_root(path):
        if not get_dataset_path(dataset_id).exists():
            raise ValueError(f"no local Minari dataset {dataset_id!r} under {get_dataset_path()}")
        dataset = minari.load_dataset(dataset_id)
        metadata = dataset.storage.get_episode_metadata(range(dataset.total_episodes))
        return [None if m.get("seed") is None else int(m["seed"]) for m in metadata]


def load_demonstrations(
    dataset_id: str,
    env_id: str | None = None,
    *,
    env_kwargs: dict | None = None,
    path: str | os.PathLike | None = None,
) -> list[Episode]:
    """Load a Minari dataset as a list of numpy :class:`Episode`.

    Args:
        dataset_id: Minari id of a local dataset.
        env_id: when given, the dataset's observation and action spaces must equal those of
            ``gymnasium.make(env_id, **env_kwargs)``; a mismatch raises ``ValueError``.
        env_kwargs: keyword arguments for that environment (e.g. ``{"obs_type": "pixels"}``).
        path: datasets root; defaults to ``$MINARI_DATASETS_PATH``.
    """
    with datasets_root(path):
        if not get_dataset_path(dataset_id).exists():
            raise ValueError(f"no local Minari dataset {dataset_id!r} under {get_dataset_path()}")
        dataset = minari.load_dataset(dataset_id)
    if env_id is not None:
        ensure_registered(env_id)
        env = gym.make(env_id, **(env_kwargs or {}))
        env.close()  # only its spaces are needed
        for name in ("observation_space", "action_space"):
            expected, found = getattr(env, name), getattr(dataset, name)
            if expected != found:
                raise ValueError(
                    f"dataset {dataset_id!r} does not match {env_id!r} (kwargs {env_kwargs or {}}): "
                    f"its {name} is {found}, the environment's is {expected}"
                )
    episodes = []
    for data in dataset.iterate_episodes():
        infos = data.infos or {}
        success = bool(np.any(infos["is_success"])) if "is_success" in infos else bool(data.terminations[-1])
        episodes.append(
            Episode(
                observations=data.observations,
                actions=np.asarray(data.actions, dtype=np.float32),
                rewards=np.asarray(data.rewards, dtype=np.float32),
                terminations=np.asarray(data.terminations, dtype=bool),
                truncations=np.asarray(data.truncations, dtype=bool),
                success=success,
            )
        )
    return episodes


def fit_normalizers(
    episodes: list[Episode], *, obs_key: str | None = None, mode: NormalizationMode = "minmax"
) -> dict[str, Normalizer]:
    """Per-dimension statistics over every observation and action of ``episodes``.

    Returns ``{"observation": Normalizer, "action": Normalizer}``; pixel observations (uint8) get one
    statistic per pixel, so pass ``obs_key="state"`` for ``state_pixels`` datasets unless that is wanted.
    """
    if not episodes:
        raise ValueError("no episodes given")
    observations = np.concatenate([observations_of(episode, obs_key) for episode in episodes])
    actions = np.concatenate([episode.actions for episode in episodes])
    return {"observation": Normalizer.fit(observations, mode), "action": Normalizer.fit(actions, mode)}
