"""Streaming generation: ``reset(context_obs, context_actions)``, then ``step(action) -> next_obs`` forever.

The session owns a bounded KV cache (``sink_frames`` pinned frames plus a sliding window of
``window_frames``, optionally an EMA sink), so memory is allocated once at ``reset`` and stays flat
however long the stream runs. Two samplers, both built from the core:

- ``"autoregressive"``: each new frame is denoised from pure noise to clean in ``steps`` DDIM steps
  (core ``denoise`` over a ``full_sequence`` plan) while attending to the cache; the clean frame is
  then committed to the cache at ``context_level``. Cost: ``steps + 1`` network calls per frame.
- ``"rolling"``: the core ``RollingDenoiser`` keeps the newest ``rolling_window`` (W) frames at staggered
  noise levels ``k / W``; ``step(action)`` admits the next frame as noise conditioned on ``action``, one
  network call moves every slot down one notch, and the oldest slot, now clean after W refinements,
  is committed to the cache. A frame only becomes clean W - 1 steps after its action, but
  ``step`` must answer at once, so it returns the network's clean estimate (x0 prediction) of the
  newest frame from that same call; the cache receives the refined version later. Cost: 1 network
  call over W frames plus one commit call per frame. The cache's window is shortened by W - 1 frames
  so that every frame sees as many past frames as in training.

``context_level > 0`` re-noises generated frames to that level before committing them (the model is
trained with near-clean context for this); real context frames given to ``reset`` are committed clean.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from worldsim.core.plans import full_sequence
from worldsim.core.rolling import RollingDenoiser
from worldsim.core.sampling import denoise
from worldsim.world_model.model import WorldModel

Sampling = Literal["autoregressive", "rolling"]
SAMPLINGS: tuple[str, ...] = ("autoregressive", "rolling")


@dataclass
class SessionConfig:
    """How a :class:`StreamingSession` samples; ``None`` sizes default to the model's training pattern."""

    sampling: Sampling = "autoregressive"
    steps: int = 2
    """Autoregressive: DDIM steps per frame."""
    rolling_window: int = 3
    """Rolling: frames denoised jointly at staggered levels (each frame gets this many refinements)."""
    sink_frames: int | None = None
    window_frames: int | None = None
    ema_decay: float | None = None
    context_level: float = 0.05
    """Noise level at which generated frames enter the cache; 0 commits them clean (drifts much faster)."""

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.steps < 1 or self.rolling_window < 1:
            raise ValueError(f"steps and rolling_window must be >= 1, got {self.steps}, {self.rolling_window}")
        if not 0.0 <= self.context_level < 1.0:
            raise ValueError(f"context_level must be in [0, 1), got {self.context_level}")


