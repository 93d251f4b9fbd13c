"""Train a diffusion policy on a task's demonstrations: ``train_policy(TrainPolicyConfig(...))``.

The ``worldsim train policy`` command builds the same :class:`TrainPolicyConfig` from its Hydra configs
and calls :func:`train_policy`, so a run from Python and a run from the command line are the same run::

        from worldsim.policies.train import TrainPolicyConfig, train_policy

    train_policy(TrainPolicyConfig(task=TaskSpec(env_id="MyEnv-v0", expert="my_pkg.experts:Expert"), out="runs/me"))

Steps, read top to bottom: (1) the task's demonstrations (recorded with its expert when missing) become
(observation history, action chunk) windows; (2) the policy config is completed from the env and the
data (:mod:`worldsim.policies.recipe`); (3) the shared trainer fits it, evaluating the EMA weights in the
env now and then; (4) RTI's warm-start level is chosen by RTI-DP's offline rule and recorded with the
checkpoint, whose JSON also holds the whole training config. Under ``torchrun`` with
``training.distributed=true`` it trains data-parallel (docs/training_at_scale.md).
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np
import torch

from worldsim.core.distributed import DistributedContext, init_distributed
from worldsim.core.episodes import policy_windows
from worldsim.core.normalizer import Normalizer
from worldsim.core.trainer import Trainer
from worldsim.envs.datasets import collect_dataset, fit_normalizers, load_demonstrations, recorded_reset_seeds
from worldsim.envs.wrappers import select_proprioception
from worldsim.policies.action_codec import fit_relative_normalizer
from worldsim.policies.config import EVAL_SEED, DiffusionPolicyConfig, TrainPolicyConfig
from worldsim.policies.diffusion_policy import DiffusionPolicy
from worldsim.policies.evaluation import evaluate_policy
from worldsim.policies.recipe import complete_policy_config, policy_episodes

__all__ = ["TrainPolicyConfig", "train_policy"]

INHERITED = ("dataset_ids", "train_config", "train_steps", "train_minutes", "init_from")
"""What a fine-tuned checkpoint records of the one it started from, so its full recipe stays reproducible."""


def check_init_from(parent: DiffusionPolicyConfig, config: DiffusionPolicyConfig, name: str) -> None:
    """Raise unless ``parent``'s weights fit ``config``: the prediction target may change (re-targeting the
    output is fine-tuning too), the sizes and data layout may not."""

    def resolved(cfg: DiffusionPolicyConfig) -> dict:
        values = cfg.to_dict()
        values["obs_feature_dim"] = values["obs_feature_dim"] or values["width"]  # None means the width
        return values

    ours = resolved(config)
    differs = {key: (theirs, ours[key]) for key, theirs in resolved(parent).items() if theirs != ours[key]}
    differs.pop("parameterization", None)
    differs.pop("prefix_conditioning", None)  # how chunks are noised in training, not what the weights are
    if not parent.obs_low:  # a checkpoint older than the observation bounds: they are checks, not weights
        differs.pop("obs_low", None)
        differs.pop("obs_high", None)
    if differs:
        raise ValueError(
            f"init_from {name}: its config differs from this run's in "
            + ", ".join(f"{key} ({theirs} there, {mine} here)" for key, (theirs, mine) in differs.items())
            + "; pass the same sizes"
        )


def load_task_demonstrations(cfg: TrainPolicyConfig, context: DistributedContext) -> tuple[list[str], list]:
    """The task's dataset (recorded first when missing and ``collect``) plus ``extra_datasets``."""
    task = cfg.task
    dataset_ids = [task.demo_dataset_id(), *cfg.extra_datasets]
    if context.is_main:
        try:
            seeds = recorded_reset_seeds(dataset_ids[0], path=cfg.data_path)
        except ValueError:
            if not cfg.collect:
                raise
            collect_dataset(
                task.require_env(), dataset_ids[0], task.demo_episodes, seed=task.demo_seed, path=cfg.data_path,
                expert=lambda seed=None: task.make_expert(seed), env_kwargs=task.env_kwargs,
                action_noise=task.demo_action_noise,
            )  # fmt: skip
        else:
            wanted = list(range(task.demo_seed, task.demo_seed + task.demo_episodes))
            if task.dataset_id is None and seeds != wanted:
                # The derived id names the env and noise only: an earlier recording of another size or seed
                # would otherwise stand in for the one the task asks for without a word.
                warnings.warn(
                    f"training on the recorded {dataset_ids[0]!r} ({len(seeds)} episodes, reset seeds "
                    f"{_seed_span(seeds)}), not the {task.demo_episodes} episodes from seed {task.demo_seed} the "
                    "task asks for: delete that dataset to record them, or name a new one with task.dataset_id",
                    stacklevel=2,
                )
    context.barrier()
    episodes = [
        episode
        for dataset_id in dataset_ids
        for episode in load_demonstrations(dataset_id, task.env_id, env_kwargs=task.env_kwargs, path=cfg.data_path)
    ]
    return dataset_ids, episodes


