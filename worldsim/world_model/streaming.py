"""Streaming generation: ``reset(context_obs, context_actions)``, then ``step(action) -> next_obs`` forever.

This module holds the sampling half of a streaming session, free of torch, so the torch
:class:`~worldsim.world_model.session.StreamingSession` and the onnxruntime
:class:`~worldsim.export.onnx_world_model.OnnxWorldModelSession` run the very same code; a subclass
only supplies the network call, the cache buffers and the tokenizer.

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

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np

from worldsim.core.array_ops import as_array_like, namespace, randn_like, zeros
from worldsim.core.kv_cache import KVCache
from worldsim.core.plans import full_sequence
from worldsim.core.rolling import RollingDenoiser
from worldsim.core.sampling import denoise
from worldsim.core.schedules import NoiseSchedule, Parameterization
from worldsim.core.validation import check_choice
from worldsim.world_model.action_encoder import ActionEncoder
from worldsim.world_model.frame_window import FrameWindow
from worldsim.world_model.state_tokenizer import StateTokenizer

Sampling = Literal["autoregressive", "rolling"]
SAMPLINGS: tuple[str, ...] = ("autoregressive", "rolling")


@dataclass
class SessionConfig:
    """How a streaming session samples; ``None`` sizes default to the model's training pattern."""

    sampling: str = "autoregressive"
    """``autoregressive`` (each frame from noise in ``steps`` DDIM steps) or ``rolling``."""
    steps: int | None = None
    """Autoregressive: DDIM steps per frame; None: the model's own, 2, or 1 for a state model with a one-step
    predictor. One step from pure noise returns the network's estimate of the clean frame, the conditional
    mean of the predictor's residual: in a deterministic env a sample's spread is only error (FetchPush's
    held-out one-step error 0.034x copy-last with 2 steps, 0.010x with 1; ``docs/world_model.md``)."""
    rolling_window: int = 3
    """Rolling: frames denoised jointly at staggered levels (each frame gets this many refinements)."""
    sink_frames: int | None = None
    window_frames: int | None = None
    ema_decay: float | None = None
    context_level: float = 0.05
    """Noise level at which generated frames enter the cache; 0 commits them clean (drifts much faster)."""

    def __post_init__(self) -> None:
        check_choice("session.sampling", self.sampling, SAMPLINGS)
        if (self.steps is not None and self.steps < 1) or self.rolling_window < 1:
            raise ValueError(f"steps and rolling_window must be >= 1, got {self.steps}, {self.rolling_window}")
        if not 0.0 <= self.context_level < 1.0:
            raise ValueError(f"context_level must be in [0, 1), got {self.context_level}")


@dataclass(frozen=True)
class StreamSpec:
    """What the sampler needs to know about a world model, whichever runtime runs its network."""

    observation_space: gym.spaces.Box
    action_encoder: ActionEncoder
    schedule: NoiseSchedule
    parameterization: Parameterization
    tokens_per_frame: int
    token_dim: int
    sink_frames: int
    """The model's training pattern: the defaults of :class:`SessionConfig`'s ``None`` sizes."""
    window_frames: int
    state_tokenizer: StateTokenizer | None = None
    """A state model's tokenizer (torch-free, shared by the runtimes); None for a pixel model. In delta mode
    a generated frame is the previous one plus its decoded change, and it enters the cache re-encoded from
    that observation, so the model attends to exactly the trajectory the session returns. With a one-step
    predictor, the change is the predictor's guess from the last two observations and the action plus the
    residual the network samples."""
    network: str = "transformer"
    """``unet``: a pixel-space model whose context is a frame window; each generated frame is rounded to
    ``uint8`` before it joins the context, its clean estimates are clipped to the pixel range, and it
    samples autoregressively only (one frame per network call)."""


def default_steps(spec: StreamSpec) -> int:
    """Autoregressive DDIM steps per frame when the session's config names none (see ``SessionConfig.steps``)."""
    tokenizer = spec.state_tokenizer
    return 1 if tokenizer is not None and tokenizer.predictor is not None else 2


