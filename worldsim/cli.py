"""The ``worldsim`` command: every part of worldsim behind one entry point, configured with Hydra.

    worldsim demo                                   # the main job on the shipped checkpoints
    worldsim train policy task=pickplace training.steps=5000
    worldsim eval -m strategy=ddpm,rti episodes=50  # a sweep: one output folder per job
    worldsim export policy task=pusht               # also: worldsim export world-model

Each sub-command composes a primary config from ``worldsim/conf`` (typed by ``worldsim/conf/schema.py``),
applies ``key=value`` overrides, runs in a dated output folder that it prints, and calls plain library
functions with plain arguments. Mistakes (an unknown option, a missing checkpoint) end in one line that
says what to do, not in a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worldsim.conf import schema

# sub-command -> (primary config, one-line description); ``train`` and ``export`` take a kind first.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the policies, a dream rollout, a live bridge loop and an ONNX export; write report.md"),
    "collect": ("collect", "record scripted-expert demonstrations of a task as a Minari dataset"),
    "takeover": ("takeover", "record the expert taking over from a policy's rollouts (recovery demonstrations)"),
    "train policy": ("train_policy", "train a diffusion policy on a task's demonstrations"),
    "train world-model": ("train_world_model", "train a streaming world model on a task's rollouts"),
    "train self-forcing": ("train_self_forcing", "fine-tune a world model on its own rollouts (self-forcing)"),
    "eval": ("eval", "roll a policy out with an inference strategy and report success, calls and latency"),
    "bench": ("bench", "run a benchmark script of the source tree and keep its JSON"),
    "serve": ("serve", "serve a policy or world model over the ZeroMQ bridge"),
    "export policy": ("export", "export a policy to ONNX with a parity check"),
    "export world-model": ("export", "export a world model's streaming step to ONNX with a parity check"),
    "play": ("play", "drive a pixel world model live (pygame) or record a scripted play"),
}
# Hydra's own flags: kept out of the override check; the second set takes a value.
_FLAGS = {"-m", "--multirun", "-h", "--help", "--hydra-help", "--info", "--resolve", "--version"}
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}


# Lines of Hydra's and OmegaConf's messages that are diagnostics, not advice.
_NOISE = ("full_key:", "object_type=", "reference_type=", "Set the environment", "Config search")


class UserError(Exception):
    """A mistake the user can fix: reported in one line, with the fix."""


def usage() -> str:
    groups = {
        group: sorted(p.stem for p in (Path(schema.__file__).parent / group).glob("*.yaml")) for group in schema.GROUPS
    }
    lines = ["usage: worldsim <command> [key=value ...] [-m] [--help]", "", "commands:"]
    lines += [f"  {name:<20} {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "config groups (choose with group=option):"]
    lines += [f"  {group:<20} {', '.join(options)}" for group, options in groups.items()]
    lines += [
        "",
        "`worldsim <command> --help` lists a command's options; `--cfg job` prints the composed config;",
        "`-m key=a,b` sweeps. Runs write to outputs/<command>/<date>_<time> ($WORLDSIM_OUTPUT_DIR changes the root).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    schema.register()
    # As `python -m` does: modules in the working directory (a user's expert, success rule or factory named
    # as module:callable in a config) import without installing them.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name in ("train", "export"):
        kinds = [c.split()[1] for c in COMMANDS if c.startswith(name + " ")]
        if not rest or rest[0] not in kinds:
            if rest and rest[0] in ("-h", "--help"):
                print(f"usage: worldsim {name} {{{','.join(kinds)}}} [key=value ...]")
                return 0
            return _fail(name, f"say what to {name}: `worldsim {name} {'|'.join(kinds)} [key=value ...]`")
        name, rest = f"{name} {rest[0]}", rest[1:]
    if name not in COMMANDS:
        return _fail(name, f"unknown command; one of: {', '.join(COMMANDS)} (see `worldsim --help`)")
    config_name = COMMANDS[name][0]
    if name == "export world-model":
        rest = ["kind=world-model", *rest]
    rest = [_open_dict_override(arg) for arg in rest]
    if not any(flag in rest for flag in ("-h", "--help", "--hydra-help", "--cfg", "-c")):
        try:
            _check_overrides(config_name, rest)
        except UserError as error:
            return _fail(name, f"{error}; `worldsim {name} --help` lists the options")
    return _run_hydra(name, config_name, rest)


# Free-form mappings of the configs (a strategy's options, gymnasium.make's kwargs, RTI options, eval's
# asynchronous timing): a key set under them is added when the mapping lacks it, so `strategy.options.k=3`
# works without Hydra's `++`.
_OPEN_MAPPINGS = ("strategy.options.", "task.env_kwargs.", "task.rti.", "asynchronous.")


def _open_dict_override(arg: str) -> str:
    if arg.startswith(_OPEN_MAPPINGS) and "=" in arg:
        return "++" + arg
    return arg


def _fail(name: str, message: str) -> int:
    print(f"worldsim {name}: error: {message}", file=sys.stderr)
    return 2


def _check_overrides(config_name: str, args: list[str]) -> None:
    """Compose once before Hydra runs, so a wrong key or value is one line instead of Hydra's report."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        elif arg not in _FLAGS:
            overrides.append(arg)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise UserError(_summary(error)) from None
    # A sweep is checked with its first value; Hydra checks the others when it launches them.
    single = [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line
        for o in parsed
        if not o.get_key_element().lstrip("+~").startswith("hydra")
    ]
    try:
        with initialize_config_module("worldsim.conf", version_base="1.3"):
            composed = compose(config_name, overrides=single, return_hydra_config=True)
            chosen_task = composed.hydra.runtime.choices.get("task")
            with open_dict(composed):
                del composed["hydra"]
            OmegaConf.to_object(composed)
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(_summary(error)) from None
    except ValueError as error:  # a library dataclass refused a value: its message names the field
        raise UserError(str(error)) from None
    _check_task_switch(chosen_task, single)


