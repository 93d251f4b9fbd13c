"""A bounded key/value cache: pinned sink frames plus a sliding window of recent frames.

Memory is allocated once, so it stays flat however many frames stream through. When the window is
full, the oldest window frame is evicted and the rest shift left (the sink never moves), as in
LongLive / Self-Forcing. With ``ema_decay`` every sink slot instead keeps an exponential moving average
of the evicted frames (Reward Forcing's EMA-Sink: ``sink <- a * sink + (1 - a) * evicted``).

Keys are stored *before* rotary embedding: the transformer rotates them by their slot index on every
call, so the sink is always re-aligned just before the window (Deep Forcing's RoPE re-alignment) and
relative distances never exceed what the model saw in training.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer keys and values ``[layers, batch, heads, (sink + window) * tokens_per_frame, head_dim]``."""

    def __init__(
        self,
        *,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        tokens_per_frame: int,
        sink_frames: int,
        window_frames: int,
        ema_decay: float | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if sink_frames < 0 or window_frames < 1:
            raise ValueError(f"need sink_frames >= 0 and window_frames >= 1, got {sink_frames}, {window_frames}")
        if ema_decay is not None and not (0.0 <= ema_decay < 1.0 and sink_frames > 0):
            raise ValueError("ema_decay must be in [0, 1) and needs sink_frames > 0")
        self.tokens_per_frame = tokens_per_frame
        self.sink_frames = sink_frames
        self.window_frames = window_frames
        self.ema_decay = ema_decay
        shape = (num_layers, batch_size, num_heads, (sink_frames + window_frames) * tokens_per_frame, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.num_frames = 0
        self.frames_seen = 0

    @property
    def capacity_frames(self) -> int:
        return self.sink_frames + self.window_frames

    @property
    def num_tokens(self) -> int:
        return self.num_frames * self.tokens_per_frame

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def reset(self) -> None:
        self.keys.zero_()
        self.values.zero_()
        self.num_frames = 0
        self.frames_seen = 0

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The valid keys and values of one layer, ``[batch, heads, num_tokens, head_dim]``."""
        n = self.num_tokens
        return self.keys[index, :, :, :n], self.values[index, :, :, :n]

    @torch.no_grad()
    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append whole frames: ``keys``/``values`` are ``[layers, batch, heads, frames * tokens, head_dim]``."""
        if keys.shape != values.shape or keys.shape[:3] != self.keys.shape[:3] or keys.shape[4] != self.keys.shape[4]:
            raise ValueError(f"cache append expects [layers, batch, heads, tokens, head_dim] like {self.keys.shape}")
        p = self.tokens_per_frame
        if keys.shape[3] % p:
            raise ValueError(f"cache append needs whole frames of {p} tokens, got {keys.shape[3]} tokens")
        for f in range(keys.shape[3] // p):
            self._append_frame(keys[:, :, :, f * p : (f + 1) * p], values[:, :, :, f * p : (f + 1) * p])

    def _append_frame(self, k: torch.Tensor, v: torch.Tensor) -> None:
        p = self.tokens_per_frame
        self.frames_seen += 1
        if self.num_frames < self.capacity_frames:
            start = self.num_frames * p
            self.keys[:, :, :, start : start + p] = k
            self.values[:, :, :, start : start + p] = v
            self.num_frames += 1
            return
        sink_end, first_window_end = self.sink_frames * p, (self.sink_frames + 1) * p
        if self.ema_decay is not None:
            a = self.ema_decay
            evicted_k = self.keys[:, :, :, sink_end:first_window_end]
            evicted_v = self.values[:, :, :, sink_end:first_window_end]
            for s in range(self.sink_frames):
                sl = slice(s * p, (s + 1) * p)
                self.keys[:, :, :, sl].mul_(a).add_(evicted_k, alpha=1 - a)
                self.values[:, :, :, sl].mul_(a).add_(evicted_v, alpha=1 - a)
        # Shift the window left by one frame; clone because source and destination overlap.
        self.keys[:, :, :, sink_end:-p] = self.keys[:, :, :, first_window_end:].clone()
        self.values[:, :, :, sink_end:-p] = self.values[:, :, :, first_window_end:].clone()
        self.keys[:, :, :, -p:] = k
        self.values[:, :, :, -p:] = v
