"""A small convolutional autoencoder that turns RGB frames into a compact latent grid for the world model.

Sized for two CPU cores: a 4x4 patchify convolution, then two stride-2 convolutions down to a grid 16 times
smaller than the frame (``downsample=16``: 4x4 for 64x64 frames, about 10 M multiply-adds per frame each way)
or one stride-2 and one stride-1 convolution down to a grid 8 times smaller (``downsample=8``: 8x8, four times
the latent values, a lower round-trip error), and the mirror image up with a pixel shuffle. Small objects (Push-T's
pusher is a few pixels wide) would vanish under a plain MSE, so the loss up-weights pixels that differ from
the dataset's background image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldsim.world_model.config import AutoencoderConfig


class ConvAutoencoder(nn.Module):
    """``encode(images [N, H, W, 3] in 0..255) -> [N, C, H/d, W/d]`` (``d = downsample``); ``decode`` goes back."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        c, z = config.channels, config.latent_channels
        halve = config.downsample == 16  # the third stage halves the grid again, or keeps it
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c // 2, 4, stride=4), nn.GELU(),
            nn.Conv2d(c // 2, c, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c, c, 4, stride=2, padding=1) if halve else nn.Conv2d(c, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, z, 1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(z, c, 1), nn.GELU(),
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1) if halve else nn.Conv2d(c, c, 3, padding=1), nn.GELU(),
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c // 2, c // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(c // 2, 3 * 16, 1), nn.PixelShuffle(4),
        )  # fmt: skip
        # Pixels are fitted relative to the background, so an untrained decoder already draws the empty table.
        self.register_buffer("background", torch.zeros(3, config.image_size, config.image_size))

    @property
    def latent_side(self) -> int:
        return self.config.image_size // self.config.downsample

    def _to_unit(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (size, size, 3):
            raise ValueError(f"images must have shape [N, {size}, {size}, 3], got {tuple(images.shape)}")
        return images.float().permute(0, 3, 1, 2) / 127.5 - 1.0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(self._to_unit(images) - self.background)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images in [-1, 1], ``[N, 3, H, W]``."""
        return self.decoder(latents) + self.background

    @staticmethod
    def to_uint8(images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] ``[N, 3, H, W]`` to uint8 frames ``[N, H, W, 3]``."""
        return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)

    def set_background(self, images: np.ndarray) -> None:
        """Use the per-pixel median of ``images`` (uint8 ``[N, H, W, 3]``) as the background."""
        median = np.median(np.asarray(images), axis=0).astype(np.float32)
        self.background.copy_(self._to_unit(torch.from_numpy(median)[None])[0])

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Foreground-weighted reconstruction error of ``batch["images"]`` (uint8 ``[N, H, W, 3]``)."""
        target = self._to_unit(batch["images"])
        reconstruction = self.decode(self.encoder(target - self.background))
        foreground = (target - self.background).abs().amax(dim=1, keepdim=True) > 0.05
        weight = 1.0 + self.config.foreground_weight * foreground.float()
        return (weight * F.mse_loss(reconstruction, target, reduction="none")).mean()
