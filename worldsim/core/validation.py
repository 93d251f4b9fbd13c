"""Input checks that turn bad shapes, levels and NaNs into one clear ValueError at the public entry points."""

from __future__ import annotations

from worldsim.core.array_ops import all_finite, namespace


def check_finite(name: str, x) -> None:
    if not all_finite(x):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_levels(name: str, level) -> None:
    """Noise levels must be finite and inside [0, 1] (0 = clean, 1 = pure noise)."""
    xp = namespace(level)
    if not bool(xp.isfinite(level).all()):
        raise ValueError(f"{name} contains NaN or infinite noise levels")
    if bool((level < 0).any()) or bool((level > 1).any()):
        raise ValueError(
            f"{name} must lie in [0, 1] (0 = clean, 1 = pure noise); got values in "
            f"[{float(level.min()):.4g}, {float(level.max()):.4g}]"
        )


def check_tokens(name: str, x, level) -> None:
    """``x`` is ``[B, T, ...]`` and ``level`` is ``[B, T]`` (or broadcastable ``[T]``)."""
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape [batch, tokens, ...], got {tuple(x.shape)}")
    lead = tuple(x.shape[:2])
    shape = tuple(level.shape)
    if shape not in (lead, lead[1:]):
        raise ValueError(
            f"noise levels must have shape [batch, tokens] = {list(lead)} (or [tokens]) to match {name}; "
            f"got {list(shape)}"
        )


def check_choice(name: str, value, choices) -> None:
    """A config field that takes one of a few names: a one-line error naming the field and the choices."""
    if value not in tuple(choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_number(name: str, value, *, low=None, high=None, integer: bool = False, allow_none: bool = False) -> None:
    """A numeric config field: its type (a bool is not a number here) and its range, in one line naming it."""
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValueError(f"{name} must lie in {bounds}, got {value!r}")
