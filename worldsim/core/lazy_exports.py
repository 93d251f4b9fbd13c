"""Package ``__init__`` exports that import their module on first use, so naming a room's nouns costs nothing.

A room's ``__init__`` lists where each public name lives; ``from worldsim.core import Trainer`` then imports
torch, while ``import worldsim.core.plans`` (the onnxruntime runners' path) does not.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that finds ``name`` in ``package + "." + homes[name]`` when first asked."""

    def __getattr__(name: str) -> object:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__
