"""The state tokenizer: one token per frame, torch-free, shared by the torch model and the onnxruntime runner.

A token is the frame's standardized state and, in *delta* mode, its standardized change since the
previous frame. A state model must predict the next state far more precisely than the state's range: a
joint that moves 1 mm per step in a 2 m workspace changes by 0.05% of it, below what a diffusion model
resolves. The change itself, standardized by how much each dimension usually changes, is on the scale
the model works at; the generated observation is the previous one plus the decoded change, and the
absolute part keeps the state in every token the model attends to. An angle reported modulo 2 pi (a
block's Euler angle) changes the short way round: its raw jump of 2 pi at the seam would set its change
scale (FetchPush: 0.16 rad per step where the block rests) and so the size of every error there.

Integrating changes suits what drifts (a block at rest stays put), not what is *set* by the action: Push-T's
pusher goes to the commanded target within a step, and the integrated pusher piles up each step's small
bias of the change (0.1-0.25 per step under a policy in closed loop, while the token's absolute part lands
0.015 from the target), so a policy chasing it runs away to the corner. ``absolute_dims`` are decoded from
the token's absolute part instead; which dimensions is measured on held-out rollouts, not set by hand
(``worldsim.world_model.decoding``).

With a :class:`~worldsim.world_model.one_step_predictor.OneStepPredictor`, the token's second part is not
the change but what the predictor leaves of it: ``(change - predicted) / residual scale``, the predictor
seeing the previous frame, the change into it and the action. Encoding and decoding a frame then need the
frame before the previous one (``before``) and the action's conditioning vector (``actions``).

A tokenizer fitted on data also keeps what bounds the recorded states: their span, widened by a tenth of it
on each side (``state_range``), and the pairs of dimensions that are an angle's cosine and sine
(``circle_pairs``). Every decoded frame puts such a pair back on the unit circle and is then clipped into
the span. An integrated state has no other bound: a stream fed one action for thousands of frames carried a
small bias off the data (Push-T's block took its cosine and sine off the circle), where the predictor's and
the network's inputs are unlike anything they were trained on, and the error fed itself until the values
overflowed (after 5,000-8,400 frames in three of six such streams). Inside the data, neither does anything.

Arrays in, arrays of the same kind out (numpy or torch), so both runtimes call the same code.
"""

from __future__ import annotations

import numpy as np

from worldsim.core.angles import angle_dims, onto_unit_circle, unit_circle_pairs, wrap_angles
from worldsim.core.array_ops import as_array_like, namespace
from worldsim.core.normalizer import Normalizer
from worldsim.world_model.one_step_predictor import OneStepPredictor

_STILL_SCALE = 1e-6
"""The change scale of a state dimension that never changed in the data."""

PREDICTOR_INPUT_LIMIT = 100.0
"""The one-step predictor's change inputs are clipped to this many change scales."""

STATE_RANGE_MARGIN = 0.1
"""A decoded state is clipped to the recorded states' span widened by this fraction of it on each side."""


