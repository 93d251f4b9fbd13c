"""The bounded context of a pixel-space world model: the last few frames, their noise levels and actions.

A U-Net world model (:mod:`worldsim.world_model.unet`) sees its past as a stack of frames, not as cached
keys and values. This window plays the KV cache's part in a streaming session: memory is allocated once
(``frames`` slots), committing a frame when the window is full drops the oldest, and the streaming
sampler (:mod:`worldsim.world_model.streaming`) drives both kinds of context through the same calls.

Until ``frames`` frames have been committed, the empty slots repeat the oldest frame with the "no action"
condition, as at the start of a training episode (the network always sees a full stack). The buffers are
torch tensors or numpy arrays (``like``); nothing here imports torch.
"""

from __future__ import annotations

import numpy as np

from worldsim.core.array_ops import copy, zeros


class FrameWindow:
    """Frames ``[batch, frames, dim]``, their levels ``[batch, frames]`` and conditions ``[batch, frames, cond]``.

    Slot ``frames - 1`` holds the newest frame. ``no_action`` is the condition of padding slots.
    """

    def __init__(self, *, batch_size: int, frames: int, frame_dim: int, cond_dim: int, no_action, like=None):
        if frames < 1 or batch_size < 1:
            raise ValueError(f"a frame window needs frames >= 1 and batch_size >= 1, got {frames}, {batch_size}")
        like = np.zeros((), np.float32) if like is None else like
        self.frames = zeros((batch_size, frames, frame_dim), like)
        self.levels = zeros((batch_size, frames), like)
        self.conds = zeros((batch_size, frames, cond_dim), like)
        self.no_action = no_action
        self.num_frames = 0
        self.frames_seen = 0

    @property
    def capacity_frames(self) -> int:
        return self.frames.shape[1]

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.levels.nbytes + self.conds.nbytes

    def append(self, frames, levels, conds) -> None:
        """Commit ``frames [batch, F, dim]`` at ``levels [batch, F]`` with ``conds [batch, F, cond]``, oldest first."""
        if frames.shape[0] != self.frames.shape[0] or frames.shape[2] != self.frames.shape[2]:
            raise ValueError(f"a frame window takes frames [batch, F, dim] like {tuple(self.frames.shape)}")
        for f in range(frames.shape[1]):
            self._append_one(frames[:, f], levels[:, f], conds[:, f])

    def _append_one(self, frame, level, cond) -> None:
        self.frames_seen += 1
        if self.num_frames == 0:  # pad every slot with the first frame, as a stream's start looks in training
            self.frames[...] = frame[:, None]
            self.levels[...] = level[:, None]
            self.conds[...] = self.no_action
        # Shift left by one slot; copy because source and destination overlap.
        self.frames[:, :-1] = copy(self.frames[:, 1:])
        self.levels[:, :-1] = copy(self.levels[:, 1:])
        self.conds[:, :-1] = copy(self.conds[:, 1:])
        self.frames[:, -1] = frame
        self.levels[:, -1] = level
        self.conds[:, -1] = cond
        self.num_frames = min(self.num_frames + 1, self.capacity_frames)
