"""A bounded key/value cache: pinned sink frames plus a sliding window of recent frames.

Memory is allocated once, so it stays flat however many frames stream through. When the window is
full, the oldest window frame is evicted and the rest shift left (the sink never moves), as in
LongLive / Self-Forcing. With ``ema_decay`` every sink slot instead keeps an exponential moving average
of the evicted frames (Reward Forcing's EMA-Sink: ``sink <- a * sink + (1 - a) * evicted``).

Keys are stored *before* rotary embedding: the transformer rotates them by their slot index on every
call, so the sink is always re-aligned just before the window (Deep Forcing's RoPE re-alignment) and
relative distances never exceed what the model saw in training.

The buffers are torch tensors for the torch model or numpy arrays for the onnxruntime runner (the same
code serves both, and it imports no torch). Their size is fixed, ``slot_frames`` frames (at least the
capacity), so an exported step that takes them as inputs always sees the same shapes.
"""

from __future__ import annotations

import numpy as np

from worldsim.core.array_ops import copy, zeros


class KVCache:
    """Per-layer keys and values ``[layers, batch, heads, slot_frames * tokens_per_frame, head_dim]``.

    Frames occupy the first ``num_frames`` slots (at most ``sink_frames + window_frames``); the rest of
    the buffer stays zero. ``like`` (a tensor or array) gives the buffers' kind, dtype and device.
    """

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
        slot_frames: int | None = None,
        like=None,
    ):
        if sink_frames < 0 or window_frames < 1:
            raise ValueError(f"need sink_frames >= 0 and window_frames >= 1, got {sink_frames}, {window_frames}")
        if ema_decay is not None and not (0.0 <= ema_decay < 1.0 and sink_frames > 0):
            raise ValueError("ema_decay must be in [0, 1) and needs sink_frames > 0")
        slot_frames = sink_frames + window_frames if slot_frames is None else slot_frames
        if slot_frames < sink_frames + window_frames:
            raise ValueError(f"slot_frames ({slot_frames}) must hold sink + window = {sink_frames + window_frames}")
        self.tokens_per_frame = tokens_per_frame
        self.sink_frames = sink_frames
        self.window_frames = window_frames
        self.ema_decay = ema_decay
        shape = (num_layers, batch_size, num_heads, slot_frames * tokens_per_frame, head_dim)
        like = np.zeros((), np.float32) if like is None else like
        self.keys = zeros(shape, like)
        self.values = zeros(shape, like)
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
        return self.keys.nbytes + self.values.nbytes

    def reset(self) -> None:
        self.keys[...] = 0
        self.values[...] = 0
        self.num_frames = 0
        self.frames_seen = 0

    def layer(self, index: int) -> tuple:
        """The valid keys and values of one layer, ``[batch, heads, num_tokens, head_dim]``."""
        n = self.num_tokens
        return self.keys[index, :, :, :n], self.values[index, :, :, :n]

    def append(self, keys, values) -> None:
        """Append whole frames: ``keys``/``values`` are ``[layers, batch, heads, frames * tokens, head_dim]``."""
        if keys.shape != values.shape or keys.shape[:3] != self.keys.shape[:3] or keys.shape[4] != self.keys.shape[4]:
            raise ValueError(f"cache append expects [layers, batch, heads, tokens, head_dim] like {self.keys.shape}")
        p = self.tokens_per_frame
        if keys.shape[3] % p:
            raise ValueError(f"cache append needs whole frames of {p} tokens, got {keys.shape[3]} tokens")
        for f in range(keys.shape[3] // p):
            self._append_frame(keys[:, :, :, f * p : (f + 1) * p], values[:, :, :, f * p : (f + 1) * p])

    def _append_frame(self, k, v) -> None:
        p = self.tokens_per_frame
        self.frames_seen += 1
        if self.num_frames < self.capacity_frames:
            start = self.num_frames * p
            self.keys[:, :, :, start : start + p] = k
            self.values[:, :, :, start : start + p] = v
            self.num_frames += 1
            return
        sink_end, first_window_end = self.sink_frames * p, (self.sink_frames + 1) * p
        end = self.capacity_frames * p
        if self.ema_decay is not None:
            a = self.ema_decay
            evicted_k = self.keys[:, :, :, sink_end:first_window_end]
            evicted_v = self.values[:, :, :, sink_end:first_window_end]
            for s in range(self.sink_frames):
                sl = slice(s * p, (s + 1) * p)
                self.keys[:, :, :, sl] = a * self.keys[:, :, :, sl] + (1 - a) * evicted_k
                self.values[:, :, :, sl] = a * self.values[:, :, :, sl] + (1 - a) * evicted_v
        # Shift the window left by one frame; copy because source and destination overlap.
        self.keys[:, :, :, sink_end : end - p] = copy(self.keys[:, :, :, first_window_end:end])
        self.values[:, :, :, sink_end : end - p] = copy(self.values[:, :, :, first_window_end:end])
        self.keys[:, :, :, end - p : end] = k
        self.values[:, :, :, end - p : end] = v
