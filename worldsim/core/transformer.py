"""The reference denoiser: a block-causal transformer over noisy tokens with per-token noise levels.

``pred = model(x_t, level, cond, cache=None)`` with ``x_t [B, T, in_dim]`` and ``level [B, T]``:

- each token is modulated by adaptive layer norm (DiT's adaLN-zero) from the embedding of *its own*
  level plus its conditioning (``cond [B, cond_dim]`` global, or ``[B, T, cond_dim]`` per token);
- tokens are grouped into frames of ``tokens_per_frame``: tokens of one frame attend to each other,
  frames attend only to the past (block-causal);
- rotary embeddings carry the frame index, a learned embedding the token's place inside its frame;
- with a :class:`~worldsim.core.kv_cache.KVCache`, a call attends to the cached past frames too, and
  ``update_cache=True`` appends the call's frames, so generation costs one frame per call.

Rotary positions in the cache are slot indices (see ``kv_cache.py``): once frames have been evicted, a
frame sees the sink just before the window. ``forward(..., attention_window=(sink, window))`` computes
the same attention pattern and relative positions for a whole sequence at once, without a cache: it is
the reference the cached path is tested against, and a way to train on the pattern used at inference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worldsim.core.kv_cache import KVCache
from worldsim.core.validation import check_finite, check_levels


@dataclass
class TransformerConfig:
    """Sizes of the block-causal transformer denoiser: token and conditioning widths, depth, heads, frame size."""

    in_dim: int
    out_dim: int | None = None
    cond_dim: int = 0
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    tokens_per_frame: int = 1
    rope_base: float = 10_000.0
    level_features: int = 128

    def __post_init__(self) -> None:
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width {self.width} must split into {self.heads} heads of even size")
        for name in ("in_dim", "width", "depth", "heads", "tokens_per_frame", "level_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"TransformerConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def output_dim(self) -> int:
        return self.out_dim if self.out_dim is not None else self.in_dim

    def to_dict(self) -> dict:
        return asdict(self)


def level_features(level: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the noise level (scaled to a 0..1000 "timestep" range), ``[..., dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=level.device, dtype=torch.float32) / half)
    angles = (level.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(level.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on interleaved pairs; ``cos``/``sin`` are ``[tokens, head_dim / 2]``."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    """One pre-norm transformer layer: adaLN-modulated block-causal attention and MLP, each gated."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h, emb, attend, past_kv):
        """Returns the new hidden states and this call's (un-rotated) keys and values."""
        b, t, d = h.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(emb)).chunk(6, dim=-1)
        q, k, v = self.qkv(_modulate(self.norm1(h), shift1, scale1)).chunk(3, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        k_all, v_all = (k, v) if past_kv is None else (torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2))
        attn = attend(q, k_all, v_all)
        h = h + gate1 * self.proj(attn.transpose(1, 2).reshape(b, t, d))
        h = h + gate2 * self.mlp(_modulate(self.norm2(h), shift2, scale2))
        return h, k, v


