"""The shared denoising core: per-token noise levels, schedules, updates, plans, losses and the denoiser."""
