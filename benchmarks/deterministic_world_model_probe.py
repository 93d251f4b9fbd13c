"""Diagnostic: a task's policy inside a *deterministic* one-step model, against the simulator.

    python benchmarks/deterministic_world_model_probe.py [--task pusht] [--episodes 50] [--steps 20000]
    python benchmarks/deterministic_world_model_probe.py --task fetch_push   # its generalization.py policy

The diffusion world models lose contact (issue 23; docs/bring_your_own_env.md): Push-T's shipped RTI policy
succeeds in MuJoCo and in 0 of 50 episodes inside its world model, FetchPush's in 28-38% against 86-94%
(``policy_in_world_model/``). This probe asks whether a plain deterministic predictor, trained on the same
data, keeps the policy's success in closed loop: a 3 x 256 MLP regressing the next state's change (angles
the short way round) on the last two states and the action (inputs and targets standardized), trained on
the world-model recipe's 300 rollouts (seed 0, the default actors), then stepped as an environment from the
simulator's own seeded resets, with the simulator's success rule judging the predicted states (Push-T's
coverage; a goal task's goal distance). The same policy, strategy (RTI as recorded), reset seeds and policy
noise seeds run in the simulator. Every task also gets the world-model benchmark's open-loop error ratios
(``generalization.py``'s held-out episodes: 100 per action source, horizons 1, 10 and 50), so the MLP can be
set beside the diffusion model's rows; tasks without a success rule for predicted states get those only.
Not a worldsim model: the measurement that led to the world model's one-step predictor (the diffusion model
sampling its residual; ``worldsim/world_model/one_step_predictor.py``), kept to reproduce its figures.
Writes ``results/deterministic_world_model_probe/<task>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info  # noqa: E402
from generalization import HELD_OUT_SEED, HORIZONS, held_out_episodes  # noqa: E402

import worldsim  # noqa: E402, F401
from worldsim.core.angles import angle_dims, wrap_angles  # noqa: E402
from worldsim.envs.tasks import TaskSpec, load_task  # noqa: E402
from worldsim.policies.config import EVAL_SEED  # noqa: E402
from worldsim.policies.diffusion_policy import DiffusionPolicy  # noqa: E402
from worldsim.policies.evaluation import evaluate_policy  # noqa: E402
from worldsim.world_model.data import dict_state_env, flat_state_env  # noqa: E402
from worldsim.world_model.rewards import GoalReachedReward, PushTCoverageReward  # noqa: E402
from worldsim.world_model.train import gather_episodes  # noqa: E402


def transitions(episodes, angles: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(s_{t-1}, s_t, a_t)`` (the first step repeats its state) and targets ``s_{t+1} - s_t``."""
    inputs, targets = [], []
    for episode in episodes:
        obs, actions = np.asarray(episode.observations, np.float64), np.asarray(episode.actions, np.float64)
        previous = np.concatenate([obs[:1], obs[:-1]])
        inputs.append(np.concatenate([previous[:-1], obs[:-1], actions.reshape(len(actions), -1)], axis=1))
        targets.append(wrap_angles(obs[1:] - obs[:-1], angles))
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


class DeterministicEnv(gym.Env):
    """The simulator's seeded reset (flat state vectors), then every step from the regressor; reward, success
    and termination judged on its states by ``judge`` (a world-model reward function with ``info``)."""

    def __init__(self, flat: gym.Env, regressor: Regressor, angles: tuple[int, ...], judge, terminate, limit: int):
        self.flat, self.regressor, self.angles = flat, regressor, angles
        self.observation_space, self.action_space = flat.observation_space, flat.action_space
        self.judge, self.terminate, self.limit = judge, terminate, limit

    def reset(self, *, seed=None, options=None):
        obs, _ = self.flat.reset(seed=seed)
        self.previous = self.current = np.asarray(obs, np.float64)
        self.steps = 0
        return np.asarray(obs, np.float32), {}

    def step(self, action):
        inputs = np.concatenate([self.previous, self.current, np.asarray(action, np.float64).ravel()])[None]
        space = self.observation_space
        moved = wrap_angles(self.current + self.regressor.change(inputs)[0], self.angles)
        following = np.clip(moved, space.low, space.high).astype(np.float32)
        reward = float(self.judge(self.current.astype(np.float32), action, following))
        self.previous, self.current = self.current, following.astype(np.float64)
        self.steps += 1
        terminated = bool(self.terminate(following)) if self.terminate else False
        return following, reward, terminated, self.steps >= self.limit, self.judge.info(following)


