"""The world model: a causal transformer denoiser over frame tokens, conditioned on the actions between frames.

Training is Diffusion Forcing on trajectory windows: every frame gets its own noise level. A share of
frames (``context_prob``) is drawn near-clean, at levels up to ``context_noise``, because at inference
the model conditions on its own, slightly wrong frames committed at a small context level (GameNGen's
noise augmentation, Self-Forcing's context noise). Training windows longer than the cache
(``sequence_frames > sink_frames + window_frames + 1``) are trained with the bounded pattern the
streaming cache will show (``attention_window=(sink_frames, window_frames)``); shorter ones already see
every relative distance the cache will show, since the cache rotates keys by slot index.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from worldsim.core.episodes import Episode, sequence_windows
from worldsim.core.losses import diffusion_forcing_loss
from worldsim.core.pretrained import Pretrained, require_field, resolve_pretrained
from worldsim.core.schedules import make_schedule
from worldsim.core.transformer import CausalTransformer, TransformerConfig
from worldsim.world_model.action_encoder import ActionEncoder, box_from_dict, box_to_dict
from worldsim.world_model.config import WorldModelConfig
from worldsim.world_model.frame_tokenizer import FrameTokenizer
from worldsim.world_model.tokenizers import PixelTokenizer, StateTokenizer
from worldsim.world_model.unet import FrameUNet, UNetConfig

Tokenizer = StateTokenizer | PixelTokenizer | FrameTokenizer
TOKENIZERS = {"state": StateTokenizer, "pixels": PixelTokenizer, "frames": FrameTokenizer}
CHECKPOINT_KIND = "world_model"
CHANGED_PIXEL = 0.1
"""A U-Net frame value (in [-1, 1]) counts as changed beyond this (13 of 255 levels: not a rendering's dither)."""


class WorldModel(Pretrained, nn.Module):
    """Predicts frame tokens from noisy frame tokens, their noise levels and the actions that led to them.

    ``config.network`` picks the denoiser: the causal transformer over tokens (any tokenizer), or the
    pixel-space :class:`~worldsim.world_model.unet.FrameUNet` (with the :class:`FrameTokenizer`).
    """

    checkpoint_kind = CHECKPOINT_KIND

    def __init__(
        self,
        config: WorldModelConfig,
        tokenizer: Tokenizer,
        action_encoder: ActionEncoder,
        observation_space: gym.spaces.Box,
    ):
        super().__init__()
        if tuple(observation_space.shape) != tuple(tokenizer.obs_shape):
            raise ValueError(
                f"observation space {observation_space.shape} does not match the tokenizer's {tokenizer.obs_shape}"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.action_encoder = action_encoder
        self.observation_space = observation_space
        if (config.network == "unet") != isinstance(tokenizer, FrameTokenizer):
            raise ValueError(
                f"a {config.network} world model cannot take a {tokenizer.config()['kind']} tokenizer: the U-Net "
                "works on whole frames (FrameTokenizer), the transformer on tokens"
            )
        self.schedule = make_schedule(config.schedule, config.num_train_steps)
        self.transformer_config: TransformerConfig | None = None
        self.unet_config: UNetConfig | None = None
        self.denoiser: CausalTransformer | FrameUNet
        if config.network == "unet":
            self.unet_config = UNetConfig(
                image_size=tokenizer.image_size,
                cond_dim=action_encoder.cond_dim,
                context_frames=config.window_frames,
                channels=list(config.unet_channels),
                copy_skip=config.unet_copy_skip,
                coord_channels=config.unet_coord_channels,
                action_channels=config.unet_action_channels,
            )
            self.denoiser = FrameUNet(self.unet_config)
        else:
            self.transformer_config = TransformerConfig(
                in_dim=tokenizer.token_dim,
                cond_dim=action_encoder.cond_dim,
                width=config.width,
                depth=config.depth,
                heads=config.heads,
                mlp_ratio=config.mlp_ratio,
                tokens_per_frame=tokenizer.tokens_per_frame,
            )
            self.denoiser = CausalTransformer(self.transformer_config)
        self.metadata: dict = {}
        """The JSON record of the checkpoint this model was loaded from (empty for a fresh model)."""

    @property
    def tokens_per_frame(self) -> int:
        return self.tokenizer.tokens_per_frame

    @property
    def action_space(self) -> gym.spaces.Space:
        return self.action_encoder.action_space

    # -- data -------------------------------------------------------------------------------------------
    def frame_conditions(self, actions: np.ndarray) -> torch.Tensor:
        """Per-frame conditioning ``[M, L + 1, C]`` for windows of actions ``[M, L, ...]``: frame 0 has none."""
        m, length = actions.shape[:2]
        flat = actions.reshape(m * length, *actions.shape[2:])
        cond = self.action_encoder.encode(flat).view(m, length, -1)
        return torch.cat([self.action_encoder.no_action(m)[:, None], cond], dim=1)

    @torch.no_grad()
    def training_data(
        self, episodes: list[Episode], *, obs_key: str | None = None, stride: int = 1, batch_size: int = 512
    ) -> dict[str, torch.Tensor]:
        """Tokenize ``episodes`` once and cut windows of ``sequence_frames``: the data for the Trainer.

        Returns ``{"frames": [M, T, P, D], "cond": [M, T, C]}``.
        """
        tokenized = []
        for episode in episodes:
            obs = episode.observations[obs_key] if obs_key is not None else episode.observations
            if isinstance(self.tokenizer, StateTokenizer):  # whole episodes: each frame's change needs the one before
                actions = self.action_encoder.conditions(episode.actions)  # a one-step predictor's input
                tokens = self.tokenizer.encode(np.asarray(obs, np.float32), actions=actions).astype(np.float32)
            elif isinstance(self.tokenizer, FrameTokenizer):
                # Pixels stay uint8 until a batch is drawn (compute_loss scales them): float windows of whole
                # frames would take 4x the memory.
                tokens = np.asarray(obs, np.uint8).transpose(0, 3, 1, 2).reshape(len(obs), 1, -1)
            else:
                batches = [self.tokenizer.encode(obs[i : i + batch_size]) for i in range(0, len(obs), batch_size)]
                tokens = torch.cat(batches).cpu().numpy()
            tokenized.append(dataclasses.replace(episode, observations=tokens))
        frames, actions = sequence_windows(tokenized, self.config.sequence_frames - 1, stride=stride)
        return {"frames": torch.from_numpy(frames), "cond": self.frame_conditions(actions)}

    def window_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """Float tokens of training windows: a U-Net model keeps its windows as uint8 pixels until here."""
        if self.config.network != "unet":
            return frames
        return frames.float() / 127.5 - 1.0

    def sequence_denoiser(self):
        """The denoiser as a function of a whole window ``(x [B, T * P, D], level, cond) -> pred``, without a
        cache: the transformer with the streaming cache's attention pattern, the U-Net predicting the last frame."""
        if self.config.network == "unet":
            return self.denoiser.sequence_prediction
        c = self.config

        def denoiser(x, level, cond):
            return self.denoiser(x, level, cond, attention_window=(c.sink_frames, c.window_frames))

        return denoiser

    # -- training ---------------------------------------------------------------------------------------
    def training_levels(self, batch_size: int, frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Diffusion Forcing levels ``[B, frames]`` with a share of near-clean (context-like) frames."""
        c = self.config
        full = 1.0 - torch.rand(batch_size, frames, generator=generator)
        near_clean = torch.rand(batch_size, frames, generator=generator) * c.context_noise
        use_context = torch.rand(batch_size, frames, generator=generator) < c.context_prob
        return torch.where(use_context, near_clean, full)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Diffusion Forcing loss of ``{"frames": [B, T, P, D], "cond": [B, T, C]}``.

        An optional ``"target": bool [B, T]`` (self-forcing windows) marks the frames that count in the
        loss; the others are context only and are drawn near-clean.
        """
        frames, cond = batch["frames"], batch["cond"]
        if self.config.network == "unet":
            return self._unet_loss(frames, cond)
        b, t, p, d = frames.shape
        levels = self.training_levels(b, t).to(frames.device)
        mask = None
        if "target" in batch:
            target = batch["target"]
            context_levels = torch.rand(b, t, device=frames.device) * self.config.context_noise
            levels = torch.where(target, levels, context_levels)
            mask = target.repeat_interleave(p, dim=1)
        c = self.config
        # The bounded pattern only differs from plain causal attention past the cache's capacity, and the
        # core computes it ~3x slower; windows of at most sink + window + 1 frames skip it.
        window = (
            {"attention_window": (c.sink_frames, c.window_frames)} if t > c.sink_frames + c.window_frames + 1 else {}
        )
        return diffusion_forcing_loss(
            self.denoiser,
            frames.reshape(b, t * p, d),
            self.schedule,
            parameterization=c.parameterization,
            cond=cond.repeat_interleave(p, dim=1),
            tokens_per_frame=p,
            levels=levels,
            mask=mask,
            **window,
        )

    def _unet_loss(self, frames: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The U-Net's loss on windows of ``K + 1`` uint8 frames: the last one at a random level, the context
        near-clean (levels up to ``context_noise``); a share of windows (``context_prob / 4``) starts as a
        stream does, its oldest frames replaced by copies of a later one with no action."""
        c = self.config
        b, t = frames.shape[:2]
        x0 = self.window_tokens(frames.reshape(b, t, -1))
        levels = torch.rand(b, t, device=x0.device) * c.context_noise
        levels[:, -1] = 1.0 - torch.rand(b, device=x0.device)
        padded = torch.rand(b, device=x0.device) < c.context_prob / 4
        if padded.any():
            first = torch.randint(1, t - 1, (b,), device=x0.device)  # the first real frame of a padded window
            slot = torch.arange(t, device=x0.device)[None]
            pad = padded[:, None] & (slot <= first[:, None])
            source = torch.where(pad, first[:, None], slot)
            x0 = torch.gather(x0, 1, source[..., None].expand_as(x0))
            levels = torch.gather(levels, 1, source)
            no_action = self.action_encoder.no_action(1).to(cond)
            cond = torch.where(pad[..., None], no_action, cond)
        mask = torch.zeros(b, t, dtype=torch.bool, device=x0.device)
        mask[:, -1] = True
        weights = None
        if c.unet_change_weight:
            # Pixels that differ between the newest context frame and the target (what moved, where it was and
            # where it is now) weigh 1 + change_weight: a small moving object is otherwise a sliver of the mean.
            changed = (x0[:, -1] - x0[:, -2]).abs() > CHANGED_PIXEL
            weights = torch.ones_like(x0)
            weights[:, -1] = 1.0 + c.unet_change_weight * changed.to(x0.dtype)
        return diffusion_forcing_loss(
            self.denoiser.sequence_prediction, x0, self.schedule, parameterization=c.parameterization, cond=cond,
            levels=levels, mask=mask, element_weights=weights,
        )  # fmt: skip

    # -- checkpoints ------------------------------------------------------------------------------------
    def checkpoint_contents(self) -> tuple[dict, dict]:
        tensors = {f"denoiser.{k}": v for k, v in self.denoiser.state_dict().items()}
        tensors |= self.tokenizer.tensors() | self.action_encoder.tensors()
        meta = {
            "config": asdict(self.config),
            "tokenizer": self.tokenizer.config(),
            "action": self.action_encoder.config(),
            "observation_space": box_to_dict(self.observation_space),
        }
        return tensors, meta

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> WorldModel:
        """Load a checkpoint directory, or a shipped checkpoint by name (e.g. ``"wm-pusht-state"``)."""
        return super().from_pretrained(name_or_path).eval().requires_grad_(False)

    @classmethod
    def from_checkpoint(cls, tensors: dict, meta: dict, *, where) -> WorldModel:
        config = WorldModelConfig.from_dict(require_field(meta, "config", where))
        tokenizer_config = require_field(meta, "tokenizer", where)
        kind = tokenizer_config.get("kind")
        if kind not in TOKENIZERS:
            raise ValueError(f"{where}: unknown tokenizer kind {kind!r}; known: {', '.join(TOKENIZERS)}")
        tokenizer: Tokenizer = TOKENIZERS[kind].from_tensors(tensors, tokenizer_config)
        action_encoder = ActionEncoder.from_tensors(tensors, require_field(meta, "action", where))
        space = box_from_dict(require_field(meta, "observation_space", where))
        model = cls(config, tokenizer, action_encoder, space)
        model.denoiser.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("denoiser.")})
        return model


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A world-model checkpoint directory, or a shipped one by name (``worldsim/checkpoints/<name>``)."""
    return resolve_pretrained(name_or_path, CHECKPOINT_KIND)
