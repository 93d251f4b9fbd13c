"""Push-T: push a T-shaped block onto a goal pose with a round, position-controlled pusher (MuJoCo)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from worldsim.envs.frame_objects import ColourRule
from worldsim.envs.mujoco_task import VISUAL_XML, MujocoTaskEnv, ObsType

# Geometry in metres. The T is gym-pusht's (a 120x30 bar over a 30x90 stem, 1 px = 1 mm) in a 0.5 m square
# workspace; all observations and actions divide positions by WORKSPACE so they lie in about [-1, 1].
WORKSPACE = 0.25
WALL = 0.27  # inner face of the walls: beyond the pusher's reach, so only the block ever touches them
PUSHER_RADIUS = 0.015
BAR_HALF = (0.06, 0.015)
STEM_HALF = (0.015, 0.045)
# Block frame: origin at the T's centre of mass, +y from the stem towards the bar.
_BAR_AREA = 4 * BAR_HALF[0] * BAR_HALF[1]
_STEM_AREA = 4 * STEM_HALF[0] * STEM_HALF[1]
_COM_Y = (_BAR_AREA * BAR_HALF[1] - _STEM_AREA * STEM_HALF[1]) / (_BAR_AREA + _STEM_AREA)
BAR_CENTER = (0.0, BAR_HALF[1] - _COM_Y)
STEM_CENTER = (0.0, -STEM_HALF[1] - _COM_Y)
HEIGHT = 0.015  # half thickness of block and pusher

GOAL_POSE = (0.0, 0.0, np.pi / 4)
OBJECT_COLOURS = {
    "block": ColourRule(dominant=2, other=0, margin=30),
    "pusher": ColourRule(dominant=0, other=1, margin=50, oriented=False),
}
"""How the rendered frames show the objects (the block is blue, the pusher red, on a white table with a green
goal): ``worldsim.envs.frame_objects`` measures them in generated frames with these."""


def t_rectangles() -> np.ndarray:
    """The T as two axis-aligned rectangles in the block frame: rows ``(cx, cy, half_w, half_h)``."""
    return np.array([[*BAR_CENTER, *BAR_HALF], [*STEM_CENTER, *STEM_HALF]])


def _goal_grid(resolution: float = 0.002) -> np.ndarray:
    """Cell centres covering the T in the block frame, for rasterized coverage."""
    points = []
    for cx, cy, hw, hh in t_rectangles():
        xs = np.arange(cx - hw + resolution / 2, cx + hw, resolution)
        ys = np.arange(cy - hh + resolution / 2, cy + hh, resolution)
        points.append(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2))
    return np.concatenate(points)


def _inside_t(points_block: np.ndarray) -> np.ndarray:
    inside = np.zeros(len(points_block), dtype=bool)
    for cx, cy, hw, hh in t_rectangles():
        inside |= (np.abs(points_block[:, 0] - cx) <= hw) & (np.abs(points_block[:, 1] - cy) <= hh)
    return inside


def rotation_matrix(theta: float) -> np.ndarray:
    """2-D rotation by ``theta`` (block frame to world frame for the block angle)."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _box(name: str, center: tuple[float, float], half: tuple[float, float], half_z: float, extra: str) -> str:
    return (
        f'<geom name="{name}" type="box" pos="{center[0]:.6f} {center[1]:.6f} 0" '
        f'size="{half[0]} {half[1]} {half_z}" {extra}/>'
    )


