"""``python -m worldsim`` is the ``worldsim`` command (``torchrun -m worldsim train ...`` uses this)."""

from worldsim.cli import entry_point

entry_point()
