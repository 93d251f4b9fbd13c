from types import SimpleNamespace

import numpy as np
import pytest
import torch

from worldsim.core.schedules import CosineSchedule
from worldsim.policies.action_codec import shift_chunk
from worldsim.policies.rti_k import choose_rti_k


class FakePolicy:
    """Only what choose_rti_k touches; its 'full denoising' returns chunks we control."""

    def __init__(self, solve):
        self.config = SimpleNamespace(num_train_steps=100, obs_horizon=2)
        self.schedule = CosineSchedule(100)
        self.strategy, self.generator = "original", None
        self.codec = SimpleNamespace(
            prepare_guess=lambda guess: guess,
            reference=lambda obs: None,
            carry_over=lambda chunk, executed, *references: shift_chunk(chunk, executed),
        )
        self._solve = solve

    def predict_normalized(self, obs, executed_steps):
        assert self.strategy.name == "ddpm"
        return self._solve(obs)


def episodes(n=3, length=20):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(length, 4)).astype(np.float32) for _ in range(n)]


def test_a_consistent_solution_picks_the_smallest_k():
    policy = FakePolicy(lambda obs: torch.full((obs.shape[0], 16, 2), 0.3))  # the same constant chunk always
    choice = choose_rti_k(policy, episodes())
    assert choice.k == 1 and policy.strategy == "original"  # the policy's own strategy is restored


def test_unrelated_solutions_push_k_up_and_a_noisy_guess_lands_in_between():
    g = torch.Generator().manual_seed(0)
    random = FakePolicy(lambda obs: torch.randn(obs.shape[0], 16, 2, generator=g))
    assert choose_rti_k(random, episodes()).k > 30  # every level is a candidate, not only the first 30

    def far_apart(obs):  # consecutive solutions disagree by about half their scale: a level past 30 explains it
        n = obs.shape[0] // 2
        base = torch.randn(n, 16, 2, generator=g)
        return torch.cat([base, shift_chunk(base, 1) + 0.7 * torch.randn(n, 16, 2, generator=g)])

    assert 30 < choose_rti_k(FakePolicy(far_apart), episodes()).k < 100

    def slowly_drifting(obs):
        # The solution for a later step is the earlier one shifted plus a little noise: what RTI relies on.
        n = obs.shape[0] // 2
        base = torch.randn(n, 16, 2, generator=g) * 0.5
        return torch.cat([base, shift_chunk(base, 1) + 0.05 * torch.randn(n, 16, 2, generator=g)])

    choice = choose_rti_k(FakePolicy(slowly_drifting), episodes(), candidates=list(range(1, 101)))
    assert 2 <= choice.k <= 40, choice.nll
    assert choice.pairs == 3 * 19 and set(choice.to_dict()["nll"]) == {str(k) for k in range(1, 101)}


def test_a_few_decisions_that_change_the_chunk_entirely_raise_k_to_the_level_they_need():
    """Most consecutive solutions continue the last chunk; one in ten is a new decision (the other way round
    the block). The mean score's k suits the many; k follows the tail so that the few can still change."""
    g = torch.Generator().manual_seed(1)

    def mostly_continuing(obs):
        n = obs.shape[0] // 2
        base = torch.randn(n, 16, 2, generator=g)
        later = shift_chunk(base, 1) + 0.05 * torch.randn(n, 16, 2, generator=g)
        switched = torch.arange(n) % 10 == 0
        later[switched] = torch.randn(int(switched.sum()), 16, 2, generator=g)
        return torch.cat([base, later])

    choice = choose_rti_k(FakePolicy(mostly_continuing), episodes(n=10, length=40))
    assert choice.k == choice.tail_k >= 70 and choice.mean_k < choice.tail_k - 20, choice.to_dict()["mean_k"]
    # without the switching decisions the tail asks for no more than the mean
    steady = FakePolicy(lambda obs: torch.full((obs.shape[0], 16, 2), 0.3))
    assert choose_rti_k(steady, episodes()).tail_k == 1


def test_choose_rti_k_validates():
    policy = FakePolicy(lambda obs: torch.zeros(obs.shape[0], 16, 2))
    with pytest.raises(ValueError, match="candidates"):
        choose_rti_k(policy, episodes(), candidates=[0, 3])
    with pytest.raises(ValueError, match="longer than"):
        choose_rti_k(policy, [np.zeros((1, 4), np.float32)])


def test_evaluate_policy_counts_and_measures():
    import worldsim  # noqa: F401
    from worldsim.policies.evaluation import evaluate_policy

    class Hold:
        """A policy that holds the pusher where the episode started: never succeeds, perfectly smooth."""

        calls_last_prediction = 0

        def reset(self):
            self.first = None

        def select_action(self, obs):
            if self.first is None:
                self.first = np.asarray(obs[:2], np.float32)
            return self.first

    result = evaluate_policy(Hold(), "worldsim/PushT-v0", episodes=2, progress=False)  # the pusht task's rules
    assert result["episodes"] == 2 and result["success_rate"] == 0.0
    assert result["smoothness_mse"] == 0.0 and result["calls_per_step"] == 0.0
    assert 0.0 <= result["mean_max_score"] < 0.95 and result["mean_steps"] == 300


def test_the_recorded_rti_calls_keep_an_episode_at_one_network_call_per_action():
    """The cold start's 10 calls are paid back by warm chunks of one call fewer than they execute; the
    earlier rule (as many calls as actions) could never get back under one call per action."""
    from tests.policies.test_diffusion_policy import K, make_policy, run_episode
    from worldsim.policies.train import COLD_START_STEPS, rti_calls

    policy = make_policy(discrete_dims=())
    executed, k, steps = policy.config.n_action_steps, K // 2, 40
    assert (rti_calls(k, executed), rti_calls(2, executed), rti_calls(k, 1)) == (executed - 1, 2, 1)
    # 50-step episodes in chunks of 8: 7 chunks, the last cut short; 10 + 6 x 7 = 52 calls would be too many
    assert rti_calls(30, 8, episode_length=50) == 6 and rti_calls(30, 8, episode_length=300) == 7
    options = {"k": k, "cold_start_steps": COLD_START_STEPS, "n_action_steps": executed}
    policy.set_strategy("rti", calls=rti_calls(k, executed), **options)
    assert sum(run_episode(policy, steps=steps)[1]) <= steps
    policy.set_strategy("rti", calls=min(k, executed), **options)
    assert sum(run_episode(policy, steps=steps)[1]) > steps
