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

import json
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
    if not any(flag in rest for flag in ("-h", "--help", "--hydra-help", "--cfg", "-c")):
        try:
            _check_overrides(config_name, rest)
        except UserError as error:
            return _fail(name, f"{error}; `worldsim {name} --help` lists the options")
    return _run_hydra(name, config_name, rest)


def _fail(name: str, message: str) -> int:
    print(f"worldsim {name}: error: {message}", file=sys.stderr)
    return 2


def _check_overrides(config_name: str, args: list[str]) -> None:
    """Compose once before Hydra runs, so a wrong key or value is one line instead of Hydra's report."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
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
            OmegaConf.to_object(compose(config_name, overrides=single))
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(_summary(error)) from None


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

    episodes = c.episodes or c.task.demo_episodes
    seed = c.task.demo_seed if c.seed is None else c.seed
    collect_dataset(
        c.task.env_id, c.task.dataset_id, episodes, seed, obs_type=c.obs_type, image_size=c.image_size,
        data_format=c.data_format, path=c.path,
    )  # fmt: skip
    print(f"recorded {episodes} episodes of {c.task.env_id} as {c.task.dataset_id}")


def _takeover(c: schema.TakeoverCommand, out: Path) -> None:
    import torch

    from worldsim.policies.takeover import collect_takeover_dataset

    if len(c.handover_steps) != 2:
        raise UserError(f"handover_steps takes [low, high], got {c.handover_steps}")
    torch.set_num_threads(1)
    name, _, version = c.task.dataset_id.rpartition("-v")
    if not (c.dataset_id or name):
        raise UserError(f"task.dataset_id {c.task.dataset_id!r} has no -vN version to derive from; pass dataset_id=")
    dataset_id = c.dataset_id or f"{name}-takeover-v{version}"
    policy = load_policy(c.checkpoint or c.task.policy_checkpoint, c.strategy)
    _, stats = collect_takeover_dataset(
        policy, c.task.env_id, dataset_id, c.episodes, c.seed, handover_steps=tuple(c.handover_steps),
        expert_steps=c.expert_steps, path=c.path,
    )  # fmt: skip
    print(
        f"{stats.episodes} rollouts of {c.task.env_id}: the policy finished {stats.policy_finished}, the expert "
        f"failed {stats.expert_failed}; recorded {stats.recorded} segments ({stats.recorded_steps} steps) as "
        f"{dataset_id}"
    )


def _train_policy(c: schema.TrainPolicyCommand, out: Path) -> None:
    from worldsim.policies import train

    p, t = c.policy, c.training
    n_action_steps = c.task.policy_n_action_steps or p.n_action_steps
    argv = [
        "--task", c.task.env_id, "--dataset-id", c.task.dataset_id, "--collect", str(c.task.demo_episodes),
        "--collect-seed", str(c.task.demo_seed),
        "--out", c.out or str(out / "checkpoint"),
        "--steps", str(t.steps), "--batch-size", str(t.batch_size), "--lr", str(t.lr), "--warmup", str(t.warmup),
        "--ema-decay", str(t.ema_decay), "--eval-every", str(t.eval_every), "--eval-episodes", str(t.eval_episodes),
        "--checkpoint-every", str(t.checkpoint_every), "--seed", str(t.seed), "--threads", str(t.threads),
        "--device", t.device,
        "--horizon", str(p.horizon), "--obs-horizon", str(p.obs_horizon), "--n-action-steps", str(n_action_steps),
        "--num-train-steps", str(p.num_train_steps), "--parameterization", p.parameterization,
        "--width", str(p.width), "--depth", str(p.depth), "--heads", str(p.heads),
        "--shared-level-prob", str(p.shared_level_prob), "--discrete-dims", *map(str, c.task.discrete_dims),
    ]  # fmt: skip
    if c.task.score_key:
        argv += ["--score-key", c.task.score_key]
    if c.task.relative_to_obs:
        argv += ["--relative-to-obs", *map(str, c.task.relative_to_obs)]
    if c.data_path:
        argv += ["--data-path", c.data_path]
    if t.distributed:
        argv.append("--distributed")
    train.main(argv)


def _train_world_model(c: schema.TrainWorldModelCommand, out: Path) -> None:
    from worldsim.world_model import train

    w, t = c.world_model, c.training
    argv = [
        "--env", c.task.env_id, "--env-kwargs", json.dumps(w.env_kwargs), "--episodes", str(w.episodes),
        "--max-steps", str(w.max_steps), "--seed", str(t.seed), "--out", c.out or str(out / "checkpoint"),
        "--state-dir", str(out), "--steps", str(t.steps), "--batch-size", str(t.batch_size),
        "--lr", str(t.lr), "--warmup", str(t.warmup), "--ema-decay", str(t.ema_decay),
        "--width", str(w.width), "--depth", str(w.depth),
        "--sequence-frames", str(w.sequence_frames), "--sink-frames", str(w.sink_frames),
        "--window-frames", str(w.window_frames), "--context-noise", str(w.context_noise),
        "--tokens-per-frame", str(w.tokens_per_frame), "--ae-steps", str(w.ae_steps),
        "--ae-channels", str(w.ae_channels), "--threads", str(t.threads), "--device", t.device,
    ]  # fmt: skip
    if t.distributed:
        argv.append("--distributed")
    train.main(argv)


def load_policy(checkpoint: str, strategy: schema.StrategyConfig) -> Any:
    """A torch policy from a checkpoint, or the torch-free runner for an ``.onnx`` file."""
    if checkpoint.endswith(".onnx"):
        from worldsim.export.onnx_policy import OnnxPolicy

        if not Path(checkpoint).is_file():
            raise UserError(f"no ONNX file {checkpoint}; make one with `worldsim export policy out={checkpoint}`")
        return OnnxPolicy(checkpoint, strategy=strategy.name, **strategy.options)
    from worldsim.policies.diffusion_policy import DiffusionPolicy

    try:
        return DiffusionPolicy.from_pretrained(checkpoint, strategy=strategy.name, **strategy.options)
    except FileNotFoundError as error:
        raise UserError(f"{error}; pass checkpoint=<directory or shipped name>") from None


def _eval(c: schema.EvalCommand, out: Path) -> None:
    import torch

    from worldsim.policies.evaluation import evaluate_policy

    torch.set_num_threads(1)
    torch.manual_seed(c.seed)
    policy = load_policy(c.checkpoint or c.task.policy_checkpoint, c.strategy)
    result = evaluate_policy(
        policy, c.task.env_id, episodes=c.episodes, seed=c.seed, latency_ticks=c.latency_ticks,
        score_key=c.task.score_key,
    )  # fmt: skip
    result |= {"task": c.task.env_id, "strategy": c.strategy.name, "options": dict(c.strategy.options)}
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    print(
        f"{c.task.env_id} {c.strategy.name}: success {result['success_rate']:.0%} over {c.episodes} episodes, "
        f"{result['calls_per_step']:.2f} calls/step, latency p50 {result['latency_ms_p50']:.2f} ms "
        f"p99 {result['latency_ms_p99']:.2f} ms -> {out / 'eval.json'}"
    )


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


def _serve(c: schema.ServeCommand, out: Path) -> None:
    from worldsim.bridge import serve

    argv = [c.kind, "--address", c.address]
    if c.onnx:
        argv += ["--onnx", c.onnx]
    elif c.kind == "policy":
        argv += ["--checkpoint", c.checkpoint or c.task.policy_checkpoint]
    else:
        checkpoint = c.checkpoint or c.task.world_model_checkpoint
        if checkpoint is None:
            raise UserError(f"{c.task.env_id} ships no world model; pass checkpoint=<directory>")
        argv += ["--checkpoint", checkpoint]
    if c.kind == "policy":
        argv += ["--strategy", c.strategy.name, *(f"--option={k}={v}" for k, v in c.strategy.options.items())]
    if c.curve_secret:
        argv += ["--curve-secret", c.curve_secret]
    if c.insecure:
        argv.append("--insecure")
    raise SystemExit(serve.main(argv))


def _export(c: schema.ExportCommand, out: Path) -> None:
    from worldsim.export.__main__ import main as export_main

    checkpoint = c.checkpoint or (c.task.policy_checkpoint if c.kind == "policy" else c.task.world_model_checkpoint)
    if checkpoint is None:
        raise UserError(f"{c.task.env_id} ships no {c.kind} checkpoint; pass checkpoint=<directory>")
    export_main([c.kind, checkpoint, c.out or str(out / "model.onnx"), "--tolerance", str(c.tolerance)])


def _play(c: schema.PlayCommand, out: Path) -> None:
    from worldsim.world_model import play

    argv = ["--checkpoint", c.checkpoint, "--sampling", c.sampling, "--steps", str(c.steps), "--seed", str(c.seed)]
    if c.headless:
        argv += ["--headless", "--out", c.out or str(out / "play.gif"), "--frames", str(c.frames)]
    play.main([*argv, "--scale", str(c.scale)])


def _demo(c: schema.DemoCommand, out: Path) -> None:
    from hydra import compose
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf

    from worldsim.demo import run_demo

    tasks = {}
    for name in {*c.tasks, "pusht"}:  # the task group's configs, composed inside the running Hydra app
        try:
            tasks[name] = OmegaConf.to_object(compose("eval", overrides=[f"task={name}"]).task)
        except MissingConfigException:
            raise UserError(f"no task config {name!r}; tasks= takes options of the task group") from None
    failed = [part.name for part in run_demo(c, tasks, out) if part.status.startswith("failed")]
    if failed:
        raise UserError(f"demo part(s) {', '.join(failed)} failed; see report.md and <part>_error.txt in {out}")


RUNNERS: dict[str, Callable[[Any, Path], None]] = {
    "collect": _collect,
    "takeover": _takeover,
    "train_policy": _train_policy,
    "train_world_model": _train_world_model,
    "eval": _eval,
    "bench": _bench,
    "serve": _serve,
    "export": _export,
    "play": _play,
    "demo": _demo,
}


def entry_point() -> None:
    raise SystemExit(main())