def _seed_span(seeds: list[int | None]) -> str:
    if not seeds or None in seeds:
        return "not all stored"
    return f"{seeds[0]}..{seeds[-1]}" if seeds == list(range(seeds[0], seeds[0] + len(seeds))) else "listed"


def train_policy(cfg: TrainPolicyConfig) -> DiffusionPolicy:
    """Train, evaluate and save a policy as ``cfg`` says; returns the EMA policy (rank 0's, under torchrun)."""
    if not cfg.out:
        raise ValueError("out is not set: name the checkpoint directory to write (out=runs/my-policy)")
    started = time.time()
    torch.manual_seed(cfg.training.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Under torchrun every process runs this: join the group now, so that rank 0 alone records data and reports.
    context = init_distributed() if cfg.training.distributed else DistributedContext()
    report = print if context.is_main else (lambda *_: None)
    task = cfg.task

    # 1. Demonstrations -> (observation history, action chunk) windows and normalization statistics.
    dataset_ids, raw_episodes = load_task_demonstrations(cfg, context)
    if task.proprio_dims:  # a camera task: the policy sees the robot's own state only, as task.make_env gives it
        raw_episodes = [
            dataclasses.replace(e, observations=select_proprioception(e.observations, task.proprio_dims))
            for e in raw_episodes
        ]
    env = task.make_env()
    config = complete_policy_config(cfg.policy, task, env, raw_episodes)
    env.close()
    episodes = policy_episodes(raw_episodes, config)
    obs, actions = policy_windows(episodes, config.obs_horizon, config.horizon)
    if config.state_size:
        normalizers = fit_normalizers(
            episodes, obs_key="state" if config.multipart else None, mode=config.normalization
        )
    else:  # frames are scaled to [-1, 1], not fitted: only actions have statistics
        actions_seen = np.concatenate([e.actions for e in episodes])
        normalizers = {"observation": None, "action": Normalizer.fit(actions_seen, config.normalization)}
    report(f"{len(episodes)} episodes, {len(actions)} training windows from {', '.join(dataset_ids)}")

    # 2. The policy.
    obs_normalizer, action_normalizer = normalizers["observation"], normalizers["action"]
    if config.relative_to_obs:
        action_normalizer = fit_relative_normalizer(config, obs, actions, config.normalization)
    parent = None
    if cfg.init_from:
        # The weights were fitted to the parent's normalization statistics, so they come along with them.
        parent = DiffusionPolicy.from_pretrained(cfg.init_from)
        check_init_from(parent.config, config, cfg.init_from)
        obs_normalizer, action_normalizer = parent.obs_normalizer, parent.codec.normalizer
    policy = DiffusionPolicy(
        config, obs_normalizer=obs_normalizer, action_normalizer=action_normalizer,
        strategy_defaults={"rti": dict(task.rti)} if task.rti else None,
    )  # fmt: skip
    if parent is not None:
        policy.load_state_dict(parent.state_dict())
    report(f"policy: {sum(p.numel() for p in policy.parameters()) / 1e6:.2f} M parameters")

    # 3. Train; evaluate the EMA weights in the env every ``eval_every`` steps (never when it is 0).
    def evaluate(model: DiffusionPolicy, step: int) -> dict:
        model.set_strategy(cfg.eval_strategy.name, **cfg.eval_strategy.options)
        result = evaluate_policy(model, task, episodes=cfg.eval_episodes, seed=EVAL_SEED, progress=False)
        metrics = {"eval_mean_return": result["mean_return"]}
        if result["success_rate"] is not None:
            metrics["eval_success_rate"] = result["success_rate"]
        return metrics

    def save(model: DiffusionPolicy, step: int) -> None:
        model.save_pretrained(
            cfg.out,
            extra={
                "task": task.env_id,
                "dataset_ids": dataset_ids,
                "train_config": cfg.to_dict(),
                "train_steps": step,
                "train_minutes": round((time.time() - started) / 60, 1),
                "history": trainer.history,
                "init_from": None
                if parent is None
                else {"checkpoint": cfg.init_from, **{k: parent.metadata.get(k) for k in INHERITED}},
            },
        )

    if config.multipart:  # frames stay uint8 in memory (a quarter of float32's size)
        data = {"obs.pixels": torch.from_numpy(obs["pixels"]), "obs.state": torch.from_numpy(obs["state"])}
    elif config.obs_type == "pixels":
        data = {"obs": torch.from_numpy(np.ascontiguousarray(obs, np.uint8))}
    else:
        data = {"obs": torch.from_numpy(np.ascontiguousarray(obs, np.float32))}
    data["action"] = torch.from_numpy(actions)
    evaluations = cfg.eval_episodes > 0 and cfg.training.eval_every > 0
    trainer = Trainer(
        policy, data, cfg.training, output_dir=cfg.out, evaluate=evaluate if evaluations else None, save=save
    )
    if cfg.resume:
        trainer.load_state(cfg.out)
        report(f"resuming at step {trainer.step}")
    trainer.fit()
    if not context.is_main:
        return trainer.ema_model

    # 4. RTI's level by the offline rule, recorded with the checkpoint beside the task's own options.
    model = trainer.ema_model
    if cfg.rti_max_pairs and "k" not in task.rti:
        rti = recommended_rti(model, episodes, max_pairs=cfg.rti_max_pairs, seed=cfg.training.seed)
        model.strategy_defaults["rti"] = rti | dict(task.rti)
        report(f"RTI by the offline rule: {model.strategy_defaults['rti']}")
        save(model, trainer.step)
    if evaluations:
        report(f"final evaluation: {evaluate(model, trainer.step)}")
    report(f"done in {(time.time() - started) / 60:.1f} min; checkpoint in {cfg.out}")
    return model


COLD_START_STEPS = 10
"""RTI's first chunk of an episode: a 10-step DDIM from noise (no 100-call start in a live loop)."""


def rti_calls(k: int, executed: int, episode_length: int | None = None) -> int:
    """Network calls per warm-started RTI chunk, so that an episode costs at most one call per executed action
    once the :data:`COLD_START_STEPS`-call cold start is paid back: at most ``k`` (one level per call at
    best), one fewer than the chunk executes, and, for episodes of ``episode_length`` steps (its last chunk cut
    short), few enough that ``COLD_START_STEPS + (n - 1) calls <= episode_length`` over its ``n`` chunks. A
    closed-loop policy (one action per chunk) still needs its one call per action."""
    calls = min(k, executed - 1)
    if episode_length is not None:
        chunks = -(-int(episode_length) // executed)
        if chunks > 1:
            calls = min(calls, (int(episode_length) - COLD_START_STEPS) // (chunks - 1))
    return max(1, calls)


def recommended_rti(policy: DiffusionPolicy, episodes, *, max_pairs: int, seed: int) -> dict:
    """RTI options for ``policy``: k by RTI-DP's offline rule for its chunk stride, walked in
    :func:`rti_calls` calls (for episodes as long as the demonstrations') after a :data:`COLD_START_STEPS`-step
    DDIM cold start."""
    from worldsim.policies.rti_k import choose_rti_k

    executed = policy.config.n_action_steps
    observations = [e.observations for e in episodes]  # already as the policy sees them (policy_episodes)
    choice = choose_rti_k(policy, observations, executed_steps=executed, max_pairs=max_pairs, seed=seed)
    typical_length = int(np.median([len(e.actions) for e in episodes]))  # the expert's; a policy's are rarely shorter
    calls = rti_calls(choice.k, executed, typical_length)
    return {"k": choice.k, "calls": calls, "cold_start_steps": COLD_START_STEPS, "n_action_steps": executed}
