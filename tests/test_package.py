"""Package-level contracts: light imports, and the core's array math usable without torch."""

import subprocess
import sys

import pytest

LIGHT = [
    "worldsim",
    "worldsim.core.schedules",
    "worldsim.core.updates",
    "worldsim.core.plans",
    "worldsim.core.sampling",
    "worldsim.core.rolling",
    "worldsim.core.normalizer",
    "worldsim.core.kv_cache",
    "worldsim.world_model",
    "worldsim.world_model.action_encoder",
    "worldsim.world_model.streaming",
    "worldsim.export.onnx_world_model",
]


def imports_torch(module: str) -> bool:
    """Whether importing ``module`` in a fresh interpreter loads torch (an import error fails the test)."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return {"True": True, "False": False}[result.stdout.strip()]


@pytest.mark.parametrize("module", LIGHT)
def test_module_imports_without_torch(module):
    assert not imports_torch(module), f"{module} imported torch"


def test_the_torch_probe_sees_a_module_that_needs_torch():
    # Without this, the probe above would pass for every module if it could never see torch at all.
    assert imports_torch("worldsim.core.transformer")


def test_core_samples_with_numpy_only():
    code = """
import sys
import numpy as np
from worldsim.core import plans
from worldsim.core.rolling import RollingDenoiser
from worldsim.core.sampling import denoise
from worldsim.core.schedules import CosineSchedule
model = lambda x, level, cond: 0.5 * x
out = denoise(model, np.ones((1, 4, 2), np.float32), plans.warm_start(4, 0.1, 3, renoise=True), CosineSchedule(),
              parameterization="epsilon", generator=np.random.default_rng(0))
rolling = RollingDenoiser(model, CosineSchedule(), window=3, parameterization="epsilon")
emitted = [rolling.tick(np.ones((1, 1, 2), np.float32)).emitted for _ in range(4)]
assert out.dtype == np.float32 and emitted[2] is not None and emitted[2].dtype == np.float32
sys.exit(1 if 'torch' in sys.modules else 0)
"""
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_envs_are_registered_on_import():
    import gymnasium as gym

    import worldsim  # noqa: F401

    assert {"worldsim/PushT-v0", "worldsim/PickPlace-v0"} <= set(gym.registry)
