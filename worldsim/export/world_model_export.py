"""Export a world model's single denoiser step to ONNX, its KV cache an explicit input, with parity checks.

Graphs written:

- ``OUT.onnx``, the step: ``pred, keys, values = step(x, level, cond, cache_keys, cache_values,
  cache_frames)`` (:meth:`~worldsim.core.transformer.CausalTransformer.forward_fixed_cache`). The cache
  buffers have a fixed number of frame slots (``slot_frames``, by default the model's sink + window), of
  which the first ``cache_frames`` hold frames; ``keys``/``values`` are the call's own, appended to the
  cache by the runner when it commits a frame. Batch and token count are dynamic; every other size is
  static, so a TensorRT engine built for the token range serves a whole stream.
- for a pixel model, ``OUT.encoder.onnx`` (``tokens = encoder(frames)``, uint8 frames in) and
  ``OUT.decoder.onnx`` (``frames, images = decoder(tokens)``: uint8 frames out, and the decoder's float
  images for the parity check), so the runner takes and returns frames.

Everything a runner needs (configs, spaces, normalization statistics, schedule, cache layout, session
defaults) travels in the step file's metadata; the codec files carry the same ``export_id``, so files
of different exports are never mixed. The sampling loop stays in Python
(:mod:`worldsim.world_model.streaming`), shared by the torch and onnxruntime sessions.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from worldsim.export.common import DEFAULT_OPSET, ExportError, ExportReport, export_graph, file_sizes, max_abs_diff
from worldsim.export.metadata import pack_tensors, write_metadata
from worldsim.export.onnx_world_model import (
    DECODER_KIND,
    ENCODER_KIND,
    KIND,
    STEP_INPUTS,
    STEP_OUTPUTS,
    UNET_STEP_INPUTS,
    UNET_STEP_OUTPUTS,
    codec_paths,
)
from worldsim.export.providers import ProviderChoice, make_session
from worldsim.world_model.action_encoder import box_to_dict
from worldsim.world_model.frame_window import FrameWindow
from worldsim.world_model.model import WorldModel
from worldsim.world_model.session import SessionConfig, StreamingSession

__all__ = ["ExportError", "FrameDecoder", "FrameEncoder", "WorldModelStep", "env_rollout", "export_world_model"]


class WorldModelStep(nn.Module):
    """The denoiser's cached call on fixed-size cache buffers, as one traced step."""

    def __init__(self, model: WorldModel):
        super().__init__()
        self.denoiser = model.denoiser

    def forward(self, x, level, cond, cache_keys, cache_values, cache_frames):
        return self.denoiser.forward_fixed_cache(x, level, cond, cache_keys, cache_values, cache_frames)


class UNetStep(nn.Module):
    """A U-Net model's step: the noisy frame and its frame window to the prediction (the window is an input)."""

    def __init__(self, model: WorldModel):
        super().__init__()
        self.denoiser = model.denoiser

    def forward(self, x, level, cond, context, context_levels, context_conds):
        return self.denoiser.predict(x, level, cond, context, context_levels, context_conds)


class FrameEncoder(nn.Module):
    """uint8 frames ``[N, H, W, 3]`` to the normalized tokens ``[N, P, D]`` the denoiser works on."""

    def __init__(self, model: WorldModel):
        super().__init__()
        self.tokenizer = model.tokenizer

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(frames)


class FrameDecoder(nn.Module):
    """Tokens ``[N, P, D]`` to uint8 frames ``[N, H, W, 3]``, and the float images they are rounded from."""

    def __init__(self, model: WorldModel):
        super().__init__()
        self.tokenizer = model.tokenizer

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.tokenizer.decode_images(tokens)
        return self.tokenizer.autoencoder.to_uint8(images), images


class _RecordingSession(StreamingSession):
    """A torch session whose cache has the export's slots and which records every network call's inputs."""

    def __init__(self, model: WorldModel, config: SessionConfig, slot_frames: int):
        super().__init__(model, config, seed=0)
        self.slot_frames = slot_frames
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def _new_cache(self):
        return self.model.denoiser.new_cache(
            1, sink_frames=self.sink_frames, window_frames=self.window_frames, slot_frames=self.slot_frames
        )

    def _network(self, x, level, cond, *, update_cache: bool):
        cache = self.cache
        if isinstance(cache, FrameWindow):
            if not update_cache:  # a commit only fills the window: no network call to record
                self.calls.append(tuple(t.clone() for t in (x, level, cond, cache.frames, cache.levels, cache.conds)))
        else:
            frames = torch.tensor(cache.num_frames)
            self.calls.append(tuple(t.clone() for t in (x, level, cond, cache.keys, cache.values, frames)))
        return super()._network(x, level, cond, update_cache=update_cache)