def _model_xml() -> str:
    block_geoms = "\n".join(
        _box(n, c, h, HEIGHT, 'density="530" rgba="0.45 0.55 0.75 1" friction="0.8 0.005 0.0001"')
        for n, c, h in (("bar", BAR_CENTER, BAR_HALF), ("stem", STEM_CENTER, STEM_HALF))
    )
    goal_geoms = "\n".join(
        _box(n, c, h, 0.0005, 'contype="0" conaffinity="0" rgba="0.55 0.85 0.55 1"')
        for n, c, h in (("goal_bar", BAR_CENTER, BAR_HALF), ("goal_stem", STEM_CENTER, STEM_HALF))
    )
    walls = "\n".join(
        f'<geom type="box" pos="{x} {y} {HEIGHT}" size="{hx} {hy} {HEIGHT}" rgba="0.5 0.5 0.5 1"/>'
        for x, y, hx, hy in (
            (WALL + 0.005, 0, 0.005, WALL + 0.01),
            (-WALL - 0.005, 0, 0.005, WALL + 0.01),
            (0, WALL + 0.005, WALL + 0.01, 0.005),
            (0, -WALL - 0.005, WALL + 0.01, 0.005),
        )
    )
    gx, gy, gth = GOAL_POSE
    # Table friction acts through frictionloss on the block's planar joints: the block has no vertical
    # freedom, so a contact with the table could carry no normal force. Values: mu=0.3 for a 0.1 kg block.
    return f"""
<mujoco model="worldsim_push_t">
  <compiler angle="radian"/>
  <option timestep="0.005" integrator="implicitfast"/>
  {VISUAL_XML}
  <worldbody>
    <light pos="0 0 1" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.5 0.5 0.5"/>
    <geom name="table" type="plane" size="0.3 0.3 0.01" rgba="0.93 0.93 0.93 1" contype="0" conaffinity="0"/>
    {walls}
    <camera name="top" pos="0 0 1" xyaxes="1 0 0 0 1 0" projection="orthographic" fovy="{2 * WALL + 0.02:.3f}"/>
    <body name="goal" pos="{gx} {gy} 0.0005" euler="0 0 {gth}">
      {goal_geoms}
    </body>
    <body name="block" pos="0 0 {HEIGHT + 0.001}">
      <joint name="block_x" type="slide" axis="1 0 0" frictionloss="0.3" damping="0.2"/>
      <joint name="block_y" type="slide" axis="0 1 0" frictionloss="0.3" damping="0.2"/>
      <joint name="block_yaw" type="hinge" axis="0 0 1" frictionloss="0.012" damping="0.002"/>
      {block_geoms}
    </body>
    <body name="pusher" pos="0 0 {HEIGHT + 0.001}">
      <joint name="pusher_x" type="slide" axis="1 0 0"/>
      <joint name="pusher_y" type="slide" axis="0 1 0"/>
      <geom name="pusher" type="sphere" size="{PUSHER_RADIUS}" mass="0.1" rgba="0.85 0.3 0.3 1"
            friction="0.8 0.005 0.0001"/>
    </body>
  </worldbody>
  <actuator>
    <position name="pusher_x" joint="pusher_x" kp="300" kv="10"/>
    <position name="pusher_y" joint="pusher_y" kp="300" kv="10"/>
  </actuator>
</mujoco>
"""