def open_loop_ratios(regressor: Regressor, episodes, angles: tuple[int, ...]) -> dict:
    """The world-model benchmark's open-loop error (``generalization.py``): from each episode's first
    observation, the recorded actions alone; mean squared raw error over episodes and dimensions at each
    horizon, and its ratio to holding the first observation."""
    obs = np.stack([np.asarray(e.observations, np.float64) for e in episodes])  # [E, T + 1, D]
    actions = np.stack([np.asarray(e.actions, np.float64).reshape(len(e.actions), -1) for e in episodes])
    previous = current = obs[:, 0]
    result = {}
    for t in range(max(HORIZONS)):
        change = regressor.change(np.concatenate([previous, current, actions[:, t]], axis=1))
        previous, current = current, wrap_angles(current + change, angles)
        if t + 1 in HORIZONS:
            model = float(((current - obs[:, t + 1]) ** 2).mean())
            copy = float(((obs[:, 0] - obs[:, t + 1]) ** 2).mean())
            result[str(t + 1)] = {"model_mse": model, "copy_last_mse": copy, "ratio": model / copy}
    return result


def inside_task(name: str, task: TaskSpec, regressor: Regressor, angles: tuple[int, ...]) -> TaskSpec:
    """The task with the regressor for a simulator, registered for this run."""
    real = task.make_env()
    if name == "pusht":
        judge = PushTCoverageReward()
        terminate = judge.terminated
    else:
        judge, terminate = GoalReachedReward(real), None  # refuses, in one line, a task without goals
    env_id = f"worldsim-bench/Deterministic-{name}-v0"

    def make(**_):
        inner = DeterministicEnv(flat_state_env(task.make_env()), regressor, angles, judge, terminate,
                                 real.spec.max_episode_steps)  # fmt: skip
        return dict_state_env(inner, real.observation_space)

    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=make)
    return TaskSpec(env_id=env_id, success="is_success", score_key="coverage" if name == "pusht" else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pusht", help="pusht, or a goal-conditioned suite task")
    parser.add_argument("--policy", default=None, help="policy checkpoint (default: pusht's shipped one, else "
                        "runs/generalization/<task>/policy)")  # fmt: skip
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20_000, help="regressor training steps (batch 256)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = load_task(args.task)
    checkpoint = args.policy or task.policy_checkpoint or f"runs/generalization/{args.task}/policy"
    started = time.perf_counter()
    train, held_out, _ = gather_episodes(task, 300, 300, 10, seed=0, progress=False)
    angles = tuple(angle_dims([np.asarray(e.observations, np.float64) for e in train]))
    inputs, targets = transitions(train, angles)
    regressor = Regressor(inputs, targets, args.steps, seed=0)
    minutes = (time.perf_counter() - started) / 60
    held_in, held_target = transitions(held_out, angles)
    predicted = regressor.change(held_in)
    spread = ((held_target - held_target.mean(0)) ** 2).sum(0)
    r2 = np.where(spread > 0, 1 - ((predicted - held_target) ** 2).sum(0) / np.maximum(spread, 1e-30), np.nan)

    env = task.make_env()
    open_loop = {
        label: open_loop_ratios(regressor, flat, angles) for label, flat in held_out_episodes(task, env, 100).items()
    }
    for label, rows in open_loop.items():
        print(
            label, "open loop, ratio to copy-last:", {h: round(row["ratio"], 4) for h, row in rows.items()}, flush=True
        )

    runs, gap = None, None
    goals = isinstance(env.observation_space, gym.spaces.Dict) and "desired_goal" in env.observation_space.spaces
    if args.task == "pusht" or goals:  # a success rule the probe can judge predicted states by
        policy = DiffusionPolicy.from_pretrained(checkpoint)
        runs = {}
        inside = inside_task(args.task, task, regressor, angles)
        for label, spec in (("deterministic_model", inside), ("simulator", task)):
            policy.set_strategy("rti")  # the options the policy recorded (its task's RTI)
            result = evaluate_policy(
                policy, spec, episodes=args.episodes, seed=EVAL_SEED, policy_seed=0, progress=False
            )
            runs[label] = {k: result.get(k) for k in ("success_rate", "mean_max_score", "mean_return")}
            print(label, runs[label], flush=True)
        gap = 100 * abs(runs["deterministic_model"]["success_rate"] - runs["simulator"]["success_rate"])
    result = {
        "command": "python benchmarks/deterministic_world_model_probe.py " + " ".join(sys.argv[1:]),
        "task": args.task,
        "policy": f"{checkpoint}, strategy rti as recorded" if runs else None,
        "reset_seeds": f"{EVAL_SEED}..{EVAL_SEED + args.episodes - 1}",
        "policy_noise_seeds": f"0..{args.episodes - 1}",
        "regressor": {
            "layers": "3 x 256 SiLU",
            "training_steps": args.steps,
            "batch": 256,
            "minutes": round(minutes, 1),
            "training_transitions": len(inputs),
            "angle_dims": list(angles),
            "final_loss_standardized": regressor.final_loss,
            "held_out_r2_per_dim": [None if np.isnan(v) else float(v) for v in r2],
        },
        "open_loop": {"held_out": {"seed": HELD_OUT_SEED, "episodes": 100, "units": "raw observation units"}}
        | open_loop,
        "runs": runs,
        "gap_points": gap,
    }
    out = RESULTS / "deterministic_world_model_probe"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.task}.json"
    path.write_text(json.dumps({"machine": machine_info(), **result}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
