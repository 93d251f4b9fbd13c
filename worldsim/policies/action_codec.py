"""Raw actions <-> the normalized space the model denoises, written once for torch and numpy.

Normalization per dimension, RTI-DP's rules for discrete (±1) dimensions, and snapping them on output.
The torch policy and the onnxruntime runner both use this, so they cannot drift apart.
"""

from __future__ import annotations

import numpy as np

from worldsim.core.array_ops import as_array_like, namespace
from worldsim.core.normalizer import Normalizer
from worldsim.policies.config import DiffusionPolicyConfig


class ActionCodec:
    def __init__(self, config: DiffusionPolicyConfig, normalizer: Normalizer):
        if normalizer.shape != (config.action_dim,):
            raise ValueError(f"the action normalizer has shape {normalizer.shape}, not ({config.action_dim},)")
        self.config = config
        self.normalizer = normalizer
        self.discrete = list(config.discrete_dims)
        scale = np.ones(config.action_dim, np.float32)
        if config.discrete_rule == "scale":
            scale[self.discrete] = config.discrete_scale
        self.model_scale = scale

    def to_model(self, actions):
        """Raw actions to the normalized space the model denoises (discrete dims scaled by the rule)."""
        return self.normalizer.normalize(actions) * as_array_like(self.model_scale, actions)

    def from_model(self, chunk):
        """A normalized chunk back to raw actions, discrete dims snapped to exactly ±1."""
        actions = self.normalizer.unnormalize(chunk / as_array_like(self.model_scale, chunk))
        if not self.discrete:
            return actions
        xp = namespace(actions)
        snapped = xp.where(actions > 0, 1.0, -1.0)
        mask = np.zeros(self.config.action_dim, bool)
        mask[self.discrete] = True
        return xp.where(as_array_like(mask, snapped > 0), snapped, actions)

    def prepare_guess(self, guess):
        """RTI-DP-clip: shrink the discrete dims of a warm-start guess to ``sign(g) * discrete_scale``."""
        if self.config.discrete_rule != "clip" or not self.discrete:
            return guess
        xp = namespace(guess)
        mask = np.zeros(self.config.action_dim, bool)
        mask[self.discrete] = True
        shrunk = xp.sign(guess) * self.config.discrete_scale
        return xp.where(as_array_like(mask, guess > 0), shrunk, guess)
