"""RTI-DP's offline rule for choosing the warm-start level k.

RTI-DP chooses k "empirically" with an offline rule: denoise held-out observations fully to get the
solution A0, then pick the k whose forward-diffusion marginal ``q(x_k | A0) = N(alpha_k A0, sigma_k^2 I)``
best explains the warm-start guess G (the previous step's solution, shifted). We score each candidate by
the mean negative log-likelihood of G under that Gaussian,

    NLL(k) = ||G - alpha_k A0||^2 / (2 sigma_k^2) + D log sigma_k        (D = horizon x action_dim)

which is smallest where the forward noise at k is about as large as the guess's error: a smaller k
trusts the guess more than it deserves, a larger one throws good information away.

The guess's errors are heavy-tailed: most decisions continue the previous chunk, a few change it
entirely (gym-pusht goes round the block the other way). The mean's k fits the many and holds the few
back, and those are the decisions a task fails on (gym-pusht's RTI at the mean's k = 49 succeeded in 32%
of 50 tuning episodes, at k = 75 in 54%, with DDIM-7 from noise 58%). So the level is also scored pair by
pair, and k is the larger of the mean's and the level that :data:`TAIL_QUANTILE` of the pairs need: a
warm start that lets all but one decision in twenty change as far as it must.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from worldsim.core.array_ops import tree_leading, tree_map, tree_stack
from worldsim.policies.diffusion_policy import DiffusionPolicy
from worldsim.policies.strategies import DDPMStrategy

TAIL_QUANTILE = 0.95
"""The share of consecutive decisions whose own best level k must not exceed."""


@dataclass
class RTIChoice:
    """The chosen warm-start level k, the mean score of every candidate, how many pairs scored them, and
    the two levels k is the larger of: the mean score's best and the tail's (:data:`TAIL_QUANTILE`)."""

    k: int
    nll: dict[int, float] = field(default_factory=dict)
    pairs: int = 0
    mean_k: int = 0
    tail_k: int = 0

    def to_dict(self) -> dict:
        return {"k": self.k, "nll": {str(k): v for k, v in self.nll.items()}, "pairs": self.pairs,
                "mean_k": self.mean_k, "tail_k": self.tail_k}  # fmt: skip


def _histories(observations, obs_horizon: int) -> list:
    """Observation histories for every step, the start padded with the first observation (as in training);
    a camera's ``{"pixels", "state"}`` observations give dict histories."""
    steps = np.arange(tree_leading(observations))
    index = np.clip(steps[:, None] + np.arange(-obs_horizon + 1, 1), 0, None)
    return [tree_map(lambda values, rows=rows: np.asarray(values)[rows], observations) for rows in index]


def choose_rti_k(
    policy: DiffusionPolicy,
    episodes_observations: list[np.ndarray],
    *,
    executed_steps: int = 1,
    candidates: list[int] | None = None,
    max_pairs: int = 256,
    seed: int = 0,
) -> RTIChoice:
    """Pick k for ``policy`` from held-out episodes (each an array of raw observations ``[T, *obs_shape]``).

    Consecutive decisions ``executed_steps`` apart are paired; at most ``max_pairs`` pairs are used.
    ``candidates``: the levels scored, by default every one of the schedule's.
    """
    if executed_steps < 1:
        raise ValueError(f"executed_steps must be >= 1, got {executed_steps}")
    K = policy.config.num_train_steps
    # Every level: a cap (30 of 100 before) pinned the rule at its boundary on standardized actions.
    candidates = candidates or list(range(1, K + 1))
    if any(not 1 <= k <= K for k in candidates):
        raise ValueError(f"candidates must lie in [1, {K}], got {candidates}")
    rng = np.random.default_rng(seed)
    earlier, later = [], []
    for observations in episodes_observations:
        histories = _histories(observations, policy.config.obs_horizon)
        for t in range(executed_steps, len(histories)):
            earlier.append(histories[t - executed_steps])
            later.append(histories[t])
    if not earlier:
        raise ValueError(f"no episode is longer than executed_steps={executed_steps}")
    chosen = rng.permutation(len(earlier))[:max_pairs]
    obs = tree_map(torch.as_tensor, tree_stack([earlier[i] for i in chosen] + [later[i] for i in chosen]))

    saved_strategy, saved_generator = policy.strategy, policy.generator
    policy.strategy, policy.generator = DDPMStrategy(), torch.Generator().manual_seed(seed)
    try:
        solutions = policy.predict_normalized(obs, executed_steps)
    finally:
        policy.strategy, policy.generator = saved_strategy, saved_generator
    n = len(chosen)
    references = policy.codec.reference(obs)
    earlier_reference, later_reference = (None, None) if references is None else (references[:n], references[n:])
    guess = policy.codec.carry_over(solutions[:n], executed_steps, earlier_reference, later_reference)
    guess = policy.codec.prepare_guess(guess).double()
    target = solutions[n:].double()
    dims = target[0].numel()
    per_pair = []  # [candidates, pairs]
    for k in candidates:
        level = torch.tensor(k / K, dtype=torch.float64)
        alpha, sigma = policy.schedule.alpha(level), policy.schedule.sigma(level)
        gap = (guess - alpha * target).pow(2).flatten(1).sum(1)
        per_pair.append(gap / (2 * sigma**2) + dims * torch.log(sigma))
    scores = torch.stack(per_pair)
    nll = {k: float(v) for k, v in zip(candidates, scores.mean(1), strict=True)}
    mean_k = min(nll, key=nll.get)
    own = np.asarray(candidates)[scores.argmin(0).numpy()]  # each pair's own best level
    tail_k = int(np.quantile(own, TAIL_QUANTILE, method="higher"))
    return RTIChoice(k=max(mean_k, tail_k), nll=nll, pairs=n, mean_k=mean_k, tail_k=tail_k)
