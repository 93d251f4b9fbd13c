"""Gymnasium tasks, scripted experts, wrappers and demonstration datasets."""