def _check_task_switch(chosen_task: str | None, overrides: list[str]) -> None:
    """Refuse ``task.env_id=X`` on top of a shipped task of another env: the run would keep that task's
    other facts (relative actions, its dataset, its expert) for an env they do not describe."""
    if chosen_task is None or any(o.lstrip("+~").split("=")[0] == "task" for o in overrides):
        return
    from worldsim.envs.tasks import load_task

    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if key == "task.env_id":
            default = load_task(chosen_task)
            if value != default.env_id:
                raise UserError(
                    f"task.env_id={value} would keep the {default.env_id} task's other facts (dataset, expert, "
                    f"relative actions); for your own env start from neutral defaults: task=gym task.env_id={value}"
                )


def _summary(error: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages (and their cause) as one line: the problem and the hint."""
    kept = []
    for part in (error, error.__cause__):
        for line in str(part or "").splitlines():
            line = " ".join(line.split())
            if line.startswith(_NOISE):
                break
            if line:
                kept.append(line.rstrip(".:") + (":" if line.endswith(":") else ";"))
    return " ".join(kept).rstrip(";") or type(error).__name__


def _run_hydra(name: str, config_name: str, args: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    def task(cfg) -> None:
        out = Path(HydraConfig.get().runtime.output_dir)
        print(f"worldsim {name}: output folder {out}", flush=True)
        try:
            RUNNERS[config_name](OmegaConf.to_object(cfg), out)
        except UserError as error:
            raise SystemExit(_fail(name, str(error))) from None
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            # worldsim's own errors (CheckpointError, ExportError, bad input) are reports, not crashes.
            if isinstance(error, RuntimeError) and not type(error).__module__.startswith("worldsim."):
                raise
            raise SystemExit(_fail(name, _summary(error))) from None

    saved = sys.argv
    sys.argv = [f"worldsim {name}", *args]
    try:
        hydra.main(version_base="1.3", config_path="pkg://worldsim.conf", config_name=config_name)(task)()
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int | None) else 1
    finally:
        sys.argv = saved
    return 0


# --- the sub-commands: typed config in, plain library calls out -------------------------------------------


def _collect(c: schema.CollectCommand, out: Path) -> None:
    from worldsim.envs.datasets import collect_dataset

    task = c.task
    episodes = c.episodes or task.demo_episodes
    seed = task.demo_seed if c.seed is None else c.seed
    dataset_id = task.demo_dataset_id()
    collect_dataset(
        task.require_env(), dataset_id, episodes, seed, expert=lambda seed=None: task.make_expert(seed),
        env_kwargs=task.env_kwargs, data_format=c.data_format, path=c.path, action_noise=task.demo_action_noise,
    )  # fmt: skip
    print(f"recorded {episodes} episodes of {task.env_id} as {dataset_id}")


def _takeover(c: schema.TakeoverCommand, out: Path) -> None:
    import torch

    from worldsim.policies.takeover import collect_takeover_dataset

    if len(c.handover_steps) != 2:
        raise UserError(f"handover_steps takes [low, high], got {c.handover_steps}")
    torch.set_num_threads(1)
    task = c.task
    name, _, version = task.demo_dataset_id().rpartition("-v")
    if not (c.dataset_id or name):
        raise UserError("the task's dataset id has no -vN version to derive from; pass dataset_id=")
    dataset_id = c.dataset_id or f"{name}-takeover-v{version}"
    policy = load_policy(_policy_checkpoint(c.checkpoint, task), c.strategy)
    _, stats = collect_takeover_dataset(
        policy, task.require_env(), dataset_id, c.episodes, c.seed, handover_steps=tuple(c.handover_steps),
        expert_steps=c.expert_steps, expert=lambda seed=None: task.make_expert(seed), env_kwargs=task.env_kwargs,
        path=c.path,
    )  # fmt: skip
    print(
        f"{stats.episodes} rollouts of {task.env_id}: the policy finished {stats.policy_finished}, the expert "
        f"failed {stats.expert_failed}; recorded {stats.recorded} segments ({stats.recorded_steps} steps) as "
        f"{dataset_id}"
    )


def _train_policy(c, out: Path) -> None:
    from worldsim.policies.train import train_policy

    c.out = c.out or str(out / "checkpoint")
    train_policy(c)


def _train_world_model(c, out: Path) -> None:
    from worldsim.world_model.train import train_world_model

    c.out = c.out or str(out / "checkpoint")
    c.state_dir = c.state_dir or str(out)
    train_world_model(c)


def _train_self_forcing(c, out: Path) -> None:
    from worldsim.world_model.self_forcing import self_force

    c.out = c.out or str(out / "checkpoint")
    self_force(c)


def _policy_checkpoint(checkpoint: str | None, task) -> str:
    if checkpoint:
        return checkpoint
    if not task.policy_checkpoint:
        raise UserError(f"{task.env_id or 'this task'} ships no policy; pass checkpoint=<directory or .onnx file>")
    return task.policy_checkpoint


def load_policy(checkpoint: str, strategy, obs_check: str = "error") -> Any:
    """A torch policy from a checkpoint, or the torch-free runner for an ``.onnx`` file, sampling with
    ``strategy`` (its options over the policy's recorded defaults)."""
    if checkpoint.endswith(".onnx"):
        from worldsim.export.onnx_policy import OnnxPolicy

        if not Path(checkpoint).is_file():
            raise UserError(f"no ONNX file {checkpoint}; make one with `worldsim export policy out={checkpoint}`")
        policy = OnnxPolicy(checkpoint)
    else:
        from worldsim.policies.diffusion_policy import DiffusionPolicy

        try:
            policy = DiffusionPolicy.from_pretrained(checkpoint)
        except FileNotFoundError as error:
            raise UserError(f"{error}; pass checkpoint=<directory or shipped name>") from None
    policy.obs_check = obs_check
    policy.set_strategy(strategy.name, **strategy.options)
    return policy


def evaluate_under_delay(policy, task, delay, *, episodes: int, seed: int, policy_seed: int | None = None):
    """``policy`` on ``episodes`` episodes of ``task`` under asynchronous inference delay, as the live loop
    runs it (:class:`~worldsim.bridge.DelaySimulator` with ``delay``, a ``DelayConfig``), judged by the
    task's success rule. Episode ``i`` resets with ``seed + i``; the episodes run as one batch, so the
    policy's noise is seeded once (``policy_seed``). Returns the evaluation's figures (as
    ``evaluate_policy``'s, plus deadline misses and chunk-boundary smoothness) and the episode results."""
    import numpy as np

    from worldsim.bridge import DelaySimulator, chunk_boundary_jumps
    from worldsim.policies.evaluation import judge_outcome, summarize

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if policy_seed is not None:
        policy.seed(policy_seed)
    envs = [task.make_env() for _ in range(episodes)]
    judges = [task.judge() for _ in range(episodes)]
    for judge in judges:
        judge.reset()
    try:
        results = DelaySimulator(policy, delay).run_episodes(envs, [seed + i for i in range(episodes)], judges)
    finally:
        for env in envs:
            env.close()
    summary = summarize([judge_outcome(judge) for judge in judges], [], [], [], [])
    arrivals = [d for r in results for d in r.stats.arrival_ticks]
    summary |= {
        "episodes": episodes, "seed": seed, "policy_seed": policy_seed,
        "delay_ticks": delay.delay_ticks, "merge": delay.merge,
        "replan_every": delay.replan_every or int(policy.n_action_steps),
        "mean_arrival_ticks": float(np.mean(arrivals)) if arrivals else None,
        "deadline_misses": int(sum(r.stats.deadline_misses for r in results)),
        **(chunk_boundary_jumps(results) if delay.record else {}),
    }  # fmt: skip
    return summary, results


def _eval(c: schema.EvalCommand, out: Path) -> None:
    from worldsim.policies.evaluation import describe, evaluate_policy

    _set_threads(1)
    policy = load_policy(_policy_checkpoint(c.checkpoint, c.task), c.strategy, c.obs_check)
    if c.asynchronous:
        from worldsim.bridge import DelayConfig

        if c.per_action_delay_ticks:
            raise UserError("per_action_delay_ticks and asynchronous are two delay models; pass one")
        try:
            delay = DelayConfig(**c.asynchronous)
        except (TypeError, ValueError) as error:
            raise UserError(f"asynchronous: {error}") from None
        result, _ = evaluate_under_delay(
            policy, c.task, delay, episodes=c.episodes, seed=c.seed, policy_seed=c.policy_seed
        )
    else:
        result = evaluate_policy(
            policy, c.task, episodes=c.episodes, seed=c.seed, policy_seed=c.policy_seed,
            per_action_delay_ticks=c.per_action_delay_ticks,
        )  # fmt: skip
    options = {**policy.strategy_defaults.get(c.strategy.name, {}), **c.strategy.options}
    result |= {"task": c.task.env_id, "strategy": c.strategy.name, "options": options}
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    timing = ""
    if c.asynchronous:
        ratio = result.get("jump_ratio")
        timing = f" (asynchronous, delay {result['delay_ticks']} ticks, {result['merge']}" + (
            f"; chunk-boundary jump {ratio:.2f}x the within-chunk one)" if ratio is not None else ")"
        )
    print(f"{c.task.env_id} {c.strategy.name}{timing}: {describe(result)} -> {out / 'eval.json'}")


def _set_threads(threads: int) -> None:
    """Batch-1 inference is fastest on one thread, and leaves the other cores to the simulator."""
    import torch

    torch.set_num_threads(threads)


def benchmarks_dir() -> Path:
    """The source tree's ``benchmarks/`` (benchmarks are scripts beside the package, not part of it)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / "benchmarks" / "common.py").is_file():
            return root / "benchmarks"
    raise UserError("no benchmarks/ folder here: run `worldsim bench` from a worldsim source checkout")


def _bench(c: schema.BenchCommand, out: Path) -> None:
    folder = benchmarks_dir()
    script = folder / f"{c.name}.py"
    if not script.is_file():
        names = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("common", "report"))
        raise UserError(f"no benchmark {c.name!r}; choose name= one of {', '.join(names)}")
    subprocess.run([sys.executable, str(script), *c.args], check=True, cwd=folder.parent)
    for result in (folder / "results").glob(f"{c.name}*"):
        shutil.copy2(result, out / result.name)
    print(f"benchmark {c.name} done; results copied to {out}")


def serve_factory(c: schema.ServeCommand) -> Callable[[], Any]:
    """One served object per client (its own queues and warm start, or its own cache), built here so the
    bridge itself imports no model: a policy from ``onnx`` (no torch) or a checkpoint with the command's
    strategy over the policy's recorded defaults (its task's RTI), or a world model's streaming session."""
    if c.kind == "world-model":
        if c.onnx:
            raise UserError("onnx= serves policies; serve a world model with checkpoint=")
        checkpoint = c.checkpoint or c.task.world_model_checkpoint
        if checkpoint is None:
            raise UserError(f"{c.task.env_id} ships no world model; pass checkpoint=<directory>")
        from worldsim.world_model.model import WorldModel
        from worldsim.world_model.session import StreamingSession

        return functools.partial(StreamingSession, WorldModel.from_pretrained(checkpoint), c.session)
    if c.kind != "policy":
        raise UserError(f"kind must be policy or world-model, got {c.kind!r}")
    source = c.onnx or _policy_checkpoint(c.checkpoint, c.task)
    return functools.partial(load_policy, source, c.strategy, c.obs_check)


def _serve(c: schema.ServeCommand, out: Path) -> None:
    import zmq

    from worldsim.bridge.security import CurveServerKeys
    from worldsim.bridge.serve import serve_forever
    from worldsim.bridge.server import ServerConfig

    if c.allow and not c.curve_secret:
        raise UserError("allow= needs curve_secret=")
    if c.kind == "policy" and not c.onnx:
        _set_threads(1)
    curve = CurveServerKeys.from_files(c.curve_secret, c.allow) if c.curve_secret else None
    config = ServerConfig(
        address=c.address, session_timeout_s=c.session_timeout_s, max_sessions=c.max_sessions, curve=curve,
        allow_insecure=c.insecure,
    )  # fmt: skip
    factory = serve_factory(c)
    try:
        status = serve_forever(c.kind, factory, config, max_context_frames=c.max_context_frames)
    except zmq.ZMQError as error:  # most often: the address is taken, or not an interface of this machine
        raise UserError(
            f"cannot bind {c.address}: {error}; stop what serves there or choose another address= "
            "(tcp://127.0.0.1:* picks a free port)"
        ) from None
    raise SystemExit(status)


def _export(c: schema.ExportCommand, out: Path) -> None:
    path = c.out or str(out / "model.onnx")
    if c.kind == "policy":
        from worldsim.export.policy_export import export_policy
        from worldsim.policies.diffusion_policy import DiffusionPolicy

        checkpoint = _policy_checkpoint(c.checkpoint, c.task)
        policy = DiffusionPolicy.from_pretrained(checkpoint)
        print(export_policy(policy, path, tolerance=c.tolerance, source=checkpoint))
        return
    from worldsim.export.world_model_export import export_world_model

    checkpoint = c.checkpoint or c.task.world_model_checkpoint
    if checkpoint is None:
        raise UserError(f"{c.task.env_id} ships no world model; pass checkpoint=<directory>")
    report = export_world_model(checkpoint, path, tolerance=c.tolerance)
    print(report)
    print("parity per check: " + ", ".join(f"{name} {diff:.2e}" for name, diff in report.checks.items()))


def _play(c: schema.PlayCommand, out: Path) -> None:
    from worldsim.world_model.play import play

    headless_out = (c.out or str(out / "play.gif")) if c.headless else None
    play(c.checkpoint, c.session, headless_out=headless_out, frames=c.frames, scale=c.scale, seed=c.seed)


def _demo(c: schema.DemoCommand, out: Path) -> None:
    from worldsim.demo import run_demo
    from worldsim.envs.tasks import load_task

    tasks = {}
    for name in {*c.tasks, "pusht", c.camera_task}:
        try:
            tasks[name] = load_task(name)
        except ValueError as error:
            raise UserError(f"{error}; tasks= takes options of the task group") from None
    failed = [part.name for part in run_demo(c, tasks, out) if part.status.startswith("failed")]
    if failed:
        raise UserError(f"demo part(s) {', '.join(failed)} failed; see report.md and <part>_error.txt in {out}")


RUNNERS: dict[str, Callable[[Any, Path], None]] = {
    "collect": _collect,
    "takeover": _takeover,
    "train_policy": _train_policy,
    "train_world_model": _train_world_model,
    "train_self_forcing": _train_self_forcing,
    "eval": _eval,
    "bench": _bench,
    "serve": _serve,
    "export": _export,
    "play": _play,
    "demo": _demo,
}


def entry_point() -> None:
    raise SystemExit(main())