def env_rollout(model: WorldModel, steps: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A real trajectory from the environment the checkpoint was trained on, driven by random actions.

    Returns observations ``[steps + 1, ...]`` and the actions ``[steps, ...]`` between them (fewer if the
    episode ends); the environment is the checkpoint metadata's ``env_id`` with its ``env_kwargs``.
    """
    import worldsim  # noqa: F401  (registers the worldsim/ environments)

    meta = model.metadata
    if "env_id" not in meta:
        raise ValueError("the model's checkpoint names no environment (env_id); pass real observations instead")
    env = gym.make(meta["env_id"], **meta.get("env_kwargs", {}))
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    observations, actions = [obs], []
    for _ in range(steps):
        action = env.action_space.sample()
        obs, _, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        if terminated or truncated:
            break
    env.close()
    return np.stack(observations), np.stack(actions)


def _space_samples(space: gym.spaces.Space, n: int, seed: int) -> np.ndarray:
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


def _random_step_inputs(model: WorldModel, slot_frames: int, batch: int, frames: int, filled: int, g):
    c, p = model.denoiser.config, model.tokens_per_frame
    t = frames * p
    cache_shape = (c.depth, batch, c.heads, slot_frames * p, model.denoiser.head_dim)
    return (
        torch.randn(batch, t, c.in_dim, generator=g),
        torch.rand(batch, t, generator=g),
        torch.randn(batch, t, c.cond_dim, generator=g),
        torch.randn(cache_shape, generator=g),
        torch.randn(cache_shape, generator=g),
        torch.tensor(filled),
    )


def _stream_step_inputs(model: WorldModel, slot_frames: int, context: np.ndarray, context_actions, actions) -> list:
    """Inputs of every network call of short torch streams (autoregressive and rolling).

    The streams run long enough to fill the cache and evict from it, so the step sees the cache contents,
    levels and conditions of real streaming.
    """
    window = model.config.window_frames
    configs = [SessionConfig(steps=2)]
    if model.config.network == "transformer":
        configs.append(SessionConfig(sampling="rolling", rolling_window=min(3, window)))
    calls = []
    for config in configs:
        session = _RecordingSession(model, config, slot_frames)
        session.reset(context, context_actions)
        for action in actions:
            session.step(action)
        calls += session.calls
    return calls


def _metadata(model: WorldModel, path: Path, slot_frames: int, export_id: str, tolerance: float, source) -> dict:
    c, tc = model.config, model.transformer_config
    state = model.tokenizer.config()["kind"] == "state"
    defaults = asdict(SessionConfig()) | {"sink_frames": c.sink_frames, "window_frames": c.window_frames}
    common = {
        "kind": KIND,
        "export_id": export_id,
        "config": asdict(c),
        "token_dim": model.tokenizer.token_dim,
        "cond_dim": model.action_encoder.cond_dim,
        "tokenizer": model.tokenizer.config(),
        "action": model.action_encoder.config(),
        "action_tensors": pack_tensors(model.action_encoder.tensors()),
        "observation_space": box_to_dict(model.observation_space),
        "schedule": model.schedule.config(),
        "session_defaults": defaults,
        "env_id": model.metadata.get("env_id"),
        "env_kwargs": model.metadata.get("env_kwargs"),
        "source": source,
        "tolerance": tolerance,
    }
    if tc is None:  # a U-Net: its frame window is an input of the step, there is no cache layout to record
        return common | {"unet": model.unet_config.to_dict()}
    return common | {
        "transformer": tc.to_dict(),
        # A state model's tokens are normalized states: the runner normalizes in numpy with these statistics.
        "tokenizer_tensors": pack_tensors(model.tokenizer.tensors()) if state else {},
        "codec": None if state else {role: p.name for role, p in codec_paths(path).items()},
        "cache": {
            "slot_frames": slot_frames,
            "layers": tc.depth,
            "heads": tc.heads,
            "head_dim": model.denoiser.head_dim,
            "tokens_per_frame": tc.tokens_per_frame,
        },
    }


def export_world_model(
    model: WorldModel | str | Path,
    path: str | Path,
    *,
    tolerance: float = 1e-4,
    real_obs: np.ndarray | None = None,
    real_actions: np.ndarray | None = None,
    real_steps: int = 20,
    slot_frames: int | None = None,
    opset: int = DEFAULT_OPSET,
    source: str | None = None,
) -> ExportReport:
    """Write the world model's step (and a pixel model's frame encoder and decoder) and check them.

    ``model``: a :class:`WorldModel`, or a checkpoint directory or shipped name. ``real_obs [N, ...]`` and
    ``real_actions [N - 1, ...]``: a real trajectory; its first frames start the recorded streams of the
    parity check, its actions drive them, and its frames go through the codec. Without one, ``real_steps``
    steps of the checkpoint's environment supply it (:func:`env_rollout`, when the checkpoint names its
    environment; 0 turns this off) and samples of the model's spaces stand in for anything missing.
    ``slot_frames``: the cache slots of the graph (default: the model's sink + window frames); sessions
    with a larger cache need a larger export.

    Parity: torch and onnxruntime on random inputs (batch 1 and 3, empty, partly filled and full caches)
    and on every network call of short autoregressive and rolling torch streams that run into
    evictions. Raises :class:`ExportError` (and removes the files) when the largest absolute difference
    exceeds ``tolerance``.
    """
    if not isinstance(model, WorldModel):
        source = str(model) if source is None else source
        model = WorldModel.from_pretrained(model)
    model = model.eval()
    if real_obs is None and real_steps > 0 and model.metadata.get("env_id"):
        real_obs, real_actions = env_rollout(model, real_steps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c, p = model.config, model.tokens_per_frame
    capacity = c.sink_frames + c.window_frames
    slot_frames = capacity if slot_frames is None else slot_frames
    if slot_frames < capacity:
        raise ValueError(f"slot_frames must hold the model's sink + window frames ({capacity}), got {slot_frames}")
    pixels = model.tokenizer.config()["kind"] == "pixels"
    paths = [path, *codec_paths(path).values()] if pixels else [path]
    export_id = uuid.uuid4().hex
    generator = torch.Generator().manual_seed(0)
    if c.network == "unet":
        return _export_unet(model, path, export_id, tolerance, opset, source, real_obs, real_actions, generator)

    # Example batch and frame counts of 2: a size of 1 would be specialized away and lose its dynamic axis.
    step = WorldModelStep(model).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("frames", min=1, max=1024)
    tokens = frames * p if p > 1 else frames
    per_token = {0: batch, 1: tokens}
    export_graph(
        step, _random_step_inputs(model, slot_frames, 2, 2, 1, generator), path,
        input_names=STEP_INPUTS, output_names=STEP_OUTPUTS,
        dynamic_shapes=(per_token, per_token, per_token, {1: batch}, {1: batch}, None), opset=opset,
    )  # fmt: skip
    write_metadata(path, _metadata(model, path, slot_frames, export_id, tolerance, source))
    encoder, decoder = FrameEncoder(model).eval(), FrameDecoder(model).eval()
    if pixels:
        encoder_path, decoder_path = paths[1:]
        size = model.observation_space.shape
        export_graph(
            encoder, (torch.zeros(2, *size, dtype=torch.uint8),), encoder_path,
            input_names=["frames"], output_names=["tokens"], dynamic_shapes=({0: batch},), opset=opset,
        )  # fmt: skip
        export_graph(
            decoder, (torch.zeros(2, p, model.tokenizer.token_dim),), decoder_path,
            input_names=["tokens"], output_names=["frames", "images"], dynamic_shapes=({0: batch},), opset=opset,
        )  # fmt: skip
        for file, kind in ((encoder_path, ENCODER_KIND), (decoder_path, DECODER_KIND)):
            write_metadata(file, {"kind": kind, "export_id": export_id, "source": source})

    try:
        checks, providers = _parity(model, paths, slot_frames, real_obs, real_actions, generator)
    except Exception:
        _remove(paths)
        raise
    worst = max(checks.values())
    report = ExportReport(
        str(path), worst, tolerance, os.path.getsize(path), providers, files=file_sizes(paths), checks=checks
    )
    if not worst <= tolerance:
        _remove(paths)
        raise ExportError(f"parity check failed: {report} (per check: {checks})")
    return report


def _parity(model: WorldModel, paths: list[Path], slot_frames: int, real_obs, real_actions, generator):
    """Largest |torch - onnxruntime| of each check, and the providers that ran."""
    cpu = ProviderChoice(prefer=("cpu",))
    step, session = WorldModelStep(model).eval(), make_session(paths[0], cpu)
    checks: dict[str, float] = {}

    def compare_step(cases: list) -> float:
        worst = 0.0
        for case in cases:
            got = session.run(STEP_OUTPUTS, dict(zip(STEP_INPUTS, (t.numpy() for t in case), strict=True)))
            worst = max(worst, max_abs_diff(step(*case), got))
        return worst

    # (batch, frames in the call, frames in the cache): empty, full and partly filled caches, several frames.
    shapes = [(1, 1, 0), (1, 1, slot_frames), (3, 2, slot_frames // 2), (1, min(3, slot_frames), slot_frames - 1)]
    with torch.no_grad():
        checks["step_random"] = compare_step(
            [_random_step_inputs(model, slot_frames, b, f, n, generator) for b, f, n in shapes]
        )
        # The streams start from the trajectory's first two frames and follow its actions (space samples
        # stand in for a missing trajectory, or for actions beyond its end).
        checks["step_stream"] = compare_step(_stream_calls(model, slot_frames, real_obs, real_actions))
        if len(paths) > 1:
            encoder, decoder = FrameEncoder(model).eval(), FrameDecoder(model).eval()
            encoder_session, decoder_session = make_session(paths[1], cpu), make_session(paths[2], cpu)
            shape = model.observation_space.shape
            frames = [torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=generator) for n in (1, 3)]
            if real_obs is not None:
                frames.append(torch.as_tensor(real_obs))
            checks["encoder"] = max(
                max_abs_diff([encoder(f)], encoder_session.run(["tokens"], {"frames": f.numpy()})) for f in frames
            )
            tokens = [torch.randn(n, model.tokens_per_frame, model.tokenizer.token_dim, generator=generator)
                      for n in (1, 3)] + [encoder(f) for f in frames[2:]]  # fmt: skip
            checks["decoder"] = max(
                max_abs_diff([decoder(t)[1]], decoder_session.run(["images"], {"tokens": t.numpy()})) for t in tokens
            )
    return checks, session.get_providers()


def _random_unet_inputs(model: WorldModel, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    c = model.unet_config
    k, d, cond = c.context_frames, c.frame_dim, c.cond_dim
    return (
        torch.randn(batch, 1, d, generator=generator), torch.rand(batch, 1, generator=generator),
        torch.randn(batch, 1, cond, generator=generator), torch.rand(batch, k, d, generator=generator) * 2 - 1,
        torch.rand(batch, k, generator=generator) * 0.1, torch.randn(batch, k, cond, generator=generator),
    )  # fmt: skip


def _export_unet(
    model: WorldModel, path: Path, export_id: str, tolerance: float, opset: int, source, real_obs, real_actions,
    generator: torch.Generator,
) -> ExportReport:  # fmt: skip
    """A U-Net model's one step file; parity on random windows (batch 1 and 3) and on every call of a short
    torch stream (started from the real trajectory when there is one)."""
    step = UNetStep(model).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    export_graph(
        step, _random_unet_inputs(model, 2, generator), path, input_names=UNET_STEP_INPUTS,
        output_names=UNET_STEP_OUTPUTS, dynamic_shapes=tuple({0: batch} for _ in UNET_STEP_INPUTS), opset=opset,
    )  # fmt: skip
    write_metadata(path, _metadata(model, path, model.config.window_frames, export_id, tolerance, source))
    try:
        session = make_session(path, ProviderChoice(prefer=("cpu",)))
        cases = [_random_unet_inputs(model, b, generator) for b in (1, 3)]
        stream = _stream_calls(model, model.config.window_frames, real_obs, real_actions)
        checks = {}
        with torch.no_grad():
            for name, calls in (("step_random", cases), ("step_stream", stream)):
                checks[name] = max(
                    max_abs_diff(
                        [step(*case)],
                        session.run(
                            UNET_STEP_OUTPUTS, dict(zip(UNET_STEP_INPUTS, (t.numpy() for t in case), strict=True))
                        ),
                    )
                    for case in calls
                )
    except Exception:
        _remove([path])
        raise
    worst = max(checks.values())
    report = ExportReport(
        str(path), worst, tolerance, os.path.getsize(path), session.get_providers(), files=file_sizes([path]),
        checks=checks,
    )  # fmt: skip
    if not worst <= tolerance:
        _remove([path])
        raise ExportError(f"parity check failed: {report} (per check: {checks})")
    return report


def _stream_calls(model: WorldModel, slot_frames: int, real_obs, real_actions) -> list:
    """The network calls of short torch streams from the trajectory's first frames (or space samples)."""
    n_steps = slot_frames + 3  # enough frames to fill the window and shift it
    filler = _space_samples(model.action_space, n_steps, seed=1)
    if real_obs is None:
        return _stream_step_inputs(model, slot_frames, _space_samples(model.observation_space, 1, seed=0), None, filler)
    real_obs, real_actions = np.asarray(real_obs), np.asarray(real_actions)
    k = min(2, len(real_obs))
    taken = real_actions[k - 1 : k - 1 + n_steps].astype(filler.dtype)
    actions = np.concatenate([taken, filler[len(taken) :]])
    context_actions = real_actions[: k - 1] if k > 1 else None
    return _stream_step_inputs(model, slot_frames, real_obs[:k], context_actions, actions)


def _remove(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
