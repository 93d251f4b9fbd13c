"""Pick-and-place: a two-finger gripper grasps a cube by friction and sets it down on a target (MuJoCo)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from worldsim.envs.mujoco_task import VISUAL_XML, MujocoTaskEnv, ObsType

# Metres. Observations divide positions by SCALE so the workspace spans about [-1, 1] in x and y.
SCALE = 0.2
CUBE_HALF = 0.02
STEP_LENGTH = 0.02  # gripper target displacement for an action of +-1
GRIPPER_LOW = np.array([-0.22, -0.22, CUBE_HALF - 0.005])
GRIPPER_HIGH = np.array([0.22, 0.22, 0.25])
FINGER_TRAVEL = 0.04  # each finger's closing stroke; open inner gap 8 cm for a 4 cm cube: a forgiving grasp
SUCCESS_DISTANCE = 0.02
REST_TOLERANCE = 0.005


def _model_xml() -> str:
    finger = (
        '<geom type="box" size="0.012 0.006 0.035" pos="0 0 0.02" rgba="0.3 0.3 0.35 1" '
        'friction="1.5 0.02 0.0001" condim="4" mass="0.02"/>'
    )
    return f"""
<mujoco model="worldsim_pick_place">
  <compiler angle="radian"/>
  <option timestep="0.004" integrator="implicitfast" cone="elliptic" impratio="10"/>
  {VISUAL_XML}
  <worldbody>
    <light pos="0 0 1.5" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.5 0.5 0.5"/>
    <geom name="table" type="plane" size="0.6 0.6 0.01" rgba="0.93 0.93 0.93 1" friction="1 0.01 0.0001"/>
    <camera name="front" pos="0 -0.42 0.52" xyaxes="1 0 0 0 0.715 0.699" fovy="45"/>
    <body name="target" mocap="true" pos="0 0 0.0005">
      <geom type="cylinder" size="0.025 0.0005" rgba="0.55 0.85 0.55 1" contype="0" conaffinity="0"/>
    </body>
    <body name="cube" pos="0 0 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05" rgba="0.85 0.35 0.3 1"
            friction="1.5 0.02 0.0001" condim="4"/>
    </body>
    <body name="gripper" gravcomp="1">
      <joint name="gripper_x" type="slide" axis="1 0 0"/>
      <joint name="gripper_y" type="slide" axis="0 1 0"/>
      <joint name="gripper_z" type="slide" axis="0 0 1"/>
      <geom name="palm" type="box" size="0.015 0.06 0.008" pos="0 0 0.063" rgba="0.3 0.3 0.35 1" mass="0.2"/>
      <body name="finger_left" pos="0 0.046 0" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 -1 0" range="0 {FINGER_TRAVEL}" damping="2"/>
        {finger}
      </body>
      <body name="finger_right" pos="0 -0.046 0" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 1 0" range="0 {FINGER_TRAVEL}" damping="2"/>
        {finger}
      </body>
    </body>
  </worldbody>
  <equality>
    <joint joint1="finger_right" joint2="finger_left"/>
  </equality>
  <actuator>
    <position name="gripper_x" joint="gripper_x" kp="1500" kv="60"/>
    <position name="gripper_y" joint="gripper_y" kp="1500" kv="60"/>
    <position name="gripper_z" joint="gripper_z" kp="1500" kv="60"/>
    <position name="fingers" joint="finger_left" kp="300" ctrlrange="0 {FINGER_TRAVEL}" forcerange="-5 5"/>
  </actuator>
