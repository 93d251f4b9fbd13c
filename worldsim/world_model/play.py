"""The neural game engine: drive a pixel world model live with the mouse, or record a scripted play.

    worldsim play                                  # wm-pusht-pixels in a pygame window
    worldsim play headless=true                    # a scripted play recorded to play.gif
    worldsim play checkpoint=wm-breakout           # Atari Breakout, dreamt (arrows move, space serves)

Interactive mode needs pygame (``pip install pygame``; it is not a worldsim dependency). For a 2-D Box
action (Push-T's pusher target) the mouse position in the window is the action; the arrow keys nudge
any Box action, digit keys choose a Discrete one. ``R`` restarts from fresh real context, ``Esc``
quits. The caption shows the frames per second the model sustains. Headless mode drives the
pusher round a circle and writes the frames with imageio (``.gif``, or ``.mp4`` with imageio-ffmpeg).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from worldsim.world_model.env import WorldModelEnv
from worldsim.world_model.model import WorldModel
from worldsim.world_model.streaming import SessionConfig


def make_env(checkpoint: str, session: SessionConfig) -> WorldModelEnv:
    model = WorldModel.from_pretrained(checkpoint)
    if model.observation_space.dtype != np.uint8:
        raise ValueError(f"{checkpoint} predicts states; play needs a pixel world model (e.g. wm-pusht-pixels)")
    return WorldModelEnv(model=model, session=session, render_mode="rgb_array")


def scripted_action(env: WorldModelEnv, t: int, period: int = 80) -> np.ndarray | int:
    """A circle for 2-D Box actions, a slow sweep for other Box actions, a cycle for Discrete ones."""
    space = env.action_space
    if not hasattr(space, "low"):
        return int(space.start + (t // 10) % space.n)
    phase = 2 * np.pi * t / period
    unit = np.array([np.cos(phase), np.sin(phase)]) if space.shape == (2,) else np.full(space.shape, np.sin(phase))
    return (space.low + (0.5 + 0.3 * unit) * (space.high - space.low)).astype(space.dtype)


def headless(env: WorldModelEnv, out: str, steps: int, scale: int, seed: int) -> None:
    import imageio.v2 as imageio

    obs, _ = env.reset(seed=seed)
    frames = [obs]
    started = time.perf_counter()
    for t in range(steps):
        obs, *_ = env.step(scripted_action(env, t))
        frames.append(obs)
    fps = steps / (time.perf_counter() - started)
    big = [np.kron(frame, np.ones((scale, scale, 1), np.uint8)) for frame in frames]
    imageio.mimsave(out, big, **({"duration": 0.1, "loop": 0} if out.endswith(".gif") else {"fps": 10}))
    print(f"wrote {len(frames)} frames to {out}; the model generated {fps:.1f} frames per second")


def interactive(env: WorldModelEnv, scale: int, seed: int) -> None:
    try:
        import pygame
    except ImportError:
        raise SystemExit("interactive play needs pygame: pip install pygame, or use --headless") from None
    space = env.action_space
    obs, _ = env.reset(seed=seed)
    size = obs.shape[0] * scale
    pygame.init()
    held = {pygame.key.key_code(name): action for name, action in play_keys(env).items()}
    screen = pygame.display.set_mode((size, size))
    clock = pygame.time.Clock()
    action = scripted_action(env, 0)
    running = True
    while running:
        for event in pygame.event.get():
            if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
                running = False
            elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                obs, _ = env.reset()
            elif (
                event.type == pygame.KEYDOWN
                and not held
                and not hasattr(space, "low")
                and 0 <= event.key - pygame.K_0 <= 9
            ):
                action = int(np.clip(event.key - pygame.K_0, space.start, space.start + space.n - 1))
        if held:  # the task's keys: an action while its key is held, 0 otherwise
            keys = pygame.key.get_pressed()
            action = next((a for key, a in held.items() if keys[key]), int(space.start))
        if hasattr(space, "low"):
            if space.shape == (2,) and pygame.mouse.get_focused():
                mx, my = pygame.mouse.get_pos()
                # Image x is world x and image up is world y (a top-down camera), as in Push-T.
                unit = np.array([mx / size, 1 - my / size])
                action = (space.low + unit * (space.high - space.low)).astype(space.dtype)
            keys = pygame.key.get_pressed()
            nudge = np.zeros(space.shape)
            nudge[0] = 0.05 * (keys[pygame.K_RIGHT] - keys[pygame.K_LEFT])
            if space.shape[0] > 1:
                nudge[1] = 0.05 * (keys[pygame.K_UP] - keys[pygame.K_DOWN])
            action = np.clip(action + nudge * (space.high - space.low), space.low, space.high).astype(space.dtype)
        obs, *_ = env.step(action)
        surface = pygame.surfarray.make_surface(np.kron(obs, np.ones((scale, scale, 1), np.uint8)).swapaxes(0, 1))
        screen.blit(surface, (0, 0))
        pygame.display.flip()
        clock.tick(env.metadata["render_fps"] * 10)  # cap far above the task's rate: show what the model sustains
        pygame.display.set_caption(f"worldsim play: {clock.get_fps():.0f} FPS")
    pygame.quit()


def play_keys(env: WorldModelEnv) -> dict[str, int]:
    """The key bindings of the task whose env the model was trained on (``TaskSpec.play_keys``)."""
    from worldsim.envs.tasks import task_for_env

    env_id = env.model.metadata.get("env_id")
    return dict(task_for_env(env_id).play_keys) if env_id else {}


def play(
    checkpoint: str, session: SessionConfig, *, headless_out: str | None = None, frames: int = 200, scale: int = 6,
    seed: int = 0,
) -> None:  # fmt: skip
    """Play ``checkpoint`` live in a pygame window, or (``headless_out``: a .gif or .mp4) record ``frames``
    frames of a scripted play."""
    torch.set_num_threads(1)
    env = make_env(checkpoint, session)
    with torch.inference_mode():
        if headless_out is not None:
            headless(env, headless_out, frames, scale, seed)
        else:
            interactive(env, scale, seed)
    env.close()