class StateTokenizer:
    """``encode(obs, previous) -> [N, 1, D or 2D]`` and ``decode(tokens, previous) -> [N, D]``.

    ``normalizer`` scales the state; ``delta_normalizer`` (delta mode), when given, scales the change since
    the previous frame. ``previous`` is the observation before each one; None in ``encode`` means ``obs`` is
    a sequence whose frames precede one another (the first frame gets no change). ``angle_dims`` (delta mode):
    dimensions that are angles modulo 2 pi, whose change is taken and added the short way round.
    ``absolute_dims`` (delta mode): dimensions a generated frame takes from its absolute part, not from
    ``previous`` plus its change. ``predictor`` and ``residual_normalizer`` (delta mode, together): the
    deterministic one-step predictor and the scale of what it leaves to the diffusion model. ``state_range``:
    ``(low, high)`` arrays ``[D]`` every decoded state is clipped into (None: unbounded, as in checkpoints
    from before it existed). ``circle_pairs``: ``(cos, sin)`` dimension pairs a decoded state keeps on the
    unit circle.
    """

    def __init__(
        self,
        normalizer: Normalizer,
        delta_normalizer: Normalizer | None = None,
        angle_dims: tuple[int, ...] = (),
        absolute_dims: tuple[int, ...] = (),
        predictor: OneStepPredictor | None = None,
        residual_normalizer: Normalizer | None = None,
        state_range: tuple[np.ndarray, np.ndarray] | None = None,
        circle_pairs: tuple[tuple[int, int], ...] = (),
    ):
        if len(normalizer.shape) != 1:
            raise ValueError(f"the state tokenizer needs a flat state normalizer, got shape {normalizer.shape}")
        if delta_normalizer is not None and delta_normalizer.shape != normalizer.shape:
            raise ValueError(f"delta normalizer shape {delta_normalizer.shape} differs from {normalizer.shape}")
        if angle_dims and delta_normalizer is None:
            raise ValueError("angle_dims need a delta tokenizer (only a change is taken the short way round)")
        if any(not 0 <= d < normalizer.shape[0] for d in angle_dims):
            raise ValueError(f"angle_dims {tuple(angle_dims)} outside a {normalizer.shape[0]}-dimensional state")
        if absolute_dims and delta_normalizer is None:
            raise ValueError("absolute_dims need a delta tokenizer (a plain one decodes every dimension absolutely)")
        if any(not 0 <= d < normalizer.shape[0] for d in absolute_dims):
            raise ValueError(f"absolute_dims {tuple(absolute_dims)} outside a {normalizer.shape[0]}-dimensional state")
        if (predictor is None) != (residual_normalizer is None):
            raise ValueError("a one-step predictor comes with the normalizer of its residual, and only with it")
        if predictor is not None:
            if delta_normalizer is None:
                raise ValueError("a one-step predictor needs a delta tokenizer (it predicts the change)")
            if predictor.out_dim != normalizer.shape[0] or residual_normalizer.shape != normalizer.shape:
                raise ValueError(f"the one-step predictor gives {predictor.out_dim} values and its residual has "
                                 f"shape {residual_normalizer.shape}; the state has {normalizer.shape[0]}")  # fmt: skip
        if state_range is not None:
            low, high = (np.asarray(bound, np.float32) for bound in state_range)
            if low.shape != normalizer.shape or high.shape != normalizer.shape or not np.all(low <= high):
                raise ValueError(f"state_range must be (low, high) of shape {normalizer.shape} with low <= high")
            state_range = (low, high)
        circle_pairs = tuple((int(i), int(j)) for i, j in circle_pairs)
        paired = [d for pair in circle_pairs for d in pair]
        if len(set(paired)) != len(paired) or any(not 0 <= d < normalizer.shape[0] for d in paired):
            raise ValueError(f"circle_pairs {circle_pairs} must be disjoint pairs of the state's {normalizer.shape[0]} "
                             "dimensions")  # fmt: skip
        self.state_range = state_range
        self.circle_pairs = circle_pairs
        self.predictor = predictor
        self.residual_normalizer = residual_normalizer
        self.normalizer = normalizer
        self.delta_normalizer = delta_normalizer
        self.angle_dims = tuple(int(d) for d in angle_dims)
        self.absolute_dims = tuple(sorted({int(d) for d in absolute_dims}))
        self._absolute_mask = np.zeros(normalizer.shape[0])  # built once: decode runs every generated frame
        self._absolute_mask[list(self.absolute_dims)] = 1.0
        self.obs_shape: tuple[int, ...] = normalizer.shape
        self.tokens_per_frame = 1
        self.token_dim = normalizer.shape[0] * (2 if delta_normalizer is not None else 1)

    @property
    def delta(self) -> bool:
        return self.delta_normalizer is not None

    @classmethod
    def fit(cls, episodes_observations: list[np.ndarray], *, mode: str = "meanstd", delta: bool = True):
        """Statistics of the states (and of their per-step changes) of recorded episodes ``[T, D]`` each."""
        states = np.concatenate(episodes_observations)
        normalizer = Normalizer.fit(states, mode)
        low, high = states.min(0), states.max(0)
        margin = STATE_RANGE_MARGIN * (high - low)
        bounds = {
            "state_range": (low - margin, high + margin),
            "circle_pairs": unit_circle_pairs(episodes_observations),
        }
        if not delta:
            return cls(normalizer, **bounds)
        angles = angle_dims(episodes_observations)
        changes = np.concatenate([wrap_angles(np.diff(o, axis=0), angles) for o in episodes_observations if len(o) > 1])
        # A dimension that (almost) never changes (a fixed goal; a blocked gripper finger that moves 2e-6 once
        # per episode) gets a tiny change scale: the normalizer's pass-through scale of 1 would turn the
        # model's residual error there into raw units (FetchPush's finger: 0.06 per step, 1.2x copy-last).
        return cls(normalizer, Normalizer.fit(changes, mode, constant_scale=_STILL_SCALE), angles, **bounds)

    def encode(self, obs, previous=None, *, before=None, actions=None, predicted=None):
        """States ``[N, D]`` to tokens ``[N, 1, token_dim]``.

        With a predictor: ``actions`` are the conditioning vectors of the actions that led to each frame
        (``[N, C]``; for a sequence, the ``N - 1`` between its frames) and ``before`` the frame before each
        ``previous`` (a sequence takes it from itself: its first two frames repeat their first state).
        ``predicted``: the predictor's change for these rows, when the caller has it already."""
        state = self.normalizer.normalize(obs)
        if not self.delta:
            return state[:, None, :]
        xp = namespace(obs)
        sequence = previous is None
        if sequence:
            previous = xp.concatenate([obs[:1], obs[:-1]], 0)
            before = xp.concatenate([obs[:1], obs[:1], obs[:-2]], 0)[: len(obs)]
        change = self.standardized_change(obs, previous)
        if self.predictor is not None:
            start = 1 if sequence else 0  # a sequence's first frame has no action: nothing predicted, no residual
            if predicted is None:
                self._check_predictor_inputs(before, actions, len(obs) - start)
                predicted = self.predicted_change(previous[start:], before[start:], actions)
            residual = change[start:] - predicted
            residual = xp.concatenate([change[:start] * 0, residual], 0)
            change = self.residual_normalizer.normalize(residual)
        return xp.concatenate([state, change], -1)[:, None, :]

    def standardized_change(self, obs, previous):
        """The change from ``previous`` to ``obs`` (angles the short way round), standardized."""
        return self.delta_normalizer.normalize(wrap_angles(obs - previous, self.angle_dims))

    def predictor_inputs(self, previous, before, actions):
        """What the one-step predictor sees: the standardized ``previous [N, D]``, its standardized change since
        ``before`` (clipped: a dimension that never moved in the data has a tiny change scale) and the
        action's conditioning ``actions [N, C]``."""
        xp = namespace(previous)
        change = xp.clip(self.standardized_change(previous, before), -PREDICTOR_INPUT_LIMIT, PREDICTOR_INPUT_LIMIT)
        return xp.concatenate([self.normalizer.normalize(previous), change, as_array_like(actions, previous)], -1)

    def predicted_change(self, previous, before, actions):
        """The predictor's standardized change from ``previous [N, D]`` to the next frame (see
        :meth:`predictor_inputs`)."""
        return self.predictor(self.predictor_inputs(previous, before, actions))

    def decode(self, tokens, previous=None, *, before=None, actions=None, predicted=None):
        """Tokens ``[N, 1, token_dim]`` to states ``[N, D]``: delta mode adds the decoded change to ``previous``
        (but for ``absolute_dims``, read from the absolute part); with a predictor, the change is its
        prediction from ``before``, ``previous`` and ``actions [N, C]`` (or ``predicted``, given) plus the
        token's residual. The result keeps ``circle_pairs`` on the unit circle and is clipped into
        ``state_range``."""
        d = self.obs_shape[0]
        state = self.normalizer.unnormalize(tokens[:, 0, :d])
        if not self.delta:
            return self._bounded(state)
        if previous is None:
            raise ValueError("a delta state tokenizer decodes a frame from the observation before it: pass previous")
        change = tokens[:, 0, d:]
        if self.predictor is not None:
            if predicted is None:
                self._check_predictor_inputs(before, actions, len(tokens))
                predicted = self.predicted_change(previous, before, actions)
            change = predicted + self.residual_normalizer.unnormalize(change)
        integrated = self.advance(previous, self.delta_normalizer.unnormalize(change))
        if self.absolute_dims:
            integrated = integrated + as_array_like(self._absolute_mask, integrated) * (state - integrated)
        return self._bounded(integrated)

    def _bounded(self, states):
        states = onto_unit_circle(states, self.circle_pairs)
        if self.state_range is None:
            return states
        low, high = (as_array_like(bound, states) for bound in self.state_range)
        return namespace(states).clip(states, low, high)

    def decode_sequence(self, tokens, previous, *, before=None, actions=None):
        """Consecutive frames ``[F, 1, token_dim]`` decoded one onto the next from ``previous [1, D]`` (with a
        predictor: ``before [1, D]`` and the frames' action conditioning ``actions [F, C]``); the last one
        ``[1, D]`` (a rolling window's newest frame, from the last committed observation)."""
        for k in range(tokens.shape[0]):
            following = self.decode(
                tokens[k : k + 1], previous, before=before, actions=None if actions is None else actions[k : k + 1]
            )
            before, previous = previous, following
        return previous

    def advance(self, previous, change):
        """``previous [N, D]`` moved by ``change``: its angles wrapped back into ``[-pi, pi)``."""
        return wrap_angles(previous + change, self.angle_dims)

    def settle(self, tokens, previous, *, before=None, actions=None):
        """A generated frame's delta tokens ``[N, 1, token_dim]`` decoded onto ``previous [N, D]`` and encoded
        again from the result: what a stream commits (the token's two parts made consistent with the state it
        returns). Returns ``(states, tokens)``; a one-step predictor runs once for both."""
        predicted = None
        if self.predictor is not None:
            self._check_predictor_inputs(before, actions, len(tokens))
            predicted = self.predicted_change(previous, before, actions)
        following = self.decode(tokens, previous, predicted=predicted)
        return following, self.encode(following, previous, predicted=predicted)

    def rebase(self, tokens, previous_tokens, *, before_tokens=None, actions=None):
        """:meth:`settle` from the previous frame's tokens (and, with a predictor, those of the frame before
        it and the actions' conditioning); returns the tokens."""
        d = self.obs_shape[0]
        previous = self.normalizer.unnormalize(previous_tokens[:, 0, :d])
        before = None if before_tokens is None else self.normalizer.unnormalize(before_tokens[:, 0, :d])
        return self.settle(tokens, previous, before=before, actions=actions)[1]

    def with_absolute_dims(self, absolute_dims: tuple[int, ...]) -> StateTokenizer:
        """The same statistics (and predictor), decoding ``absolute_dims`` from the absolute part."""
        return StateTokenizer(
            self.normalizer, self.delta_normalizer, self.angle_dims, absolute_dims, self.predictor,
            self.residual_normalizer, self.state_range, self.circle_pairs,
        )  # fmt: skip

    def with_predictor(self, predictor: OneStepPredictor, residuals: np.ndarray) -> StateTokenizer:
        """The same statistics, with a one-step predictor whose residuals on the training data (standardized
        change minus prediction, ``[N, D]``) set the scale of what it leaves to the diffusion model."""
        residual_normalizer = Normalizer.fit(residuals, "meanstd", constant_scale=_STILL_SCALE)
        return StateTokenizer(
            self.normalizer, self.delta_normalizer, self.angle_dims, self.absolute_dims, predictor, residual_normalizer,
            self.state_range, self.circle_pairs,
        )  # fmt: skip

    def _check_predictor_inputs(self, before, actions, rows: int) -> None:
        if before is None or actions is None:
            raise ValueError("a tokenizer with a one-step predictor needs the frame before (before) and the "
                             "actions' conditioning (actions)")  # fmt: skip
        if len(actions) != rows:
            raise ValueError(f"expected {rows} action conditioning rows, got {len(actions)}")

    def tensors(self) -> dict[str, np.ndarray]:
        tensors = self.normalizer.state_dict("tokenizer.state")
        if self.delta:
            tensors |= self.delta_normalizer.state_dict("tokenizer.delta")
        if self.predictor is not None:
            tensors |= self.predictor.tensors("tokenizer.predictor")
            tensors |= self.residual_normalizer.state_dict("tokenizer.residual")
        if self.state_range is not None:
            tensors |= {"tokenizer.range.low": self.state_range[0], "tokenizer.range.high": self.state_range[1]}
        return tensors

    def config(self) -> dict:
        return {
            "kind": "state",
            "mode": self.normalizer.mode,
            "delta": self.delta,
            "angle_dims": list(self.angle_dims),
            "absolute_dims": list(self.absolute_dims),
            "predictor_layers": 0 if self.predictor is None else len(self.predictor.layers),
            "circle_pairs": [list(pair) for pair in self.circle_pairs],
        }

    @classmethod
    def from_tensors(cls, tensors: dict, config: dict) -> StateTokenizer:
        normalizer = Normalizer.from_state_dict(tensors, "tokenizer.state", config["mode"])
        delta = Normalizer.from_state_dict(tensors, "tokenizer.delta", config["mode"]) if config.get("delta") else None
        layers = config.get("predictor_layers", 0)  # older checkpoints name none of these: none
        predictor = OneStepPredictor.from_tensors(tensors, "tokenizer.predictor", layers) if layers else None
        residual = Normalizer.from_state_dict(tensors, "tokenizer.residual", "meanstd") if layers else None
        bounded = "tokenizer.range.low" in tensors  # older checkpoints keep no range: unbounded, as trained
        state_range = (tensors["tokenizer.range.low"], tensors["tokenizer.range.high"]) if bounded else None
        return cls(
            normalizer, delta, tuple(config.get("angle_dims", ())), tuple(config.get("absolute_dims", ())),
            predictor, residual, state_range, tuple(config.get("circle_pairs", ())),
        )  # fmt: skip