class StreamingSession:
    """Plays a :class:`WorldModel` frame by frame with constant memory (one stream, batch 1).

    Observations and actions are numpy arrays of the model's spaces, without a batch axis.
    """

    def __init__(self, model: WorldModel, config: SessionConfig | None = None, *, seed: int | None = None):
        self.model = model.eval()
        self.config = config or SessionConfig()
        c, mc = self.config, model.config
        self.sink_frames = mc.sink_frames if c.sink_frames is None else c.sink_frames
        window = mc.window_frames if c.window_frames is None else c.window_frames
        self.window_frames = window - (c.rolling_window - 1 if c.sampling == "rolling" else 0)
        if self.window_frames < 1 or self.sink_frames < 0:
            raise ValueError(
                f"a cache window of {window} frames leaves no room for a rolling window of {c.rolling_window}"
            )
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self.cache = None
        self.num_steps = 0
        p = model.tokens_per_frame
        self._plan = full_sequence(p, c.steps)
        self._rolling: RollingDenoiser | None = None
        self._slot_conds: deque[torch.Tensor] = deque()
        self._last_call: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # -- public API -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def reset(self, context_obs, context_actions=None, *, seed: int | None = None) -> None:
        """Start a stream from real observations ``[K, *obs_shape]`` and the ``K - 1`` actions between them."""
        model = self.model
        obs = self._check_context(context_obs, context_actions)
        if seed is not None:
            self.generator.manual_seed(seed)
        self.cache = model.denoiser.new_cache(
            1, sink_frames=self.sink_frames, window_frames=self.window_frames, ema_decay=self.config.ema_decay
        )
        self.num_steps = 0
        self._slot_conds.clear()
        if self.config.sampling == "rolling":
            self._rolling = RollingDenoiser(
                self._record_call,
                model.schedule,
                window=self.config.rolling_window,
                parameterization=model.config.parameterization,
                tokens_per_slot=model.tokens_per_frame,
                generator=self.generator,
            )
        tokens = model.tokenizer.encode(obs)
        cond = model.action_encoder.no_action(1)
        if len(obs) > 1:
            cond = torch.cat([cond, model.action_encoder.encode(np.asarray(context_actions))])
        # Real frames enter clean; frame by frame once they exceed the cache, so the attention pattern
        # (and the evictions) are exactly those of streaming.
        if len(obs) <= self.cache.capacity_frames:
            self._commit(tokens.reshape(1, -1, tokens.shape[-1]), cond, level=0.0)
        else:
            for i in range(len(obs)):
                self._commit(tokens[i : i + 1], cond[i : i + 1], level=0.0)

    @torch.inference_mode()
    def step(self, action) -> np.ndarray:
        """Generate the observation that ``action`` leads to from the current one."""
        if self.cache is None:
            raise ValueError("call reset(context_obs, context_actions) before step()")
        model = self.model
        encoder = model.action_encoder
        cond = encoder.encode(self._one_action(action))
        p, d = model.tokens_per_frame, model.tokenizer.token_dim
        token_cond = cond[:, None, :].expand(1, p, cond.shape[-1])
        noise = torch.randn(1, p, d, generator=self.generator)
        if self.config.sampling == "autoregressive":
            frame = denoise(
                self._cached_denoiser,
                noise,
                self._plan,
                model.schedule,
                parameterization=model.config.parameterization,
                cond=token_cond,
                generator=self.generator,
            )
            self._commit(frame, cond, level=self.config.context_level)
        else:
            self._slot_conds.append(cond)
            emitted = self._rolling.tick(noise, token_cond=token_cond)
            x, level, pred = self._last_call
            frame, _ = model.schedule.split(pred[:, -p:], x[:, -p:], level[:, -p:], model.config.parameterization)
            if emitted is not None:
                self._commit(emitted, self._slot_conds.popleft(), level=self.config.context_level)
        self.num_steps += 1
        return model.tokenizer.decode(frame)[0]

    @property
    def memory_bytes(self) -> int:
        """Bytes held for the stream: the KV cache plus the rolling window's frames (both bounded)."""
        if self.cache is None:
            return 0
        window = self._rolling.tokens if self._rolling is not None else None
        extra = 0 if window is None else window.numel() * window.element_size()
        return self.cache.nbytes + extra

    # -- internals --------------------------------------------------------------------------------------
    def _cached_denoiser(self, x, level, cond):
        return self.model.denoiser(x, level, cond, self.cache)

    def _record_call(self, x, level, cond):
        pred = self.model.denoiser(x, level, cond, self.cache)
        self._last_call = (x, level, pred)
        return pred

    def _commit(self, tokens: torch.Tensor, cond: torch.Tensor, *, level: float) -> None:
        """Append frames ``tokens [1, F * P, D]`` (conditioned by ``cond [F, C]``) to the cache at ``level``."""
        model = self.model
        p = model.tokens_per_frame
        levels = torch.full(tokens.shape[:2], level)
        if level > 0:
            noise = torch.randn(tokens.shape, generator=self.generator)
            tokens = model.schedule.add_noise(tokens, noise, levels)
        token_cond = cond.repeat_interleave(p, dim=0)[None]
        model.denoiser(tokens, levels, token_cond, self.cache, update_cache=True)

    def _check_context(self, context_obs, context_actions) -> np.ndarray:
        model = self.model
        obs = np.asarray(context_obs)
        shape = tuple(model.observation_space.shape)
        if obs.ndim != len(shape) + 1 or tuple(obs.shape[1:]) != shape or len(obs) < 1:
            raise ValueError(f"context_obs must have shape [K >= 1, {', '.join(map(str, shape))}], got {obs.shape}")
        if not np.isfinite(obs).all():
            raise ValueError("context_obs contains NaN or infinite values")
        if len(obs) == 1 and context_actions is not None and len(np.asarray(context_actions)) != 0:
            raise ValueError("one context observation takes no context actions")
        if len(obs) > 1:
            if context_actions is None:
                raise ValueError(f"{len(obs)} context observations need the {len(obs) - 1} actions between them")
            actions = np.asarray(context_actions)
            if len(actions) != len(obs) - 1:
                raise ValueError(f"{len(obs)} context observations need {len(obs) - 1} actions, got {len(actions)}")
            model.action_encoder.check(actions)
        return obs

    def _one_action(self, action) -> np.ndarray:
        encoder = self.model.action_encoder
        action = np.asarray(action)
        if encoder.discrete:
            if action.ndim != 0:
                raise ValueError(f"a discrete action must be a scalar integer, got shape {action.shape}")
        elif action.shape != encoder.action_space.shape:
            raise ValueError(f"action must have shape {encoder.action_space.shape}, got {action.shape}")
        return encoder.check(action[None])
