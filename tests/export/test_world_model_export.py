import base64
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from tests.world_model.conftest import state_model
from tests.world_model.session_checks import assert_rejects_bad_streams
from worldsim.export.__main__ import main
from worldsim.export.metadata import ExportFormatError, pack_tensors, read_metadata, unpack_tensors, write_metadata
from worldsim.export.onnx_world_model import KIND, OnnxWorldModelSession, codec_paths
from worldsim.export.world_model_export import ExportError, env_rollout, export_world_model
from worldsim.world_model.model import WorldModel
from worldsim.world_model.session import SessionConfig, StreamingSession


@pytest.fixture(scope="module")
def trajectories():
    """Real frames and actions of the shipped models' environment (PushT), state and pixels."""
    return {name: env_rollout(WorldModel.from_pretrained(name), 60) for name in ("wm-pusht-state", "wm-pusht-pixels")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trajectories):
    """The shipped state and pixel world models and their exports (parity checked on real PushT frames)."""
    out = {}
    for name in ("wm-pusht-state", "wm-pusht-pixels"):
        model = WorldModel.from_pretrained(name)
        path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
        obs, actions = trajectories[name]
        out[name] = model, path, export_world_model(model, path, real_obs=obs, real_actions=actions, source=name)
    return out


@pytest.mark.parametrize("name", ["wm-pusht-state", "wm-pusht-pixels"])
def test_export_passes_parity_and_reports(exported, name):
    model, path, report = exported[name]
    assert report.max_abs_diff <= 1e-4 and report.providers == ["CPUExecutionProvider"]
    assert report.file_bytes == path.stat().st_size and "parity" in str(report)
    expected = {"step_random", "step_stream"} | ({"encoder", "decoder"} if name.endswith("pixels") else set())
    assert set(report.checks) == expected and max(report.checks.values()) == report.max_abs_diff
    codec = {str(p) for p in codec_paths(path).values()} if name.endswith("pixels") else set()
    assert set(report.files) == {str(path)} | codec
    meta = read_metadata(path, KIND)
    assert meta["cache"]["slot_frames"] == model.config.sink_frames + model.config.window_frames
    assert meta["source"] == name and meta["env_id"] == "worldsim/PushT-v0"
    # Static cache slots, dynamic batch and token axes.
    inputs = {i.name: i.shape for i in OnnxWorldModelSession(path).session.get_inputs()}
    slots = meta["cache"]["slot_frames"] * model.tokens_per_frame
    assert inputs["cache_keys"][2:] == [model.config.heads, slots, model.config.width // model.config.heads]
    assert all(isinstance(inputs[n][0], str) and isinstance(inputs[n][1], str) for n in ("x", "level", "cond"))


CONFIGS = {
    "autoregressive": SessionConfig(steps=2, window_frames=3),
    "autoregressive-ema": SessionConfig(steps=1, window_frames=3, ema_decay=0.9),
    "rolling": SessionConfig(sampling="rolling", rolling_window=3, window_frames=5),
}


@pytest.mark.parametrize("name", ["wm-pusht-state", "wm-pusht-pixels"])
@pytest.mark.parametrize("mode", list(CONFIGS))
def test_runner_matches_torch_session_over_50_frames(exported, trajectories, name, mode):
    """Same noise, same frames: 50 steps with a small window, so the sink and window evict many times."""
    model, path, _ = exported[name]
    config = CONFIGS[mode]
    obs, actions = trajectories[name]
    torch_session = StreamingSession(model, config)
    torch_session.generator = np.random.default_rng(7)  # a numpy generator drives the torch session's noise
    runner = OnnxWorldModelSession(path, config, seed=7)
    torch_session.reset(obs[:2], actions[:1])
    runner.reset(obs[:2], actions[:1])
    expected = np.stack([torch_session.step(a) for a in actions[1:51]])
    got = np.stack([runner.step(a) for a in actions[1:51]])
    assert got.shape == expected.shape == (50, *model.observation_space.shape) and got.dtype == expected.dtype
    if expected.dtype == np.uint8:
        # Frames are rounded to uint8 at the end: a value at a rounding boundary may land one level apart.
        difference = np.abs(got.astype(int) - expected.astype(int))
        assert difference.max() <= 1 and difference.mean() < 1e-3
    else:
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert runner.cache.frames_seen > runner.cache.capacity_frames + 40 and runner.num_steps == 50
    assert runner.memory_bytes > 0


@pytest.mark.parametrize("absolute_dims,predictor", [((), False), ((1,), False), ((), True)])
@pytest.mark.parametrize("mode", ["autoregressive", "rolling"])
def test_a_delta_state_model_streams_the_same_in_both_runtimes(tmp_path, mode, absolute_dims, predictor):
    """A delta state model: each frame is the previous one plus a generated change (or, for the dimensions
    it reads absolutely, the generated state; with a one-step predictor, its prediction plus a generated
    residual), in torch and in onnxruntime."""
    model = state_model(delta=True, predictor=predictor)
    model.tokenizer = model.tokenizer.with_absolute_dims(absolute_dims)
    path = tmp_path / "delta.onnx"
    export_world_model(model, path, tolerance=1e-3)  # random weights on random tokens: outputs of several units
    tokenizer = OnnxWorldModelSession(path, CONFIGS[mode]).spec.state_tokenizer
    assert tokenizer.absolute_dims == absolute_dims and (tokenizer.predictor is not None) == predictor
    rng = np.random.default_rng(3)
    obs = rng.uniform(-0.5, 0.5, (3, 2)).astype(np.float32)
    actions = rng.uniform(-1, 1, (31, 2)).astype(np.float32)
    config = CONFIGS[mode]
    torch_session = StreamingSession(model, config)
    torch_session.generator = np.random.default_rng(7)
    runner = OnnxWorldModelSession(path, config, seed=7)
    torch_session.reset(obs, actions[:2])
    runner.reset(obs, actions[:2])
    expected = np.stack([torch_session.step(a) for a in actions[2:]])
    got = np.stack([runner.step(a) for a in actions[2:]])
    # The two runtimes' networks agree to the export's 1e-3 in normalized units. An integrated dimension
    # takes that on the change's scale (0.1); one read absolutely on the state's (1), fed back for 29 steps.
    np.testing.assert_allclose(got, expected, atol=3e-3 if absolute_dims else 1e-4)
    # the stream moves by changes on the tokenizer's scale (a randomized network: up to a few 0.1 per step)
    assert np.abs(np.diff(expected, axis=0)).max() > 1e-3


def test_runner_does_not_import_torch(exported):
    paths = [str(exported[name][1]) for name in ("wm-pusht-state", "wm-pusht-pixels")]
    code = f"""
import sys
import numpy as np
from worldsim.export.onnx_world_model import OnnxWorldModelSession
from worldsim.world_model.streaming import SessionConfig
for path in {paths!r}:
    for config in (SessionConfig(steps=1), SessionConfig(sampling="rolling", rolling_window=2)):
        session = OnnxWorldModelSession(path, config, seed=0)
        space = session.observation_space
        session.reset(np.zeros((1, *space.shape), space.dtype))
        for _ in range(12):
            frame = session.step(np.zeros(2, np.float32))
        assert frame.shape == space.shape and frame.dtype == space.dtype
        assert session.providers == ["CPUExecutionProvider"]
sys.exit(1 if "torch" in sys.modules else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower()  # no provider complaints on a machine without a GPU


def test_bad_inputs_raise_clear_errors(exported):
    _, path, _ = exported["wm-pusht-state"]
    runner = OnnxWorldModelSession(path)
    assert_rejects_bad_streams(runner, obs_dim=6)
    with pytest.raises(ValueError, match=r"actions must have shape \[N, 2\]"):
        runner.reset(np.zeros((2, 6), np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="does not fit the 9 slots"):
        OnnxWorldModelSession(path, SessionConfig(window_frames=12))


def test_corrupted_foreign_and_mismatched_files_are_refused(exported, tmp_path):
    _, path, _ = exported["wm-pusht-state"]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not an onnx model" * 10)
    with pytest.raises(ExportFormatError, match="not a readable ONNX file"):
        OnnxWorldModelSession(garbage)
    with pytest.raises(FileNotFoundError, match="no ONNX file at .*missing.onnx"):
        OnnxWorldModelSession(tmp_path / "missing.onnx")
    empty = tmp_path / "empty.onnx"
    empty.touch()
    with pytest.raises(ExportFormatError, match=r"empty.onnx is empty \(0 bytes\)"):
        OnnxWorldModelSession(empty)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ExportFormatError, match="cut.onnx is not a readable ONNX file: truncated"):
        OnnxWorldModelSession(cut)

    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    with pytest.raises(ExportFormatError, match="not a worldsim export"):
        OnnxWorldModelSession(foreign)

    meta = read_metadata(path, KIND)
    policy = tmp_path / "policy.onnx"
    shutil.copy(path, policy)
    write_metadata(policy, meta | {"kind": "diffusion_policy_step"})
    with pytest.raises(ExportFormatError, match="holds a 'diffusion_policy_step' export"):
        OnnxWorldModelSession(policy)

    # Metadata that does not describe the graph (a cache of another size).
    wrong = tmp_path / "wrong.onnx"
    shutil.copy(path, wrong)
    write_metadata(wrong, meta | {"cache": meta["cache"] | {"slot_frames": 12}})
    with pytest.raises(ExportFormatError, match="'cache_keys' has shape"):
        OnnxWorldModelSession(wrong)


def test_packed_tensors_round_trip_exactly_and_refuse_damage():
    rng = np.random.default_rng(0)
    tensors = {"w": rng.normal(size=(3, 4)).astype(np.float32), "i": np.arange(5, dtype=np.int64), "s": np.float64(2.5)}
    back = unpack_tensors(pack_tensors(tensors))
    for name, array in tensors.items():
        assert back[name].dtype == np.asarray(array).dtype and back[name].shape == np.shape(array)
        np.testing.assert_array_equal(back[name], array)
    np.testing.assert_array_equal(unpack_tensors({"old": [[1.0, 2.0]]})["old"], [[1.0, 2.0]])  # exports before packing
    entry = pack_tensors({"w": tensors["w"]})["w"]
    with pytest.raises(
        ExportFormatError, match=r"tensor 'w' in the metadata has 44 bytes, its shape \[3, 4\] needs 48"
    ):
        unpack_tensors({"w": entry | {"base64": base64.b64encode(tensors["w"].tobytes()[:44]).decode()}})
    with pytest.raises(ExportFormatError, match="tensor 'w' in the metadata is not valid base64"):
        unpack_tensors({"w": entry | {"base64": "%%%"}})
    with pytest.raises(ExportFormatError, match="tensor 'w' in the metadata has no valid dtype and shape"):
        unpack_tensors({"w": entry | {"dtype": "object"}})
    with pytest.raises(ValueError, match="tensor 'b': dtype bool cannot be packed"):
        pack_tensors({"b": np.zeros(2, bool)})


def test_the_state_export_carries_its_predictor_packed_not_as_text(exported):
    """The one-step predictor's 140,000 weights: packed, the metadata is a small part of the file (written out
    as JSON numbers it was 7.18 MB against the graph's 4.20 MB)."""
    model, path, _ = exported["wm-pusht-state"]
    meta = read_metadata(path, KIND)
    weights = unpack_tensors(meta["tokenizer_tensors"])
    for name, array in model.tokenizer.tensors().items():
        np.testing.assert_array_equal(weights[name], array)
    metadata_bytes = len(json.dumps(meta))
    predictor_bytes = sum(a.nbytes for n, a in model.tokenizer.tensors().items() if "predictor" in n)
    assert predictor_bytes > 500_000 and metadata_bytes < 1.4 * predictor_bytes


def test_pixel_codec_files_must_belong_to_the_step(exported, tmp_path):
    _, path, _ = exported["wm-pusht-pixels"]
    copy = tmp_path / "pixels.onnx"
    codec = codec_paths(copy)
    shutil.copy(path, copy)
    shutil.copy(codec_paths(path)["encoder"], codec["encoder"])
    with pytest.raises(FileNotFoundError, match="no ONNX file at .*pixels.decoder.onnx"):
        OnnxWorldModelSession(copy)  # no decoder next to the step
    shutil.copy(codec_paths(path)["decoder"], codec["decoder"])
    OnnxWorldModelSession(copy)
    meta = read_metadata(codec["decoder"], "world_model_decoder")
    write_metadata(codec["decoder"], meta | {"export_id": "another"})
    with pytest.raises(ExportFormatError, match="comes from another export"):
        OnnxWorldModelSession(copy)


def _flip_weight_byte(path) -> None:
    """Flip one bit in the middle of the file's largest initializer, in place on disk."""
    data = bytearray(path.read_bytes())
    weights = max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    start = data.find(weights)
    assert start > 0 and data.count(weights) == 1
    data[start + len(weights) // 2] ^= 0x01
    path.write_bytes(data)


@pytest.mark.parametrize("damaged", ["step", "encoder", "decoder"])
def test_one_flipped_weight_byte_in_any_file_is_refused(exported, tmp_path, damaged):
    """The step file and each codec file carry their own checksum; the session names the damaged one."""
    _, path, _ = exported["wm-pusht-pixels"]
    copy = tmp_path / "pixels.onnx"
    shutil.copy(path, copy)
    for role, source in codec_paths(path).items():
        shutil.copy(source, codec_paths(copy)[role])
    OnnxWorldModelSession(copy)  # the intact copies load
    _flip_weight_byte(copy if damaged == "step" else codec_paths(copy)[damaged])
    name = "pixels.onnx" if damaged == "step" else f"pixels.{damaged}.onnx"
    with pytest.raises(ExportFormatError, match=rf"/{name}: checksum mismatch .*re-export it$"):
        OnnxWorldModelSession(copy)


def test_parity_failure_refuses_the_export(tmp_path):
    path = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match="parity check failed"):
        export_world_model(state_model(), path, tolerance=0.0)
    assert not path.exists()


def test_command_line_prints_parity_and_size(tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    main(["world-model", "wm-pusht-state", str(out), "--real-steps", "5"])
    printed = capsys.readouterr().out
    assert out.exists() and "parity max |torch - onnxruntime|" in printed and " MB" in printed
    assert "step_stream" in printed
    with pytest.raises(SystemExit, match="^0$"):  # argparse exits with status 0 after the help
        main(["policy", "--help"])
    assert "pusht-state" in capsys.readouterr().out
