"""The ``worldsim`` command: help, Hydra composition of every config group, overrides, sweeps, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from worldsim import cli
from worldsim.conf import schema

CONF = Path(schema.__file__).parent
# Which primary config uses each group.
PRIMARY = {
    "task": "eval",
    "strategy": "eval",
    "policy": "train_policy",
    "training": "train_policy",
    "world_model": "train_world_model",
}


@pytest.fixture(autouse=True)
def _outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDSIM_OUTPUT_DIR", str(tmp_path / "outputs"))
    schema.register()


@pytest.mark.parametrize("command", [*cli.COMMANDS, "train", "export"])
def test_every_sub_command_has_help(command, capsys):
    assert cli.main([*command.split(), "--help"]) == 0
    text = capsys.readouterr().out
    if command in ("train", "export"):
        assert "usage: worldsim" in text
    else:
        assert "== Options" in text and "== Config groups" in text


def test_top_level_help_lists_commands_and_groups(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command in text
    for group in schema.GROUPS:
        assert group in text


def test_console_module_runs():
    result = subprocess.run([sys.executable, "-m", "worldsim", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "train world-model" in result.stdout


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in schema.GROUPS for o in _options(g)])
def test_every_config_group_option_composes(group, option):
    with initialize_config_module("worldsim.conf", version_base="1.3"):
        cfg = compose(PRIMARY[group], overrides=[f"{group}={option}"])
    typed = OmegaConf.to_object(cfg)
    assert isinstance(typed, schema.COMMANDS[PRIMARY[group]])
    if schema.GROUPS[group] is not None:  # world_model options set several nodes of the primary config
        assert isinstance(getattr(typed, group), schema.GROUPS[group])


@pytest.mark.parametrize("name", sorted({config for config, _ in cli.COMMANDS.values()}))
def test_every_primary_config_composes_to_its_dataclass(name):
    with initialize_config_module("worldsim.conf", version_base="1.3"):
        typed = OmegaConf.to_object(compose(name))
    assert isinstance(typed, schema.COMMANDS[name])


def test_overrides_reach_the_typed_config():
    with initialize_config_module("worldsim.conf", version_base="1.3"):
        cfg = compose("eval", overrides=["task=pickplace", "strategy=ddim", "strategy.options.steps=4", "episodes=7"])
    typed = OmegaConf.to_object(cfg)
    assert typed.task.env_id == "worldsim/PickPlace-v0" and typed.task.discrete_dims == [3]
    assert typed.strategy.name == "ddim" and typed.strategy.options == {"steps": 4}
    assert typed.episodes == 7


@pytest.mark.parametrize(
    "args,expected",
    [
        (["eval", "nonsense=1"], "Could not override 'nonsense'"),
        (["eval", "episodes=many"], "episodes=many"),
        (["eval", "strategy=nope"], "strategy/nope"),
        (["train", "policy", "training.stepz=3"], "training.stepz"),
        (["eval", "checkpoint=/no/such/policy", "episodes=1"], "/no/such/policy"),
        (["export", "policy", "checkpoint=/no/such/policy"], "/no/such/policy"),
        (["frobnicate"], "unknown command"),
        (["train"], "worldsim train policy|world-model|self-forcing"),
        (["train", "policy", "task.env_id=MountainCarContinuous-v0"], "task=gym task.env_id=MountainCarContinuous-v0"),
        (["eval", "strategy.options.k=0", "episodes=1"], "rti k must lie in [1, inf], got 0"),
        (["eval", "strategy.options.q=1", "episodes=1"], "strategy 'rti' has no option(s) q"),
        (["play", "session.sampling=fast"], "session.sampling must be one of 'autoregressive', 'rolling'"),
        (["eval", "asynchronous.delay_tick=2", "episodes=1"], "asynchronous: DelayConfig.__init__() got an unexpected"),
        (["eval", "asynchronous.delay_ticks=-1", "episodes=1"], "asynchronous: delay_ticks must be an int >= 0"),
        (["eval", "asynchronous.delay_ticks=2", "per_action_delay_ticks=1"], "two delay models; pass one"),
    ],
)
def test_mistakes_end_in_one_line_with_the_fix(args, expected, capsys):
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"worldsim {args[0]}") and expected in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_multirun_sweeps_two_jobs(tmp_path, capsys):
    args = ["eval", "-m", "task=pickplace", "strategy=ddim,rti", "strategy.options={}", "episodes=1"]
    assert cli.main(args) == 0
    results = sorted((tmp_path / "outputs" / "eval").glob("*/*/eval.json"))
    assert len(results) == 2
    strategies = {json.loads(p.read_text())["strategy"] for p in results}
    assert strategies == {"ddim", "rti"}
    assert "output folder" in capsys.readouterr().out


def test_demo_fast_mode_writes_a_report_with_numbers(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "worldsim", "demo", "fast=true", "tasks=[pickplace]"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WORLDSIM_OUTPUT_DIR": str(tmp_path / "outputs")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = (tmp_path / "outputs" / "demo").glob("*/report.md")
    text = report.read_text()
    assert text.count("| done |") == 5, text
    sections = text.split("\n## ")[1:]
    assert len(sections) == 5
    for section in sections:  # every part's table has a row of numbers
        rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
        assert len(rows) >= 2 and re.search(r"\d", rows[-1]), section
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and re.search(r"\d", line)]
    assert any("PickPlace" in row and "%" in row for row in table_rows)  # policy success rates
    assert any(re.search(r"\d\.\d+e-0\d", row) for row in table_rows)  # export parity
    assert (report.parent / "dream_error.png").is_file() and (report.parent / "pusht_policy.onnx").is_file()
    assert list(report.parent.glob("dream.*"))
    assert list(report.parent.glob("camera_policy.*"))  # the visuomotor policy's episode as video


def test_takeover_records_recovery_demonstrations_and_refuses_an_existing_dataset(tmp_path, capsys):
    from worldsim.envs.datasets import load_demonstrations

    args = ["takeover", "task=pickplace", "episodes=2", "handover_steps=[2,4]", f"path={tmp_path / 'data'}"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    recorded = int(re.search(r"recorded (\d+) segments", out).group(1))
    assert "as worldsim/pickplace/expert-takeover-v0" in out and recorded >= 1
    assert len(load_demonstrations("worldsim/pickplace/expert-takeover-v0", path=tmp_path / "data")) == recorded
    assert cli.main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main([*args[:-1], "handover_steps=[3]"]) == 2
    assert "handover_steps takes [low, high]" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task,relative,n_action_steps", [("pusht", [0, 1], 4), ("pickplace", None, None)], ids=["pusht", "pickplace"]
)
def test_train_policy_passes_the_task_s_action_coding(monkeypatch, task, relative, n_action_steps):
    from worldsim.policies import train

    seen = []
    monkeypatch.setattr(train, "train_policy", seen.append)
    assert cli.main(["train", "policy", f"task={task}", "training=smoke"]) == 0
    (config,) = seen
    assert config.task.relative_to_obs == relative and config.task.n_action_steps == n_action_steps
    assert config.training.steps == 20 and config.out.endswith("checkpoint")


def test_a_user_env_through_hydra_is_the_python_api_s_run():
    """The same run from the command line and from Python: a user env with no task file gets the library
    dataclasses' neutral defaults, nothing of a shipped task."""
    from worldsim.envs.tasks import TaskSpec
    from worldsim.policies.config import TrainPolicyConfig

    overrides = ["task=gym", "task.env_id=MountainCarContinuous-v0", "task.dataset_id=mc/expert-v0", "out=runs/mc"]
    with initialize_config_module("worldsim.conf", version_base="1.3"):
        composed = OmegaConf.to_object(compose("train_policy", overrides=overrides))
    task = TaskSpec(env_id="MountainCarContinuous-v0", dataset_id="mc/expert-v0")
    python = TrainPolicyConfig(task=task, out="runs/mc")
    assert composed == python
    assert composed.task.relative_to_obs is None and composed.task.n_action_steps is None and not composed.task.rti
    assert composed.policy.parameterization == "sample" and composed.training.steps == 15_000


