"""Per-frame camera features kept between control steps, so each frame goes through the CNN once.

A camera policy's history holds ``obs_horizon`` frames; at every control step all but the newest were
already encoded at the steps before. The pixel encoder works frame by frame (a shared CNN, then a
projection of the history's features), so the features of a frame seen before are reused and only new
frames are encoded: with a history of two, half the CNN work of a control step. Frames are matched by
content (their bytes), never by position, so a cache cannot hand back another frame's features whatever
the caller passes (a new episode, a batch, a server answering several clients). Torch-free: the torch
policy and the onnxruntime runner share it, each with its own ``encode``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from worldsim.core.array_ops import is_torch


class FrameFeatureCache:
    """``features(frames, encode)``: features ``[B, T, F]`` of frames ``[B, T, H, W, C]`` (numpy or torch),
    calling ``encode(frames [N, H, W, C]) -> [N, F]`` (same kind) on the distinct frames it has not kept.

    It keeps the features of the frames of the last call only: what the next control step's history shares
    with it. ``encoded_frames`` counts the frames ``encode`` was given.
    """

    def __init__(self):
        self._kept: dict[bytes, object] = {}
        self.encoded_frames = 0

    def clear(self) -> None:
        self._kept = {}

    def features(self, frames, encode: Callable):
        b, t = frames.shape[:2]
        flat = frames.reshape(b * t, *frames.shape[2:])
        host = flat.detach().cpu().numpy() if is_torch(flat) else np.asarray(flat)
        keys = [host[i].tobytes() for i in range(len(host))]
        rows = {key: self._kept[key] for key in keys if key in self._kept}
        new = list(dict.fromkeys(key for key in keys if key not in rows))  # distinct, first-seen order
        if new:
            first = {key: i for i, key in reversed(list(enumerate(keys)))}
            encoded = encode(flat[[first[key] for key in new]])
            self.encoded_frames += len(new)
            rows.update(zip(new, encoded, strict=True))
        self._kept = rows
        stacked = [rows[key] for key in keys]
        if is_torch(flat):
            import torch

            return torch.stack(stacked).reshape(b, t, -1)
        return np.stack(stacked).reshape(b, t, -1)
