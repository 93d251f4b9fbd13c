"""Hydra configs of the ``worldsim`` command (YAML package data) and their typed schemas (``schema.py``)."""
