"""Tokenizers: observations to frame tokens ``[N, P, D]`` and back, actions to per-frame conditioning.

- :class:`~worldsim.world_model.state_tokenizer.StateTokenizer` (torch-free, re-exported here): a
  low-dimensional state is one token per frame, standardized, with its standardized change since the
  previous frame (delta mode).
- :class:`PixelTokenizer`: an RGB frame goes through a small convolutional autoencoder
  (:mod:`worldsim.world_model.autoencoder`) to a latent grid, cut into ``tokens_per_frame`` tokens and
  standardized; the diffusion model never sees raw pixels (measured: 64 raw patch tokens per frame are
  far too slow for 30 frames per second on two CPU cores).
- :class:`~worldsim.world_model.action_encoder.ActionEncoder` (torch-free, re-exported here): the action that
  leads *to* a frame becomes that frame's conditioning vector: a normalized Box action or a one-hot
  Discrete action, plus a flag that is 0 for a frame no action led to (the first frame of a stream).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from worldsim.core.normalizer import Normalizer
from worldsim.world_model.action_encoder import ActionEncoder
from worldsim.world_model.autoencoder import ConvAutoencoder
from worldsim.world_model.state_tokenizer import StateTokenizer

__all__ = ["ActionEncoder", "PixelTokenizer", "StateTokenizer"]


def _as_float_tensor(x, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, device=device).float()


class PixelTokenizer(nn.Module):
    """Frames ``uint8 [N, H, W, 3]`` to ``tokens_per_frame`` standardized latent tokens, and back.

    ``latent_normalizer=None`` starts with the identity; fit it on :meth:`raw_tokens` of training frames.

    The autoencoder's latent grid ``[C, h, w]`` is split into a ``g x g`` grid of cells
    (``g * g = tokens_per_frame``); each token is one cell's ``C * (h / g) * (w / g)`` latent values.
    """

    def __init__(self, autoencoder: ConvAutoencoder, latent_normalizer: Normalizer | None, tokens_per_frame: int):
        super().__init__()
        grid = int(round(tokens_per_frame**0.5))
        h = autoencoder.latent_side
        if grid * grid != tokens_per_frame or h % grid:
            raise ValueError(
                f"tokens_per_frame must be a square whose side divides the latent side {h}, got {tokens_per_frame}"
            )
        self.autoencoder = autoencoder
        self.grid = grid
        self.tokens_per_frame = tokens_per_frame
        self.token_dim = autoencoder.config.latent_channels * (h // grid) ** 2
        self.obs_shape: tuple[int, ...] = (autoencoder.config.image_size, autoencoder.config.image_size, 3)
        if latent_normalizer is None:  # identity until fitted on raw_tokens of the training frames
            latent_normalizer = Normalizer(
                "identity", np.zeros(self.token_dim, np.float32), np.ones(self.token_dim, np.float32)
            )
        if latent_normalizer.shape != (self.token_dim,):
            raise ValueError(f"latent normalizer has shape {latent_normalizer.shape}, tokens have {self.token_dim}")
        self.latent_normalizer = latent_normalizer

    def latents_to_tokens(self, z: torch.Tensor) -> torch.Tensor:
        n, c, h, _ = z.shape
        g, cell = self.grid, h // self.grid
        z = z.view(n, c, g, cell, g, cell).permute(0, 2, 4, 1, 3, 5)
        return z.reshape(n, g * g, c * cell * cell)

    def tokens_to_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[0]
        g, c = self.grid, self.autoencoder.config.latent_channels
        cell = self.autoencoder.latent_side // g
        z = tokens.reshape(n, g, g, c, cell, cell).permute(0, 3, 1, 4, 2, 5)
        return z.reshape(n, c, g * cell, g * cell)

    def raw_tokens(self, obs) -> torch.Tensor:
        """Unnormalized latent tokens of ``uint8`` frames (to fit the latent normalizer)."""
        images = _as_float_tensor(obs, next(self.autoencoder.parameters()).device)
        return self.latents_to_tokens(self.autoencoder.encode(images))

    def encode(self, obs, previous=None) -> torch.Tensor:
        """Frames ``uint8 [N, H, W, 3]`` to tokens ``[N, P, D]`` (``previous`` is unused: frames stand alone)."""
        return self.latent_normalizer.normalize(self.raw_tokens(obs))

    def decode(self, tokens: torch.Tensor, previous=None) -> np.ndarray:
        """Tokens to ``uint8`` frames (``previous`` is unused)."""
        return self.autoencoder.to_uint8(self.decode_images(tokens)).cpu().numpy()

    def decode_images(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens to images in [-1, 1] ``[N, 3, H, W]`` (before the rounding to uint8 frames)."""
        return self.autoencoder.decode(self.tokens_to_latents(self.latent_normalizer.unnormalize(tokens)))

    def tensors(self) -> dict:
        tensors = {f"tokenizer.autoencoder.{k}": v for k, v in self.autoencoder.state_dict().items()}
        return tensors | self.latent_normalizer.state_dict("tokenizer.latent")

    def config(self) -> dict:
        return {
            "kind": "pixels",
            "autoencoder": self.autoencoder.config.to_dict(),
            "latent_mode": self.latent_normalizer.mode,
            "tokens_per_frame": self.tokens_per_frame,
        }

    @classmethod
    def from_tensors(cls, tensors: dict, config: dict) -> PixelTokenizer:
        from worldsim.world_model.autoencoder import AutoencoderConfig

        autoencoder = ConvAutoencoder(AutoencoderConfig(**config["autoencoder"]))
        prefix = "tokenizer.autoencoder."
        autoencoder.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        autoencoder.eval().requires_grad_(False)
        latent = Normalizer.from_state_dict(tensors, "tokenizer.latent", config["latent_mode"])
        return cls(autoencoder, latent, config["tokens_per_frame"])
