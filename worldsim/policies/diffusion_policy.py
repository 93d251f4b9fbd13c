"""The diffusion policy: an observation encoder plus the core's transformer denoising an action chunk.

One frame of the transformer is the whole chunk, so the actions of a chunk attend to each other, each
with its own noise level (what the rolling strategy needs). The control-facing API follows LeRobot:
``reset()``, ``select_action(obs)`` (observation and action queues inside), ``predict_chunk(obs_history)``.
Inference strategies (``ddpm``, ``ddim``, ``rti``, ``rolling``) are swappable objects over the same model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from worldsim.core.array_ops import tree_map
from worldsim.core.losses import diffusion_forcing_loss, sample_levels
from worldsim.core.normalizer import Normalizer
from worldsim.core.pretrained import Pretrained, require_field
from worldsim.core.schedules import make_schedule
from worldsim.core.transformer import CausalTransformer, TransformerConfig
from worldsim.policies.action_codec import ActionCodec
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.control import ChunkPolicy
from worldsim.policies.encoders import make_encoder
from worldsim.policies.frame_features import FrameFeatureCache
from worldsim.policies.strategies import ChunkContext, Strategy, make_strategy

CHECKPOINT_KIND = "diffusion_policy"


def _scaled(frames: torch.Tensor) -> torch.Tensor:
    """uint8 camera frames as the pixel encoder takes them, in [-1, 1]."""
    return frames.float() / 127.5 - 1.0


class DiffusionPolicy(ChunkPolicy, Pretrained, nn.Module):
    """A diffusion policy over action chunks: config, normalizers, encoder and denoiser, and a strategy.

    ``strategy_defaults`` maps a strategy name to the options this policy runs it with unless told
    otherwise (training records its task's, e.g. RTI's k); ``obs_check`` says what happens to an
    observation outside the observation space (``error``, ``clip`` or ``warn``).
    """

    checkpoint_kind = CHECKPOINT_KIND

    def __init__(
        self,
        config: DiffusionPolicyConfig,
        *,
        obs_normalizer: Normalizer | None,
        action_normalizer: Normalizer,
        strategy: Strategy | None = None,
        strategy_defaults: dict[str, dict] | None = None,
    ):
        super().__init__()
        if not config.complete:
            raise ValueError("the policy config lacks obs_shape and action_dim: training derives them from the env")
        if config.state_size and (obs_normalizer is None or obs_normalizer.shape != (config.state_size,)):
            raise ValueError(f"this policy needs a state normalizer of shape ({config.state_size},)")
        self.codec = ActionCodec(config, action_normalizer)
        self.config = config
        self.obs_normalizer = obs_normalizer
        self.schedule = make_schedule(config.schedule, config.num_train_steps)
        self.encoder = make_encoder(config)
        self.frame_cache = FrameFeatureCache()
        self.step_conditioning = None
        if config.per_step_conditioning:
            width = config.feature_dim
            self.step_conditioning = nn.Linear(width, config.horizon * width)
            # Unit gain, so each position's vector starts as large as the shared one it replaces.
            nn.init.normal_(self.step_conditioning.weight, std=width**-0.5)
            nn.init.zeros_(self.step_conditioning.bias)
        # The encoder's state layout, fixed by the config: plain dimensions normalized, angles as sine and cosine.
        self._angle_dims = list(config.angle_dims)
        self._plain_dims = [d for d in range(config.state_size) if d not in config.angle_dims]
        self.denoiser = CausalTransformer(
            TransformerConfig(
                in_dim=config.action_dim, cond_dim=config.feature_dim, width=config.width, depth=config.depth,
                heads=config.heads, tokens_per_frame=config.horizon,
            )
        )  # fmt: skip
        self.strategy_defaults = {name: dict(options) for name, options in (strategy_defaults or {}).items()}
        self.strategy = strategy if strategy is not None else make_strategy("ddpm")
        self.generator: torch.Generator | None = None
        self.metadata: dict = {}
        self.reset()

    # ------------------------------------------------------------------ normalized spaces
    def _encode(self, obs: torch.Tensor | dict[str, torch.Tensor], *, cached: bool = True) -> torch.Tensor:
        """The conditioning of raw observation histories, ``[B, feature_dim]`` (``[B, horizon, feature_dim]``
        with ``per_step_conditioning``): computed once per prediction, every denoiser call of its plan reuses it.
        A camera policy in eval mode takes the features of frames it has seen from ``frame_cache`` unless
        ``cached`` is False."""
        if self.config.obs_type == "state":
            return self._conditioning(self.encoder(self._state_features(obs)))
        frames, states = (obs["pixels"], obs["state"]) if self.config.multipart else (obs, None)
        if self.training or not cached:  # whole histories: the random shift moves a history's frames together
            normalized = None if states is None else self._state_features(states)
            return self._conditioning(self.encoder(_scaled(frames), normalized))
        return self.condition_on_frame_features(self.frame_cache.features(frames, self.encode_frames), states)

    def train(self, mode: bool = True) -> DiffusionPolicy:
        self.frame_cache.clear()  # features kept from other weights than the next step's
        return super().train(mode)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """A camera policy's per-frame features ``[N, F]`` of raw uint8 frames ``[N, H, W, 3]``."""
        return self.encoder.frame_features(_scaled(frames))

    def condition_on_frame_features(self, features: torch.Tensor, states: torch.Tensor | None) -> torch.Tensor:
        """A camera policy's conditioning from its history's frame features ``[B, T, F]`` and raw states
        ``[B, T, state_dim]`` (None without proprioception)."""
        normalized = None if states is None else self._state_features(states)
        return self._conditioning(self.encoder.combine(features, normalized))

    def _conditioning(self, features: torch.Tensor) -> torch.Tensor:
        if self.step_conditioning is None:
            return features
        return self.step_conditioning(features).unflatten(-1, (self.config.horizon, self.config.feature_dim))

    def _state_features(self, states: torch.Tensor) -> torch.Tensor:
        """Raw states ``[..., state_size]`` normalized, each angle dimension replaced by its sine and cosine
        (``[..., state_feature_size]``)."""
        states = states.float()
        normalized = self.obs_normalizer.normalize(states)
        if not self._angle_dims:
            return normalized
        turns = states[..., self._angle_dims]
        return torch.cat([normalized[..., self._plain_dims], torch.sin(turns), torch.cos(turns)], dim=-1)

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Diffusion Forcing loss on raw ``obs [B, obs_horizon, *obs_shape]`` and ``action [B, H, A]`` (a
        camera with proprioception: ``obs.pixels`` and ``obs.state`` instead of ``obs``)."""
        obs = batch["obs"] if "obs" in batch else {"pixels": batch["obs.pixels"], "state": batch["obs.state"]}
        actions = batch["action"]
        self.check_obs_history(obs, batched=True)
        if tuple(actions.shape[1:]) != (self.config.horizon, self.config.action_dim):
            raise ValueError(
                f"actions must have shape [batch, {self.config.horizon}, {self.config.action_dim}], "
                f"got {tuple(actions.shape)}"
            )
        clean = self.codec.to_model(actions, self.codec.reference(obs))
        levels = mask = None
        if self.config.prefix_conditioning:
            levels, mask = self._prefix_levels(clean)
        return diffusion_forcing_loss(
            self.denoiser, clean, self.schedule, parameterization=self.config.parameterization,
            cond=self._encode(obs), shared_level_prob=self.config.shared_level_prob, levels=levels, mask=mask,
        )  # fmt: skip

    def _prefix_levels(self, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training levels with a clean prefix of random length per chunk, and the mask that leaves it out of
        the loss (training-time real-time chunking: what the ``rtc`` strategy's frozen prefix looks like)."""
        batch, horizon = clean.shape[:2]
        levels = sample_levels(
            self.schedule, batch, horizon, shared_level_prob=self.config.shared_level_prob, device=clean.device
        )
        lengths = torch.randint(0, self.config.prefix_conditioning + 1, (batch, 1), device=clean.device)
        prefix = torch.arange(horizon, device=clean.device)[None] < lengths
        return levels.masked_fill(prefix, 0.0), ~prefix

    # ------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def predict_normalized(
        self,
        obs_history: torch.Tensor,
        executed_steps: int,
        reference: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A normalized chunk ``[B, H, A]`` for a batch of raw observation histories (``reference``: their
        ``codec.reference``, when the caller has it already; ``prefix``: the normalized frozen prefix)."""
        self.check_obs_history(obs_history, batched=True)
        cond = self._encode(obs_history)
        like = torch.empty(cond.shape[0], self.config.horizon, self.config.action_dim, device=cond.device)
        sampler = ChunkContext(
            denoiser=self.denoiser, cond=cond, schedule=self.schedule, parameterization=self.config.parameterization,
            num_train_steps=self.config.num_train_steps, like=like, clip_x0=self.config.clip_sample,
            generator=self.generator, codec=self.codec,
            reference=self.codec.reference(obs_history) if reference is None else reference, prefix=prefix,
        )  # fmt: skip
        chunk = self.strategy.sample(sampler, executed_steps)
        self.calls_last_prediction = sampler.calls
        return chunk

    def _sample_chunk(
        self, obs_history: np.ndarray, executed_steps: int, prefix: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = next(self.parameters()).device
        # A copy: observations may arrive in read-only buffers (zero-copy messages), which torch warns about.
        obs = tree_map(lambda part: torch.tensor(part, device=device), obs_history)
        reference = self.codec.reference(obs)
        like = torch.empty(0, device=device)
        frozen = self._normalized_prefix(prefix, reference, like)
        return self.predict_normalized(obs, executed_steps, reference, frozen), reference

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_contents(self) -> tuple[dict, dict]:
        """Weights, normalization statistics, config and recorded strategy options."""
        tensors = dict(self.state_dict())
        tensors |= self.codec.normalizer.state_dict("normalizer.action")
        if self.obs_normalizer is not None:
            tensors |= self.obs_normalizer.state_dict("normalizer.observation")
        meta = {
            "config": self.config.to_dict(),
            "normalization": self.config.normalization,
            "strategies": self.strategy_defaults,
        }
        return tensors, meta

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        strategy: Strategy | str | None = None,
        device: str = "cpu",
        obs_check: str = "error",
        **strategy_kwargs,
    ) -> DiffusionPolicy:
        """Load a shipped checkpoint by name (e.g. ``"pusht-state"``) or a checkpoint directory.

        ``strategy`` (a name, with ``strategy_kwargs`` over the policy's recorded defaults for it, or a
        strategy object) is what it samples with; ``obs_check`` its response to out-of-bounds observations.
        """
        policy = super().from_pretrained(name_or_path)
        policy.obs_check = obs_check
        if strategy is not None:
            policy.set_strategy(strategy, **strategy_kwargs)
        elif strategy_kwargs:
            raise ValueError(f"strategy options {sorted(strategy_kwargs)} given without a strategy")
        return policy.to(device).eval()

    @classmethod
    def from_checkpoint(cls, tensors: dict, meta: dict, *, where) -> DiffusionPolicy:
        config = DiffusionPolicyConfig.from_dict(require_field(meta, "config", where))
        mode = require_field(meta, "normalization", where)
        obs_normalizer = (
            Normalizer.from_state_dict(tensors, "normalizer.observation", mode)
            if "normalizer.observation.offset" in tensors
            else None
        )
        policy = cls(
            config,
            obs_normalizer=obs_normalizer,
            action_normalizer=Normalizer.from_state_dict(tensors, "normalizer.action", mode),
            strategy_defaults=meta.get("strategies", {}),
        )
        policy.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("normalizer.")})
        return policy
