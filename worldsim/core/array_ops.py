"""The few array helpers that differ between numpy and torch.

The core's math is written with operators plus functions looked up on the array's own namespace, so
one implementation serves torch training and the torch-free onnxruntime runners. Nothing here imports
torch at module level.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np


def is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def namespace(x) -> ModuleType:
    """``torch`` for tensors, ``numpy`` for everything else."""
    if is_torch(x):
        import torch

        return torch
    return np


def as_array_like(values, like):
    """``values`` as an array of the same kind, dtype and device as ``like``."""
    if is_torch(like):
        import torch

        if isinstance(values, np.ndarray) and not values.flags.writeable:
            values = values.copy()  # torch warns on read-only buffers (plans are frozen arrays)
        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)


def zeros(shape: tuple[int, ...], like):
    """Zeros of ``shape`` of the same kind, dtype and device as ``like``."""
    if is_torch(like):
        import torch

        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    return np.zeros(shape, dtype=like.dtype)


def copy(x):
    """A copy that owns its memory (``clone`` for tensors)."""
    return x.clone() if is_torch(x) else x.copy()


def randn_like(x, generator=None):
    """Standard normal noise shaped like ``x``; ``generator`` is a torch.Generator or np.random.Generator."""
    if is_torch(x):
        import torch

        if isinstance(generator, np.random.Generator):
            # A numpy generator drives torch too, so torch and onnxruntime runs can share one noise stream.
            return torch.as_tensor(generator.standard_normal(tuple(x.shape)), dtype=x.dtype, device=x.device)
        if generator is not None and generator.device != x.device:
            # Draw where the generator lives (a CPU generator seeds GPU runs reproducibly too), then move.
            return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    rng = generator if generator is not None else np.random.default_rng()
    return rng.standard_normal(x.shape).astype(x.dtype, copy=False)


def clip(x, low: float | None = None, high: float | None = None):
    """``x`` clamped to ``[low, high]`` (either may be None). On numpy the two ufuncs directly: ``np.clip``'s
    Python wrapper costs three times as much, and the samplers clip several times per step."""
    if is_torch(x):
        import torch

        return torch.clamp(x, low, high)
    if low is not None:
        x = np.maximum(x, low)
    if high is not None:
        x = np.minimum(x, high)
    return x


def all_finite(x) -> bool:
    return bool(namespace(x).isfinite(x).all())


def tree_map(fn, tree):
    """``fn`` applied to an array, or to each array of a dict of arrays (a multi-part observation such as
    pixels with proprioception), keeping the keys."""
    if isinstance(tree, dict):
        return {key: fn(value) for key, value in tree.items()}
    return fn(tree)


def tree_stack(trees, axis: int = 0):
    """Arrays, or dicts of arrays with the same keys, stacked along a new ``axis`` (numpy)."""
    trees = list(trees)
    if trees and isinstance(trees[0], dict):
        return {key: np.stack([tree[key] for tree in trees], axis=axis) for key in trees[0]}
    return np.stack(trees, axis=axis)


def tree_leading(tree) -> int:
    """The length of the first dimension (a batch) of an array or of a dict of arrays sharing it."""
    if isinstance(tree, dict):
        return len(next(iter(tree.values())))
    return len(tree)
