"""worldsim: streaming diffusion world models and real-time diffusion policies on one denoising core.

Importing the package registers its Gymnasium environments under the ``worldsim/`` namespace. It imports
neither torch nor MuJoCo, so light consumers (the ZeroMQ bridge serving an ONNX model) stay light.
"""

from worldsim.envs.registration import register_envs

__version__ = "0.1.0"

register_envs()
