import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from tests.policies.test_diffusion_policy import OBS_DIM, make_policy
from worldsim.export.metadata import CHECKSUM_KEY, KEY, ExportFormatError
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


def test_angle_features_are_part_of_the_exported_encoder(tmp_path):
    """An angle dimension's sine and cosine are computed inside the encoder graph: the runner feeds the raw
    angle, on either side of the seam, and gets the torch policy's actions."""
    policy = make_policy(discrete_dims=(), angle_dims=(1,))
    path = tmp_path / "angles.onnx"
    assert export_policy(policy, path, source="pytest").max_abs_diff <= 1e-4
    runner = OnnxPolicy(path, strategy="ddim", seed=0, steps=5)
    policy.set_strategy("ddim", steps=5)
    policy.generator = np.random.default_rng(0)
    observations = np.random.default_rng(1).normal(size=(8, OBS_DIM)).astype(np.float32)
    observations[:, 1] = [0.001, 6.282, 3.1, 0.001, 6.282, 1.0, 2.0, 5.0]
    torch_actions = np.stack([policy.select_action(o) for o in observations])
    onnx_actions = np.stack([runner.select_action(o) for o in observations])
    np.testing.assert_allclose(onnx_actions, torch_actions, atol=1e-3)


@pytest.fixture(scope="module")
def exported_relative(tmp_path_factory):
    """A policy whose first two actions are relative to the observation, normalized per chunk position."""
    policy = make_policy(discrete_dims=(), relative=True)
    path = tmp_path_factory.mktemp("onnx") / "relative.onnx"
    export_policy(policy, path, source="pytest")
    return policy, path, None


@pytest.fixture(scope="module")
def exported_per_step(tmp_path_factory):
    """A policy whose conditioning is projected per chunk position (``[B, horizon, feature_dim]``)."""
    policy = make_policy(discrete_dims=(), per_step=True)
    path = tmp_path_factory.mktemp("onnx") / "per_step.onnx"
    assert export_policy(policy, path, source="pytest").max_abs_diff <= 1e-4
    return policy, path, None


@pytest.mark.parametrize("fixture", ["exported", "exported_relative", "exported_per_step"])
@pytest.mark.parametrize("name", STRATEGIES)
def test_runner_matches_torch_over_an_episode_with_shared_noise(request, fixture, name):
    policy, path, _ = request.getfixturevalue(fixture)
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
    with pytest.raises(FileNotFoundError, match="no ONNX file at .*missing.onnx"):
        OnnxPolicy(tmp_path / "missing.onnx")


def _largest_weight(path) -> onnx.TensorProto:
    return max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data))


