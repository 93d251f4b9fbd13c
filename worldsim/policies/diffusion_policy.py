"""The diffusion policy: an observation encoder plus the core's transformer denoising an action chunk.

One frame of the transformer is the whole chunk, so the actions of a chunk attend to each other, each
with its own noise level (what the rolling strategy needs). The control-facing API follows LeRobot:
``reset()``, ``select_action(obs)`` (observation and action queues inside), ``predict_chunk(obs_history)``.
Inference strategies (``ddpm``, ``ddim``, ``rti``, ``rolling``) are swappable objects over the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from worldsim.core.checkpoint import load_checkpoint, save_checkpoint
from worldsim.core.losses import diffusion_forcing_loss
from worldsim.core.normalizer import Normalizer
from worldsim.core.schedules import CosineSchedule
from worldsim.core.transformer import CausalTransformer, TransformerConfig
from worldsim.policies.action_codec import ActionCodec
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.control import ChunkPolicy
from worldsim.policies.encoders import make_encoder
from worldsim.policies.strategies import ChunkContext, Strategy, make_strategy

CHECKPOINT_KIND = "diffusion_policy"
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


class DiffusionPolicy(ChunkPolicy, nn.Module):
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
        self.codec = ActionCodec(config, action_normalizer)
        self.config = config
        self.obs_normalizer = obs_normalizer
        self.schedule = CosineSchedule(config.num_train_steps)
        self.encoder = make_encoder(config)
        self.denoiser = CausalTransformer(
            TransformerConfig(
                in_dim=config.action_dim, cond_dim=config.obs_feature_dim, width=config.width, depth=config.depth,
                heads=config.heads, tokens_per_frame=config.horizon,
            )
        )  # fmt: skip
        self.strategy = strategy if strategy is not None else make_strategy("ddpm")
        self.generator: torch.Generator | None = None
        self.reset()

    # ------------------------------------------------------------------ normalized spaces
    def _encode(self, obs: torch.Tensor) -> torch.Tensor:
        if self.config.obs_type == "pixels":
            return self.encoder(obs.float() / 127.5 - 1.0)
        return self.encoder(self.obs_normalizer.normalize(obs.float()))

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Diffusion Forcing loss on raw ``obs [B, obs_horizon, *obs_shape]`` and ``action [B, H, A]``."""
        obs, actions = batch["obs"], batch["action"]
        self.check_obs_history(obs, batched=True)
        if tuple(actions.shape[1:]) != (self.config.horizon, self.config.action_dim):
            raise ValueError(
                f"actions must have shape [batch, {self.config.horizon}, {self.config.action_dim}], "
                f"got {tuple(actions.shape)}"
            )
        clean = self.codec.to_model(actions, self.codec.reference(obs))
        return diffusion_forcing_loss(
            self.denoiser, clean, self.schedule, parameterization=self.config.parameterization,
            cond=self._encode(obs), shared_level_prob=self.config.shared_level_prob,
        )  # fmt: skip

    # ------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def predict_normalized(
        self, obs_history: torch.Tensor, executed_steps: int, reference: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A normalized chunk ``[B, H, A]`` for a batch of raw observation histories (``reference``: their
        ``codec.reference``, when the caller has it already)."""
        self.check_obs_history(obs_history, batched=True)
        cond = self._encode(obs_history)
        like = torch.empty(obs_history.shape[0], self.config.horizon, self.config.action_dim, device=cond.device)
        sampler = ChunkContext(
            denoiser=self.denoiser, cond=cond, schedule=self.schedule, parameterization=self.config.parameterization,
            num_train_steps=self.config.num_train_steps, like=like, clip_x0=self.config.clip_sample,
            generator=self.generator, codec=self.codec,
            reference=self.codec.reference(obs_history.float()) if reference is None else reference,
        )  # fmt: skip
        chunk = self.strategy.sample(sampler, executed_steps)
        self.calls_last_prediction = sampler.calls
        return chunk

    def _sample_chunk(self, obs_history: np.ndarray, executed_steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = next(self.parameters()).device
        # A copy: observations may arrive in read-only buffers (zero-copy messages), which torch warns about.
        obs = torch.tensor(obs_history, device=device)
        reference = self.codec.reference(obs.float())
        return self.predict_normalized(obs, executed_steps, reference), reference

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path, *, extra: dict | None = None) -> Path:
        """Weights, normalization statistics and config in worldsim's checkpoint format."""
        tensors = dict(self.state_dict())
        tensors |= self.codec.normalizer.state_dict("normalizer.action")
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