class PushTEnv(MujocoTaskEnv, EzPickle):
    """Push a T-shaped block onto a fixed goal pose with a round pusher: Diffusion Policy's Push-T in MuJoCo.

    A sphere pusher of radius 1.5 cm moves in the plane of a 0.5 m x 0.5 m workspace under a stiff PD
    position controller; walls 2 cm outside the workspace keep the block on the table and in view. The T
    (gym-pusht's shape: a 12 x 3 cm bar over a 3 x 9 cm stem, 0.1 kg) slides on the table with Coulomb
    friction (mu = 0.3) and is pushed by contact only. The goal pose is the table's
    centre at 45 degrees, drawn in green. Control runs at 10 Hz (20 physics steps of 5 ms).

    Lengths in observations and actions are in units of the workspace half-width (0.25 m), so the table
    spans [-1, 1] in x and y.

    ## Action space
    ``Box(-1, 1, (2,), float32)``: the pusher's target position ``(x, y)``; the pusher tracks it with a PD
    controller (it arrives within about 0.1 s for moves of a few centimetres).

    ## Observation space
    - ``obs_type="state"`` (default): ``Box(-1.05, 1.05, (6,), float32)`` =
      ``[pusher_x, pusher_y, block_x, block_y, cos(block_angle), sin(block_angle)]``, where the block
      position is its centre of mass (the walls keep positions within +-1.02).
    - ``obs_type="pixels"``: ``Box(0, 255, (image_size, image_size, 3), uint8)``, an orthographic top-down
      RGB view of the whole table (image x = world x, image up = world y).
    - ``obs_type="state_pixels"``: ``Dict(state=..., pixels=...)`` with both.

    ## Info
    Every ``reset`` and ``step`` info holds ``"is_success"`` and ``"coverage"`` (see below) and ``"state"``:
    the 6-vector of ``obs_type="state"`` (float32), whatever the observation type, so a scripted expert
    (``worldsim.envs.experts.PushTExpert``) acts from it for pixel observations too.

    ## Rewards
    ``min(coverage / success_coverage, 1)`` (gym-pusht's reward), where ``coverage`` is the fraction of the
    goal T's area covered by the block, rasterized on a 2 mm grid (reported as ``info["coverage"]``).

    ## Success, termination and truncation
    Success (``info["is_success"]``) is gym-pusht's rule: ``coverage >= success_coverage`` (0.95 by
    default, which needs the block within a few millimetres and about 2 degrees of the goal). The episode
    terminates on success and is truncated after 300 steps (``max_episode_steps``, 30 s).
    ``success_coverage`` can be lowered (e.g. 0.85) for quicker experiments; it then also rescales the reward.

    ## Starting state
    From ``reset(seed=...)``: block centre uniform in ``[-0.6, 0.6]^2`` (15 cm around the goal), angle uniform
    in ``[-pi, pi)``, redrawn if already successful; pusher uniform in ``[-0.8, 0.8]^2``, at least 3 cm
    clear of the block.

    ## Arguments
    ``gymnasium.make("worldsim/PushT-v0", obs_type="state", image_size=96, render_mode=None,
    success_coverage=0.95)``. ``render()`` (``render_mode="rgb_array"``) returns the camera image at
    ``image_size``.

    ## Version history
    - v0: initial version. Later, under the same id (dynamics, observations, rewards and spaces unchanged):
      every info gained ``"state"``.
    """

    def __init__(
        self,
        *,
        obs_type: ObsType = "state",
        image_size: int = 96,
        render_mode: str | None = None,
        success_coverage: float = 0.95,
    ):
        EzPickle.__init__(
            self, obs_type=obs_type, image_size=image_size, render_mode=render_mode, success_coverage=success_coverage
        )
        if not 0.0 < success_coverage <= 1.0:
            raise ValueError(f"success_coverage must be in (0, 1], got {success_coverage!r}")
        self.success_coverage = float(success_coverage)
        super().__init__(
            xml=_model_xml(),
            frame_skip=20,
            camera="top",
            state_space=spaces.Box(-1.05, 1.05, (6,), np.float32),
            action_space=spaces.Box(-1.0, 1.0, (2,), np.float32),
            obs_type=obs_type,
            image_size=image_size,
            render_mode=render_mode,
        )
        self._goal_points = _goal_grid()
        goal_rot = rotation_matrix(GOAL_POSE[2])
        self._goal_points_world = self._goal_points @ goal_rot.T + np.array(GOAL_POSE[:2])

    def task_state(self) -> dict[str, Any]:
        """The simulator state in SI units (metres, radians), for analysis and tests (experts read info["state"])."""
        q = self.data.qpos
        return {
            "pusher": q[3:5].copy(),
            "block_pose": q[0:3].copy(),
            "goal_pose": np.array(GOAL_POSE),
            "pusher_radius": PUSHER_RADIUS,
            "workspace": WORKSPACE,
        }

    def _reset_task(self) -> None:
        rng = self.np_random
        while True:
            block = np.array([*rng.uniform(-0.6, 0.6, 2) * WORKSPACE, rng.uniform(-np.pi, np.pi)])
            if self._coverage(block) < self.success_coverage:
                break
        while True:
            pusher = rng.uniform(-0.8, 0.8, 2) * WORKSPACE
            if t_distance(pusher[None], block)[0] > PUSHER_RADIUS + 0.03:
                break
        self.data.qpos[:] = [*block, *pusher]
        self.data.ctrl[:] = pusher

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action * WORKSPACE

    def _state_obs(self) -> np.ndarray:
        q = self.data.qpos
        return np.array(
            [q[3] / WORKSPACE, q[4] / WORKSPACE, q[0] / WORKSPACE, q[1] / WORKSPACE, np.cos(q[2]), np.sin(q[2])],
            dtype=np.float32,
        )

    def _coverage(self, pose: np.ndarray) -> float:
        """Fraction of the goal T's area covered by a block at ``pose``."""
        points_block = (self._goal_points_world - pose[:2]) @ rotation_matrix(pose[2])
        return float(_inside_t(points_block).mean())

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        coverage = self._coverage(self.data.qpos[0:3])
        reward = min(coverage / self.success_coverage, 1.0)
        return reward, coverage >= self.success_coverage, {"coverage": coverage}


def t_distance(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Distances from world points ``[N, 2]`` to the T at ``pose`` (0 inside), shape ``[N]``."""
    local = (np.asarray(points) - pose[:2]) @ rotation_matrix(pose[2])
    distances = []
    for cx, cy, hw, hh in t_rectangles():
        dx = np.maximum(np.abs(local[:, 0] - cx) - hw, 0.0)
        dy = np.maximum(np.abs(local[:, 1] - cy) - hh, 0.0)
        distances.append(np.hypot(dx, dy))
    return np.min(distances, axis=0)
