"""Registers worldsim's environments with Gymnasium (Gymnasium 1.x has no plugin auto-discovery)."""


def register_envs() -> None:
    """Register every worldsim environment; safe to call more than once."""
