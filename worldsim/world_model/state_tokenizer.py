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

Arrays in, arrays of the same kind out (numpy or torch), so both runtimes call the same code.
"""

from __future__ import annotations

import numpy as np

from worldsim.core.angles import angle_dims, wrap_angles
from worldsim.core.array_ops import as_array_like, namespace
from worldsim.core.normalizer import Normalizer

_STILL_SCALE = 1e-6
"""The change scale of a state dimension that never changed in the data."""


class StateTokenizer:
    """``encode(obs, previous) -> [N, 1, D or 2D]`` and ``decode(tokens, previous) -> [N, D]``.

    ``normalizer`` scales the state; ``delta_normalizer`` (delta mode), when given, scales the change since
    the previous frame. ``previous`` is the observation before each one; None in ``encode`` means ``obs`` is
    a sequence whose frames precede one another (the first frame gets no change). ``angle_dims`` (delta mode):
    dimensions that are angles modulo 2 pi, whose change is taken and added the short way round.
    ``absolute_dims`` (delta mode): dimensions a generated frame takes from its absolute part, not from
    ``previous`` plus its change.
    """

    def __init__(
        self,
        normalizer: Normalizer,
        delta_normalizer: Normalizer | None = None,
        angle_dims: tuple[int, ...] = (),
        absolute_dims: tuple[int, ...] = (),
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
        if not delta:
            return cls(normalizer)
        angles = angle_dims(episodes_observations)
        changes = np.concatenate([wrap_angles(np.diff(o, axis=0), angles) for o in episodes_observations if len(o) > 1])
        # A dimension that (almost) never changes (a fixed goal; a blocked gripper finger that moves 2e-6 once
        # per episode) gets a tiny change scale: the normalizer's pass-through scale of 1 would turn the
        # model's residual error there into raw units (FetchPush's finger: 0.06 per step, 1.2x copy-last).
        return cls(normalizer, Normalizer.fit(changes, mode, constant_scale=_STILL_SCALE), angles)

    def encode(self, obs, previous=None):
        """States ``[N, D]`` to tokens ``[N, 1, token_dim]``."""
        state = self.normalizer.normalize(obs)
        if not self.delta:
            return state[:, None, :]
        xp = namespace(obs)
        if previous is None:
            previous = xp.concatenate([obs[:1], obs[:-1]], 0)
        change = self.delta_normalizer.normalize(wrap_angles(obs - previous, self.angle_dims))
        return xp.concatenate([state, change], -1)[:, None, :]

    def decode(self, tokens, previous=None):
        """Tokens ``[N, 1, token_dim]`` to states ``[N, D]``: delta mode adds the decoded change to ``previous``
        (but for ``absolute_dims``, read from the absolute part)."""
        d = self.obs_shape[0]
        state = self.normalizer.unnormalize(tokens[:, 0, :d])
        if not self.delta:
            return state
        if previous is None:
            raise ValueError("a delta state tokenizer decodes a frame from the observation before it: pass previous")
        integrated = self.advance(previous, self.delta_normalizer.unnormalize(tokens[:, 0, d:]))
        if not self.absolute_dims:
            return integrated
        return integrated + as_array_like(self._absolute_mask, integrated) * (state - integrated)

    def decode_sequence(self, tokens, previous):
        """Consecutive frames ``[F, 1, token_dim]`` decoded one onto the next from ``previous [1, D]``; the
        last one ``[1, D]`` (a rolling window's newest frame, from the last committed observation)."""
        for k in range(tokens.shape[0]):
            previous = self.decode(tokens[k : k + 1], previous)
        return previous

    def advance(self, previous, change):
        """``previous [N, D]`` moved by ``change``: its angles wrapped back into ``[-pi, pi)``."""
        return wrap_angles(previous + change, self.angle_dims)

    def rebase(self, tokens, previous_tokens):
        """Delta tokens ``[N, 1, token_dim]`` re-encoded from their decoding onto the previous frame's state:
        what a stream commits for a generated frame (its two parts made consistent with the returned state)."""
        previous = self.normalizer.unnormalize(previous_tokens[:, 0, : self.obs_shape[0]])
        return self.encode(self.decode(tokens, previous), previous)

    def with_absolute_dims(self, absolute_dims: tuple[int, ...]) -> StateTokenizer:
        """The same statistics, decoding ``absolute_dims`` from the absolute part."""
        return StateTokenizer(self.normalizer, self.delta_normalizer, self.angle_dims, absolute_dims)

    def tensors(self) -> dict[str, np.ndarray]:
        tensors = self.normalizer.state_dict("tokenizer.state")
        if self.delta:
            tensors |= self.delta_normalizer.state_dict("tokenizer.delta")
        return tensors

    def config(self) -> dict:
        return {
            "kind": "state",
            "mode": self.normalizer.mode,
            "delta": self.delta,
            "angle_dims": list(self.angle_dims),
            "absolute_dims": list(self.absolute_dims),
        }

    @classmethod
    def from_tensors(cls, tensors: dict, config: dict) -> StateTokenizer:
        normalizer = Normalizer.from_state_dict(tensors, "tokenizer.state", config["mode"])
        delta = Normalizer.from_state_dict(tensors, "tokenizer.delta", config["mode"]) if config.get("delta") else None
        # Older checkpoints name neither: none.
        return cls(normalizer, delta, tuple(config.get("angle_dims", ())), tuple(config.get("absolute_dims", ())))
