"""Callables named in configs as ``"package.module:attribute"`` (an expert, a success rule, a factory)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def load_callable(spec: str, *, what: str = "callable") -> Callable[..., Any]:
    """The callable that ``"package.module:attribute"`` names (``attribute`` may be dotted).

    ``what`` names the setting in the error message, so a typo in a config reads as one line naming it.
    """
    module_name, sep, attribute = str(spec).partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{what} must look like 'package.module:callable', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{what} {spec!r}: cannot import {module_name!r} ({error})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{what} {spec!r}: {module_name} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{what} {spec!r} is not callable")
    return target
