"""worldsim: streaming diffusion world models and real-time diffusion policies on one denoising core.

Importing the package registers its Gymnasium environments under the ``worldsim/`` namespace. It imports
neither torch nor MuJoCo, so light consumers (the ZeroMQ bridge serving an ONNX model) stay light.
"""

import os

# The one place that chooses MuJoCo's renderer: without a display, offscreen through EGL (servers, CI). It
# must be set before MuJoCo is first imported, and every worldsim module imports this package first. A
# user's own MUJOCO_GL wins.
if "DISPLAY" not in os.environ and "WAYLAND_DISPLAY" not in os.environ:
    os.environ.setdefault("MUJOCO_GL", "egl")

from worldsim.envs.registration import register_envs  # noqa: E402

__version__ = "0.1.0"

register_envs()
