"""A pixel-space denoiser in DIAMOND's manner: a U-Net over the noisy next frame stacked with past frames.

``pred = unet(x, level, cond, window)``: ``x [B, 1, 3 * H * W]`` is the next frame at noise ``level [B, 1]``
(the core's per-frame levels, so the core's schedules, plans and updates sample it), ``cond [B, 1, C]`` the
action that leads to it, and ``window`` (:class:`~worldsim.world_model.frame_window.FrameWindow`) the last
``context_frames`` frames with their own noise levels (context noise, GameNGen's augmentation) and the
actions between them. The frames are stacked on the channel axis with the noisy one; the noise levels and
actions become one embedding that modulates every residual block (adaptive group norm). Skip connections
let the network copy what does not move, so an object's outline survives however long the stream runs:
nothing squeezes a frame through a few latent tokens.

Cost on two CPU cores: a 2x2 space-to-depth at the input and its inverse at the output put the first
stage at half resolution without losing a pixel (a 64x64 frame is worked on at 32x32 with 12 channels per
frame). ``channels`` sets the width of each stage; every stage halves the resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from worldsim.core.transformer import level_features
from worldsim.core.validation import check_finite, check_levels
from worldsim.world_model.frame_window import FrameWindow


@dataclass
class UNetConfig:
    """Sizes of the frame U-Net: frame side, conditioning width, past frames and the width of each stage."""

    image_size: int
    cond_dim: int
    context_frames: int = 4
    channels: list[int] = field(default_factory=lambda: [48, 96, 128])
    embed_dim: int = 128
    level_features: int = 32
    copy_skip: bool = False
    """Add the newest context frame to the output: with the clean frame as the target (``sample``
    parameterization), the untrained network predicts "nothing moves" and learns only the change."""
    coord_channels: bool = False
    """Give the first convolution two more channels, each pixel's x and y in [-1, 1] (CoordConv, Liu et al.
    2018): the actions reach the network as one global embedding, and a convolution alone cannot turn a
    number into a place in the frame (where a target position puts the pusher)."""
    action_channels: bool = False
    """Give the first convolution the action that leads to the frame as ``cond_dim`` more channels, each
    constant over the frame, beside the embedding: with ``coord_channels`` a convolution can compare a target
    position with each pixel's own and draw the pusher where the action puts it."""

    def __post_init__(self) -> None:
        depth = len(self.channels)
        if depth < 1 or min(self.channels) < 8:
            raise ValueError(f"unet channels must list at least one stage of >= 8 channels, got {self.channels}")
        if self.image_size % (2**depth):  # the space-to-depth input, then one halving per further stage
            raise ValueError(
                f"a {self.image_size}-px frame does not halve {depth} times; use a side divisible by "
                f"{2**depth} or fewer unet stages"
            )
        if self.context_frames < 1:
            raise ValueError(f"a frame U-Net needs context_frames >= 1, got {self.context_frames}")

    @property
    def frame_dim(self) -> int:
        return 3 * self.image_size * self.image_size

    def to_dict(self) -> dict:
        return asdict(self)


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with group norm; the embedding scales and shifts the second norm (AdaGN)."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels, affine=False)
        self.modulation = nn.Linear(embed_dim, 2 * out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as its skip: the U-Net starts near a copy
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.modulation(emb)[:, :, None, None].chunk(2, dim=1)
        out = self.norm2(out) * (1 + scale) + shift
        return self.skip(h) + self.conv2(F.silu(out))


class FrameUNet(nn.Module):
    """Predicts the next frame's diffusion target from the noisy frame, its level, its action and the past."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c, k = config.channels, config.context_frames
        # The oldest frame's action is never seen: in training it is the "no action" of a window's start.
        cond_in = k * config.cond_dim + (k + 1) * config.level_features
        self.embed = nn.Sequential(
            nn.Linear(cond_in, config.embed_dim), nn.SiLU(), nn.Linear(config.embed_dim, config.embed_dim)
        )
        stem_in = 12 * (k + 1) + 2 * config.coord_channels + config.cond_dim * config.action_channels
        self.stem = nn.Conv2d(stem_in, c[0], 3, padding=1)
        side = torch.linspace(-1.0, 1.0, config.image_size // 2)
        coords = torch.stack(torch.meshgrid(side, side, indexing="xy"))[None]  # [1, 2 (x, y), S / 2, S / 2]
        self.register_buffer("coords", coords if config.coord_channels else None, persistent=False)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i, width in enumerate(c):
            self.down_blocks.append(ResBlock(c[i - 1] if i else c[0], width, config.embed_dim))
            if i < len(c) - 1:
                self.downsamples.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.middle = ResBlock(c[-1], c[-1], config.embed_dim)
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(len(c) - 1)):
            self.up_blocks.append(ResBlock(c[i + 1] + c[i], c[i], config.embed_dim))
        self.head_norm = nn.GroupNorm(_groups(c[0]), c[0])
        self.head = nn.Conv2d(c[0], 12, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # -- the interface the streaming session drives (the transformer's, with a frame window for a cache) --
    def new_cache(self, batch_size: int, **_) -> FrameWindow:
        """An empty window of ``context_frames`` (the sink / window / EMA options of a KV cache do not apply)."""
        c = self.config
        like = next(self.parameters())
        no_action = torch.zeros(c.cond_dim, dtype=like.dtype, device=like.device)
        return FrameWindow(
            batch_size=batch_size, frames=c.context_frames, frame_dim=c.frame_dim, cond_dim=c.cond_dim,
            no_action=no_action, like=like,
        )  # fmt: skip

    def forward(self, x, level, cond, cache: FrameWindow, *, update_cache: bool = False):
        """The prediction for ``x [B, 1, D]`` given ``cache``; ``update_cache`` commits ``x`` (frames ``[B, F, D]``,
        already at their ``level``) to the window instead, and returns None."""
        if update_cache:
            cache.append(x, level, cond)
            return None
        if x.shape[1] != 1:
            raise ValueError(f"a frame U-Net denoises one frame per call, got {x.shape[1]}")
        return self.predict(x, level, cond, cache.frames, cache.levels, cache.conds)

    def predict(self, x, level, cond, context, context_levels, context_conds) -> torch.Tensor:
        """The pure function of the network: ``x [B, 1, D]``, ``level [B, 1]``, ``cond [B, 1, C]`` and the
        context ``[B, K, D]``, ``[B, K]``, ``[B, K, C]`` to the prediction ``[B, 1, D]`` (exported to ONNX)."""
        c = self.config
        b, s = x.shape[0], c.image_size
        if not torch.compiler.is_compiling():  # data-dependent checks cannot be traced into a graph
            check_finite("x", x)
            check_levels("level", level)
        frames = torch.cat([context, x], dim=1).reshape(b * (c.context_frames + 1), 3, s, s)
        h = F.pixel_unshuffle(frames, 2).reshape(b, -1, s // 2, s // 2)
        if self.coords is not None:
            h = torch.cat([h, self.coords.to(h).expand(b, -1, -1, -1)], dim=1)
        if c.action_channels:
            h = torch.cat([h, cond[:, 0, :, None, None].to(h).expand(-1, -1, s // 2, s // 2)], dim=1)
        levels = torch.cat([context_levels, level], dim=1)
        conds = torch.cat([context_conds[:, 1:], cond], dim=1)
        emb = self.embed(torch.cat([level_features(levels, c.level_features).flatten(1), conds.flatten(1)], dim=1))
        h = self.stem(h)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, emb)
            if i < len(self.downsamples):
                skips.append(h)
                h = self.downsamples[i](h)
        h = self.middle(h, emb)
        for block in self.up_blocks:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        out = F.pixel_shuffle(self.head(F.silu(self.head_norm(h))), 2).reshape(b, 1, -1)
        return out + context[:, -1:] if c.copy_skip else out

    def sequence_prediction(self, x, level, cond) -> torch.Tensor:
        """Training: windows ``x [B, K + 1, D]`` (the last frame is the one to predict) to ``[B, K + 1, D]``
        whose context positions are zero, so the core's per-token loss takes it with a mask on the last frame."""
        k = self.config.context_frames
        if x.shape[1] != k + 1:
            raise ValueError(f"training windows of a frame U-Net have {k + 1} frames, got {x.shape[1]}")
        pred = self.predict(x[:, k:], level[:, k:], cond[:, k:], x[:, :k], level[:, :k], cond[:, :k])
        return torch.cat([torch.zeros_like(x[:, :k]), pred], dim=1)
