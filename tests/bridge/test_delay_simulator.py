"""DelaySimulator: which action runs at which tick under inference delay, and agreement with the live loop."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bridge.conftest import LOOPBACK, running
from tests.bridge.policies import PrefixTickPolicy, TickEnv
from worldsim.bridge import (
    ControlLoop,
    ControlLoopConfig,
    DelayConfig,
    DelaySimulator,
    PolicyServer,
    ServerConfig,
    chunk_boundary_jumps,
)


def test_bookkeeping_of_a_delayed_chunk_stream():
    """Requests every 3 ticks, chunks arriving 2 ticks after their observation and taking over then."""
    policy = PrefixTickPolicy()
    simulator = DelaySimulator(policy, DelayConfig(delay_ticks=2, replan_every=3))
    result = simulator.run_episode(TickEnv(12), seed=0)
    # Tick 0-4 run the first chunk (observation 0); the chunk asked for at tick 3 arrives at 5 and runs from
    # its offset 2; the next request waits for it (one in flight), so it goes at 6, arrives at 8, and so on.
    expected_source = [0, 0, 0, 0, 0, 3, 3, 3, 6, 6, 6, 9]
    assert result.trace["obs_tick"].tolist() == expected_source
    expected_action = [100 * s + (t - s) for t, s in enumerate(expected_source)]
    assert result.trace["action"][:, 0].tolist() == expected_action
    # Each request carried the actions that ran while it was computed, and how far the last one lies back.
    executed = [steps for steps, _ in policy.requests]
    prefixes = [None if p is None else p[:, 0].tolist() for _, p in policy.requests]
    assert executed == [0, 3, 3, 3]
    # (the policy keeps its prefix: the chunk asked for at 3 starts 3, 4, then plans 302, 303, ...)
    assert prefixes == [None, [3, 4], [303, 304], [603, 604]]
    assert result.stats.requests == 4 and result.stats.chunks == 4 and result.stats.deadline_misses == 0
    assert result.stats.arrival_ticks == [2, 2, 2]


def test_chunk_boundary_jumps_split_the_action_changes_by_source_chunk():
    result = DelaySimulator(PrefixTickPolicy(), DelayConfig(delay_ticks=2, replan_every=3)).run_episode(TickEnv(12))
    # Actions 0 1 2 3 4 | 302 303 304 | 602 603 604 | 902: steps of 1 inside a chunk, of 298 across.
    jumps = chunk_boundary_jumps([result])
    assert jumps == {"boundary_jump": 298.0, "within_jump": 1.0, "jump_ratio": 298.0}
    unrecorded = DelaySimulator(PrefixTickPolicy(), DelayConfig(record=False)).run_episode(TickEnv(3))
    with pytest.raises(ValueError, match="record=True"):
        chunk_boundary_jumps([unrecorded])


def test_a_late_chunk_takes_over_on_arrival_and_counts_as_overdue():
    policy = PrefixTickPolicy()
    simulator = DelaySimulator(policy, DelayConfig(delay_ticks=1, compute_ticks=3, replan_every=4))
    result = simulator.run_episode(TickEnv(10), seed=0)
    # Asked at tick 4, due at 5, there at 7: ticks 5 and 6 ran the old chunk late, tick 7 takes offset 3.
    # Asked again at 8, due at 9, it would arrive at 11, after the episode: tick 9 is overdue too.
    assert result.trace["obs_tick"].tolist() == [0, 0, 0, 0, 0, 0, 0, 4, 4, 4]
    assert result.trace["action"][7, 0] == 403
    assert result.stats.overdue_ticks == 3 and result.stats.late_chunks == 1 and result.stats.chunks == 2


def test_synchronous_inference_acts_on_the_fresh_chunk():
    policy = PrefixTickPolicy()
    result = DelaySimulator(policy, DelayConfig(delay_ticks=0, replan_every=3)).run_episode(TickEnv(7))
    assert result.trace["action"][:, 0].tolist() == [0, 1, 2, 300, 301, 302, 600]
    assert all(prefix is None for _, prefix in policy.requests)


def test_ensembling_averages_the_chunks_that_plan_a_tick():
    policy = PrefixTickPolicy()
    config = DelayConfig(delay_ticks=1, replan_every=2, merge="ensemble", ensemble_decay=0.0, send_prefix=False)
    result = DelaySimulator(policy, config).run_episode(TickEnv(5))
    # Tick 3: the chunks of observations 0 (action 3) and 2 (action 201) both plan it and have taken over.
    assert result.trace["action"][:, 0].tolist() == [0, 1, 2, (3 + 201) / 2, (4 + 202) / 2]


def test_drawn_delays_and_bad_configs():
    policy = PrefixTickPolicy()
    config = DelayConfig(delay_ticks=2, compute_ticks=[1, 2, 3], replan_every=3)
    result = DelaySimulator(policy, config, seed=1).run_episode(TickEnv(60))
    assert set(result.stats.arrival_ticks) == {1, 2, 3}
    with pytest.raises(ValueError, match="compute_ticks must be an int >= 0"):
        DelayConfig(compute_ticks=[])
    with pytest.raises(ValueError, match="needs delay_ticks=0"):
        DelayConfig(delay_ticks=1, compute_ticks=0)
    with pytest.raises(ValueError, match="merge must be one of"):
        DelayConfig(merge="average")
    with pytest.raises(ValueError, match="one seed"):
        DelaySimulator(policy).run_episodes([TickEnv(3)], [0, 1])


def test_the_live_loop_and_the_simulator_agree_on_a_scripted_run():
    """The same policy served over ZeroMQ at 25 Hz (replies well within a tick) and simulated with chunks
    arriving one tick after their request: the same actions at the same ticks, and the same requests."""
    served = PrefixTickPolicy()
    timing = {"delay_ticks": 2, "replan_every": 3}
    with running(PolicyServer(lambda: served, ServerConfig(address=LOOPBACK))) as server:
        from worldsim.bridge import PolicyClient

        with PolicyClient(server.address) as client:
            loop = ControlLoop(TickEnv(30), client, ControlLoopConfig(rate_hz=25, record=True, **timing))
            live = loop.run_episode(seed=0)
    simulated_policy = PrefixTickPolicy()
    simulated = DelaySimulator(simulated_policy, DelayConfig(compute_ticks=1, **timing)).run_episode(TickEnv(30))
    assert live.stats.deadline_misses == 0, "the loop missed deadlines: the machine was too loaded to compare"
    np.testing.assert_array_equal(live.trace["obs_tick"], simulated.trace["obs_tick"])
    np.testing.assert_array_equal(live.trace["action"], simulated.trace["action"])
    assert [steps for steps, _ in served.requests] == [steps for steps, _ in simulated_policy.requests]
    for (_, live_prefix), (_, sim_prefix) in zip(served.requests, simulated_policy.requests, strict=True):
        assert (live_prefix is None and sim_prefix is None) or np.array_equal(live_prefix, sim_prefix)