def test_the_readme_serve_command_serves_the_task_s_rti_settings():
    """`worldsim serve task=pusht strategy=rti` builds its policy with the RTI the pusht task was tuned for."""
    from worldsim.envs.tasks import load_task

    with initialize_config_module("worldsim.conf", version_base="1.3"):
        command = OmegaConf.to_object(compose("serve", overrides=["task=pusht", "strategy=rti"]))
    policy = cli.serve_factory(command)()
    tuned = load_task("pusht").rti
    assert (policy.strategy.k, policy.strategy.calls, policy.strategy.cold_start_steps) == (30, 3, 10)
    assert policy.n_action_steps == tuned["n_action_steps"] == 4


def test_train_policy_on_pusht_runs_the_shipped_recipe(monkeypatch):
    """The defaults with `policy=minmax` and `training=policy_pusht` (the scaling and trainer settings it
    trained with) reproduce the settings worldsim/checkpoints/pusht-state/model.json records."""
    import json

    from worldsim.core.pretrained import shipped_dir
    from worldsim.policies import train

    seen = []
    monkeypatch.setattr(train, "train_policy", seen.append)
    assert cli.main(["train", "policy", "task=pusht", "policy=minmax", "training=policy_pusht", "out=runs/x"]) == 0
    (ours,) = seen
    shipped = json.loads((shipped_dir() / "pusht-state" / "model.json").read_text())
    flags = dict(re.findall(r"--([a-z-]+) (\S+)", shipped["train_command"]))
    trainer = {"steps": "steps", "batch-size": "batch_size", "lr": "learning_rate", "warmup": "warmup_steps",
               "ema-decay": "ema_decay"}  # fmt: skip
    for flag, field in trainer.items():
        assert float(flags[flag]) == float(getattr(ours.training, field)), field
    assert ours.training.seed == 0 and int(flags["threads"]) == ours.threads  # the command's seed was the default
    assert flags["dataset-id"] == ours.task.demo_dataset_id()
    architecture = ("horizon", "obs_horizon", "num_train_steps", "parameterization", "width", "depth", "heads",
                    "shared_level_prob", "normalization", "clip_sample")  # fmt: skip
    for field in architecture:
        assert getattr(ours.policy, field) == shipped["config"][field], field
    assert list(shipped["config"]["relative_to_obs"]) == ours.task.relative_to_obs
    assert shipped["config"]["n_action_steps"] == ours.task.n_action_steps


