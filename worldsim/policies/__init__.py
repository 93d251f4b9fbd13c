"""Diffusion policies and their real-time inference strategies (imported on first use)."""

from worldsim.core.lazy_exports import lazy_attributes

_HOMES = {
    "DiffusionPolicy": "diffusion_policy",
    "DiffusionPolicyConfig": "config",
    "TrainPolicyConfig": "config",
    "StrategySpec": "config",
    "train_policy": "train",
    "evaluate_policy": "evaluation",
    "Policy": "base",
    "ChunkPolicy": "control",
    "Strategy": "strategies",
    "make_strategy": "strategies",
    "choose_rti_k": "rti_k",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_attributes(__name__, _HOMES)
