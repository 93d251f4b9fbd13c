"""Registers worldsim's environments with Gymnasium (Gymnasium 1.x has no plugin auto-discovery)."""

import gymnasium as gym

# Entry points are strings, so registering imports neither MuJoCo nor the task modules.
MUJOCO_TASKS: dict[str, tuple[str, int]] = {
    "worldsim/PushT-v0": ("worldsim.envs.push_t:PushTEnv", 300),
    "worldsim/PickPlace-v0": ("worldsim.envs.pick_place:PickPlaceEnv", 150),
}

# World models as environments (the neural game engine); they load a shipped checkpoint when made.
WORLD_MODEL_ENVS: dict[str, tuple[str, int]] = {
    "worldsim/NeuralPushT-v0": ("worldsim.world_model.env:make_neural_pusht", 300),
}


def register_envs() -> None:
    """Register every worldsim environment; safe to call more than once."""
    for env_id, (entry_point, max_episode_steps) in (MUJOCO_TASKS | WORLD_MODEL_ENVS).items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps)