class StreamingSessionBase(ABC):
    """Plays a world model frame by frame with constant memory (one stream, batch 1).

    Observations and actions are numpy arrays of the model's spaces, without a batch axis. ``generator``
    draws all noise: a torch ``Generator``, or a numpy ``Generator`` (which drives torch sessions too,
    so a torch session and an onnxruntime one given equal numpy generators draw identical noise).
    """

    cache: KVCache | FrameWindow | None

    def __init__(self, spec: StreamSpec, config: SessionConfig | None, *, generator, like):
        self.spec = spec
        self.config = config or SessionConfig()
        c = self.config
        self.sink_frames = spec.sink_frames if c.sink_frames is None else c.sink_frames
        window = spec.window_frames if c.window_frames is None else c.window_frames
        if spec.network == "unet" and c.sampling == "rolling":
            raise ValueError("a U-Net world model samples autoregressively (one frame per call), not 'rolling'")
        self.window_frames = window - (c.rolling_window - 1 if c.sampling == "rolling" else 0)
        if self.window_frames < 1 or self.sink_frames < 0:
            raise ValueError(
                f"a cache window of {window} frames leaves no room for a rolling window of {c.rolling_window}"
            )
        self.generator = generator
        self.cache = None
        self.num_steps = 0
        # The noise of one frame is drawn shaped like this (kind, dtype and device of the runtime's arrays).
        self._frame_like = zeros((1, spec.tokens_per_frame, spec.token_dim), like)
        self.steps = c.steps if c.steps is not None else default_steps(spec)
        self._plan = full_sequence(spec.tokens_per_frame, self.steps)
        self._rolling: RollingDenoiser | None = None
        self._committed_obs: np.ndarray | None = None  # state models: the last observation in the cache
        self._committed_before: np.ndarray | None = None  # ... and the one before it (a one-step predictor's input)
        self._slot_conds: deque = deque()

    # -- what a runtime supplies ------------------------------------------------------------------------
    @abstractmethod
    def _new_cache(self) -> KVCache | FrameWindow:
        """An empty cache of ``sink_frames`` + ``window_frames`` (batch 1) in the runtime's arrays (a U-Net
        model's: a frame window)."""

    @abstractmethod
    def _network(self, x, level, cond, *, update_cache: bool):
        """The denoiser's prediction for ``x [1, T, D]`` attending to ``self.cache``; commits if asked."""

    def _encode_frames(self, obs: np.ndarray):
        """Pixel models: frames ``[N, *obs_shape]`` to tokens ``[N, P, D]`` (state models never call it)."""
        raise NotImplementedError(f"{type(self).__name__} runs state models only")

    def _decode_frames(self, tokens) -> np.ndarray:
        """Pixel models: tokens ``[N, P, D]`` to frames ``[N, *obs_shape]``."""
        raise NotImplementedError(f"{type(self).__name__} runs state models only")

    # -- tokens, for every runtime ----------------------------------------------------------------------
    def _encode(self, obs: np.ndarray, *, actions=None):
        """Observations ``[N, *obs_shape]`` to frame tokens ``[N, P, D]``; a state model's are a sequence
        (``actions``: the conditioning of the ``N - 1`` actions between them, a one-step predictor's input)."""
        tokenizer = self.spec.state_tokenizer
        if tokenizer is None:
            return self._encode_frames(obs)
        tokens = tokenizer.encode(np.asarray(obs, np.float32), actions=actions)
        return as_array_like(tokens.astype(np.float32), self._frame_like)

    def _decode(self, tokens) -> np.ndarray:
        """Frame tokens ``[N, P, D]`` of a model without delta tokens to observations ``[N, *obs_shape]``."""
        tokenizer = self.spec.state_tokenizer
        if tokenizer is None:
            return self._decode_frames(tokens)
        return tokenizer.decode(_as_numpy(tokens)).astype(np.float32)

    # -- public API -------------------------------------------------------------------------------------
    def reset(self, context_obs, context_actions=None, *, seed: int | None = None) -> None:
        """Start a stream from real observations ``[K, *obs_shape]`` and the ``K - 1`` actions between them."""
        spec = self.spec
        obs = self._check_context(context_obs, context_actions)
        if seed is not None:
            self._seed(seed)
        self.cache = self._new_cache()
        self.num_steps = 0
        self._slot_conds.clear()
        if self.config.sampling == "rolling":
            self._rolling = RollingDenoiser(
                self._cached_denoiser,
                spec.schedule,
                window=self.config.rolling_window,
                parameterization=spec.parameterization,
                tokens_per_slot=spec.tokens_per_frame,
                generator=self.generator,
            )
        cond = spec.action_encoder.no_action_conditions(1)
        if len(obs) > 1:
            cond = np.concatenate([cond, spec.action_encoder.conditions(np.asarray(context_actions))])
        tokens = self._encode(obs, actions=cond[1:])
        if spec.state_tokenizer is not None:
            self._committed_obs = obs[-1:].astype(np.float32)
            self._committed_before = obs[-2:-1].astype(np.float32) if len(obs) > 1 else self._committed_obs
        cond = as_array_like(cond, tokens)
        # Real frames enter clean; frame by frame once they exceed the cache, so the attention pattern
        # (and the evictions) are exactly those of streaming.
        if len(obs) <= self.cache.capacity_frames:
            self._commit(tokens.reshape(1, -1, tokens.shape[-1]), cond, level=0.0)
        else:
            for i in range(len(obs)):
                self._commit(tokens[i : i + 1], cond[i : i + 1], level=0.0)

    def step(self, action) -> np.ndarray:
        """Generate the observation that ``action`` leads to from the current one."""
        if self.cache is None:
            raise ValueError("call reset(context_obs, context_actions) before step()")
        spec = self.spec
        cond = as_array_like(spec.action_encoder.conditions(self._one_action(action)), self._frame_like)
        p = spec.tokens_per_frame
        token_cond = namespace(cond).broadcast_to(cond[:, None, :], (1, p, cond.shape[-1]))
        noise = randn_like(self._frame_like, self.generator)
        if self.config.sampling == "autoregressive":
            frame = denoise(
                self._cached_denoiser,
                noise,
                self._plan,
                spec.schedule,
                parameterization=spec.parameterization,
                cond=token_cond,
                generator=self.generator,
                clip_x0=1.0 if spec.network == "unet" else None,
            )
            obs = self._commit_generated(frame, cond, decode=True)
        else:
            self._slot_conds.append(cond)
            # step must answer now: the newest frame's clean estimate from this very call (the window's
            # refined version of it enters the cache W - 1 ticks later).
            emitted, estimate = self._rolling.tick(noise, token_cond=token_cond)
            if emitted is not None:
                self._commit_generated(emitted, self._slot_conds.popleft(), decode=False)
                estimate = estimate[:, p:]
            obs = self._preview(estimate)
        self.num_steps += 1
        return obs[0]

    @property
    def observation_space(self) -> gym.spaces.Box:
        return self.spec.observation_space

    @property
    def action_space(self) -> gym.spaces.Space:
        return self.spec.action_encoder.action_space

    @property
    def memory_bytes(self) -> int:
        """Bytes held for the stream: the KV cache plus the rolling window's frames (both bounded)."""
        if self.cache is None:
            return 0
        window = self._rolling.tokens if self._rolling is not None else None
        return self.cache.nbytes + (0 if window is None else window.nbytes)

    # -- internals --------------------------------------------------------------------------------------
    def _seed(self, seed: int) -> None:
        if isinstance(self.generator, np.random.Generator):
            self.generator = np.random.default_rng(seed)
        else:
            self.generator.manual_seed(seed)

    def _cached_denoiser(self, x, level, cond):
        return self._network(x, level, cond, update_cache=False)

    def _commit_generated(self, frame, cond, *, decode: bool) -> np.ndarray | None:
        """Commit a generated frame at the context level; returns its observation ``[1, *obs_shape]`` if asked.

        A delta state frame is decoded onto the last committed observation and enters the cache re-encoded
        from the result (its absolute part made consistent with the trajectory the session returns)."""
        tokenizer = self.spec.state_tokenizer
        if self.spec.network == "unet":  # the frame a camera could have produced joins the context (DIAMOND)
            obs = self._decode(frame)
            self._commit(self._encode(obs), cond, level=self.config.context_level)
            return obs
        if tokenizer is None or not tokenizer.delta:
            self._commit(frame, cond, level=self.config.context_level)
            return self._decode(frame) if decode else None
        previous = self._committed_obs
        obs, tokens = tokenizer.settle(_as_numpy(frame), previous, before=self._committed_before,
                                       actions=_as_numpy(cond))  # fmt: skip
        obs = obs.astype(np.float32)
        self._commit(as_array_like(tokens.astype(np.float32), self._frame_like), cond, level=self.config.context_level)
        self._committed_before, self._committed_obs = previous, obs
        return obs

    def _preview(self, estimate) -> np.ndarray:
        """The rolling window's newest observation from the clean estimates of its uncommitted frames."""
        tokenizer = self.spec.state_tokenizer
        p = self.spec.tokens_per_frame
        if tokenizer is None or not tokenizer.delta:
            return self._decode(estimate[:, -p:])
        # Every frame still in the window decoded onto the one before, from the last committed observation.
        frames = _as_numpy(estimate).reshape(-1, 1, self.spec.token_dim)
        actions = np.concatenate([_as_numpy(c) for c in self._slot_conds]) if tokenizer.predictor is not None else None
        return tokenizer.decode_sequence(
            frames, self._committed_obs, before=self._committed_before, actions=actions
        ).astype(np.float32)

    def _commit(self, tokens, cond, *, level: float) -> None:
        """Append frames ``tokens [1, F * P, D]`` (conditioned by ``cond [F, C]``) to the cache at ``level``."""
        spec = self.spec
        levels = as_array_like(np.full(tokens.shape[:2], level), tokens)
        if level > 0:
            tokens = spec.schedule.add_noise(tokens, randn_like(tokens, self.generator), levels)
        frames, width = cond.shape
        token_cond = namespace(cond).broadcast_to(cond[:, None, :], (frames, spec.tokens_per_frame, width))
        self._network(tokens, levels, token_cond.reshape(1, -1, width), update_cache=True)

    def _check_context(self, context_obs, context_actions) -> np.ndarray:
        obs = np.asarray(context_obs)
        shape = tuple(self.spec.observation_space.shape)
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
            self.spec.action_encoder.check(actions)
        return obs

    def _one_action(self, action) -> np.ndarray:
        encoder = self.spec.action_encoder
        action = np.asarray(action)
        if encoder.discrete:
            if action.ndim != 0:
                raise ValueError(f"a discrete action must be a scalar integer, got shape {action.shape}")
        elif action.shape != encoder.action_space.shape:
            raise ValueError(f"action must have shape {encoder.action_space.shape}, got {action.shape}")
        return encoder.check(action[None])


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
