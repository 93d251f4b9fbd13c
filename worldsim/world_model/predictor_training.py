"""Fit a state world model's one-step predictor (:mod:`worldsim.world_model.one_step_predictor`) on its rollouts.

A plain regression, trained before the diffusion model: mean squared error on the standardized change, AdamW
with a cosine decay, batches of 256 transitions. The tokenizer it returns encodes what the predictor leaves
(the residual) for the diffusion model to learn.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from worldsim.core.episodes import Episode
from worldsim.world_model.action_encoder import ActionEncoder
from worldsim.world_model.one_step_predictor import HIDDEN, OneStepPredictor
from worldsim.world_model.state_tokenizer import StateTokenizer

BATCH = 256
LEARNING_RATE = 1e-3


def transitions(
    tokenizer: StateTokenizer, action_encoder: ActionEncoder, episodes: list[Episode]
) -> tuple[np.ndarray, np.ndarray]:
    """The predictor's inputs and targets (the standardized change) for every step of ``episodes``; an
    episode's first step repeats its first state as the frame before."""
    inputs, targets = [], []
    for episode in episodes:
        obs = np.asarray(episode.observations, np.float32)
        if len(obs) < 2:
            continue
        previous, before = obs[:-1], np.concatenate([obs[:1], obs[:-2]])
        inputs.append(tokenizer.predictor_inputs(previous, before, action_encoder.conditions(episode.actions)))
        targets.append(tokenizer.standardized_change(obs[1:], previous))
    if not inputs:
        raise ValueError("the one-step predictor needs episodes of at least one step")
    return np.concatenate(inputs).astype(np.float32), np.concatenate(targets).astype(np.float32)


def fit_one_step_predictor(
    tokenizer: StateTokenizer,
    action_encoder: ActionEncoder,
    train: list[Episode],
    held_out: list[Episode],
    *,
    steps: int,
    seed: int,
) -> tuple[StateTokenizer, dict]:
    """Train the predictor on ``train``'s transitions; returns the tokenizer with it and a record (training
    time, final loss, held-out mean squared error of the standardized change against predicting none)."""
    if not tokenizer.delta:
        raise ValueError("a one-step predictor needs delta tokens (state_delta=true)")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = (torch.from_numpy(a) for a in transitions(tokenizer, action_encoder, train))
    sizes = (x.shape[1], *HIDDEN, y.shape[1])
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    net = nn.Sequential(*layers)
    optimizer = torch.optim.AdamW(net.parameters(), LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        rows = torch.randint(0, len(x), (BATCH,), generator=generator)
        loss = ((net(x[rows]) - y[rows]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    linear = [m for m in net if isinstance(m, nn.Linear)]
    predictor = OneStepPredictor([(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in linear])
    residuals = y.numpy() - predictor(x.numpy())
    fitted = tokenizer.with_predictor(predictor, residuals)
    held_x, held_y = transitions(tokenizer, action_encoder, held_out) if held_out else (x.numpy(), y.numpy())
    record = {
        "layers": list(sizes),
        "steps": steps,
        "batch": BATCH,
        "minutes": round((time.perf_counter() - started) / 60, 2),
        "final_loss": float(loss.item()),
        "held_out_mse": float(((predictor(held_x) - held_y) ** 2).mean()),
        "held_out_mse_of_no_change": float(((held_y - tokenizer.delta_normalizer.normalize(0 * held_y)) ** 2).mean()),
        "units": "standardized change",
    }
    return fitted, record
