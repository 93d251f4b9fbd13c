"""Export a diffusion policy to ONNX, with a parity check against PyTorch.

- ``OUT.encoder.onnx``: ``cond = encoder(obs)``: raw observation histories are normalized and encoded
  inside, so the runner feeds environment observations as they come. A camera policy's encoder takes its
  history's per-frame features instead (``cond = encoder(features)``, or ``encoder(features, state)`` with
  proprioception), and
- ``OUT.frames.onnx`` (camera policies): ``features = frames(pixels)``, one uint8 frame ``[N, H, W, 3]``
  per row: the CNN, which the runner calls on new frames only (a frame's features are kept for the next
  control step, :class:`~worldsim.policies.frame_features.FrameFeatureCache`);
- ``OUT.onnx``: ``pred = step(cond, x, level)``, the single denoiser step.

The runner encodes once per control step and every denoiser call of the plan reuses ``cond`` (a pixel
encoder costs more than a denoiser call). The plan loop (full, DDIM, RTI, rolling) stays in Python, in the
same strategy code the torch policy runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from worldsim.export.common import DEFAULT_OPSET, ExportError, ExportReport, export_graph, file_sizes, max_abs_diff
from worldsim.export.graph_files import companion_path
from worldsim.export.metadata import write_metadata
from worldsim.export.onnx_policy import ENCODER_KIND, FRAMES_KIND, KIND
from worldsim.export.providers import ProviderChoice, make_session
from worldsim.policies.diffusion_policy import DiffusionPolicy

__all__ = [
    "ExportError", "ExportReport", "PolicyEncoder", "PolicyFrameEncoder", "PolicyStep", "encoder_input_names",
    "export_policy",
]  # fmt: skip


class PolicyStep(nn.Module):
    """The denoiser as one traced step on a precomputed conditioning vector."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, cond: torch.Tensor, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.policy.denoiser(x, level, cond)


class PolicyEncoder(nn.Module):
    """The encoder graph: raw state histories to the conditioning vector (normalization and encoder), or a
    camera policy's per-frame features (and raw proprioceptive states) to it."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """``obs``: the state history, or a camera history's frame features ``[B, T, F]``."""
        if self.policy.config.obs_type == "state":
            return self.policy._encode(obs)
        return self.policy.condition_on_frame_features(obs, state)


