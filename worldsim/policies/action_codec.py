"""Raw actions <-> the normalized space the model denoises, written once for torch and numpy.

Normalization (per dimension, or per chunk position and dimension), actions relative to the current
observation, RTI-DP's rules for discrete (±1) dimensions, and snapping them on output. The torch policy
and the onnxruntime runner both use this, so they cannot drift apart.

Relative actions: a dimension named in ``config.relative_to_obs`` is denoised as ``action - obs[d]`` at
the tick of the prediction (the *reference*), the way a robot policy predicts end-effector targets
relative to where the end effector is. Its chunk then depends on the reference, so moving a chunk from
one prediction to the next (RTI's warm start, the rolling window) goes through raw actions:
:meth:`ActionCodec.carry_over`.
"""

from __future__ import annotations

import numpy as np

from worldsim.core.array_ops import as_array_like, namespace
from worldsim.core.normalizer import NormalizationMode, Normalizer
from worldsim.policies.config import DiffusionPolicyConfig


def shift_chunk(chunk, executed: int):
    """The previous solution advanced by ``executed`` actions, the last action repeated to fill the end."""
    horizon = chunk.shape[1]
    if not 0 <= executed:
        raise ValueError(f"executed steps must be >= 0, got {executed}")
    if executed == 0:
        return chunk
    executed = min(executed, horizon - 1)
    xp = namespace(chunk)
    tail = xp.concatenate([chunk[:, -1:]] * executed, 1)
    return xp.concatenate([chunk[:, executed:], tail], 1)


def action_reference(config: DiffusionPolicyConfig, obs_history):
    """The raw point each action is relative to, ``[B, action_dim]`` (zeros for absolute dimensions), from
    raw observation histories ``[B, obs_horizon, *obs_shape]`` (a camera's ``{"pixels", "state"}``: its
    proprioceptive state): the current observation's named dimensions."""
    if isinstance(obs_history, dict):
        obs_history = obs_history["state"]
    obs_history = obs_history.float() if hasattr(obs_history, "float") else obs_history
    index = np.array([max(d, 0) for d in config.relative_to_obs])
    picked = obs_history[:, -1][:, index]
    return picked * as_array_like(np.array([d >= 0 for d in config.relative_to_obs]), picked)


def fit_relative_normalizer(
    config: DiffusionPolicyConfig, obs_windows: np.ndarray, action_windows: np.ndarray, mode: NormalizationMode
) -> Normalizer:
    """Statistics of training chunks ``[N, horizon, action_dim]`` relative to their references, one per
    chunk position: the first actions stay close to the reference, later ones range further, and a
    shared scale would spend the first actions' precision on the last ones' range."""
    return Normalizer.fit(action_windows - action_reference(config, obs_windows)[:, None], mode)


class ActionCodec:
    """Raw action chunks <-> the normalized chunks the model denoises (relative actions, discrete dims)."""

    def __init__(self, config: DiffusionPolicyConfig, normalizer: Normalizer):
        per_dim, per_position = (config.action_dim,), (config.horizon, config.action_dim)
        if normalizer.shape not in (per_dim, per_position):
            raise ValueError(
                f"the action normalizer has shape {normalizer.shape}, not {per_dim} (per dimension) "
                f"or {per_position} (per chunk position)"
            )
        self.config = config
        self.normalizer = normalizer
        self.discrete = list(config.discrete_dims)
        scale = np.ones(config.action_dim, np.float32)
        if config.discrete_rule == "scale":
            scale[self.discrete] = config.discrete_scale
        self.model_scale = scale
        self.relative = any(d >= 0 for d in config.relative_to_obs)
        # Shifting a chunk in model space is exact only when every position is coded alike.
        self.position_dependent = self.relative or normalizer.shape == per_position

    def reference(self, obs_history):
        """The raw point each action is relative to, ``[B, action_dim]`` (zeros for absolute dimensions),
        from raw observation histories ``[B, obs_horizon, *obs_shape]``; None for an absolute policy."""
        return action_reference(self.config, obs_history) if self.relative else None

    def to_model(self, actions, reference=None):
        """Raw chunks ``[B, H, A]`` to the normalized space the model denoises (discrete dims scaled by the rule)."""
        if self.relative:
            actions = actions - reference[:, None]
        return self.normalizer.normalize(actions) * as_array_like(self.model_scale, actions)

    def to_raw(self, chunk, reference=None):
        """A normalized chunk back to raw actions, discrete dims left continuous (see :meth:`from_model`)."""
        actions = self.normalizer.unnormalize(chunk / as_array_like(self.model_scale, chunk))
        return actions + reference[:, None] if self.relative else actions

    def from_model(self, chunk, reference=None):
        """A normalized chunk back to raw actions, discrete dims snapped to exactly ±1."""
        actions = self.to_raw(chunk, reference)
        if not self.discrete:
            return actions
        xp = namespace(actions)
        snapped = xp.where(actions > 0, 1.0, -1.0)
        mask = np.zeros(self.config.action_dim, bool)
        mask[self.discrete] = True
        return xp.where(as_array_like(mask, snapped > 0), snapped, actions)

    def carry_over(self, chunk, executed: int, old_reference=None, new_reference=None, signal=None):
        """``chunk`` (normalized, predicted at ``old_reference``) advanced by ``executed`` actions and coded
        for the prediction at ``new_reference``: RTI-DP's shifted warm start.

        ``signal``: for partly noisy tokens, the ``alpha`` of each chunk position's noise level (the
        rolling window). The map is affine, ``x -> a x + b``; a noisy token ``alpha x0 + sigma eps`` keeps
        its noise and gets ``a x + alpha b``, so only its clean part moves (its noise is rescaled by ``a``,
        the ratio of neighbouring positions' scales, close to 1).
        """
        if not self.position_dependent:
            return shift_chunk(chunk, executed)
        moved = self.to_model(shift_chunk(self.to_raw(chunk, old_reference), executed), new_reference)
        if signal is None:
            return moved
        zero = chunk * 0
        offset = self.to_model(shift_chunk(self.to_raw(zero, old_reference), executed), new_reference)
        return moved - (1 - as_array_like(signal, chunk)[None, :, None]) * offset

    def prepare_guess(self, guess):
        """RTI-DP-clip: shrink the discrete dims of a warm-start guess to ``sign(g) * discrete_scale``."""
        if self.config.discrete_rule != "clip" or not self.discrete:
            return guess
        xp = namespace(guess)
        mask = np.zeros(self.config.action_dim, bool)
        mask[self.discrete] = True
        shrunk = xp.sign(guess) * self.config.discrete_scale
        return xp.where(as_array_like(mask, guess > 0), shrunk, guess)
