"""The torch streaming session: a :class:`WorldModel` played frame by frame through a bounded KV cache.

The samplers themselves (autoregressive and rolling, sink + window, context noise) live in
:mod:`worldsim.world_model.streaming`, shared with the onnxruntime runner; see its docstring.
"""

from __future__ import annotations

import numpy as np
import torch

from worldsim.core.kv_cache import KVCache
from worldsim.world_model.frame_window import FrameWindow
from worldsim.world_model.model import WorldModel
from worldsim.world_model.state_tokenizer import StateTokenizer
from worldsim.world_model.streaming import SAMPLINGS, Sampling, SessionConfig, StreamingSessionBase, StreamSpec

__all__ = ["SAMPLINGS", "Sampling", "SessionConfig", "StreamingSession"]


class StreamingSession(StreamingSessionBase):
    """Plays a :class:`WorldModel` frame by frame with constant memory (one stream, batch 1).

    Observations and actions are numpy arrays of the model's spaces, without a batch axis.
    """

    def __init__(self, model: WorldModel, config: SessionConfig | None = None, *, seed: int | None = None):
        self.model = model.eval()
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(seed)
        spec = StreamSpec(
            observation_space=model.observation_space,
            action_encoder=model.action_encoder,
            schedule=model.schedule,
            parameterization=model.config.parameterization,
            tokens_per_frame=model.tokens_per_frame,
            token_dim=model.tokenizer.token_dim,
            sink_frames=model.config.sink_frames,
            window_frames=model.config.window_frames,
            state_tokenizer=model.tokenizer if isinstance(model.tokenizer, StateTokenizer) else None,
            network=model.config.network,
        )
        super().__init__(spec, config, generator=generator, like=torch.zeros(()))

    @torch.inference_mode()
    def reset(self, context_obs, context_actions=None, *, seed: int | None = None) -> None:
        super().reset(context_obs, context_actions, seed=seed)

    @torch.inference_mode()
    def step(self, action) -> np.ndarray:
        return super().step(action)

    def _new_cache(self) -> KVCache | FrameWindow:
        return self.model.denoiser.new_cache(
            1, sink_frames=self.sink_frames, window_frames=self.window_frames, ema_decay=self.config.ema_decay
        )

    def _network(self, x, level, cond, *, update_cache: bool):
        return self.model.denoiser(x, level, cond, self.cache, update_cache=update_cache)

    def _encode_frames(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.model.tokenizer.encode(obs))

    def _decode_frames(self, tokens: torch.Tensor) -> np.ndarray:
        return self.model.tokenizer.decode(tokens)
