"""An export's files: where the companion graphs of a step file sit, and the check that a loaded graph
has the inputs and outputs its metadata promises. Torch-free (the runners use it)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from worldsim.export.metadata import ExportFormatError


def companion_path(step_path: str | Path, role: str) -> Path:
    """``OUT.<role>.onnx`` next to the step file ``OUT.onnx`` (a pixel model's encoder, decoder, ...)."""
    step_path = Path(step_path)
    stem = step_path.name[: -len(".onnx")] if step_path.name.endswith(".onnx") else step_path.name
    return step_path.with_name(f"{stem}.{role}.onnx")


def check_graph(session: ort.InferenceSession, path: Path, inputs: dict, outputs: tuple[str, ...]) -> None:
    """Refuse a graph whose inputs and outputs differ from what its metadata promises (``inputs``: name to
    shape, None for a dynamic axis)."""
    got_inputs = {i.name: i.shape for i in session.get_inputs()}
    got_outputs = [o.name for o in session.get_outputs()]
    if set(got_inputs) != set(inputs) or not set(outputs) <= set(got_outputs):
        raise ExportFormatError(
            f"{path} has inputs {sorted(got_inputs)} and outputs {got_outputs}; expected {sorted(inputs)} -> "
            f"{list(outputs)} (re-export it with worldsim)"
        )
    for name, shape in inputs.items():
        # Dynamic axes are named strings in the graph (None here); every fixed size must agree.
        fixed = [(a, b) for a, b in zip(got_inputs[name], shape, strict=False) if isinstance(a, int) and b is not None]
        if len(got_inputs[name]) != len(shape) or any(a != b for a, b in fixed):
            raise ExportFormatError(
                f"{path}: input {name!r} has shape {got_inputs[name]}, but the metadata describes {list(shape)}"
            )
