"""Diffusion policies and their real-time inference strategies."""