</mujoco>
"""


class PickPlaceEnv(MujocoTaskEnv, EzPickle):
    """Pick a cube up with a two-finger gripper and set it down on a target disc.

    A gripper moves in x, y, z under stiff PD position control (gravity-compensated); its two fingers close
    symmetrically under a force-limited position controller (8 cm open gap, about 2.5 N of grip) and hold
    the 4 cm, 50 g cube by friction only.
    The green target disc lies on the table. Control runs at 10 Hz (25 physics steps of 4 ms).

    Positions in observations are in units of 0.2 m (the table spans about [-1, 1] in x and y).

    ## Action space
    ``Box(-1, 1, (4,), float32)`` = ``[dx, dy, dz, gripper]``. ``dx, dy, dz`` move the gripper's target
    position by up to 2 cm per step (the target stays in the workspace: x, y in [-0.22, 0.22] m, z in
    [0.015, 0.25] m for the grasp point, which lies between the fingers 1.5 cm above their tips).
    ``gripper`` is a discrete command read by its sign: ``> 0`` closes the fingers, ``<= 0`` opens them
    (use exactly +-1 in demonstrations).

    ## Observation space
    - ``obs_type="state"`` (default): ``Box(low, 1.5, (10,), float32)`` (``low`` is -1.5 for x and y, -0.5
      for z and -0.1 for the opening; the gripper's workspace keeps every value well inside) =
      ``[gripper_x, gripper_y, gripper_z, finger_opening, cube_x, cube_y, cube_z, target_x, target_y,
      target_z]``; ``gripper_*`` is the grasp point between the fingers, ``finger_opening`` the gap
      between the fingers' inner faces (also in units of 0.2 m), ``cube_*`` the cube's centre.
    - ``obs_type="pixels"``: ``Box(0, 255, (image_size, image_size, 3), uint8)`` from a fixed front camera
      looking down at the table.
    - ``obs_type="state_pixels"``: ``Dict(state=..., pixels=...)`` with both.

    ## Info
    Every ``reset`` and ``step`` info holds ``"is_success"`` and ``"distance"`` (see below) and ``"state"``:
    the 10-vector of ``obs_type="state"`` (float32), whatever the observation type, so a scripted expert
    (``worldsim.envs.experts.PickPlaceExpert``) acts from it for pixel observations too.

    ## Rewards
    Sparse: 1.0 on the step that reaches success, 0.0 otherwise.

    ## Success, termination and truncation
    Success (``info["is_success"]``): the cube rests on the table (its centre within 5 mm of its resting
    height) with its centre within 2 cm (horizontally) of the target's, and the fingers are open wider
    than the cube (released). ``info["distance"]`` is the cube-target horizontal distance in metres.
    The episode terminates on success and is truncated after 150 steps (``max_episode_steps``).

    ## Starting state
    From ``reset(seed=...)``: cube (axis-aligned with the fingers) uniform in ``[-0.12, 0.12]^2`` m, target
    uniform in the same square at least 8 cm from the cube, gripper open at 15 cm height above a point
    uniform in ``[-0.05, 0.05]^2`` m.

    ## Arguments
    ``gymnasium.make("worldsim/PickPlace-v0", obs_type="state", image_size=96, render_mode=None)``.
    ``render()`` (``render_mode="rgb_array"``) returns the camera image at ``image_size``.

    ## Version history
    - v0: initial version. Later, under the same id (dynamics, observations, rewards and spaces unchanged):
      every info gained ``"state"``.
    """

    def __init__(self, *, obs_type: ObsType = "state", image_size: int = 96, render_mode: str | None = None):
        EzPickle.__init__(self, obs_type=obs_type, image_size=image_size, render_mode=render_mode)
        super().__init__(
            xml=_model_xml(),
            frame_skip=25,
            camera="front",
            state_space=spaces.Box(
                np.array([-1.5, -1.5, -0.5, -0.1, -1.5, -1.5, -0.5, -1.5, -1.5, -0.5], np.float32),
                np.full(10, 1.5, np.float32),
            ),
            action_space=spaces.Box(-1.0, 1.0, (4,), np.float32),
            obs_type=obs_type,
            image_size=image_size,
            render_mode=render_mode,
        )
        self._target_position = np.zeros(3)
        self._gripper_q = slice(self.model.joint("gripper_x").qposadr[0], self.model.joint("gripper_z").qposadr[0] + 1)
        self._cube_q = self.model.joint("cube").qposadr[0]
        self._finger_q = self.model.joint("finger_left").qposadr[0]
        finger_geom = self.model.body("finger_left").geomadr[0]
        self._finger_half_width = float(self.model.geom_size[finger_geom][1])
        self._finger_offset = float(self.model.body("finger_left").pos[1])

    def task_state(self) -> dict[str, Any]:
        """The simulator state in SI units (metres), for analysis and tests (experts read ``info["state"]``)."""
        return {
            "gripper": self.data.qpos[self._gripper_q].copy(),
            "finger_opening": self._finger_opening(),
            "cube": self._cube_position().copy(),
            "target": self._target_position.copy(),
            "cube_half_size": CUBE_HALF,
            "step_length": STEP_LENGTH,
        }

    def _finger_opening(self) -> float:
        return 2 * (self._finger_offset - self._finger_half_width - float(self.data.qpos[self._finger_q]))

    def _cube_position(self) -> np.ndarray:
        return self.data.qpos[self._cube_q : self._cube_q + 3]

    def _reset_task(self) -> None:
        rng = self.np_random
        cube = rng.uniform(-0.12, 0.12, 2)
        while True:
            target = rng.uniform(-0.12, 0.12, 2)
            if np.linalg.norm(target - cube) >= 0.08:
                break
        gripper = np.array([*rng.uniform(-0.05, 0.05, 2), 0.15])
        self._target_position = np.array([*target, 0.0])
        self.data.mocap_pos[0] = [*target, 0.0005]
        self.data.qpos[self._gripper_q] = gripper
        self.data.qpos[self._cube_q : self._cube_q + 7] = [*cube, CUBE_HALF, 1, 0, 0, 0]
        self.data.ctrl[:] = [*gripper, 0.0]

    def _apply_action(self, action: np.ndarray) -> None:
        # The target integrates the deltas, not the measured position, so a held load cannot make it drift.
        position_target = np.clip(self.data.ctrl[0:3] + STEP_LENGTH * action[:3], GRIPPER_LOW, GRIPPER_HIGH)
        self.data.ctrl[0:3] = position_target
        self.data.ctrl[3] = FINGER_TRAVEL if action[3] > 0 else 0.0

    def _state_obs(self) -> np.ndarray:
        gripper = self.data.qpos[self._gripper_q]
        values = [*gripper, self._finger_opening(), *self._cube_position(), *self._target_position]
        return (np.array(values) / SCALE).astype(np.float32)

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        cube = self._cube_position()
        distance = float(np.linalg.norm(cube[:2] - self._target_position[:2]))
        resting = abs(float(cube[2]) - CUBE_HALF) <= REST_TOLERANCE
        released = self._finger_opening() > 2 * CUBE_HALF + 0.004
        success = distance <= SUCCESS_DISTANCE and resting and released
        return float(success), success, {"distance": distance}
