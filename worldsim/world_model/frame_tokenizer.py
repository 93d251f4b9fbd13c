"""The frame tokenizer of a pixel-space world model: a whole frame is one token of its pixels in [-1, 1].

Nothing is learned and nothing is lost: ``encode`` scales ``uint8 [N, H, W, 3]`` frames to ``[N, 1, 3 * H * W]``
(channel-first, the order the U-Net unfolds), ``decode`` rounds back to ``uint8`` frames, so every generated
frame is quantized to what a camera could have produced before it joins the context (as DIAMOND does).
Torch-free: arrays in, numpy out; the torch and onnxruntime sessions share it.
"""

from __future__ import annotations

import numpy as np


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


class FrameTokenizer:
    """``encode(frames) -> [N, 1, 3 * H * W]`` float32 in [-1, 1]; ``decode(tokens) -> uint8 [N, H, W, 3]``."""

    tokens_per_frame = 1

    def __init__(self, image_size: int):
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size
        self.obs_shape: tuple[int, ...] = (image_size, image_size, 3)
        self.token_dim = 3 * image_size * image_size

    def encode(self, obs, previous=None) -> np.ndarray:
        """Frames ``uint8 [N, H, W, 3]`` to tokens (``previous`` is unused: frames stand alone)."""
        frames = _as_numpy(obs)
        if frames.ndim != 4 or tuple(frames.shape[1:]) != self.obs_shape:
            raise ValueError(f"frames must have shape [N, {', '.join(map(str, self.obs_shape))}], got {frames.shape}")
        chw = frames.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
        return np.ascontiguousarray(chw.reshape(len(frames), 1, self.token_dim))

    def decode(self, tokens, previous=None) -> np.ndarray:
        """Tokens ``[N, 1, D]`` to ``uint8`` frames (``previous`` is unused)."""
        s = self.image_size
        images = _as_numpy(tokens).reshape(-1, 3, s, s).transpose(0, 2, 3, 1)
        return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)

    def tensors(self) -> dict:
        return {}

    def config(self) -> dict:
        return {"kind": "frames", "image_size": self.image_size}

    @classmethod
    def from_tensors(cls, tensors: dict, config: dict) -> FrameTokenizer:
        return cls(int(config["image_size"]))
