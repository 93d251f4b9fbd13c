"""The control-facing half of a chunk policy, shared by the torch policy and the onnxruntime runner.

Observation and action queues, strategy switching, input checks and the conversion of sampled chunks
back to raw actions live here, free of torch; a subclass only says how to sample a normalized chunk.
"""

from __future__ import annotations

import functools
import warnings
from abc import abstractmethod
from collections import deque
from collections.abc import Mapping

import gymnasium as gym
import numpy as np

from worldsim.core.array_ops import all_finite, as_array_like, tree_leading, tree_map, tree_stack
from worldsim.core.validation import check_choice
from worldsim.policies.action_codec import ActionCodec
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.frame_features import FrameFeatureCache
from worldsim.policies.recipe import as_policy_observation
from worldsim.policies.strategies import Strategy, make_strategy

OBS_CHECKS = ("error", "clip", "warn")
"""What a policy does with an observation outside its observation space's bounds: refuse it, clip it into
the bounds, or warn and use it as it is. NaN and infinite values are refused whatever the choice."""


class ChunkPolicy:
    """``reset()``, ``select_action(obs)``, ``predict_chunk(obs_history)`` over any chunk sampler.

    Every observation is checked on every call (shape, NaN/inf, and the observation space's bounds as
    ``obs_check`` says) and every returned action lies in the action space. ``strategy_defaults`` holds the
    options a trained policy recorded for each strategy (its task's RTI settings, say): ``set_strategy``
    starts from them, so ``set_strategy("rti")`` runs the policy the way it was tuned.
    """

    config: DiffusionPolicyConfig
    codec: ActionCodec
    strategy: Strategy
    calls_last_prediction: int
    frame_cache: FrameFeatureCache
    """A camera policy's per-frame features, kept for the next control step (emptied by ``reset``)."""
    strategy_defaults: dict[str, dict] = {}
    _obs_check: str = "error"

    @property
    def obs_check(self) -> str:
        """``error`` (default), ``clip`` or ``warn``: the response to an observation outside its bounds."""
        return self._obs_check

    @obs_check.setter
    def obs_check(self, value: str) -> None:
        check_choice("obs_check", value, OBS_CHECKS)
        self._obs_check = value

    @abstractmethod
    def _sample_chunk(self, obs_history: np.ndarray, executed_steps: int, prefix: np.ndarray | None):
        """A normalized chunk ``[B, horizon, action_dim]`` (any array kind) for raw histories ``[B, ...]``, and
        the reference its relative actions were sampled at (``codec.reference``, the same kind; or None).
        ``prefix``: raw actions ``[B, d, action_dim]`` to hand the strategy as its frozen prefix (see
        :meth:`_normalized_prefix`), or None."""

    @property
    def obs_horizon(self) -> int:
        return self.config.obs_horizon

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def n_action_steps(self) -> int:
        return self.strategy.n_action_steps or self.config.n_action_steps

    @property
    def observation_space(self) -> gym.spaces.Box | gym.spaces.Dict:
        """The observations ``select_action`` takes: a state Box, a uint8 image Box, or a camera with
        proprioception ``Dict(image_key=Box(uint8), state_key=Box)`` (the env's own keys)."""
        c = self.config
        image = gym.spaces.Box(0, 255, c.obs_shape, np.uint8) if c.obs_type == "pixels" else None
        if c.obs_type == "pixels" and not c.multipart:
            return image
        low = np.asarray(c.obs_low or [-np.inf] * c.state_size, np.float32)
        high = np.asarray(c.obs_high or [np.inf] * c.state_size, np.float32)
        state = gym.spaces.Box(low, high, dtype=np.float32)
        return gym.spaces.Dict({c.obs_keys[0]: image, c.obs_keys[1]: state}) if c.multipart else state

    @property
    def action_space(self) -> gym.spaces.Box:
        c = self.config
        low = np.asarray(c.action_low or [-np.inf] * c.action_dim, np.float32)
        high = np.asarray(c.action_high or [np.inf] * c.action_dim, np.float32)
        return gym.spaces.Box(low, high, dtype=np.float32)

    @functools.cached_property
    def _obs_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the state vector (the observation, or a camera policy's proprioception)."""
        space = self.observation_space
        space = space[self.config.obs_keys[1]] if self.config.multipart else space
        return space.low, space.high

    @functools.cached_property
    def _action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        space = self.action_space
        return space.low, space.high

    def set_strategy(self, strategy: Strategy | str, **kwargs) -> None:
        """Swap the inference strategy (by object, or by name with options over the policy's recorded
        defaults for it); resets the episode state."""
        if isinstance(strategy, str):
            strategy = make_strategy(strategy, **{**self.strategy_defaults.get(strategy, {}), **kwargs})
        self.strategy = strategy
        self.reset()

    def seed(self, seed: int | None) -> None:
        """Draw all sampling noise from ``numpy.random.default_rng(seed)`` from now on.

        The torch policy and the onnxruntime runner draw from the same numpy generator this way, so the same
        seed gives both the same noise (and actions equal to float tolerance). None: unseeded.
        """
        self.generator = np.random.default_rng(seed)

    def reset(self) -> None:
        """Start a new episode: empty queues and forget the strategy's warm start."""
        self._obs_queue: deque[np.ndarray] = deque(maxlen=self.config.obs_horizon)
        self._action_queue: deque[np.ndarray] = deque()
        self._executed_since_prediction = 0
        self.strategy.reset()
        self.calls_last_prediction = 0
        self.frame_cache.clear()

    def _part_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of one observation, per part of a camera's dict (``""``: an array observation)."""
        c = self.config
        return {"pixels": c.obs_shape, "state": (c.state_dim,)} if c.multipart else {"": c.obs_shape}

    def check_obs_history(self, obs, *, batched: bool) -> None:
        """A one-line error unless ``obs`` is a history ``[(batch,) obs_horizon, ...]`` of this policy's
        observations, all finite (each part of a camera-with-proprioception dict)."""
        c = self.config
        expected = self._part_shapes()
        parts = obs if c.multipart else {"": obs}
        if c.multipart and (not isinstance(obs, Mapping) or set(obs) != {"pixels", "state"}):
            raise ValueError("this policy's observation histories are dicts {'pixels', 'state'}")
        lead = 2 if batched else 1
        for key, shape in expected.items():
            part, full = parts[key], (c.obs_horizon, *shape)
            if part.ndim != len(full) + lead - 1 or tuple(part.shape[lead - 1 :]) != full:
                what = "[batch, " if batched else "["
                name = f"{key} " if key else ""
                raise ValueError(
                    f"{name}observation history must have shape {what}{', '.join(map(str, full))}], "
                    f"got {tuple(part.shape)}"
                )
            # On the array's own namespace: a training batch may be a CUDA tensor, which numpy cannot read.
            if not all_finite(part):
                raise ValueError("observation history contains NaN or infinite values")
        if batched and c.multipart and len(obs["pixels"]) != len(obs["state"]):
            raise ValueError("the pixels and state histories hold different batch sizes")

    def _checked_observations(self, obs, what: str):
        """``obs`` (one observation or a history of them) held to the observation space: NaN/inf refused,
        values outside the bounds refused, clipped or warned about as ``obs_check`` says."""
        if self.config.multipart:
            pixels = self._checked_pixels(obs["pixels"], what)
            return {"pixels": pixels, "state": self._checked_state(obs["state"], what)}
        if self.config.obs_type == "pixels":
            return self._checked_pixels(obs, what)
        return self._checked_state(obs, what)

    @staticmethod
    def _checked_pixels(obs: np.ndarray, what: str) -> np.ndarray:
        if obs.dtype != np.uint8 and not (np.isfinite(obs).all() and obs.min() >= 0 and obs.max() <= 255):
            raise ValueError(f"{what} must be uint8 pixels in [0, 255]")
        return obs

    def _checked_state(self, obs: np.ndarray, what: str) -> np.ndarray:
        if not np.issubdtype(obs.dtype, np.number) or np.iscomplexobj(obs):
            raise ValueError(f"{what} must be real numbers, got dtype {obs.dtype}")
        if not np.isfinite(obs).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        low, high = self._obs_bounds
        outside = (obs < low) | (obs > high)
        if outside.any():
            dims = sorted({int(d) for d in np.nonzero(outside)[-1]})
            message = f"{what} is outside the observation space's bounds in dimension(s) {dims}"
            if self._obs_check == "error":
                raise ValueError(f"{message} (obs_check='clip' or 'warn' accepts it)")
            if self._obs_check == "clip":
                return np.clip(obs, low, high).astype(obs.dtype, copy=False)
            warnings.warn(message, stacklevel=3)
        return obs

    def predict_chunk(
        self, obs_history: np.ndarray, *, executed_steps: int | None = None, prefix: np.ndarray | None = None
    ) -> np.ndarray:
        """Raw actions ``[horizon, action_dim]`` from ``obs_history [obs_horizon, *obs_shape]``.

        ``executed_steps``: actions executed since the previous prediction (how far a warm start shifts);
        defaults to ``n_action_steps``. ``prefix``: raw actions ``[d, action_dim]`` the robot executes while
        this chunk is computed (real-time chunking); a strategy that inpaints returns them unchanged as
        the chunk's first ``d`` actions, the others ignore them.
        """
        obs_history = self._as_array(obs_history, history=True)
        self.check_obs_history(obs_history, batched=False)
        obs_history = self._checked_observations(obs_history, "observation history")
        steps = self.n_action_steps if executed_steps is None else executed_steps
        batch = tree_map(lambda part: part[None], obs_history)
        return self._predict(batch, steps, None if prefix is None else np.asarray(prefix)[None])[0]

    def predict_chunks(
        self, obs_histories: np.ndarray, *, executed_steps: int, prefix: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`predict_chunk` for a batch of episodes stepped together: raw actions ``[B, horizon, action_dim]``
        from ``obs_histories [B, obs_horizon, *obs_shape]`` (and ``prefix [B, d, action_dim]``). The strategy's
        state (warm starts) is per batch row, so keep the rows in the same order from call to call."""
        obs_histories = self._as_array(obs_histories, history=True)
        self.check_obs_history(obs_histories, batched=True)
        obs_histories = self._checked_observations(obs_histories, "observation histories")
        return self._predict(obs_histories, executed_steps, None if prefix is None else np.asarray(prefix))

    def _predict(self, obs_history: np.ndarray, executed_steps: int, prefix: np.ndarray | None = None) -> np.ndarray:
        """Raw actions ``[B, horizon, action_dim]`` in the action space from checked histories ``[B, ...]``."""
        if prefix is not None:
            prefix = self._checked_prefix(prefix, tree_leading(obs_history))
        chunk, reference = self._sample_chunk(obs_history, executed_steps, prefix)
        actions = self.codec.from_model(chunk, reference)
        actions = np.asarray(actions.cpu() if hasattr(actions, "cpu") else actions, dtype=np.float32)
        if not np.isfinite(actions).all():
            raise ValueError("the policy produced NaN or infinite actions: its input is far outside its training data")
        if prefix is not None and self.strategy.inpaints:
            actions[:, : prefix.shape[1]] = prefix  # exact: the normalization round trip may move them by 1e-7
        low, high = self._action_bounds
        return np.clip(actions, low, high)

    def _checked_prefix(self, prefix: np.ndarray, batch: int) -> np.ndarray | None:
        """A raw frozen prefix ``[B, d, action_dim]`` checked (None when empty)."""
        if prefix.ndim != 3 or prefix.shape[0] != batch or prefix.shape[2] != self.config.action_dim:
            raise ValueError(
                f"the frozen prefix must have shape [{batch}, d, {self.config.action_dim}], got {tuple(prefix.shape)}"
            )
        if prefix.shape[1] >= self.config.horizon:
            raise ValueError(
                f"a frozen prefix of {prefix.shape[1]} actions leaves nothing of the {self.config.horizon}-action chunk"
            )
        if not np.isfinite(prefix).all():
            raise ValueError("the frozen prefix contains NaN or infinite values")
        return prefix.astype(np.float32) if prefix.shape[1] else None

    def _normalized_prefix(self, prefix: np.ndarray | None, reference, like):
        """The raw prefix ``[B, d, A]`` in the model's space at this prediction's ``reference`` (None stays None).

        Coded as the start of a whole chunk (the last prefix action repeated): a per-position normalizer needs
        every position."""
        if prefix is None:
            return None
        d, horizon = prefix.shape[1], self.config.horizon
        padded = np.concatenate([prefix, np.repeat(prefix[:, -1:], horizon - d, axis=1)], axis=1)
        return self.codec.to_model(as_array_like(padded, like), reference)[:, :d]

    def _as_array(self, obs, *, history: bool):
        """``obs`` as the policy's arrays: a dict observation (``config.obs_keys``) flattened in the recorded
        key order, or a camera's ``{"pixels", "state"}``."""
        if isinstance(obs, Mapping) and not isinstance(obs, dict):
            obs = dict(obs)
        return as_policy_observation(obs, self.config, history=history)

    def select_action(self, obs) -> np.ndarray:
        """The action for this tick; predicts a new chunk when the queue of planned actions runs out."""
        obs = self._as_array(obs, history=False)
        for key, shape in self._part_shapes().items():
            part = obs[key] if key else obs
            if tuple(part.shape) != shape:
                name = f"{key} " if key else ""
                raise ValueError(f"{name}observation must have shape {shape}, got {tuple(part.shape)}")
        # Checked on every tick, also those that only pop a planned action: a bad observation is refused
        # when it arrives, not one prediction later on a clean one.
        obs = self._checked_observations(obs, "observation")
        if not self._obs_queue:
            self._obs_queue.extend([obs] * self.config.obs_horizon)  # pad the start, as in training
        else:
            self._obs_queue.append(obs)
        if not self._action_queue:
            history = tree_stack(self._obs_queue)
            chunk = self._predict(tree_map(lambda part: part[None], history), self._executed_since_prediction)[0]
            self._action_queue.extend(chunk[: self.n_action_steps])
            self._executed_since_prediction = 0
        else:
            self.calls_last_prediction = 0
        self._executed_since_prediction += 1
        return self._action_queue.popleft()
