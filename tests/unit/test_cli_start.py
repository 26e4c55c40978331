"""The CLI's start: `--help` lists every command from its table and loads none of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from pipeline.cli.main import COMMANDS, LazyGroup, cli
from tests.helpers import ROOT, cli_env, envctl

HEAVY = ("docker", "sqlalchemy", "git", "google", "requests", "yaml", "pydantic")


def test_help_lists_every_command_with_its_summary() -> None:
    result = envctl("--help")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Commands:", 1)[1]
    for name, (_, summary) in COMMANDS.items():
        assert name in listed
        assert summary.split()[0] in listed


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_table_entry_loads_the_command_of_that_name(name: str) -> None:
    assert isinstance(cli, LazyGroup)
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command)
    assert command.name == name


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys, json\n"
        "before = set(sys.modules)  # what the interpreter's site (.pth files) loaded\n"
        "from pipeline.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in set(sys.modules) - before)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_unknown_command_is_bad_input() -> None:
    result = envctl("promot")
    assert result.returncode == 2
    assert "No such command 'promot'" in result.stderr


def test_bases_runs_without_the_pipeline_command_or_docker(tmp_path: Path) -> None:
    """`envctl bases` reads specs, the ledger and the registry: no pipeline module, no Docker SDK."""
    from tests import minirepo

    mini = minirepo.make(tmp_path / "repo")
    code = (
        "import sys, json\n"
        "from pipeline.cli.main import main\n"
        "try:\n"
        f"    main(['bases', '--json', '--repo', {str(mini.path)!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in {'docker', 'pipeline.cli.pipeline'})),"
        " file=sys.stderr)\n"
    )
    env = {**cli_env({"ENVCTL_STATE_DIR": str(tmp_path / "state")})}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert json.loads(result.stderr.strip().splitlines()[-1]) == [], result.stderr
