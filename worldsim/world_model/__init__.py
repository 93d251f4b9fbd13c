"""The action-conditioned streaming diffusion world model: tokenizers, model, streaming session, training.

The names below are imported on first use, so the torch-free modules of this package (``spaces``,
``streaming``) serve the onnxruntime runner without pulling in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worldsim.world_model.model import WorldModel, WorldModelConfig
    from worldsim.world_model.session import SessionConfig, StreamingSession

_HOMES = {
    "WorldModel": "model",
    "WorldModelConfig": "model",
    "SessionConfig": "streaming",
    "StreamingSession": "session",
}
__all__ = ["SessionConfig", "StreamingSession", "WorldModel", "WorldModelConfig"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"worldsim.world_model.{_HOMES[name]}"), name)
