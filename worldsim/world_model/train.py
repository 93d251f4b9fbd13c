"""Train a world model on rollouts of any Gymnasium environment (or on a Minari dataset) and save it.

State observations (a flat Box)::

    python -m worldsim.world_model.train --env worldsim/PushT-v0 --out runs/wm-pusht-state

Pixel observations (``uint8 [S, S, 3]``, S a multiple of 16) first train the autoencoder tokenizer::

    python -m worldsim.world_model.train --env worldsim/PushT-v0 --env-kwargs '{"obs_type": "pixels",
        "image_size": 64}' --out runs/wm-pusht-pixels

Rollouts mix a smooth random walk with the task's scripted expert at two noise levels when
``worldsim.envs.datasets.EXPERTS`` has one. Every run writes ``model.safetensors`` + ``model.json``
(with this command line) to ``--out``; ``--state-dir`` also keeps resumable training states.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Headless rendering for pixel observations; must be set before MuJoCo is imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import worldsim  # noqa: E402, F401  (registers the worldsim/ environments)
from worldsim.core.episodes import Episode  # noqa: E402
from worldsim.core.normalizer import Normalizer  # noqa: E402
from worldsim.core.trainer import Trainer, TrainerConfig, add_device_argument  # noqa: E402
from worldsim.envs.datasets import EXPERTS, load_demonstrations  # noqa: E402
from worldsim.world_model.autoencoder import AutoencoderConfig, ConvAutoencoder  # noqa: E402
from worldsim.world_model.data import Actor, NoisyExpert, RandomWalkActor, collect_episodes  # noqa: E402
from worldsim.world_model.held_out import one_step_error  # noqa: E402
from worldsim.world_model.model import WorldModel, WorldModelConfig  # noqa: E402
from worldsim.world_model.tokenizers import ActionEncoder, PixelTokenizer, StateTokenizer  # noqa: E402


@dataclass
class DataConfig:
    env_id: str
    env_kwargs: dict = field(default_factory=dict)
    episodes: int = 300
    max_steps: int = 300
    held_out_episodes: int = 10
    seed: int = 0
    dataset_id: str | None = None
    """Train on this local Minari dataset instead of fresh rollouts."""


def default_actors(env: gym.Env, env_id: str, seed: int) -> list[Actor]:
    """A random walk, plus the task's scripted expert with small and large action noise if it has one."""
    actors: list[Actor] = [RandomWalkActor(env.action_space, step_scale=0.1, seed=seed)]
    if env_id in EXPERTS:
        for i, std in enumerate((0.05, 0.3)):
            actors.append(NoisyExpert(EXPERTS[env_id](seed=seed + i), env.action_space, noise_std=std, seed=seed + i))
    return actors


def gather_episodes(config: DataConfig, *, progress: bool = True) -> tuple[list[Episode], list[Episode], gym.Env]:
    """Training and held-out episodes; held-out rollouts use seeds after the training ones."""
    env = gym.make(config.env_id, **config.env_kwargs)
    if config.dataset_id is not None:
        episodes = load_demonstrations(config.dataset_id, config.env_id, env_kwargs=config.env_kwargs)
        if len(episodes) <= config.held_out_episodes:
            raise ValueError(f"dataset has {len(episodes)} episodes, not more than {config.held_out_episodes}")
        return episodes[config.held_out_episodes :], episodes[: config.held_out_episodes], env
    actors = default_actors(env, config.env_id, config.seed)
    train = collect_episodes(
        env, actors, config.episodes, seed=config.seed, max_steps=config.max_steps, progress=progress
    )
    held_out = collect_episodes(
        env, actors, config.held_out_episodes, seed=config.seed + config.episodes, max_steps=config.max_steps,
        progress=progress,
    )  # fmt: skip
    return train, held_out, env


