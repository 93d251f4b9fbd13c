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


def steps_of(action_encoder: ActionEncoder, episodes: list[Episode]) -> dict[str, np.ndarray]:
    """Every step of ``episodes``: the frame ``before``, the ``previous`` one, the action's ``conditions`` and
    the ``following`` frame (an episode's first step repeats its first state as the frame before)."""
    parts: dict[str, list] = {"before": [], "previous": [], "conditions": [], "following": []}
    for episode in episodes:
        obs = np.asarray(episode.observations, np.float32)
        if len(obs) < 2:
            continue
        parts["before"].append(np.concatenate([obs[:1], obs[:-2]]))
        parts["previous"].append(obs[:-1])
        parts["conditions"].append(action_encoder.conditions(episode.actions))
        parts["following"].append(obs[1:])
    if not parts["previous"]:
        raise ValueError("the one-step predictor needs episodes of at least one step")
    return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}


def transitions(tokenizer: StateTokenizer, steps: dict, noise: tuple | None = None) -> tuple:
    """The predictor's inputs and targets (the standardized change into the following frame) for ``steps``
    (arrays of :func:`steps_of`, numpy or torch); ``noise`` (two arrays shaped like the frames) is added to
    the frame before and the previous one, and the target still leads to the true following frame."""
    before, previous = steps["before"], steps["previous"]
    if noise is not None:
        before, previous = before + noise[0], previous + noise[1]
    inputs = tokenizer.predictor_inputs(previous, before, steps["conditions"])
    return inputs, tokenizer.standardized_change(steps["following"], previous)


def fit_one_step_predictor(
    tokenizer: StateTokenizer,
    action_encoder: ActionEncoder,
    train: list[Episode],
    held_out: list[Episode],
    *,
    steps: int,
    seed: int,
    input_noise: float = 0.0,
    clean_fraction: float = 0.0,
) -> tuple[StateTokenizer, dict]:
    """Train the predictor on ``train``'s transitions; returns the tokenizer with it and a record (training
    time, final loss, held-out mean squared error of the standardized change against predicting none).

    ``input_noise``: each batch's two input frames are moved by Gaussian noise of this many change scales per
    dimension, the target still the true next frame, so the predictor learns to lead a slightly wrong state
    back instead of carrying its error on (the noise training of learned simulators, Sanchez-Gonzalez et al.
    2020: a rollout feeds the model its own errors). ``clean_fraction``: that fraction of each batch's
    transitions keeps its true input frames, so the predictor stays exact on the recorded states themselves
    (one-step precision) while the noisy rest teaches it to lead a wrong state back."""
    if not 0.0 <= clean_fraction <= 1.0:
        raise ValueError(f"clean_fraction must lie in [0, 1], got {clean_fraction}")
    if not tokenizer.delta:
        raise ValueError("a one-step predictor needs delta tokens (state_delta=true)")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data = {k: torch.from_numpy(v) for k, v in steps_of(action_encoder, train).items()}
    x, y = transitions(tokenizer, data)
    scale = torch.from_numpy(tokenizer.delta_normalizer.scale) * input_noise
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
        if input_noise > 0:
            batch = {k: v[rows] for k, v in data.items()}
            # The mask is drawn only when asked for, so a run without it keeps the random stream it always had.
            noisy = (torch.rand(BATCH, 1, generator=generator) >= clean_fraction).float() if clean_fraction else 1.0
            noise = [torch.randn(batch["previous"].shape, generator=generator) * scale * noisy for _ in range(2)]
            inputs, targets = transitions(tokenizer, batch, noise)
        else:
            inputs, targets = x[rows], y[rows]
        loss = ((net(inputs) - targets) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    linear = [m for m in net if isinstance(m, nn.Linear)]
    predictor = OneStepPredictor([(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in linear])
    residuals = y.numpy() - predictor(x.numpy())
    fitted = tokenizer.with_predictor(predictor, residuals)
    held_x, held_y = transitions(tokenizer, steps_of(action_encoder, held_out)) if held_out else (x.numpy(), y.numpy())
    record = {
        "layers": list(sizes),
        "steps": steps,
        "input_noise": input_noise,
        "clean_fraction": clean_fraction,
        "batch": BATCH,
        "minutes": round((time.perf_counter() - started) / 60, 2),
        "final_loss": float(loss.item()),
        "held_out_mse": float(((predictor(held_x) - held_y) ** 2).mean()),
        "held_out_mse_of_no_change": float(((held_y - tokenizer.delta_normalizer.normalize(0 * held_y)) ** 2).mean()),
        "units": "standardized change",
    }
    return fitted, record
