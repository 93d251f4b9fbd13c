"""Which state dimensions a delta world model decodes from its tokens' absolute part, measured, not set.

A delta token carries both the frame's state and its change since the frame before (``StateTokenizer``).
Integrating the change keeps a resting object still and a velocity smooth; reading the absolute part keeps
a dimension that the action *sets* (a position-controlled pusher, a gripper command) from piling up the
change's small bias step after step. The model was trained on both parts, so the choice is free after
training: each dimension takes the decoding whose open-loop rollouts on held-out episodes come closer to
the recording, in raw units, over the horizons that the benchmarks judge.
"""

from __future__ import annotations

import numpy as np
import torch

from worldsim.core.angles import unit_circle_pairs
from worldsim.core.episodes import Episode
from worldsim.world_model.held_out import open_loop_errors
from worldsim.world_model.model import WorldModel
from worldsim.world_model.state_tokenizer import StateTokenizer
from worldsim.world_model.streaming import SessionConfig

HORIZONS = (1, 10, 50)
ABSOLUTE_GAIN = 0.5
"""A dimension reads its absolute part only where that at least halves its held-out error. A dimension the
action sets shows a gap of orders of magnitude (Push-T's pusher: 0.0003 against 0.044); smaller gaps over
a few held-out episodes are noise."""

# Two dimensions that are an angle's cos and sin (``unit_circle_pairs``) are decoded the same way, judged on their
# summed error (decoded one each way, a Push-T block's cos and sin left the circle in a replay: 0.72 instead of 1).


def choose_absolute_dims(
    model: WorldModel,
    episodes: list[Episode],
    *,
    horizons: tuple[int, ...] = HORIZONS,
    session: SessionConfig | None = None,
    seed: int = 0,
) -> dict:
    """Set ``model``'s tokenizer to decode from the absolute part every dimension whose held-out open-loop
    error (mean over ``horizons`` of the per-dimension raw squared error) is at most ``ABSOLUTE_GAIN`` times
    the integrated one; returns both errors per dimension and the dimensions chosen. The choice, made one
    dimension at a time, is kept only if rollouts that decode it together come no further from the recording
    (summed over dimensions) than integrating every dimension: dimensions are coupled through the model, and
    most strongly through a one-step predictor, which reads the whole state (FetchPush: seven dimensions
    chosen one by one put its expert rollouts at 0.49 / 1.2 / 2.9x copy-last, against 0.010 / 0.045 / 0.67
    all integrated). A plain (non-delta) tokenizer is left as it is."""
    tokenizer = model.tokenizer
    if not isinstance(tokenizer, StateTokenizer) or not tokenizer.delta:
        return {"absolute_dims": [], "measured": False}
    every = tuple(range(tokenizer.obs_shape[0]))
    errors = {}
    try:
        for name, dims in (("integrated", ()), ("absolute", every)):
            model.tokenizer = tokenizer.with_absolute_dims(dims)
            rollouts = open_loop_errors(model, episodes, horizons, session=session, seed=seed)
            errors[name] = np.mean(_per_horizon(rollouts, horizons), 0)
    finally:
        model.tokenizer = tokenizer  # a failed measurement leaves the model as it was
    pairs = unit_circle_pairs([e.observations for e in episodes])
    paired = {d for pair in pairs for d in pair}
    groups = [list(pair) for pair in pairs] + [[d] for d in every if d not in paired]
    chosen = tuple(sorted(
        d for group in groups if errors["absolute"][group].sum() <= ABSOLUTE_GAIN * errors["integrated"][group].sum()
        for d in group
    ))  # fmt: skip
    together = None
    if chosen:
        model.tokenizer = tokenizer.with_absolute_dims(chosen)
        try:
            together = np.mean(_per_horizon(open_loop_errors(model, episodes, horizons, session=session, seed=seed),
                                            horizons), 0)  # fmt: skip
        finally:
            model.tokenizer = tokenizer
        if together.sum() > errors["integrated"].sum():
            chosen = ()
    model.tokenizer = tokenizer.with_absolute_dims(chosen)
    return {
        "absolute_dims": list(chosen),
        "chosen_together_mse_per_dim": None if together is None else together.tolist(),
        "measured": True,
        "episodes": len(episodes),
        "horizons": list(horizons),
        "absolute_gain": ABSOLUTE_GAIN,
        "decided_together": [list(pair) for pair in pairs],
        "integrated_mse_per_dim": errors["integrated"].tolist(),
        "absolute_mse_per_dim": errors["absolute"].tolist(),
    }


@torch.no_grad()
def decide_decoding(model: WorldModel, held_out: list[Episode]) -> dict:
    """What a training run calls once its weights are final: :func:`choose_absolute_dims` on the eval-mode
    model, the choice printed."""
    decoding = choose_absolute_dims(model.eval(), held_out)
    if decoding["measured"]:
        print(f"dimensions decoded from the absolute part (held-out open-loop, raw): {decoding['absolute_dims']}")
    return decoding


def _per_horizon(rollouts: dict, horizons: tuple[int, ...]) -> list:
    return [rollouts[str(h)]["model_mse_per_dim"] for h in horizons if str(h) in rollouts]
