"""Input checks every streaming session must make, whichever runtime runs its network (torch or onnxruntime)."""

import numpy as np
import pytest


def assert_rejects_bad_streams(session, obs_dim: int) -> None:
    """``session``: a fresh session of a state model with ``obs_dim``-d observations and 2-d box actions."""
    with pytest.raises(ValueError, match="reset"):
        session.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=rf"context_obs must have shape \[K >= 1, {obs_dim}\]"):
        session.reset(np.zeros((3, obs_dim + 3), np.float32))
    with pytest.raises(ValueError, match="need 2 actions, got 1"):
        session.reset(np.zeros((3, obs_dim), np.float32), np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        session.reset(np.full((1, obs_dim), np.nan, np.float32))
    session.reset(np.zeros((1, obs_dim), np.float32))
    with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
        session.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        session.step(np.array([np.nan, 0.0], np.float32))
