"""What every worldsim export shares: the exporter call, the parity measure, the report and its error."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

DEFAULT_OPSET = 18


class ExportError(RuntimeError):
    """The exported model does not reproduce PyTorch within the tolerance."""


@dataclass
class ExportReport:
    """The outcome of an export: where it went, how close onnxruntime came to PyTorch, on which providers.

    ``files`` lists every file written with its size (a world model with a frame codec writes three);
    ``checks`` the largest difference of each parity check, whose maximum is ``max_abs_diff``.
    """

    path: str
    max_abs_diff: float
    tolerance: float
    file_bytes: int
    providers: list[str]
    files: dict[str, int] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        others = [f"{Path(p).name} {b / 1e6:.2f} MB" for p, b in self.files.items() if p != self.path]
        extra = f"; with {', '.join(others)}" if others else ""
        return (
            f"exported {self.path} ({self.file_bytes / 1e6:.2f} MB{extra}); parity max |torch - onnxruntime| = "
            f"{self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}) on {', '.join(self.providers)}"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def export_graph(
    module: nn.Module,
    example: tuple,
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: tuple,
    opset: int = DEFAULT_OPSET,
) -> None:
    """Trace ``module`` on ``example`` with the dynamo exporter into one self-contained ONNX file.

    A dynamic axis needs an example size of at least 2: a size of 1 is specialized away.
    """
    with torch.no_grad():
        torch.onnx.export(
            module.eval(), example, str(path), dynamo=True, opset_version=opset, external_data=False,
            input_names=list(input_names), output_names=list(output_names), dynamic_shapes=dynamic_shapes,
            verbose=False,  # the report says what matters; no progress lines
        )  # fmt: skip


def max_abs_diff(expected: Sequence[torch.Tensor], got: Sequence[np.ndarray]) -> float:
    """The largest absolute difference over paired torch and onnxruntime outputs (shapes must agree)."""
    worst = 0.0
    for e, g in zip(expected, got, strict=True):
        e = e.detach().cpu().numpy()
        if e.shape != g.shape:
            raise ExportError(f"onnxruntime returned shape {g.shape} where PyTorch returned {e.shape}")
        worst = max(worst, float(np.abs(e.astype(np.float64) - g.astype(np.float64)).max(initial=0.0)))
    return worst


def file_sizes(paths: Sequence[str | Path]) -> dict[str, int]:
    return {str(p): os.path.getsize(p) for p in paths}
