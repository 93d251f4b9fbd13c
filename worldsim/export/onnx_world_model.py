"""``OnnxWorldModelSession``: a world model's streaming session on onnxruntime, without importing torch.

It runs the very sampling code the torch :class:`~worldsim.world_model.session.StreamingSession` runs
(:mod:`worldsim.world_model.streaming`: autoregressive and rolling sampling, sink + window, context
noise) on numpy arrays around the exported denoiser step. The KV cache is the core's
:class:`~worldsim.core.kv_cache.KVCache` on numpy buffers of a fixed number of slots, fed to the step
whole on every call, and the step's new keys and values are appended to it when a frame is committed.

Observations go in and out as the model's spaces: a state model's tokens are its normalized state
(numpy, with the statistics from the file's metadata); a pixel model's frames pass through the exported
encoder and decoder graphs next to the step file. Each file's checksum is verified on loading
(:func:`~worldsim.export.metadata.read_metadata`): a damaged step or codec file is refused by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldsim.core.kv_cache import KVCache
from worldsim.core.schedules import schedule_from_config
from worldsim.export.graph_files import check_graph, companion_path
from worldsim.export.metadata import ExportFormatError, read_metadata, unpack_tensors
from worldsim.export.providers import ProviderChoice, make_session
from worldsim.world_model.action_encoder import ActionEncoder, box_from_dict
from worldsim.world_model.frame_tokenizer import FrameTokenizer
from worldsim.world_model.frame_window import FrameWindow
from worldsim.world_model.state_tokenizer import StateTokenizer
from worldsim.world_model.streaming import SessionConfig, StreamingSessionBase, StreamSpec

KIND = "world_model_step"
ENCODER_KIND = "world_model_encoder"
DECODER_KIND = "world_model_decoder"
STEP_INPUTS = ("x", "level", "cond", "cache_keys", "cache_values", "cache_frames")
STEP_OUTPUTS = ("pred", "keys", "values")
UNET_STEP_INPUTS = ("x", "level", "cond", "context", "context_levels", "context_conds")
"""A U-Net model's step: the noisy frame and the frame window it is conditioned on (no cache to update)."""
UNET_STEP_OUTPUTS = ("pred",)


def codec_paths(step_path: str | Path) -> dict[str, Path]:
    """Where a pixel model's frame encoder and decoder graphs sit next to its step file."""
    return {role: companion_path(step_path, role) for role in ("encoder", "decoder")}


class _OnnxFrameCodec:
    """A pixel model's frames through its exported encoder and decoder graphs."""

    def __init__(self, step_path: Path, meta: dict, choice: ProviderChoice | None, threads: int | None):
        paths = codec_paths(step_path)
        p, d = meta["cache"]["tokens_per_frame"], meta["token_dim"]
        shape = meta["observation_space"]["shape"]
        sessions = {}
        for role, kind, inputs, outputs in (
            ("encoder", ENCODER_KIND, {"frames": (None, *shape)}, ("tokens",)),
            ("decoder", DECODER_KIND, {"tokens": (None, p, d)}, ("frames",)),
        ):
            role_meta = read_metadata(paths[role], kind)
            if role_meta.get("export_id") != meta["export_id"]:
                raise ExportFormatError(
                    f"{paths[role]} comes from another export than {step_path}; export them together again"
                )
            sessions[role] = make_session(paths[role], choice, threads=threads)
            check_graph(sessions[role], paths[role], inputs, outputs)
        self.encoder, self.decoder = sessions["encoder"], sessions["decoder"]

    def encode(self, obs: np.ndarray) -> np.ndarray:
        return self.encoder.run(["tokens"], {"frames": np.ascontiguousarray(obs, np.uint8)})[0]

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return self.decoder.run(["frames"], {"tokens": np.ascontiguousarray(tokens, np.float32)})[0]