def train_autoencoder(
    frames: np.ndarray, config: AutoencoderConfig, trainer_config: TrainerConfig, output_dir: Path | None
) -> ConvAutoencoder:
    """Fit the pixel tokenizer's autoencoder on ``frames`` (uint8 ``[N, S, S, 3]``); returns the EMA weights."""
    autoencoder = ConvAutoencoder(config)
    autoencoder.set_background(frames[:: max(1, len(frames) // 2000)])
    trainer = Trainer(autoencoder, {"images": torch.from_numpy(frames)}, trainer_config, output_dir=output_dir)
    trainer.fit()
    return trainer.ema_model.eval().requires_grad_(False)


def build_model(
    train: list[Episode], env: gym.Env, model_config: WorldModelConfig, autoencoder: ConvAutoencoder | None,
    tokens_per_frame: int,
) -> WorldModel:  # fmt: skip
    """A fresh world model whose tokenizer and action statistics are fitted on ``train``."""
    obs_space, action_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box):
        raise ValueError(f"world models take Box observations (a flat state or uint8 images), got {obs_space}")
    action_normalizer = None
    if isinstance(action_space, gym.spaces.Box):
        action_normalizer = Normalizer.fit(np.concatenate([e.actions for e in train]), "minmax")
    if autoencoder is None:
        tokenizer = StateTokenizer(Normalizer.fit(np.concatenate([e.observations for e in train]), "minmax"))
    else:
        frames = np.concatenate([e.observations for e in train])
        tokenizer = PixelTokenizer(autoencoder, None, tokens_per_frame)
        with torch.no_grad():
            raw = torch.cat([tokenizer.raw_tokens(frames[i : i + 512]) for i in range(0, len(frames), 512)])
        tokenizer.latent_normalizer = Normalizer.fit(raw.reshape(-1, raw.shape[-1]).cpu().numpy(), "meanstd")
    return WorldModel(model_config, tokenizer, ActionEncoder(action_space, action_normalizer), obs_space)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="Gymnasium environment id")
    parser.add_argument("--env-kwargs", default="{}", help="JSON keyword arguments for gymnasium.make")
    parser.add_argument("--dataset-id", default=None, help="train on this local Minari dataset instead of rollouts")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--max-steps", type=int, default=300, help="steps per rollout episode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path, help="output directory of the checkpoint")
    parser.add_argument("--state-dir", type=Path, default=None, help="also keep resumable training states here")
    parser.add_argument("--steps", type=int, default=3000, help="world-model training steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=300, help="learning-rate warm-up steps")
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--sequence-frames", type=int, default=10)
    parser.add_argument("--sink-frames", type=int, default=1)
    parser.add_argument("--window-frames", type=int, default=8)
    parser.add_argument("--context-noise", type=float, default=0.1)
    parser.add_argument("--tokens-per-frame", type=int, default=4, help="pixel models: latent tokens per frame")
    parser.add_argument("--ae-steps", type=int, default=2000, help="pixel models: autoencoder training steps")
    parser.add_argument("--ae-channels", type=int, default=32, help="pixel models: autoencoder width")
    parser.add_argument(
        "--ae-downsample", type=int, default=16, choices=(8, 16), help="pixel models: frame side / latent grid side"
    )
    parser.add_argument("--autoencoder-from", default=None, help="pixel models: reuse this checkpoint's autoencoder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--distributed", action="store_true", help="under torchrun: DistributedDataParallel")
    args = parser.parse_args(argv)
    command = "python -m worldsim.world_model.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    data_config = DataConfig(
        args.env, json.loads(args.env_kwargs), args.episodes, args.max_steps, seed=args.seed,
        dataset_id=args.dataset_id,
    )  # fmt: skip
    train, held_out, env = gather_episodes(data_config, progress=not args.no_progress)
    print(f"{len(train)} training episodes ({sum(len(e) for e in train)} steps), {len(held_out)} held out")

    autoencoder, autoencoder_command = None, None
    if args.autoencoder_from is not None:
        source = WorldModel.from_pretrained(args.autoencoder_from)
        if not isinstance(source.tokenizer, PixelTokenizer):
            raise ValueError(f"{args.autoencoder_from} is not a pixel world model")
        autoencoder = source.tokenizer.autoencoder
        autoencoder_command = source.metadata.get("command")
    elif env.observation_space.dtype == np.uint8:
        frames = np.concatenate([e.observations for e in train])
        ae_config = AutoencoderConfig(
            image_size=env.observation_space.shape[0], channels=args.ae_channels, downsample=args.ae_downsample
        )
        ae_trainer = TrainerConfig(
            steps=args.ae_steps, batch_size=32, learning_rate=2e-3, warmup_steps=200, ema_decay=0.99,
            log_every=250, seed=args.seed, progress=not args.no_progress, distributed=args.distributed,
            device=args.device,
        )  # fmt: skip
        autoencoder = train_autoencoder(
            frames, ae_config, ae_trainer, args.state_dir / "autoencoder" if args.state_dir else None
        )
        del frames

    model_config = WorldModelConfig(
        width=args.width, depth=args.depth, sequence_frames=args.sequence_frames, sink_frames=args.sink_frames,
        window_frames=args.window_frames, context_noise=args.context_noise,
    )  # fmt: skip
    model = build_model(train, env, model_config, autoencoder, args.tokens_per_frame)
    data = model.training_data(train, stride=2)
    held_out_data = model.training_data(held_out, stride=7)
    print(f"{len(data['frames'])} training windows of {model_config.sequence_frames} frames")
    trainer_config = TrainerConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=args.warmup,
        ema_decay=args.ema_decay, log_every=250, eval_every=max(args.steps // 4, 1), seed=args.seed,
        progress=not args.no_progress, distributed=args.distributed, device=args.device,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed)

    def evaluate(ema_model: WorldModel, step: int) -> dict:
        return one_step_error(ema_model, held_out_data, generator=generator)

    trainer = Trainer(model, data, trainer_config, output_dir=args.state_dir, evaluate=evaluate)
    history = trainer.fit()
    if not trainer.dist.is_main:
        return  # rank 0 evaluates and writes the checkpoint
    final = one_step_error(trainer.ema_model, held_out_data, generator=generator)
    minutes = (time.perf_counter() - started) / 60
    print(f"held-out one-step MSE {final['one_step_mse']:.5f} vs copy-last {final['copy_last_mse']:.5f}")
    trainer.ema_model.save(
        args.out,
        command=command,
        extra={
            "env_id": args.env,
            "env_kwargs": data_config.env_kwargs,
            **({"autoencoder_command": autoencoder_command} if autoencoder_command else {}),
            "training": {
                "minutes": round(minutes, 1),
                "threads": args.threads,
                "episodes": len(train),
                "windows": len(data["frames"]),
                "held_out": final,
                "history": [h for h in history if "one_step_mse" in h],
            },
        },
    )
    print(f"saved {args.out} after {minutes:.1f} min")


if __name__ == "__main__":
    main()
