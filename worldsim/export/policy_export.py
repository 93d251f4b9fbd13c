"""Export a diffusion policy's single denoiser step to ONNX, with a parity check against PyTorch.

The exported graph is ``pred = step(obs, x, level)``: the raw observation history is normalized and
encoded inside, so the runner feeds environment observations as they come. The plan loop (full, DDIM,
RTI, rolling) stays in Python, in the same strategy code the torch policy runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from worldsim.export.common import DEFAULT_OPSET, ExportError, ExportReport, export_graph, file_sizes, max_abs_diff
from worldsim.export.metadata import write_metadata
from worldsim.export.providers import ProviderChoice, make_session
from worldsim.policies.diffusion_policy import DiffusionPolicy

KIND = "diffusion_policy_step"
__all__ = ["ExportError", "ExportReport", "PolicyStep", "export_policy"]


class PolicyStep(nn.Module):
    """Observation encoder + denoiser as one traced step."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.policy.denoiser(x, level, self.policy._encode(obs))


def _example_inputs(policy: DiffusionPolicy, batch: int, generator: torch.Generator, obs=None):
    c = policy.config
    if obs is None:
        if c.obs_type == "pixels":
            obs = torch.randint(0, 256, (batch, c.obs_horizon, *c.obs_shape), generator=generator, dtype=torch.uint8)
        else:
            obs = torch.randn(batch, c.obs_horizon, *c.obs_shape, generator=generator)
    batch = obs.shape[0]
    x = torch.randn(batch, c.horizon, c.action_dim, generator=generator)
    level = torch.rand(batch, c.horizon, generator=generator)
    return obs, x, level


def export_policy(
    policy: DiffusionPolicy,
    path: str | Path,
    *,
    tolerance: float = 1e-4,
    real_obs: np.ndarray | None = None,
    opset: int = DEFAULT_OPSET,
    source: str | None = None,
) -> ExportReport:
    """Write the policy's step to ``path`` and check it against PyTorch on random and real inputs.

    ``real_obs``: raw observation histories ``[N, obs_horizon, *obs_shape]`` (e.g. from a dataset) used in
    the parity check besides random ones. Raises :class:`ExportError` (and removes the file) when the
    largest absolute difference exceeds ``tolerance``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    policy = policy.eval()
    step = PolicyStep(policy).eval()
    generator = torch.Generator().manual_seed(0)
    # An example batch of 2: a batch of 1 would be specialized away and lose the dynamic batch axis.
    example = _example_inputs(policy, 2, generator)
    batch = torch.export.Dim("batch", min=1, max=4096)
    export_graph(
        step, example, path, input_names=["obs", "x", "level"], output_names=["pred"],
        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}), opset=opset,
    )  # fmt: skip
    c = policy.config
    write_metadata(
        path,
        {
            "kind": KIND,
            "config": c.to_dict(),
            "normalization": c.normalization,
            "action_normalizer": {k: v.tolist() for k, v in policy.codec.normalizer.state_dict("a").items()},
            "schedule": policy.schedule.config(),
            "strategies": policy.strategy_defaults,
            "source": source,
            "tolerance": tolerance,
        },
    )

    session = make_session(path, ProviderChoice(prefer=("cpu",)))
    cases = [_example_inputs(policy, b, generator) for b in (1, 3)]
    if real_obs is not None:
        cases.append(_example_inputs(policy, 0, generator, obs=torch.as_tensor(np.asarray(real_obs))))
    worst = 0.0
    with torch.no_grad():
        for obs, x, level in cases:
            got = session.run(["pred"], {"obs": obs.numpy(), "x": x.numpy(), "level": level.numpy()})
            worst = max(worst, max_abs_diff([step(obs, x, level)], got))
    report = ExportReport(
        str(path), worst, tolerance, os.path.getsize(path), session.get_providers(),
        files=file_sizes([path]), checks={"step": worst},
    )  # fmt: skip
    if not worst <= tolerance:
        path.unlink()
        raise ExportError(f"parity check failed: {report}")
    return report
