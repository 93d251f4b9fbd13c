import numpy as np
import torch

from worldsim.core.array_ops import clip


def test_clip_agrees_with_numpy_and_torch_and_keeps_dtype():
    x = np.array([-2.0, -0.5, np.nan, 0.5, 2.0], np.float32)
    for low, high in ((-1.0, 1.0), (0.0, None), (None, -1e-12)):
        expected = np.clip(x, low, high)
        got = clip(x, low, high)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(clip(torch.from_numpy(x), low, high).numpy(), expected)
