import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from tests.policies.test_diffusion_policy import OBS_DIM, make_policy
from worldsim.export.metadata import ExportFormatError
from worldsim.export.onnx_policy import OnnxPolicy
from worldsim.export.policy_export import ExportError, export_policy
from worldsim.policies.strategies import STRATEGIES


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A continuous-action policy (no snapping, so actions compare to float tolerance) and its export."""
    policy = make_policy(discrete_dims=())
    path = tmp_path_factory.mktemp("onnx") / "policy.onnx"
    real = np.random.default_rng(0).normal(size=(5, 2, OBS_DIM)).astype(np.float32)
    report = export_policy(policy, path, real_obs=real, source="pytest")
    return policy, path, report


def test_export_passes_parity_and_reports(exported):
    _, path, report = exported
    assert report.max_abs_diff <= 1e-4 and report.file_bytes == path.stat().st_size
    assert report.providers == ["CPUExecutionProvider"]
    assert "parity" in str(report)


@pytest.fixture(scope="module")
def exported_relative(tmp_path_factory):
    """A policy whose first two actions are relative to the observation, normalized per chunk position."""
    policy = make_policy(discrete_dims=(), relative=True)
    path = tmp_path_factory.mktemp("onnx") / "relative.onnx"
    export_policy(policy, path, source="pytest")
    return policy, path, None


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("name", STRATEGIES)
def test_runner_matches_torch_over_an_episode_with_shared_noise(request, relative, name):
    policy, path, _ = request.getfixturevalue("exported_relative" if relative else "exported")
    kwargs = {"ddim": {"steps": 5}, "rti": {"k": 3}, "rolling": {"first_steps": 5}}.get(name, {})
    runner = OnnxPolicy(path, strategy=name, seed=0, **kwargs)
    policy.set_strategy(name, **kwargs)
    policy.generator = np.random.default_rng(0)
    observations = np.random.default_rng(1).normal(size=(50, OBS_DIM)).astype(np.float32)
    steps = 50 if name in ("rti", "rolling") else 12
    torch_actions = np.stack([policy.select_action(o) for o in observations[:steps]])
    onnx_actions = np.stack([runner.select_action(o) for o in observations[:steps]])
    np.testing.assert_allclose(onnx_actions, torch_actions, atol=1e-3)
    assert runner.calls_last_prediction == policy.calls_last_prediction


def test_runner_does_not_import_torch(exported):
    _, path, _ = exported
    code = f"""
import sys
import numpy as np
from worldsim.export.onnx_policy import OnnxPolicy
policy = OnnxPolicy({str(path)!r}, strategy="rti", k=3, seed=0)
for _ in range(5):
    action = policy.select_action(np.zeros({OBS_DIM}, np.float32))
assert action.shape == (3,) and policy.providers == ["CPUExecutionProvider"]
sys.exit(1 if "torch" in sys.modules else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower()  # no provider complaints on a machine without a GPU


def test_parity_failure_refuses_the_export(tmp_path):
    path = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match="parity check failed"):
        export_policy(make_policy(), path, tolerance=0.0)
    assert not path.exists()


def test_corrupted_and_foreign_files_are_refused(exported, tmp_path):
    _, path, _ = exported
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not an onnx model" * 10)
    with pytest.raises(ExportFormatError, match="not a readable ONNX file"):
        OnnxPolicy(garbage)
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    with pytest.raises(ExportFormatError, match="not a worldsim export"):
        OnnxPolicy(foreign)
    with pytest.raises(FileNotFoundError):
        OnnxPolicy(tmp_path / "missing.onnx")


def test_numpy_generator_drives_torch_noise():
    from worldsim.core.array_ops import randn_like

    a = randn_like(torch.zeros(2, 3), np.random.default_rng(5))
    b = randn_like(np.zeros((2, 3), np.float32), np.random.default_rng(5))
    np.testing.assert_allclose(a.numpy(), b, atol=1e-6)
