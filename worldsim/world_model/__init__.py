"""The action-conditioned streaming diffusion world model: tokenizers, model, streaming session, training.

The names below are imported on first use, so the torch-free modules of this package (``config``,
``streaming``, ``action_encoder``) serve the onnxruntime runner without pulling in torch.
"""

from worldsim.core.lazy_exports import lazy_attributes

_HOMES = {
    "WorldModel": "model",
    "WorldModelConfig": "config",
    "TrainWorldModelConfig": "config",
    "SelfForcingConfig": "config",
    "SessionConfig": "streaming",
    "StreamingSession": "session",
    "WorldModelEnv": "env",
    "train_world_model": "train",
    "self_force": "self_forcing",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_attributes(__name__, _HOMES)