class PolicyFrameEncoder(nn.Module):
    """The frames graph of a camera policy: uint8 frames ``[N, H, W, 3]`` to their features ``[N, F]``."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.policy.encode_frames(pixels)


def encoder_input_names(config) -> list[str]:
    """The encoder graph's inputs: ``obs``; a camera policy's ``features`` (and ``state`` with proprioception)."""
    if config.obs_type == "state":
        return ["obs"]
    return ["features", "state"] if config.multipart else ["features"]


def _example_obs(policy: DiffusionPolicy, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    c = policy.config
    pixels = torch.randint(0, 256, (batch, c.obs_horizon, *c.obs_shape), generator=generator, dtype=torch.uint8)
    if c.multipart:
        low = torch.tensor(c.obs_low) if c.obs_low else -torch.ones(c.state_dim)
        high = torch.tensor(c.obs_high) if c.obs_high else torch.ones(c.state_dim)
        state = low + (high - low) * torch.rand(batch, c.obs_horizon, c.state_dim, generator=generator)
        return pixels, state
    if c.obs_type == "pixels":
        return (pixels,)
    return (torch.randn(batch, c.obs_horizon, *c.obs_shape, generator=generator),)


def _example_step(policy: DiffusionPolicy, cond: torch.Tensor, generator: torch.Generator):
    c, batch = policy.config, cond.shape[0]
    x = torch.randn(batch, c.horizon, c.action_dim, generator=generator)
    level = torch.rand(batch, c.horizon, generator=generator)
    return cond, x, level


def export_policy(
    policy: DiffusionPolicy,
    path: str | Path,
    *,
    tolerance: float = 1e-4,
    real_obs: np.ndarray | None = None,
    opset: int = DEFAULT_OPSET,
    source: str | None = None,
) -> ExportReport:
    """Write the policy's step to ``path`` and its encoder next to it (``OUT.encoder.onnx``), and check both
    against PyTorch on random and real inputs.

    ``real_obs``: raw observation histories ``[N, obs_horizon, *obs_shape]`` (a camera with proprioception:
    a dict ``{"pixels", "state"}`` of such histories; e.g. from a dataset) used in the parity check besides
    random ones. Raises :class:`ExportError` (and removes the files) when the largest absolute difference
    exceeds ``tolerance``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = policy.config
    camera = c.obs_type != "state"
    encoder_path = companion_path(path, "encoder")
    frames_path = companion_path(path, "frames")
    policy = policy.eval()
    step, encoder, frame_encoder = PolicyStep(policy).eval(), PolicyEncoder(policy).eval(), PolicyFrameEncoder(policy)
    generator = torch.Generator().manual_seed(0)
    # An example batch of 2: a batch of 1 would be specialized away and lose the dynamic batch axis.
    obs_example = _example_obs(policy, 2, generator)
    encoder_example = obs_example
    if camera:
        frames_example = obs_example[0].flatten(0, 1)
        export_graph(
            frame_encoder.eval(), (frames_example,), frames_path, input_names=["pixels"], output_names=["features"],
            dynamic_shapes=({0: torch.export.Dim("frames", min=1, max=65536)},), opset=opset,
        )  # fmt: skip
        with torch.no_grad():
            features = frame_encoder(frames_example).unflatten(0, (2, c.obs_horizon))
        encoder_example = (features, *obs_example[1:])
    with torch.no_grad():
        cond_example = encoder(*encoder_example)
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = encoder_input_names(c)
    export_graph(
        encoder, encoder_example, encoder_path, input_names=names, output_names=["cond"],
        dynamic_shapes=tuple({0: batch} for _ in names), opset=opset,
    )  # fmt: skip
    export_graph(
        step, _example_step(policy, cond_example, generator), path, input_names=["cond", "x", "level"],
        output_names=["pred"], dynamic_shapes=({0: batch}, {0: batch}, {0: batch}), opset=opset,
    )  # fmt: skip
    meta = {
        "kind": KIND,
        "config": c.to_dict(),
        "normalization": c.normalization,
        "action_normalizer": {k: v.tolist() for k, v in policy.codec.normalizer.state_dict("a").items()},
        "schedule": policy.schedule.config(),
        "strategies": policy.strategy_defaults,
        "encoder": encoder_path.name,
        "source": source,
        "tolerance": tolerance,
    } | ({"frames": frames_path.name} if camera else {})
    write_metadata(path, meta)
    write_metadata(encoder_path, {"kind": ENCODER_KIND, "step": path.name, "config": c.to_dict()})
    if camera:
        write_metadata(frames_path, {"kind": FRAMES_KIND, "step": path.name, "config": c.to_dict()})
    paths = [path, encoder_path] + ([frames_path] if camera else [])

    cpu = ProviderChoice(prefer=("cpu",))
    session, encoder_session = make_session(path, cpu), make_session(encoder_path, cpu)
    frames_session = make_session(frames_path, cpu) if camera else None
    obs_cases = [_example_obs(policy, b, generator) for b in (1, 3)]
    if real_obs is not None:
        parts = (real_obs["pixels"], real_obs["state"]) if c.multipart else (real_obs,)
        obs_cases.append(tuple(torch.as_tensor(np.asarray(p)) for p in parts))
    checks = {"encoder": 0.0, "step": 0.0} | ({"frames": 0.0} if camera else {})
    with torch.no_grad():
        for obs in obs_cases:
            if camera:
                # The exported pair against the torch encoder's whole-history forward (training's path).
                states = obs[1] if c.multipart else None
                cond = policy._encode({"pixels": obs[0], "state": states} if c.multipart else obs[0], cached=False)
                pixels = obs[0].flatten(0, 1)
                got = frames_session.run(["features"], {"pixels": pixels.numpy()})
                checks["frames"] = max(checks["frames"], max_abs_diff([frame_encoder(pixels)], got))
                feeds = {"features": got[0].reshape(*obs[0].shape[:2], -1)}
                if c.multipart:
                    feeds["state"] = states.numpy()
            else:
                cond = encoder(*obs)
                feeds = {"obs": obs[0].numpy()}
            got = encoder_session.run(["cond"], feeds)
            checks["encoder"] = max(checks["encoder"], max_abs_diff([cond], got))
            cond, x, level = _example_step(policy, cond, generator)
            got = session.run(["pred"], {"cond": cond.numpy(), "x": x.numpy(), "level": level.numpy()})
            checks["step"] = max(checks["step"], max_abs_diff([step(cond, x, level)], got))
    worst = max(checks.values())
    report = ExportReport(
        str(path), worst, tolerance, os.path.getsize(path), session.get_providers(), files=file_sizes(paths),
        checks=checks,
    )  # fmt: skip
    if not worst <= tolerance:
        for written in paths:
            written.unlink()
        raise ExportError(f"parity check failed: {report}")
    return report
