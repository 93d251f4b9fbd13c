"""``OnnxPolicy``: the diffusion policy's control API on onnxruntime, without importing torch.

It runs the very strategy code the torch policy runs (plans, RTI warm starts, the rolling window) on
numpy arrays around the exported step, and converts actions with the same codec. The observation
encoder (its own graph, ``OUT.encoder.onnx``) runs once per control step; every denoiser call of the plan
reuses its features; a camera policy's CNN (``OUT.frames.onnx``) runs on the frames it has not seen at the
step before. Every file's checksum is verified on loading
(:func:`~worldsim.export.metadata.read_metadata`), and a sampled chunk that is not finite is refused
rather than returned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldsim.core.normalizer import Normalizer
from worldsim.core.schedules import schedule_from_config
from worldsim.export.graph_files import check_graph
from worldsim.export.metadata import ExportFormatError, read_metadata
from worldsim.export.providers import ProviderChoice, make_session
from worldsim.policies.action_codec import ActionCodec
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.control import ChunkPolicy
from worldsim.policies.frame_features import FrameFeatureCache
from worldsim.policies.strategies import ChunkContext, Strategy

KIND = "diffusion_policy_step"
ENCODER_KIND = "diffusion_policy_encoder"
FRAMES_KIND = "diffusion_policy_frames"


class OnnxPolicy(ChunkPolicy):
    """An exported diffusion policy on onnxruntime: ``reset()``, ``select_action(obs)``, ``set_strategy``.

    ``strategy`` by name starts from the options the trained policy recorded for it (the export's
    ``strategies`` metadata: a task's tuned RTI, say), overridden by ``strategy_kwargs``; ``seed`` seeds the
    numpy generator all sampling noise comes from (the torch policy's ``seed`` draws the same).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        strategy: Strategy | str = "ddpm",
        providers: ProviderChoice | None = None,
        seed: int | None = None,
        threads: int | None = 1,
        **strategy_kwargs,
    ):
        """``threads`` caps onnxruntime's intra-op threads (None: one per core). One thread is fastest for
        batch-1 control and keeps a served policy from spinning idle threads on cores its robot loop needs."""
        self.path = Path(path)
        meta = read_metadata(self.path, KIND)
        self.config = DiffusionPolicyConfig.from_dict(meta["config"])
        stats = meta["action_normalizer"]
        normalizer = Normalizer(
            meta["normalization"], np.asarray(stats["a.offset"], np.float32), np.asarray(stats["a.scale"], np.float32)
        )
        self.codec = ActionCodec(self.config, normalizer)
        self.schedule = schedule_from_config(meta["schedule"])
        self.metadata = meta
        self.encoder_path = self._companion(meta, "encoder", ENCODER_KIND, "a one-graph export from before worldsim "
                                            "split off the encoder")  # fmt: skip
        self.session = make_session(self.path, providers, threads=threads)
        self.encoder_session = make_session(self.encoder_path, providers, threads=threads)
        self.frames_session = None
        if self.config.obs_type != "state":
            self.frames_path = self._companion(meta, "frames", FRAMES_KIND, "a camera policy exported before worldsim "
                                               "split off its per-frame CNN (OUT.frames.onnx)")  # fmt: skip
            self.frames_session = make_session(self.frames_path, providers, threads=threads)
        self.frame_cache = FrameFeatureCache()
        self._check_io()
        self.generator = np.random.default_rng(seed)
        self.strategy_defaults = {name: dict(options) for name, options in meta.get("strategies", {}).items()}
        self.set_strategy(strategy, **strategy_kwargs)

    def _companion(self, meta: dict, role: str, kind: str, older: str) -> Path:
        """The companion graph file the step's metadata names for ``role``, checked to belong to this step."""
        if role not in meta:
            raise ExportFormatError(f"{self.path} is {older}; re-export it")
        path = self.path.with_name(meta[role])
        owner = read_metadata(path, kind).get("step")
        if owner != self.path.name:
            raise ExportFormatError(f"{path} belongs to {owner}, not {self.path.name}")
        return path

    def _check_io(self) -> None:
        c = self.config
        history = (None, c.obs_horizon)
        if c.obs_type == "state":
            encoder_inputs = {"obs": (*history, *c.obs_shape)}
        else:
            check_graph(self.frames_session, self.frames_path, {"pixels": (None, *c.obs_shape)}, ("features",))
            encoder_inputs = {"features": (*history, None)}
            if c.multipart:
                encoder_inputs["state"] = (*history, c.state_dim)
        check_graph(self.encoder_session, self.encoder_path, encoder_inputs, ("cond",))
        cond = (None, c.horizon, c.feature_dim) if c.per_step_conditioning else (None, c.feature_dim)
        step_inputs = {"cond": cond, "x": (None, c.horizon, c.action_dim), "level": (None, c.horizon)}
        check_graph(self.session, self.path, step_inputs, ("pred",))

    def encode(self, obs_history) -> np.ndarray:
        """The conditioning of checked raw histories (one encoder run): ``[B, feature_dim]``, or
        ``[B, horizon, feature_dim]`` with ``per_step_conditioning``."""
        if self.config.obs_type == "state":
            feeds = {"obs": np.ascontiguousarray(obs_history, np.float32)}
            return self.encoder_session.run(["cond"], feeds)[0]
        frames = obs_history["pixels"] if self.config.multipart else obs_history
        feeds = {"features": self.frame_cache.features(np.ascontiguousarray(frames, np.uint8), self.encode_frames)}
        if self.config.multipart:
            feeds["state"] = np.ascontiguousarray(obs_history["state"], np.float32)
        return self.encoder_session.run(["cond"], feeds)[0]

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame features ``[N, F]`` of uint8 frames ``[N, H, W, 3]`` (one run of the frames graph)."""
        return self.frames_session.run(["features"], {"pixels": np.ascontiguousarray(frames)})[0]

    @property
    def providers(self) -> list[str]:
        """The execution providers this session actually runs on."""
        return self.session.get_providers()

    def _sample_chunk(
        self, obs_history: np.ndarray, executed_steps: int, prefix: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        cond = self.encode(obs_history)  # once per control step: every call of the plan below reuses it

        def step(x, level, cond):
            feeds = {
                "cond": cond,
                "x": np.ascontiguousarray(x, np.float32),
                "level": np.ascontiguousarray(level, np.float32),
            }
            return self.session.run(["pred"], feeds)[0]

        c = self.config
        reference = self.codec.reference(obs_history)
        sampler = ChunkContext(
            denoiser=step, cond=cond, schedule=self.schedule, parameterization=c.parameterization,
            num_train_steps=c.num_train_steps, like=np.empty((cond.shape[0], c.horizon, c.action_dim), np.float32),
            clip_x0=c.clip_sample, generator=self.generator, codec=self.codec, reference=reference,
            prefix=self._normalized_prefix(prefix, reference, np.empty(0, np.float32)),
        )  # fmt: skip
        chunk = self.strategy.sample(sampler, executed_steps)
        self.calls_last_prediction = sampler.calls
        if not np.isfinite(chunk).all():
            # Observations far outside the training data (e.g. 1e30) pass the state encoder, an MLP that
            # grows with its input, and overflow float32 in the denoiser's first block: the attention
            # scores (q.k ~ 1e55) and the layer norm's variance become inf, then NaN. Torch stops there
            # on its own input check; onnxruntime would return the NaN actions. The warm start built on
            # this chunk is dropped, so the next prediction starts from noise.
            self.strategy.reset()
            state = obs_history["state"] if c.multipart else obs_history
            largest = float(np.abs(np.asarray(state, np.float64)).max(initial=0.0))
            raise ValueError(
                f"the policy network produced NaN or infinite actions for an observation history of magnitude up "
                f"to {largest:.3g}: observations far outside the training data overflow float32 inside the "
                f"network; no actions returned and the warm start reset"
            )
        return chunk, reference
