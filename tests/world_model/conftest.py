"""Small environments and untrained world models shared by the world-model tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from worldsim.core.normalizer import Normalizer
from worldsim.world_model.autoencoder import AutoencoderConfig, ConvAutoencoder
from worldsim.world_model.model import WorldModel, WorldModelConfig
from worldsim.world_model.one_step_predictor import OneStepPredictor
from worldsim.world_model.tokenizers import ActionEncoder, PixelTokenizer, StateTokenizer


class PointMass(gym.Env):
    """A point in the unit square moved by velocity actions: ``next = clip(pos + 0.2 * action)``."""

    metadata = {"render_modes": []}

    def __init__(self, discrete: bool = False):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.discrete = discrete
        self.action_space = gym.spaces.Discrete(4) if discrete else gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.zeros(2, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-0.8, 0.8, 2).astype(np.float32)
        return self._pos.copy(), {}

    def step(self, action):
        if self.discrete:
            velocity = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)[int(action)]
        else:
            velocity = np.asarray(action, np.float32)
        self._pos = np.clip(self._pos + 0.2 * velocity, -1.0, 1.0).astype(np.float32)
        return self._pos.copy(), 0.0, False, False, {}


TINY = WorldModelConfig(width=32, depth=2, heads=2, sequence_frames=8, sink_frames=1, window_frames=3)


def state_model(
    discrete: bool = False, config: WorldModelConfig = TINY, seed: int = 0, delta: bool = False,
    predictor: bool = False,
) -> WorldModel:  # fmt: skip
    """An untrained point-mass world model whose output layers are randomized (so outputs depend on inputs);
    ``delta``: its tokens also carry the change since the previous frame (a step of at most 0.1);
    ``predictor``: a delta model with a random one-step predictor (and a residual of scale 0.3)."""
    torch.manual_seed(seed)
    env = PointMass(discrete)
    changes = Normalizer.fit(np.array([[-0.1, -0.1], [0.1, 0.1]]), "minmax") if delta or predictor else None
    tokenizer = StateTokenizer(Normalizer.fit(np.array([[-1.0, -1.0], [1.0, 1.0]]), "minmax"), changes)
    normalizer = None if discrete else Normalizer.fit(np.array([[-1.0, -1.0], [1.0, 1.0]]), "minmax")
    actions = ActionEncoder(env.action_space, normalizer)
    if predictor:
        rng = np.random.default_rng(seed)
        sizes = (4 + actions.cond_dim, 16, 2)
        layers = [(rng.normal(0, 0.2, (sizes[i + 1], sizes[i])), rng.normal(0, 0.1, sizes[i + 1])) for i in range(2)]
        tokenizer = tokenizer.with_predictor(OneStepPredictor(layers), rng.normal(0, 0.3, (100, 2)))
    model = WorldModel(config, tokenizer, actions, env.observation_space)
    _randomize(model)
    return model.eval()


def pixel_model(seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    autoencoder = ConvAutoencoder(AutoencoderConfig(image_size=32, channels=8, latent_channels=4)).eval()
    tokenizer = PixelTokenizer(autoencoder, None, tokens_per_frame=4)
    space = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    actions = ActionEncoder(
        gym.spaces.Box(-1.0, 1.0, (2,), np.float32), Normalizer.fit(np.array([[-1.0], [1.0]]) * np.ones(2))
    )
    model = WorldModel(TINY, tokenizer, actions, space)
    _randomize(model)
    return model.eval()


def _randomize(model: WorldModel) -> None:
    # adaLN-zero and the zero output layer make a fresh transformer ignore its inputs; tests need it not to.
    with torch.no_grad():
        for module in model.denoiser.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.2)


@pytest.fixture
def point_mass() -> PointMass:
    return PointMass()
