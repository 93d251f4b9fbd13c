"""The diffusion policy: an observation encoder plus the core's transformer denoising an action chunk.

One frame of the transformer is the whole chunk, so the actions of a chunk attend to each other, each
with its own noise level (what the rolling strategy needs). The control-facing API follows LeRobot:
``reset()``, ``select_action(obs)`` (observation and action queues inside), ``predict_chunk(obs_history)``.
Inference strategies (``ddpm``, ``ddim``, ``rti``, ``rolling``) are swappable objects over the same model.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from worldsim.core.checkpoint import load_checkpoint, save_checkpoint
from worldsim.core.losses import diffusion_forcing_loss
from worldsim.core.normalizer import Normalizer
from worldsim.core.schedules import CosineSchedule
from worldsim.core.transformer import CausalTransformer, TransformerConfig
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.encoders import make_encoder
from worldsim.policies.strategies import ChunkSampler, Strategy, make_strategy

CHECKPOINT_KIND = "diffusion_policy"
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


class DiffusionPolicy(nn.Module):
    def __init__(
        self,
        config: DiffusionPolicyConfig,
        *,
        obs_normalizer: Normalizer | None,
        action_normalizer: Normalizer,
        strategy: Strategy | None = None,
    ):
        super().__init__()
        if config.obs_type == "state" and (obs_normalizer is None or obs_normalizer.shape != config.obs_shape):
            raise ValueError(f"a state policy needs an observation normalizer of shape {config.obs_shape}")
        if action_normalizer.shape != (config.action_dim,):
            raise ValueError(f"the action normalizer has shape {action_normalizer.shape}, not ({config.action_dim},)")
        self.config = config
        self.obs_normalizer = obs_normalizer
        self.action_normalizer = action_normalizer
        self.schedule = CosineSchedule(config.num_train_steps)
        self.encoder = make_encoder(config)
        self.denoiser = CausalTransformer(
            TransformerConfig(
                in_dim=config.action_dim, cond_dim=config.obs_feature_dim, width=config.width, depth=config.depth,
                heads=config.heads, tokens_per_frame=config.horizon,
            )
        )  # fmt: skip
        discrete = torch.ones(config.action_dim)
        if config.discrete_rule == "scale":
            discrete[list(config.discrete_dims)] = config.discrete_scale
        self.register_buffer("model_scale", discrete, persistent=False)
        self.strategy = strategy if strategy is not None else make_strategy("ddpm")
        self.generator: torch.Generator | None = None
        self.reset()

    # ------------------------------------------------------------------ spaces and metadata
    @property
    def obs_horizon(self) -> int:
        return self.config.obs_horizon

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def n_action_steps(self) -> int:
        return self.strategy.n_action_steps or self.config.n_action_steps

    @property
    def observation_space(self) -> gym.spaces.Box:
        if self.config.obs_type == "pixels":
            return gym.spaces.Box(0, 255, self.config.obs_shape, np.uint8)
        return gym.spaces.Box(-np.inf, np.inf, self.config.obs_shape, np.float32)

    @property
    def action_space(self) -> gym.spaces.Box:
        c = self.config
        low = np.asarray(c.action_low or [-np.inf] * c.action_dim, np.float32)
        high = np.asarray(c.action_high or [np.inf] * c.action_dim, np.float32)
        return gym.spaces.Box(low, high, dtype=np.float32)

    # ------------------------------------------------------------------ normalized spaces
    def _encode(self, obs: torch.Tensor) -> torch.Tensor:
        if self.config.obs_type == "pixels":
            return self.encoder(obs.float() / 127.5 - 1.0)
        return self.encoder(self.obs_normalizer.normalize(obs.float()))

    def to_model_space(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions to the normalized space the model denoises (discrete dims scaled by the rule)."""
        return self.action_normalizer.normalize(actions) * self.model_scale

    def from_model_space(self, chunk):
        """Normalized chunk (torch or numpy) back to raw actions, discrete dims snapped to ±1."""
        scale = self.model_scale if torch.is_tensor(chunk) else self.model_scale.cpu().numpy()
        actions = self.action_normalizer.unnormalize(chunk / scale)
        if self.config.discrete_dims:
            dims = list(self.config.discrete_dims)
            actions[..., dims] = (
                torch.where(actions[..., dims] > 0, 1.0, -1.0)
                if torch.is_tensor(actions)
                else (np.where(actions[..., dims] > 0, 1.0, -1.0))
            )
        return actions

    def _prepare_guess(self, guess):
        """RTI-DP-clip: shrink the discrete dims of a warm-start guess to ``sign(g) * discrete_scale``."""
        if self.config.discrete_rule != "clip" or not self.config.discrete_dims:
            return guess
        guess = guess.clone()
        dims = list(self.config.discrete_dims)
        guess[..., dims] = torch.sign(guess[..., dims]) * self.config.discrete_scale
        return guess

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Diffusion Forcing loss on raw ``obs [B, obs_horizon, *obs_shape]`` and ``action [B, H, A]``."""
        obs, actions = batch["obs"], batch["action"]
        self._check_obs(obs, batched=True)
        if tuple(actions.shape[1:]) != (self.config.horizon, self.config.action_dim):
            raise ValueError(
                f"actions must have shape [batch, {self.config.horizon}, {self.config.action_dim}], "
                f"got {tuple(actions.shape)}"
            )
        return diffusion_forcing_loss(
            self.denoiser, self.to_model_space(actions), self.schedule, parameterization=self.config.parameterization,
            cond=self._encode(obs), shared_level_prob=self.config.shared_level_prob,
        )  # fmt: skip

    # ------------------------------------------------------------------ control API
    def set_strategy(self, strategy: Strategy | str, **kwargs) -> None:
        """Swap the inference strategy (by object or name); resets the episode state."""
        self.strategy = make_strategy(strategy, **kwargs) if isinstance(strategy, str) else strategy
        self.reset()

    def reset(self) -> None:
        """Start a new episode: empty queues and forget the strategy's warm start."""
        self._obs_queue: deque[np.ndarray] = deque(maxlen=self.config.obs_horizon)
        self._action_queue: deque[np.ndarray] = deque()
        self._executed_since_prediction = 0
        self.strategy.reset()
        self.calls_last_prediction = 0

    def _check_obs(self, obs, *, batched: bool) -> None:
        lead = 2 if batched else 1
        expected = (self.config.obs_horizon, *self.config.obs_shape)
        if obs.ndim != len(expected) + lead - 1 or tuple(obs.shape[lead - 1 :]) != expected:
            what = "[batch, " if batched else "["
            raise ValueError(
                f"observation history must have shape {what}{', '.join(map(str, expected))}], got {tuple(obs.shape)}"
            )

    @torch.inference_mode()
    def predict_normalized(self, obs_history: torch.Tensor, executed_steps: int) -> torch.Tensor:
        """A normalized chunk ``[B, H, A]`` for a batch of raw observation histories."""
        self._check_obs(obs_history, batched=True)
        if not torch.isfinite(obs_history.float()).all():
            raise ValueError("observation history contains NaN or infinite values")
        cond = self._encode(obs_history)
        like = torch.empty(obs_history.shape[0], self.config.horizon, self.config.action_dim, device=cond.device)
        sampler = ChunkSampler(
            denoiser=self.denoiser, cond=cond, schedule=self.schedule, parameterization=self.config.parameterization,
            num_train_steps=self.config.num_train_steps, like=like, clip_x0=self.config.clip_sample,
            generator=self.generator, prepare_guess=self._prepare_guess,
        )  # fmt: skip
        chunk = self.strategy.sample(sampler, executed_steps)
        self.calls_last_prediction = sampler.calls
        return chunk

    def predict_chunk(self, obs_history: np.ndarray, *, executed_steps: int | None = None) -> np.ndarray:
        """Raw actions ``[horizon, action_dim]`` from ``obs_history [obs_horizon, *obs_shape]``.

        ``executed_steps``: actions executed since the previous prediction (how far a warm start shifts);
        defaults to ``n_action_steps``.
        """
        obs = torch.as_tensor(np.asarray(obs_history), device=self.model_scale.device)
        self._check_obs(obs, batched=False)
        steps = self.n_action_steps if executed_steps is None else executed_steps
        chunk = self.predict_normalized(obs[None], steps)
        return self.from_model_space(chunk)[0].cpu().numpy().astype(np.float32)

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        """The action for this tick; predicts a new chunk when the queue of planned actions runs out."""
        obs = np.asarray(obs)
        if tuple(obs.shape) != self.config.obs_shape:
            raise ValueError(f"observation must have shape {self.config.obs_shape}, got {tuple(obs.shape)}")
        if not self._obs_queue:
            self._obs_queue.extend([obs] * self.config.obs_horizon)  # pad the start, as in training
        else:
            self._obs_queue.append(obs)
        if not self._action_queue:
            chunk = self.predict_chunk(np.stack(self._obs_queue), executed_steps=self._executed_since_prediction)
            self._action_queue.extend(chunk[: self.n_action_steps])
            self._executed_since_prediction = 0
        else:
            self.calls_last_prediction = 0
        self._executed_since_prediction += 1
        return self._action_queue.popleft()

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path, *, extra: dict | None = None) -> Path:
        """Weights, normalization statistics and config in worldsim's checkpoint format."""
        tensors = dict(self.state_dict())
        tensors |= self.action_normalizer.state_dict("normalizer.action")
        meta = {"kind": CHECKPOINT_KIND, "config": self.config.to_dict(), "normalization": self.config.normalization}
        if self.obs_normalizer is not None:
            tensors |= self.obs_normalizer.state_dict("normalizer.observation")
        meta |= extra or {}
        return save_checkpoint(directory, tensors, json.loads(json.dumps(meta)))

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, strategy: Strategy | str | None = None, device: str = "cpu", **strategy_kwargs
    ) -> DiffusionPolicy:
        """Load a shipped checkpoint by name (e.g. ``"pusht-state"``) or a checkpoint directory."""
        path = Path(name_or_path)
        if not path.is_dir():
            shipped = SHIPPED / str(name_or_path)
            if not shipped.is_dir():
                available = sorted(p.name for p in SHIPPED.iterdir() if p.is_dir()) if SHIPPED.is_dir() else []
                raise FileNotFoundError(
                    f"no checkpoint directory {str(name_or_path)!r} and no shipped policy of that name "
                    f"(shipped: {', '.join(available) or 'none'})"
                )
            path = shipped
        tensors, meta = load_checkpoint(path, kind=CHECKPOINT_KIND)
        config = DiffusionPolicyConfig.from_dict(meta["config"])
        mode = meta["normalization"]
        obs_normalizer = (
            Normalizer.from_state_dict(tensors, "normalizer.observation", mode)
            if "normalizer.observation.offset" in tensors
            else None
        )
        policy = cls(
            config,
            obs_normalizer=obs_normalizer,
            action_normalizer=Normalizer.from_state_dict(tensors, "normalizer.action", mode),
        )
        policy.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("normalizer.")})
        policy.metadata = meta
        if strategy is not None:
            policy.set_strategy(strategy, **strategy_kwargs)
        return policy.to(device).eval()