def test_one_flipped_weight_byte_is_refused(exported, tmp_path):
    _, path, _ = exported
    data = bytearray(path.read_bytes())
    weights = _largest_weight(path).raw_data
    start = data.find(weights)
    assert start > 0 and data.count(weights) == 1  # the flip lands inside this initializer and nowhere else
    data[start + len(weights) // 2] ^= 0x01
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(data)
    # The damage is invisible to ONNX itself: the file parses and onnxruntime would run it.
    assert _largest_weight(damaged).raw_data != weights
    with pytest.raises(ExportFormatError, match=r"damaged.onnx: checksum mismatch .*re-export it$") as refused:
        OnnxPolicy(damaged)
    assert "\n" not in str(refused.value)
    OnnxPolicy(path)  # the intact file still loads


def test_edited_metadata_and_exports_without_checksum_are_refused(exported, tmp_path):
    _, path, _ = exported
    model = onnx.load(str(path))
    props = {p.key: p for p in model.metadata_props}
    # The runner normalizes actions in numpy with statistics from the metadata: they are covered too.
    props[KEY].value = props[KEY].value.replace('"a.scale": [', '"a.scale": [2.0, ', 1)
    edited = tmp_path / "edited.onnx"
    onnx.save(model, str(edited))
    with pytest.raises(ExportFormatError, match="edited.onnx: checksum mismatch"):
        OnnxPolicy(edited)

    # Exports written before worldsim sealed them carry the metadata but no checksum: refused, not trusted.
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != CHECKSUM_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    legacy = tmp_path / "legacy.onnx"
    onnx.save(model, str(legacy))
    with pytest.raises(ExportFormatError, match="legacy.onnx has no weight checksum .*re-export it"):
        OnnxPolicy(legacy)


def test_empty_and_truncated_files_get_one_line_errors(exported, tmp_path):
    _, path, _ = exported
    data = path.read_bytes()
    empty = tmp_path / "empty.onnx"
    empty.touch()
    with pytest.raises(ExportFormatError, match=r"empty.onnx is empty \(0 bytes\)"):
        OnnxPolicy(empty)
    for size in (1, 1000, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut{size}.onnx"
        cut.write_bytes(data[:size])
        with pytest.raises(ExportFormatError, match=f"cut{size}.onnx is not a readable ONNX file: truncated") as e:
            OnnxPolicy(cut)
        assert "\n" not in str(e.value)
    # A cut just before the graph leaves a file protobuf parses without complaint (fields are optional).
    model = onnx.load(str(path))
    head = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name,
                           producer_version=model.producer_version).SerializeToString()  # fmt: skip
    assert data.startswith(head)
    cut = tmp_path / "no_graph.onnx"
    cut.write_bytes(data[: len(head)])
    with pytest.raises(ExportFormatError, match="no_graph.onnx is not a readable ONNX file: truncated or not ONNX"):
        OnnxPolicy(cut)


def test_huge_observations_never_give_nan_actions(exported):
    """1e30 overflows float32 inside the network (attention scores, layer-norm variance): refused, not NaN."""
    _, path, _ = exported
    runner = OnnxPolicy(path, strategy="rti", k=3, seed=0)
    calm = np.zeros((2, OBS_DIM), np.float32)
    huge = np.full((2, OBS_DIM), 1e30, np.float32)
    runner.predict_chunk(calm)
    cold_calls = runner.calls_last_prediction
    runner.predict_chunk(calm)
    assert runner.calls_last_prediction == 3 < cold_calls  # warm-started
    # Through the public API, whichever check speaks first (observation bounds, or the runner's own).
    with pytest.raises(ValueError, match="observation"):
        runner.predict_chunk(huge)
    # The runner's own guard on the sampled chunk, below any observation check.
    with pytest.raises(ValueError, match=r"NaN or infinite actions .* magnitude up to 1e\+30"):
        runner._sample_chunk(huge[None], 1, None)
    # The NaN chunk does not become the next warm start: the next prediction is a finite cold start.
    actions = runner.predict_chunk(calm)
    assert np.isfinite(actions).all() and runner.calls_last_prediction == cold_calls


def test_numpy_generator_drives_torch_noise():
    from worldsim.core.array_ops import randn_like

    a = randn_like(torch.zeros(2, 3), np.random.default_rng(5))
    b = randn_like(np.zeros((2, 3), np.float32), np.random.default_rng(5))
    np.testing.assert_allclose(a.numpy(), b, atol=1e-6)


def test_the_runner_runs_a_strategy_with_the_options_the_policy_recorded(tmp_path):
    """An export carries the policy's recorded strategy options: ``OnnxPolicy(path, strategy="rti")`` runs the
    tuned RTI (here k = 6 in 2 calls, 3 actions per chunk), not the class defaults (k = 3, 1 call, 1 action);
    options given override them one by one."""
    policy = make_policy(discrete_dims=())
    policy.strategy_defaults = {"rti": {"k": 6, "calls": 2, "n_action_steps": 3}}
    path = tmp_path / "tuned.onnx"
    export_policy(policy, path, source="pytest")
    runner = OnnxPolicy(path, strategy="rti", seed=0)
    assert (runner.strategy.k, runner.strategy.calls, runner.n_action_steps) == (6, 2, 3)
    observations = np.random.default_rng(2).normal(size=(7, OBS_DIM)).astype(np.float32)
    calls = []
    for obs in observations:
        runner.select_action(obs)
        calls.append(runner.calls_last_prediction)
    assert calls[-1] == 2  # warm-started predictions make 2 network calls
    overridden = OnnxPolicy(path, strategy="rti", k=4)
    assert (overridden.strategy.k, overridden.strategy.calls, overridden.n_action_steps) == (4, 2, 3)
    assert OnnxPolicy(path, strategy="ddim", steps=5).n_action_steps == policy.config.n_action_steps


@pytest.mark.parametrize("name", ["rtc", "rti"])
def test_runner_matches_torch_with_a_frozen_prefix(exported_relative, name):
    """Delay-aware inference (real-time chunking) gives the same chunks through onnxruntime as in torch."""
    policy, path, _ = exported_relative
    kwargs = {"rtc": {"steps": 5}, "rti": {"k": 3}}[name]
    runner = OnnxPolicy(path, strategy=name, seed=0, **kwargs)
    policy.set_strategy(name, **kwargs)
    policy.seed(0)
    rng = np.random.default_rng(3)
    chunks = {"torch": [], "onnx": []}
    prefix = None
    for _ in range(4):
        obs = rng.normal(size=(1, 2, OBS_DIM)).astype(np.float32)
        for key, model in (("torch", policy), ("onnx", runner)):
            chunks[key].append(model.predict_chunks(obs, executed_steps=3, prefix=prefix))
        prefix = chunks["torch"][-1][:, 3:5]  # the next two actions run while the next chunk is computed
    np.testing.assert_allclose(np.stack(chunks["onnx"]), np.stack(chunks["torch"]), atol=1e-3)
    np.testing.assert_array_equal(chunks["onnx"][-1][:, :2], chunks["torch"][-2][:, 3:5])
