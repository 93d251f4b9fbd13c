"""Diagnostic: Push-T's shipped policy inside a *deterministic* one-step model, against MuJoCo.

    python benchmarks/deterministic_world_model_probe.py [--episodes 50] [--steps 20000]

Push-T's diffusion world models do not push the block (issue 23; docs/bring_your_own_env.md): the shipped
RTI policy succeeds in MuJoCo and in 0 of 50 episodes inside them (``policy_in_world_model/pusht.json``).
This probe asks whether a plain deterministic predictor, trained on the same data, keeps the policy's
success in closed loop: a 3 x 256 MLP regressing the next state's change on the last two states and the
action (inputs and targets standardized), trained on the world-model recipe's 300 rollouts (seed 0, the
default actors), then stepped as an environment from MuJoCo's own seeded resets, with the simulator's
coverage rule judging the predicted states. The same policy, strategy (RTI as recorded), reset seeds and
policy noise seeds run in MuJoCo. Not a worldsim model: a measurement of what the next world-model design
(a deterministic one-step predictor with the diffusion model sampling its residual) can hope for.
Writes ``results/deterministic_world_model_probe.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

import worldsim  # noqa: E402, F401
from worldsim.envs.tasks import TaskSpec, load_task  # noqa: E402
from worldsim.policies.config import EVAL_SEED  # noqa: E402
from worldsim.policies.diffusion_policy import DiffusionPolicy  # noqa: E402
from worldsim.policies.evaluation import evaluate_policy  # noqa: E402
from worldsim.world_model.rewards import PushTCoverageReward  # noqa: E402
from worldsim.world_model.train import gather_episodes  # noqa: E402

ENV_ID = "worldsim-bench/DeterministicPushT-v0"


def transitions(episodes) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(s_{t-1}, s_t, a_t)`` (the first step repeats its state) and targets ``s_{t+1} - s_t``."""
    inputs, targets = [], []
    for episode in episodes:
        obs, actions = np.asarray(episode.observations, np.float64), np.asarray(episode.actions, np.float64)
        previous = np.concatenate([obs[:1], obs[:-1]])
        inputs.append(np.concatenate([previous[:-1], obs[:-1], actions], axis=1))
        targets.append(obs[1:] - obs[:-1])
    return np.concatenate(inputs), np.concatenate(targets)


class Regressor:
    """The MLP with its standardization: ``change(previous, current, action) -> raw change``."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, steps: int, seed: int):
        torch.manual_seed(seed)
        self.in_mean, self.in_std = inputs.mean(0), inputs.std(0) + 1e-8
        self.out_mean, self.out_std = targets.mean(0), targets.std(0) + 1e-8
        x = torch.tensor((inputs - self.in_mean) / self.in_std, dtype=torch.float32)
        y = torch.tensor((targets - self.out_mean) / self.out_std, dtype=torch.float32)
        width = 256
        self.net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], width), torch.nn.SiLU(), torch.nn.Linear(width, width), torch.nn.SiLU(),
            torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, y.shape[1]),
        )  # fmt: skip
        optimizer = torch.optim.AdamW(self.net.parameters(), 1e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(steps):
            rows = torch.randint(0, len(x), (256,))
            loss = ((self.net(x[rows]) - y[rows]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        self.final_loss = loss.item()
        self.net.eval()

    @torch.no_grad()
    def change(self, inputs: np.ndarray) -> np.ndarray:
        x = torch.tensor((inputs - self.in_mean) / self.in_std, dtype=torch.float32)
        return self.net(x).numpy().astype(np.float64) * self.out_std + self.out_mean


class DeterministicPushT(gym.Env):
    """MuJoCo Push-T's seeded reset, then every step from the regressor; coverage judged on its states."""

    def __init__(self, task: TaskSpec, regressor: Regressor):
        self.real = task.make_env()
        self.observation_space, self.action_space = self.real.observation_space, self.real.action_space
        self.regressor, self.coverage = regressor, PushTCoverageReward()
        self.limit = self.real.spec.max_episode_steps

    def reset(self, *, seed=None, options=None):
        obs, _ = self.real.reset(seed=seed)
        self.previous = self.current = obs.astype(np.float64)
        self.steps = 0
        return obs, {}

    def step(self, action):
        inputs = np.concatenate([self.previous, self.current, np.asarray(action, np.float64)])[None]
        space = self.observation_space
        following = np.clip(self.current + self.regressor.change(inputs)[0], space.low, space.high)
        reward = self.coverage(self.current, action, following)
        self.previous, self.current = self.current, following
        self.steps += 1
        info = self.coverage.info(following)
        return following.astype(np.float32), reward, bool(info["is_success"]), self.steps >= self.limit, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20_000, help="regressor training steps (batch 256)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = load_task("pusht")
    started = time.perf_counter()
    train, held_out, _ = gather_episodes(task, 300, 300, 10, seed=0, progress=False)
    inputs, targets = transitions(train)
    regressor = Regressor(inputs, targets, args.steps, seed=0)
    minutes = (time.perf_counter() - started) / 60
    held_in, held_target = transitions(held_out)
    predicted = regressor.change(held_in)
    r2 = 1 - ((predicted - held_target) ** 2).sum(0) / ((held_target - held_target.mean(0)) ** 2).sum(0)
    moving = np.linalg.norm(held_target[:, 2:4], axis=1) > 2e-3  # the block moved > 0.5 mm
    push = np.linalg.norm(predicted[moving, 2:4], axis=1) / np.linalg.norm(held_target[moving, 2:4], axis=1)

    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=lambda **_: DeterministicPushT(task, regressor))
    inside = TaskSpec(env_id=ENV_ID, success="is_success", score_key="coverage")
    policy = DiffusionPolicy.from_pretrained("pusht-state")
    runs = {}
    for name, spec in (("deterministic_model", inside), ("mujoco", task)):
        policy.set_strategy("rti")  # the options the policy recorded (its task's RTI)
        result = evaluate_policy(policy, spec, episodes=args.episodes, seed=EVAL_SEED, policy_seed=0, progress=False)
        runs[name] = {"success_rate": result["success_rate"], "mean_max_coverage": result["mean_max_score"]}
        print(name, runs[name], flush=True)
    gap = abs(runs["deterministic_model"]["success_rate"] - runs["mujoco"]["success_rate"])
    write_result(
        "deterministic_world_model_probe",
        {
            "command": "python benchmarks/deterministic_world_model_probe.py " + " ".join(sys.argv[1:]),
            "policy": "pusht-state, strategy rti as recorded",
            "reset_seeds": f"{EVAL_SEED}..{EVAL_SEED + args.episodes - 1}",
            "policy_noise_seeds": f"0..{args.episodes - 1}",
            "regressor": {
                "layers": "3 x 256 SiLU",
                "training_steps": args.steps,
                "batch": 256,
                "minutes": round(minutes, 1),
                "training_transitions": len(inputs),
                "final_loss_standardized": regressor.final_loss,
                "held_out_r2_per_dim": r2.tolist(),
                "held_out_moving_block_steps": int(moving.sum()),
                "held_out_push_ratio_median": float(np.median(push)),
            },
            "runs": runs,
            "gap_points": 100 * gap,
            "diffusion_world_model_inside": (
                "policy_in_world_model/pusht.json (the recipe's model runs/wm-pusht-state-recipe), variant rti_task: "
                "success 0.0, mean max coverage 0.143 (MuJoCo 0.96, 0.945), 50 episodes on the same seeds"
            ),
        },
    )


if __name__ == "__main__":
    main()
