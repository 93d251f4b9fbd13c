"""The action-conditioned streaming diffusion world model: tokenizers, model, streaming session, training."""

from worldsim.world_model.model import WorldModel, WorldModelConfig
from worldsim.world_model.session import SessionConfig, StreamingSession

__all__ = ["SessionConfig", "StreamingSession", "WorldModel", "WorldModelConfig"]
