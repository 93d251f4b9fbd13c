"""A deterministic one-step predictor of a state's change, torch-free, inside a state world model's tokenizer.

A diffusion model samples each frame's change with an error on the scale of that change: it resolves where
a pushed block goes to about a tenth of the push (FetchPush's one-step error 0.094x copying the last state,
Push-T's 0.027x), and in closed loop a policy's pushes come out short (Push-T's shipped RTI policy succeeds
in 96% of MuJoCo episodes and in 0% inside its world model). A plain regression on the same rollouts predicts
the change to within a few percent (0.0067x and 0.018x; 60% inside; ``benchmarks/deterministic_world_model_probe.py``)
but is one deterministic guess. So the tokenizer asks this MLP for the change first and the diffusion model
samples only what is left (the *residual*, standardized by its own spread), keeping the diffusion model's
long-horizon behaviour and stochasticity at the scale of the regression's error.

Inputs: the standardized state, its standardized change since the frame before, and the action's
conditioning vector; output: the standardized change to the next frame. Plain numpy (SiLU MLP), so the torch
session and the onnxruntime runner compute the very same numbers; the weights travel with the tokenizer.
"""

from __future__ import annotations

import numpy as np

from worldsim.core.array_ops import as_array_like, namespace

HIDDEN = (256, 256, 256)
"""Hidden widths: the probe's 3 x 256 (1.4-3.4 minutes of training at one thread on the suite's tasks)."""


class OneStepPredictor:
    """``predictor(inputs [N, in_dim]) -> [N, out_dim]``: a SiLU MLP given as ``(weight [out, in], bias [out])``
    pairs, first layer first."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]]):
        if not layers:
            raise ValueError("a one-step predictor needs at least one layer")
        shaped = []
        for i, (weight, bias) in enumerate(layers):
            weight, bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
            if weight.ndim != 2 or bias.shape != (weight.shape[0],):
                raise ValueError(f"predictor layer {i}: weight {weight.shape} and bias {bias.shape} do not match")
            if shaped and weight.shape[1] != shaped[-1][0].shape[0]:
                raise ValueError(f"predictor layer {i} takes {weight.shape[1]} inputs, the layer before gives "
                                 f"{shaped[-1][0].shape[0]}")  # fmt: skip
            shaped.append((weight, bias))
        self.layers = shaped
        self.in_dim = shaped[0][0].shape[1]
        self.out_dim = shaped[-1][0].shape[0]

    def __call__(self, inputs):
        if inputs.shape[-1] != self.in_dim:
            raise ValueError(f"the one-step predictor takes {self.in_dim} inputs, got an array of shape "
                             f"{tuple(inputs.shape)}")  # fmt: skip
        xp = namespace(inputs)
        x = inputs
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ as_array_like(weight, inputs).T + as_array_like(bias, inputs)
            if i < len(self.layers) - 1:
                x = x * 0.5 * (1.0 + xp.tanh(0.5 * x))  # SiLU, x * sigmoid(x), without exp's overflow
        return x

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        tensors = {}
        for i, (weight, bias) in enumerate(self.layers):
            tensors[f"{prefix}.{i}.weight"], tensors[f"{prefix}.{i}.bias"] = weight, bias
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict, prefix: str, layers: int) -> OneStepPredictor:
        missing = [f"{prefix}.{i}.weight" for i in range(layers) if f"{prefix}.{i}.weight" not in tensors]
        if missing:
            raise ValueError(f"the checkpoint lacks the one-step predictor's {', '.join(missing)}")
        return cls([(tensors[f"{prefix}.{i}.weight"], tensors[f"{prefix}.{i}.bias"]) for i in range(layers)])
