"""Atari Breakout through ale-py as small RGB frames: the second world a pixel world model learns (DIAMOND's home).

ale-py's wheel ships the ROMs, so ``worldsim/Breakout-v0`` needs no download. The game's positions are read
from the console's RAM into ``info`` for the scripted player; the frames and the world model never see
them. :func:`breakout_objects` measures the paddle, the ball and the bricks left in any frame by colour, so
a generated frame is judged by the same rule as a real one.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3
# Console RAM addresses of Breakout (the Atari Annotated RAM Interface's labels).
_RAM = {"ball_x": 99, "ball_y": 101, "paddle_x": 72, "lives": 57}
_SOURCE_SIZE = (210, 160)
# Rows of the source frame: the bricks, the band the ball flies through, the paddle.
_BRICK_ROWS, _BALL_ROWS, _PADDLE_ROWS = (57, 93), (93, 188), (188, 195)
_WALL_COLUMNS = (8, 152)


class BreakoutEnv(gym.Env):
    """Atari 2600 Breakout (ale-py, ``ALE/Breakout-v5`` without sticky actions) seen as ``image_size`` RGB frames.

    **Observation**: ``Box(0, 255, (image_size, image_size, 3), uint8)``, the 210 x 160 screen resized with a
    bilinear filter (the ball stays visible as a dim spot at 64 x 64).

    **Action**: ``Discrete(4)``: 0 no-op, 1 fire (serves a ball), 2 right, 3 left; each repeated for
    ``frameskip`` console frames.

    **Reward**: the game's score gained during the step (1, 4 or 7 per brick by its row).

    **Termination**: the game is over (all 5 lives lost); **truncation** by the registered time limit.
    ``info``: ``lives``, and the RAM's ``ball_x``, ``ball_y`` (0 while no ball is in play) and ``paddle_x``, for
    scripted players (never part of the observation).

    Version history: v0 (2026-12): first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, image_size: int = 64, frameskip: int = 4, render_mode: str | None = None):
        import ale_py

        gym.register_envs(ale_py)
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        self.image_size = image_size
        self.render_mode = render_mode
        self._ale_env = gym.make(
            "ALE/Breakout-v5", frameskip=frameskip, repeat_action_probability=0.0, full_action_space=False
        )
        self.observation_space = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self._frame: np.ndarray | None = None

    def _observe(self, screen: np.ndarray) -> np.ndarray:
        from PIL import Image

        size = (self.image_size, self.image_size)
        self._frame = np.asarray(Image.fromarray(screen).resize(size, Image.BILINEAR), np.uint8)
        return self._frame

    def _info(self, info: dict) -> dict:
        ram = self._ale_env.unwrapped.ale.getRAM()
        return {"lives": int(info.get("lives", 0)), **{k: int(ram[a]) for k, a in _RAM.items() if k != "lives"}}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        screen, info = self._ale_env.reset(seed=seed)
        return self._observe(screen), self._info(info)

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"Breakout actions are 0..3 (no-op, fire, right, left), got {action!r}")
        screen, reward, terminated, truncated, info = self._ale_env.step(int(action))
        return self._observe(screen), float(reward), bool(terminated), bool(truncated), self._info(info)

    def render(self):
        return self._frame

    def close(self):
        self._ale_env.close()


class BreakoutPlayer:
    """A scripted Breakout player: serves when no ball is in play, else moves the paddle under the ball.

    ``random_prob``: the share of steps it takes a random action instead (a random-plus-heuristic player,
    so the recorded play also shows the paddle missing); it reads only ``info`` (the RAM positions).
    """

    def __init__(self, seed: int | None = None, random_prob: float = 0.1, dead_zone: int = 4):
        self._rng = np.random.default_rng(seed)
        self.random_prob = random_prob
        self.dead_zone = dead_zone
        self._offset = 0

    def reset(self) -> None:
        self._offset = int(self._rng.integers(-6, 7))  # where on the paddle it aims: varied bounce angles

    def __call__(self, obs: Any, info: dict[str, Any]) -> int:
        if self._rng.random() < self.random_prob:
            return int(self._rng.integers(4))
        if info.get("ball_y", 0) == 0:
            return FIRE
        # In screen pixels the ball's centre is ball_x - 48.5 and the paddle's paddle_x - 39 (measured).
        error = info["ball_x"] - (info["paddle_x"] + 10 + self._offset)
        if abs(error) <= self.dead_zone:
            return NOOP
        return RIGHT if error > 0 else LEFT


def _rows(span: tuple[int, int], size: int) -> slice:
    return slice(round(span[0] * size / _SOURCE_SIZE[0]), round(span[1] * size / _SOURCE_SIZE[0]))


def breakout_objects(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame of ``uint8 [..., S, S, 3]``: the paddle's and the ball's centre (x, y in pixels; NaN when not
    seen) and the bricks' pixel count. The ball and the paddle are the game's red; the ball is looked for
    only below the bricks, the paddle only in its own rows."""
    frames = np.asarray(frames)
    size = frames.shape[-2]
    rgb = frames.astype(np.float32)
    red = (rgb[..., 0] > 50) & (rgb[..., 0] > 1.6 * rgb[..., 1]) & (rgb[..., 0] > 1.6 * rgb[..., 2])
    lit = rgb.sum(-1) > 120
    walls = slice(round(_WALL_COLUMNS[0] * size / _SOURCE_SIZE[1]), round(_WALL_COLUMNS[1] * size / _SOURCE_SIZE[1]))
    out = {}
    for name, span in (("paddle", _PADDLE_ROWS), ("ball", _BALL_ROWS)):
        rows = _rows(span, size)
        mask = np.zeros_like(red)
        # Between the walls: their lower ends are red too (a paddle against a wall is measured a little short).
        mask[..., rows, walls] = red[..., rows, walls]
        weight = mask.sum((-2, -1)).astype(np.float64)
        ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        with np.errstate(invalid="ignore", divide="ignore"):
            cx = (mask * xs).sum((-2, -1)) / weight
            cy = (mask * ys).sum((-2, -1)) / weight
        out[name] = np.stack([np.where(weight > 0, cx, np.nan), np.where(weight > 0, cy, np.nan)], axis=-1)
    out["bricks"] = lit[..., _rows(_BRICK_ROWS, size), walls].sum((-2, -1)).astype(np.float64)
    return out


def breakout_fidelity(generated: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame: paddle and ball centre errors (pixels; NaN where either frame lacks the object), whether the
    ball's presence agrees, and the bricks' pixel count ratio (generated / true)."""
    ours, real = breakout_objects(generated), breakout_objects(truth)
    out = {}
    for name in ("paddle", "ball"):
        out[f"{name}_centre_error_px"] = np.linalg.norm(ours[name] - real[name], axis=-1)
    out["ball_presence_agrees"] = (np.isfinite(ours["ball"][..., 0]) == np.isfinite(real["ball"][..., 0])).astype(
        np.float64
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out["bricks_ratio"] = np.where(real["bricks"] > 0, ours["bricks"] / real["bricks"], np.nan)
    return out
