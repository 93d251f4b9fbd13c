"""Observation encoders: a history of observations to one conditioning vector for the denoiser."""

from __future__ import annotations

import torch
from torch import nn

from worldsim.policies.config import DiffusionPolicyConfig


class StateEncoder(nn.Module):
    """An MLP over the flattened, normalized history of low-dimensional states."""

    def __init__(self, config: DiffusionPolicyConfig):
        super().__init__()
        inputs = config.obs_horizon * config.obs_shape[0]
        self.net = nn.Sequential(
            nn.Linear(inputs, config.feature_dim),
            nn.Mish(),
            nn.Linear(config.feature_dim, config.feature_dim),
            nn.Mish(),
            nn.Linear(config.feature_dim, config.feature_dim),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.flatten(1))


class PixelEncoder(nn.Module):
    """A small CNN shared across the history's frames; frame features are concatenated, then projected.

    Input: uint8-range images ``[B, obs_horizon, H, W, 3]`` (already scaled to [-1, 1] by the policy).
    """

    def __init__(self, config: DiffusionPolicyConfig):
        super().__init__()
        channels = (32, 64, 128)
        layers, previous = [], 3
        for c in channels:
            layers += [nn.Conv2d(previous, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.Mish()]
            previous = c
        self.cnn = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.project = nn.Sequential(
            nn.Linear(config.obs_horizon * channels[-1], config.feature_dim),
            nn.Mish(),
            nn.Linear(config.feature_dim, config.feature_dim),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b = obs.shape[0]
        frames = obs.flatten(0, 1).permute(0, 3, 1, 2)
        return self.project(self.cnn(frames).reshape(b, -1))


def make_encoder(config: DiffusionPolicyConfig) -> nn.Module:
    return StateEncoder(config) if config.obs_type == "state" else PixelEncoder(config)
