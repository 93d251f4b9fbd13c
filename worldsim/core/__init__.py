"""The shared denoising core: per-token noise levels, schedules, updates, plans, losses and the denoiser.

Schedules, updates, plans and sampling are array math on torch or numpy and import no torch; the names
below import their module when first used.
"""

from worldsim.core.lazy_exports import lazy_attributes

_HOMES = {
    "CosineSchedule": "schedules",
    "FlowMatchingSchedule": "schedules",
    "NoiseSchedule": "schedules",
    "make_schedule": "schedules",
    "StepOutput": "updates",
    "step": "updates",
    "Plan": "plans",
    "denoise": "sampling",
    "diffusion_forcing_loss": "losses",
    "CausalTransformer": "transformer",
    "TransformerConfig": "transformer",
    "KVCache": "kv_cache",
    "RollingDenoiser": "rolling",
    "RollingOutput": "rolling",
    "Normalizer": "normalizer",
    "Episode": "episodes",
    "Trainer": "trainer",
    "TrainerConfig": "trainer_config",
    "Pretrained": "pretrained",
    "CheckpointError": "checkpoint",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_attributes(__name__, _HOMES)
