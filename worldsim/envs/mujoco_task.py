"""Shared machinery of worldsim's MuJoCo tasks: model, stepping, observation types and fast rendering."""

from __future__ import annotations

import os
from typing import Any, Literal

# Without a display, render offscreen through EGL (works on servers and CI); a user's own choice wins.
if "DISPLAY" not in os.environ and "WAYLAND_DISPLAY" not in os.environ:
    os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

ObsType = Literal["state", "pixels", "state_pixels"]
OBS_TYPES: tuple[str, ...] = ("state", "pixels", "state_pixels")

# Offscreen buffers are sized in the model XML; this bounds `image_size` so one XML serves every size.
MAX_IMAGE_SIZE = 1024

# Shadow maps dominate the cost of a small software-rendered (EGL/llvmpipe) frame, so lights cast none and
# materials reflect nothing: a 96x96 frame then renders in about a millisecond.
VISUAL_XML = f"""
  <visual>
    <global offwidth="{MAX_IMAGE_SIZE}" offheight="{MAX_IMAGE_SIZE}"/>
    <quality shadowsize="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.15 0.15 0.15" specular="0 0 0"/>
  </visual>
"""


class MujocoTaskEnv(gym.Env):
    """Base class of worldsim's MuJoCo tasks.

    A subclass provides the model XML (including :data:`VISUAL_XML` and a camera), the state observation
    space and the task logic through ``_reset_task``, ``_apply_action``, ``_state_obs`` and ``_evaluate``.
    This class handles the three observation types (``"state"``: a flat float32 Box; ``"pixels"``: a
    uint8 ``(image_size, image_size, 3)`` RGB Box from the task camera; ``"state_pixels"``: a Dict with
    both under ``"state"`` and ``"pixels"``), physics sub-stepping, and lazy offscreen rendering, so that
    environments pickle and can be created in vector-env worker processes before any GL context exists.

    Every ``reset`` and ``step`` info holds ``"is_success"``, the task's extra entries, and ``"state"``: a
    copy of the low-dimensional state observation (float32, the vector ``obs_type="state"`` returns), so that
    scripted experts (``worldsim.envs.experts``) act the same whatever the observation type.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        *,
        xml: str,
        frame_skip: int,
        camera: str,
        state_space: spaces.Box,
        action_space: spaces.Box,
        obs_type: ObsType,
        image_size: int,
        render_mode: str | None,
    ) -> None:
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
        if not isinstance(image_size, int | np.integer) or not 8 <= image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be an int in [8, {MAX_IMAGE_SIZE}], got {image_size!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.frame_skip = frame_skip
        self.camera = camera
        self.obs_type = obs_type
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self._renderer: mujoco.Renderer | None = None
        self.state_space = state_space
        self.action_space = action_space
        pixel_space = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        if obs_type == "state":
            self.observation_space = state_space
        elif obs_type == "pixels":
            self.observation_space = pixel_space
        else:
            self.observation_space = spaces.Dict({"state": state_space, "pixels": pixel_space})

    # -- task hooks -------------------------------------------------------------------------------------
    def _reset_task(self) -> None:
        """Sample an initial state with ``self.np_random`` and write it into ``self.data``."""
        raise NotImplementedError

    def _apply_action(self, action: np.ndarray) -> None:
        """Set ``self.data.ctrl`` (and any task-side targets) for the next control period."""
        raise NotImplementedError

    def _state_obs(self) -> np.ndarray:
        raise NotImplementedError

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        """Return ``(reward, is_success, extra_info)`` for the current state."""
        raise NotImplementedError

    # -- gymnasium API ----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self._reset_task()
        mujoco.mj_forward(self.model, self.data)
        _, success, extra = self._evaluate()
        return self._observation(), self._info(success, extra)

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action must be finite, got {action}")
        self._apply_action(np.clip(action, self.action_space.low, self.action_space.high))
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        reward, success, extra = self._evaluate()
        return self._observation(), float(reward), bool(success), False, self._info(success, extra)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._render_camera()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- helpers ----------------------------------------------------------------------------------------
    def _info(self, success: bool, extra: dict[str, Any]) -> dict[str, Any]:
        # The state vector goes into every info, whatever obs_type is: experts read it from there.
        return {"is_success": success, **extra, "state": self._state_obs()}

    def _observation(self):
        if self.obs_type == "state":
            return self._state_obs()
        if self.obs_type == "pixels":
            return self._render_camera()
        return {"state": self._state_obs(), "pixels": self._render_camera()}

    def _render_camera(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._renderer.update_scene(self.data, camera=self.camera)
        return self._renderer.render()
