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
        (["train"], "worldsim train policy|world-model"),
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
    assert text.count("| done |") == 4, text
    sections = text.split("\n## ")[1:]
    assert len(sections) == 4
    for section in sections:  # every part's table has a row of numbers
        rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
        assert len(rows) >= 2 and re.search(r"\d", rows[-1]), section
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and re.search(r"\d", line)]
    assert any("PickPlace" in row and "%" in row for row in table_rows)  # policy success rates
    assert any(re.search(r"\d\.\d+e-0\d", row) for row in table_rows)  # export parity
    assert (report.parent / "dream_error.png").is_file() and (report.parent / "pusht_policy.onnx").is_file()
    assert list(report.parent.glob("dream.*"))


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
    "task,relative,n_action_steps", [("pusht", ["0", "1"], "4"), ("pickplace", None, "8")], ids=["pusht", "pickplace"]
)
def test_train_policy_passes_the_task_s_action_coding(monkeypatch, task, relative, n_action_steps):
    from worldsim.policies import train

    seen = []
    monkeypatch.setattr(train, "main", seen.append)
    assert cli.main(["train", "policy", f"task={task}", "training=smoke"]) == 0
    (argv,) = seen
    assert argv[argv.index("--n-action-steps") + 1] == n_action_steps
    if relative is None:
        assert "--relative-to-obs" not in argv
    else:
        start = argv.index("--relative-to-obs") + 1
        assert argv[start : start + len(relative)] == relative
    train.parse_args(argv)  # and the training script accepts them


def test_train_policy_on_pusht_runs_the_shipped_recipe(monkeypatch):
    """The defaults reproduce worldsim/checkpoints/pusht-state/model.json's train_command."""
    import json

    from worldsim.policies import train
    from worldsim.policies.diffusion_policy import SHIPPED

    seen = []
    monkeypatch.setattr(train, "main", seen.append)
    assert cli.main(["train", "policy", "task=pusht", "out=runs/x"]) == 0
    ours = vars(train.parse_args(seen[0]))
    shipped_command = json.loads((SHIPPED / "pusht-state" / "model.json").read_text())["train_command"]
    shipped = vars(train.parse_args(shipped_command.split()[3:]))
    for args in (ours, shipped):
        args["discrete_dims"] = args["discrete_dims"] or []  # none given and an empty list say the same
    # Where the checkpoint goes, how a missing dataset is recorded, the device and the score the in-training
    # evaluations report do not change the weights.
    ignored = {"out", "collect", "collect_seed", "device", "score_key"}
    differ = {key for key in shipped if ours[key] != shipped[key]} - ignored
    assert not differ, {key: (ours[key], shipped[key]) for key in differ}
    assert (ours["collect"], ours["collect_seed"]) == (1000, 1000)  # how the shipped dataset was recorded