def test_serve_on_a_taken_address_is_a_one_line_error(monkeypatch, capsys):
    """`worldsim serve` on an address another socket holds names the address in one line, no traceback."""
    import zmq

    from tests.bridge.policies import CountingPolicy

    monkeypatch.setattr(cli, "serve_factory", lambda command: CountingPolicy)  # no model to load
    context = zmq.Context()
    holder = context.socket(zmq.REP)
    try:
        port = holder.bind_to_random_port("tcp://127.0.0.1")
        address = f"tcp://127.0.0.1:{port}"
        command = schema.ServeCommand(address=address, onnx="policy.onnx")  # (onnx: no torch thread setup)
        with pytest.raises(cli.UserError, match=rf"cannot bind {re.escape(address)}: .*address="):
            cli._serve(command, Path("."))
        assert cli.main(["serve", f"address={address}", "onnx=policy.onnx"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"worldsim serve: error: cannot bind {address}")
    finally:
        holder.close(linger=0)
        context.term()


def test_eval_under_asynchronous_delay_reports_the_loop_s_figures(tmp_path):
    """The live loop's timing offline: chunks that arrive 2 ticks late, the frozen prefix kept by rtc."""
    assert cli.main(["eval", "task=pickplace", "strategy=rtc", "episodes=3", "asynchronous.delay_ticks=2"]) == 0
    (result_file,) = Path(os.environ["WORLDSIM_OUTPUT_DIR"]).glob("eval/*/eval.json")
    result = json.loads(result_file.read_text())
    assert result["delay_ticks"] == 2 and result["merge"] == "switch" and result["episodes"] == 3
    # every chunk after the first arrived exactly 2 ticks after its observation, none overdue
    assert result["mean_arrival_ticks"] == 2.0 and result["deadline_misses"] == 0
    # judged by the task's success rule (not undefined), with the chunk-boundary smoothness measured
    assert result["success_rate"] is not None and result["boundary_jump"] > 0.0
