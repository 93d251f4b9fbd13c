"""Per-dimension affine normalization, written once for torch tensors and numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from worldsim.core.array_ops import as_array_like

NormalizationMode = Literal["minmax", "meanstd", "identity"]

# A dimension whose data never varies would divide by zero; it is passed through shifted instead.
_MIN_SCALE = 1e-6


@dataclass(frozen=True)
class Normalizer:
    """``normalized = (x - offset) / scale`` per trailing dimension.

    ``minmax`` maps the data range to [-1, 1] (Diffusion Policy's choice for actions and low-dim state);
    ``meanstd`` standardizes. Stats are numpy arrays, so they travel in safetensors checkpoints and ONNX
    sidecars alike.
    """

    mode: NormalizationMode
    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, data: np.ndarray, mode: NormalizationMode = "minmax", *, constant_scale: float = 1.0) -> Normalizer:
        """Fit on ``data`` of shape ``[N, ...feature dims]``; statistics are taken over the first axis.

        A dimension whose spread is below 1e-6 (constant, or nearly) gets ``constant_scale``: 1 passes it
        through shifted; a tiny scale keeps a model's error there negligible when it is decoded.
        """
        data = np.asarray(data, dtype=np.float64)
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(f"Normalizer.fit needs data of shape [N, ...] with N > 0, got {data.shape}")
        if not np.isfinite(data).all():
            raise ValueError("Normalizer.fit got NaN or infinite values")
        if mode == "minmax":
            low, high = data.min(axis=0), data.max(axis=0)
            offset, scale = (high + low) / 2, (high - low) / 2
        elif mode == "meanstd":
            offset, scale = data.mean(axis=0), data.std(axis=0)
        elif mode == "identity":
            offset, scale = np.zeros(data.shape[1:]), np.ones(data.shape[1:])
        else:
            raise ValueError(f"unknown normalization mode {mode!r}; use 'minmax', 'meanstd' or 'identity'")
        scale = np.where(scale < _MIN_SCALE, constant_scale, scale)
        return cls(mode, offset.astype(np.float32), scale.astype(np.float32))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.offset.shape)

    def _check(self, x) -> None:
        if tuple(x.shape[x.ndim - len(self.shape) :]) != self.shape:
            raise ValueError(f"expected trailing shape {self.shape}, got an array of shape {tuple(x.shape)}")

    def normalize(self, x):
        self._check(x)
        return (x - as_array_like(self.offset, x)) / as_array_like(self.scale, x)

    def unnormalize(self, x):
        self._check(x)
        return x * as_array_like(self.scale, x) + as_array_like(self.offset, x)

    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays for a safetensors file; the mode goes in the JSON config (see ``from_state_dict``)."""
        return {f"{prefix}.offset": self.offset, f"{prefix}.scale": self.scale}

    @classmethod
    def from_state_dict(cls, tensors: dict, prefix: str, mode: NormalizationMode) -> Normalizer:
        offset = np.asarray(tensors[f"{prefix}.offset"], dtype=np.float32)
        scale = np.asarray(tensors[f"{prefix}.scale"], dtype=np.float32)
        return cls(mode, offset, scale)
