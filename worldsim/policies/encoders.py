"""Observation encoders: a history of observations to one conditioning vector for the denoiser.

The pixel encoder follows Diffusion Policy's visual recipe scaled to a 2-core CPU: a small residual CNN
with GroupNorm (batch statistics would differ between training and batch-1 control), a spatial softmax
that turns feature maps into keypoint coordinates (where things are, which is what a policy needs), and a
random shift of the training frames. It runs once per control step: every denoiser call of a prediction
(RTI's few steps, DDPM's hundred, the rolling window's) reuses the one conditioning vector, and its CNN
sees each camera frame once (``frame_features``; the frames a history shares with the previous step's
keep their features, :mod:`worldsim.policies.frame_features`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from worldsim.policies.config import DiffusionPolicyConfig


class StateEncoder(nn.Module):
    """An MLP over the flattened, normalized history of low-dimensional states."""

    def __init__(self, config: DiffusionPolicyConfig):
        super().__init__()
        inputs = config.obs_horizon * config.state_feature_size
        self.net = nn.Sequential(
            nn.Linear(inputs, config.feature_dim),
            nn.Mish(),
            nn.Linear(config.feature_dim, config.feature_dim),
            nn.Mish(),
            nn.Linear(config.feature_dim, config.feature_dim),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.flatten(1))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a skip connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.Mish(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x + self.body(x))


class SpatialSoftmax(nn.Module):
    """Each channel's softmax over positions, reduced to its expected (x, y) in [-1, 1]: ``[N, C, H, W]`` to
    ``[N, 2C]`` keypoints. The temperature is learned."""

    def __init__(self):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, c, h, w = features.shape
        weights = torch.softmax(features.flatten(2) / self.log_temperature.exp(), dim=-1).view(n, c, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=features.device, dtype=features.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=features.device, dtype=features.dtype)
        x = (weights.sum(2) * xs).sum(-1)
        y = (weights.sum(3) * ys).sum(-1)
        return torch.cat([x, y], dim=-1)


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Frames ``[B, T, C, H, W]`` shifted by up to ``pad`` pixels (edge-padded, then cropped back to ``H x W``
    at a random offset); one offset per batch row, shared by its history."""
    b, t, c, h, w = frames.shape
    padded = F.pad(frames.flatten(0, 1), (pad, pad, pad, pad), mode="replicate").view(b, t, c, h + 2 * pad, -1)
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=frames.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=frames.device))[:, None, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(w, device=frames.device))[:, None, None, None, :]
    batch = torch.arange(b, device=frames.device)[:, None, None, None, None]
    time = torch.arange(t, device=frames.device)[None, :, None, None, None]
    channel = torch.arange(c, device=frames.device)[None, None, :, None, None]
    return padded[batch, time, channel, rows, cols]


class PixelEncoder(nn.Module):
    """Camera frames (and proprioception) to one conditioning vector.

    Each frame of the history goes through the same CNN: two stride-2 convolutions, a residual stage, another
    stride-2 convolution and residual stage (a 64-pixel frame ends as 8 x 8 maps), a 1x1 convolution to
    ``KEYPOINTS`` maps and a spatial softmax (sub-cell positions: the softmax's expectation). The
    history's keypoints and the normalized proprioceptive states are concatenated and projected to
    ``feature_dim``. Input: frames ``[B, T, H, W, 3]`` scaled to [-1, 1], states ``[B, T, P]`` normalized (or
    None). In training mode frames are randomly shifted by ``config.image_shift`` pixels; never in eval mode.
    """

    KEYPOINTS = 32

    def __init__(self, config: DiffusionPolicyConfig):
        super().__init__()
        self.shift = config.image_shift
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GroupNorm(8, 32), nn.Mish(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.GroupNorm(8, 32), nn.Mish(),
            ResidualBlock(32),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GroupNorm(8, 64), nn.Mish(),
            ResidualBlock(64),
            nn.Conv2d(64, self.KEYPOINTS, 1),
            SpatialSoftmax(),
        )  # fmt: skip
        per_frame = 2 * self.KEYPOINTS + config.state_feature_size
        self.project = nn.Sequential(
            nn.Linear(config.obs_horizon * per_frame, config.feature_dim),
            nn.Mish(),
            nn.Linear(config.feature_dim, config.feature_dim),
        )

    def forward(self, frames: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        b, t = frames.shape[:2]
        frames = frames.permute(0, 1, 4, 2, 3)
        if self.training and self.shift:
            frames = random_shift(frames, self.shift)
        return self.combine(self.cnn(frames.flatten(0, 1)).view(b, t, -1), states)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Keypoints ``[N, 2 * KEYPOINTS]`` of single frames ``[N, H, W, 3]`` in [-1, 1] (never shifted): the
        per-frame half of ``forward``, which a control loop computes once per frame."""
        return self.cnn(frames.permute(0, 3, 1, 2))

    def combine(self, keypoints: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        """The history's keypoints ``[B, T, 2 * KEYPOINTS]`` (and normalized states ``[B, T, P]``) projected to
        the conditioning vector: the other half of ``forward``."""
        parts = keypoints if states is None else torch.cat([keypoints, states], dim=-1)
        return self.project(parts.flatten(1))


def make_encoder(config: DiffusionPolicyConfig) -> nn.Module:
    return StateEncoder(config) if config.obs_type == "state" else PixelEncoder(config)