class CausalTransformer(nn.Module):
    """Block-causal transformer denoiser with per-token adaptive layer norm and a bounded KV cache."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        c = config
        self.input = nn.Linear(c.in_dim, c.width)
        self.token_in_frame = nn.Parameter(torch.zeros(c.tokens_per_frame, c.width))
        self.level_mlp = nn.Sequential(nn.Linear(c.level_features, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.cond_proj = nn.Linear(c.cond_dim, c.width) if c.cond_dim > 0 else None
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.final_norm = nn.LayerNorm(c.width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(c.width, 2 * c.width)
        self.output = nn.Linear(c.width, c.output_dim)
        for layer in (self.final_modulation, self.output):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        head_dim = c.width // c.heads
        inv_freq = 1.0 / (c.rope_base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @property
    def head_dim(self) -> int:
        return self.config.width // self.config.heads

    def new_cache(
        self,
        batch_size: int,
        *,
        sink_frames: int,
        window_frames: int,
        ema_decay: float | None = None,
        slot_frames: int | None = None,
    ) -> KVCache:
        """An empty bounded cache for this model (memory is allocated once, here).

        ``slot_frames`` (at least sink + window) sizes the buffers like those of an exported step.
        """
        return KVCache(
            num_layers=self.config.depth,
            batch_size=batch_size,
            num_heads=self.config.heads,
            head_dim=self.head_dim,
            tokens_per_frame=self.config.tokens_per_frame,
            sink_frames=sink_frames,
            window_frames=window_frames,
            ema_decay=ema_decay,
            slot_frames=slot_frames,
            like=next(self.parameters()),
        )

    def _check(self, x, level, cond, cache) -> None:
        c = self.config
        if x.ndim != 3 or x.shape[-1] != c.in_dim:
            raise ValueError(f"x must have shape [batch, tokens, {c.in_dim}], got {tuple(x.shape)}")
        if x.shape[1] == 0 or x.shape[1] % c.tokens_per_frame:
            raise ValueError(f"the token count {x.shape[1]} must be a positive multiple of {c.tokens_per_frame}")
        if tuple(level.shape) != tuple(x.shape[:2]):
            raise ValueError(f"level must have shape [batch, tokens] = {list(x.shape[:2])}, got {list(level.shape)}")
        # Value checks branch on data, which torch.export cannot trace; exported graphs are checked by
        # their runners' callers instead.
        tracing = torch.compiler.is_compiling()
        if not tracing:
            check_levels("level", level)
            check_finite("x", x)
        if (cond is None) != (c.cond_dim == 0):
            wanted = f"cond of width {c.cond_dim}" if c.cond_dim else "no cond"
            raise ValueError(f"this model takes {wanted}")
        if cond is not None:
            ok = cond.shape[-1] == c.cond_dim and (
                (cond.ndim == 2 and cond.shape[0] == x.shape[0]) or (cond.ndim == 3 and cond.shape[:2] == x.shape[:2])
            )
            if not ok:
                raise ValueError(
                    f"cond must have shape [batch, {c.cond_dim}] or [batch, tokens, {c.cond_dim}] "
                    f"for x of shape {tuple(x.shape)}, got {tuple(cond.shape)}"
                )
            if not tracing:
                check_finite("cond", cond)
        if cache is not None and cache.batch_size != x.shape[0]:
            raise ValueError(f"the cache holds batch {cache.batch_size}, x has batch {x.shape[0]}")

    def _angles(self, positions: torch.Tensor) -> torch.Tensor:
        # float64 keeps rotations exact for positions in the tens of thousands.
        return positions.double()[..., None] * self.inv_freq.double()

    def _slot_attention(self, q_pos: torch.Tensor, k_pos: torch.Tensor, key_valid: torch.Tensor):
        """Standard fused attention; keys at slot positions ``k_pos``, block-causal by position.

        ``key_valid`` masks out the keys of cache slots that hold no frame yet.
        """
        mask = (k_pos[None, :] <= q_pos[:, None]) & key_valid[None, :]
        aq, ak = self._angles(q_pos), self._angles(k_pos)
        rope_q = (aq.cos().float(), aq.sin().float())
        rope_k = (ak.cos().float(), ak.sin().float())

        def attend(q, k, v):
            q, k = _rotate(q, *rope_q).to(v.dtype), _rotate(k, *rope_k).to(v.dtype)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        return attend

    def _windowed_attention(self, frames: int, sink: int, window: int):
        """Attention over a whole sequence as the bounded cache would see it, frame by frame.

        Frame ``f`` sees the frames it would find in a cache of ``sink + window`` frames and itself; once
        the cache is full the sink sits just before the window, so rotary phases depend on a per-pair
        distance, applied here on complex pairs: ``Re(q conj(k) exp(i * theta * distance))``.
        """
        p = self.config.tokens_per_frame
        f = torch.arange(frames, device=self.inv_freq.device)
        qf, kf = f[:, None], f[None, :]
        full = qf >= sink + window
        visible = (kf <= qf) & (~full | (kf < sink) | (kf >= qf - window))
        distance = torch.where(full & (kf < sink), sink + window - kf, qf - kf)
        distance = distance.repeat_interleave(p, 0).repeat_interleave(p, 1)
        visible = visible.repeat_interleave(p, 0).repeat_interleave(p, 1)
        angles = self._angles(distance)
        phase = torch.polar(torch.ones_like(angles), angles)

        def attend(q, k, v):
            qc = torch.complex(q[..., 0::2].double(), q[..., 1::2].double())
            kc = torch.complex(k[..., 0::2].double(), k[..., 1::2].double())
            logits = torch.einsum("bhqi,bhki,qki->bhqk", qc, kc.conj(), phase).real / math.sqrt(q.shape[-1])
            logits = logits.masked_fill(~visible, float("-inf"))
            return (logits.softmax(-1).to(v.dtype)) @ v

        return attend

    def forward(
        self,
        x: torch.Tensor,
        level: torch.Tensor,
        cond: torch.Tensor | None = None,
        cache: KVCache | None = None,
        *,
        update_cache: bool = False,
        attention_window: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Predict for every token of ``x``; with ``cache``, attend to the cached past frames too.

        ``update_cache=True`` appends this call's frames to the cache (commit them as context).
        ``attention_window=(sink_frames, window_frames)`` (no cache) restricts a full-sequence call to
        what a bounded cache of that size would show each frame.
        """
        self._check(x, level, cond, cache)
        if attention_window is not None and cache is not None:
            raise ValueError("attention_window describes a cache-free call; pass either it or a cache")
        if update_cache and cache is None:
            raise ValueError("update_cache=True needs a cache")
        if cache is not None:
            pred, keys, values = self.forward_fixed_cache(x, level, cond, cache.keys, cache.values, cache.num_frames)
            if update_cache:
                cache.append(keys.detach(), values.detach())  # the cache holds context, never autograd history
            return pred
        p = self.config.tokens_per_frame
        if attention_window is not None:
            sink, window = attention_window
            if sink < 0 or window < 1:
                raise ValueError(f"attention_window needs sink >= 0 and window >= 1, got {attention_window}")
            attend = self._windowed_attention(x.shape[1] // p, sink, window)
        else:
            positions = torch.arange(x.shape[1], device=x.device) // p
            attend = self._slot_attention(positions, positions, torch.ones_like(positions, dtype=torch.bool))
        return self._run(x, level, cond, attend, None)[0]

    def forward_fixed_cache(
        self,
        x: torch.Tensor,
        level: torch.Tensor,
        cond: torch.Tensor | None,
        cache_keys: torch.Tensor,
        cache_values: torch.Tensor,
        cache_frames: torch.Tensor | int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A cached call as a pure function of the cache's whole buffers: the step that ONNX export traces.

        ``cache_keys``/``cache_values`` are a :class:`KVCache`'s buffers ``[layers, batch, heads, slots,
        head_dim]``; ``cache_frames`` (an int, or an integer scalar tensor in an exported graph) is the
        number of frames they hold. Keys of empty slots are masked out, so no shape depends on how full
        the cache is. Returns ``(pred, keys, values)``: this call's keys and values ``[layers, batch,
        heads, tokens, head_dim]``, which :meth:`KVCache.append` takes to commit the call's frames.
        """
        self._check(x, level, cond, None)
        c = self.config
        if cache_keys.shape != cache_values.shape or tuple(cache_keys.shape[:3]) != (c.depth, x.shape[0], c.heads):
            raise ValueError(
                f"cache buffers must have shape [{c.depth}, {x.shape[0]}, {c.heads}, slots, {self.head_dim}], "
                f"got {tuple(cache_keys.shape)} and {tuple(cache_values.shape)}"
            )
        p = c.tokens_per_frame
        # Block-causal by frame position: a token sees the filled cache slots and the tokens of its own and
        # earlier frames of this call, which sit at the positions right after the cache's frames.
        q_pos = cache_frames + torch.arange(x.shape[1], device=x.device) // p
        slot_pos = torch.arange(cache_keys.shape[3], device=x.device) // p
        key_valid = torch.cat([slot_pos < cache_frames, torch.ones_like(q_pos, dtype=torch.bool)])
        attend = self._slot_attention(q_pos, torch.cat([slot_pos, q_pos]), key_valid)
        return self._run(x, level, cond, attend, (cache_keys, cache_values))

    def _run(self, x, level, cond, attend, past) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network proper: the prediction plus every layer's keys and values of this call's tokens."""
        c = self.config
        h = self.input(x) + self.token_in_frame.repeat(x.shape[1] // c.tokens_per_frame, 1)
        emb = self.level_mlp(level_features(level, c.level_features))
        if cond is not None:
            cond_emb = self.cond_proj(cond)
            emb = emb + (cond_emb[:, None, :] if cond.ndim == 2 else cond_emb)
        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            h, k, v = block(h, emb, attend, None if past is None else (past[0][i], past[1][i]))
            new_keys.append(k)
            new_values.append(v)
        shift, scale = self.final_modulation(F.silu(emb)).chunk(2, dim=-1)
        pred = self.output(_modulate(self.final_norm(h), shift, scale))
        return pred, torch.stack(new_keys), torch.stack(new_values)
