"""Registers worldsim's environments with Gymnasium (Gymnasium 1.x has no plugin auto-discovery).

worldsim's own tasks are registered from their task files (``worldsim/conf/task/*.yaml``: ``env_id``,
``entry_point``, ``max_episode_steps``), so those facts live in one place.
"""

import gymnasium as gym

# World models as environments (the neural game engine); they load a shipped checkpoint when made.
WORLD_MODEL_ENVS: dict[str, tuple[str, int]] = {
    "worldsim/NeuralPushT-v0": ("worldsim.world_model.env:make_neural_pusht", 300),
}


def own_tasks() -> dict[str, tuple[str, int | None]]:
    """``env_id -> (entry_point, max_episode_steps)`` of every task file that registers an env."""
    from worldsim.envs.tasks import load_task, task_names

    tasks = (load_task(name) for name in task_names())
    return {t.env_id: (t.entry_point, t.max_episode_steps) for t in tasks if t.entry_point}


def register_envs() -> None:
    """Register every worldsim environment; safe to call more than once. Entry points are strings, so
    registering imports neither MuJoCo nor the task modules."""
    for env_id, (entry_point, max_episode_steps) in (own_tasks() | WORLD_MODEL_ENVS).items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps)
