"""The per-frame feature cache: each distinct frame encoded once, features by content, only the last call kept."""

import numpy as np
import pytest
import torch

from worldsim.policies.frame_features import FrameFeatureCache


def features_of(frames):
    """A stand-in CNN: per frame, its mean and its first pixel (any array kind, rows independent)."""
    flat = frames.reshape(frames.shape[0], -1)
    if isinstance(flat, torch.Tensor):
        flat = flat.float()
        return torch.stack([flat.mean(1), flat[:, 0]], dim=1)
    flat = flat.astype(np.float32)
    return np.stack([flat.mean(1), flat[:, 0]], axis=1)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_new_frames_only_are_encoded_and_features_follow_the_frames(kind):
    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(3))
    given = []

    def encode(frames):
        given.append(len(frames))
        return features_of(frames)

    def history(*frames):
        stacked = np.stack(frames)[None]
        return torch.from_numpy(stacked) if kind == "torch" else stacked

    cache = FrameFeatureCache()
    for frames, encoded in [((a, a), 1), ((a, b), 1), ((c, a), 1), ((b, c), 1), ((b, c), 0), ((c, c), 0)]:
        out = cache.features(history(*frames), encode)
        assert given.pop() == encoded if encoded else not given
        expected = features_of(np.stack(frames))[None]
        assert type(out) is type(history(*frames)) and tuple(out.shape) == (1, 2, 2)
        np.testing.assert_allclose(np.asarray(out), expected)
    # (b, c) at the fourth call: b was not in the third call's history, so it was encoded again.
    assert cache.encoded_frames == 4


def test_a_batch_encodes_each_distinct_frame_once_and_clear_forgets():
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(2))
    given = []
    cache = FrameFeatureCache()
    batch = np.stack([np.stack([a, b]), np.stack([b, a])])
    out = cache.features(batch, lambda f: given.append(len(f)) or features_of(f))
    assert given == [2] and out.shape == (2, 2, 2)
    np.testing.assert_allclose(out[0, 0], out[1, 1])
    cache.clear()
    cache.features(np.stack([a, a])[None], lambda f: given.append(len(f)) or features_of(f))
    assert given == [2, 1]