class OnnxWorldModelSession(StreamingSessionBase):
    """The :class:`~worldsim.world_model.session.StreamingSession` interface on an exported world model.

    ``reset(context_obs, context_actions)``, then ``step(action) -> next_obs``; ``config`` chooses the
    sampler as for the torch session, within the export's cache slots (``metadata["cache"]``).
    ``seed`` seeds the numpy generator that draws all noise; ``threads`` caps onnxruntime's threads.
    """

    def __init__(
        self,
        path: str | Path,
        config: SessionConfig | None = None,
        *,
        providers: ProviderChoice | None = None,
        seed: int | None = None,
        threads: int | None = 1,
    ):
        path = Path(path)
        meta = read_metadata(path, KIND)
        self.metadata = meta
        if meta["config"].get("network", "transformer") == "unet":
            self._init_unet(path, meta, config, providers, seed, threads)
            return
        cache = meta["cache"]
        p, d, cond_dim = cache["tokens_per_frame"], meta["token_dim"], meta["cond_dim"]
        self.slot_frames = cache["slot_frames"]
        slots = self.slot_frames * p
        cache_dims = (cache["layers"], None, cache["heads"], slots, cache["head_dim"])  # None: the batch axis
        batch1 = tuple(1 if n is None else n for n in cache_dims)
        # One TensorRT engine for every call a session makes: 1 to slot_frames frames of tokens at batch 1.
        trt_profile = {
            "x": ((1, p, d), (1, p, d), (1, slots, d)),
            "level": ((1, p), (1, p), (1, slots)),
            "cond": ((1, p, cond_dim), (1, p, cond_dim), (1, slots, cond_dim)),
            "cache_keys": (batch1,) * 3,
            "cache_values": (batch1,) * 3,
        }
        self.session = make_session(path, providers, threads=threads, trt_profile=trt_profile)
        inputs = {"x": (None, None, d), "level": (None, None), "cond": (None, None, cond_dim)}
        inputs |= {"cache_keys": cache_dims, "cache_values": cache_dims, "cache_frames": ()}
        check_graph(self.session, path, inputs, STEP_OUTPUTS)
        tokenizer = meta["tokenizer"]
        state_tokenizer = None
        self._codec: _OnnxFrameCodec | None = None
        if tokenizer["kind"] == "state":
            state_tokenizer = StateTokenizer.from_tensors(unpack_tensors(meta["tokenizer_tensors"]), tokenizer)
        else:
            self._codec = _OnnxFrameCodec(path, meta, providers, threads)
        model = meta["config"]
        spec = StreamSpec(
            observation_space=box_from_dict(meta["observation_space"]),
            action_encoder=ActionEncoder.from_tensors(unpack_tensors(meta["action_tensors"]), meta["action"]),
            schedule=schedule_from_config(meta["schedule"]),
            parameterization=model["parameterization"],
            tokens_per_frame=p,
            token_dim=d,
            sink_frames=model["sink_frames"],
            window_frames=model["window_frames"],
            state_tokenizer=state_tokenizer,
        )
        super().__init__(spec, config, generator=np.random.default_rng(seed), like=np.zeros((), np.float32))
        if self.sink_frames + self.window_frames > self.slot_frames:
            raise ValueError(
                f"a cache of {self.sink_frames} sink + {self.window_frames} window frames does not fit the "
                f"{self.slot_frames} slots of {path}; export again with slot_frames >= "
                f"{self.sink_frames + self.window_frames}"
            )
        self._cache_frames = np.zeros((), np.int64)

    def _init_unet(self, path: Path, meta: dict, config, providers, seed, threads) -> None:
        """A U-Net model: one step graph over the frame window, frames tokenized in numpy."""
        d, cond_dim, k = meta["token_dim"], meta["cond_dim"], meta["config"]["window_frames"]
        self.slot_frames = k
        self.session = make_session(path, providers, threads=threads)
        inputs = {"x": (None, 1, d), "level": (None, 1), "cond": (None, 1, cond_dim)}
        inputs |= {"context": (None, k, d), "context_levels": (None, k), "context_conds": (None, k, cond_dim)}
        check_graph(self.session, path, inputs, UNET_STEP_OUTPUTS)
        self._frames = FrameTokenizer.from_tensors({}, meta["tokenizer"])
        self._codec = None
        model = meta["config"]
        spec = StreamSpec(
            observation_space=box_from_dict(meta["observation_space"]),
            action_encoder=ActionEncoder.from_tensors(unpack_tensors(meta["action_tensors"]), meta["action"]),
            schedule=schedule_from_config(meta["schedule"]),
            parameterization=model["parameterization"],
            tokens_per_frame=1,
            token_dim=d,
            sink_frames=0,
            window_frames=k,
            network="unet",
        )
        super().__init__(spec, config, generator=np.random.default_rng(seed), like=np.zeros((), np.float32))

    @property
    def providers(self) -> list[str]:
        """The execution providers the step actually runs on."""
        return self.session.get_providers()

    def _new_cache(self) -> KVCache | FrameWindow:
        if self.spec.network == "unet":
            return FrameWindow(
                batch_size=1, frames=self.window_frames, frame_dim=self.spec.token_dim,
                cond_dim=self.spec.action_encoder.cond_dim, no_action=self.spec.action_encoder.no_action_conditions(1),
            )  # fmt: skip
        c = self.metadata["cache"]
        return KVCache(
            num_layers=c["layers"],
            batch_size=1,
            num_heads=c["heads"],
            head_dim=c["head_dim"],
            tokens_per_frame=c["tokens_per_frame"],
            sink_frames=self.sink_frames,
            window_frames=self.window_frames,
            ema_decay=self.config.ema_decay,
            slot_frames=self.slot_frames,
        )

    def _network(self, x, level, cond, *, update_cache: bool) -> np.ndarray:
        cache = self.cache
        if isinstance(cache, FrameWindow):
            if update_cache:
                cache.append(x, level, cond)
                return None
            feeds = {"x": x, "level": level, "cond": cond, "context": cache.frames}
            feeds |= {"context_levels": cache.levels, "context_conds": cache.conds}
            feeds = {name: np.ascontiguousarray(value, np.float32) for name, value in feeds.items()}
            return self.session.run(UNET_STEP_OUTPUTS, feeds)[0]
        self._cache_frames[...] = cache.num_frames
        feeds = {
            "x": np.ascontiguousarray(x, np.float32),
            "level": np.ascontiguousarray(level, np.float32),
            "cond": np.ascontiguousarray(cond, np.float32),
            "cache_keys": cache.keys,
            "cache_values": cache.values,
            "cache_frames": self._cache_frames,
        }
        pred, keys, values = self.session.run(STEP_OUTPUTS, feeds)
        if update_cache:
            cache.append(keys, values)
        return pred

    def _encode_frames(self, obs: np.ndarray) -> np.ndarray:
        return self._frames.encode(obs) if self._codec is None else self._codec.encode(obs)

    def _decode_frames(self, tokens: np.ndarray) -> np.ndarray:
        return self._frames.decode(tokens) if self._codec is None else self._codec.decode(tokens)
