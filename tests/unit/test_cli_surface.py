"""The command surface agrees with itself: every command's summary is whole, flags are
named alike everywhere, and shell completion offers images, environment IDs and run IDs
from a real repository and ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from pipeline.cli.common import summary
from pipeline.cli.main import COMMANDS, cli
from pipeline.ledger import pointers
from pipeline.ledger.db import SCHEMA_VERSION, Ledger, Version, now
from pipeline.ledger.pointers import Who, move, read
from pipeline.pipelines import records
from tests.helpers import ENVCTL, ROOT, cli_env, envctl

#: Names of options that take a revision under another name than --rev.
REVISION_NAMES = {"--sha", "--commit", "--revision", "--ref", "--to"}
#: Commands whose revision option keeps an older second name beside --rev.
KEPT_ALIASES = {("rollback", "--to")}
#: Documented exceptions to "ENV_ID is positional" (DESIGN.md: instances create NAME --env ENV_ID).
ENV_ID_OPTIONS = {("instances create", "--env")}


def walk(group: click.Group, ctx: click.Context, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        path = f"{prefix}{name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from walk(command, click.Context(command, parent=ctx, info_name=name), path + " ")


ALL = list(walk(cli, click.Context(cli, info_name="envctl")))


def test_the_walk_finds_every_table_command_and_the_subcommands() -> None:
    names = {path for path, _ in ALL}
    assert set(COMMANDS) <= names
    assert {"stack up", "pipeline run", "pipeline show", "instances create", "cloud setup"} <= names


@pytest.mark.parametrize(("path", "command"), ALL, ids=[p for p, _ in ALL])
def test_flags_agree(path: str, command: click.Command) -> None:
    for param in command.params:
        if isinstance(param, click.Option):
            names = set(param.opts) | set(param.secondary_opts)
            if not param.hidden:
                assert "--repo" not in names, f"{path}: --repo is a global option only"
            assert "--backend" not in names, f"{path}: --backend is a global option only"
            for name in names & REVISION_NAMES:
                assert (path, name) in KEPT_ALIASES and "--rev" in param.opts, (
                    f"{path}: {name} takes a revision; call it --rev"
                )
            if param.metavar == "ENV_ID":
                assert (path, param.opts[0]) in ENV_ID_OPTIONS, f"{path}: ENV_ID is positional"
        else:
            metavar = param.make_metavar(click.Context(command))
            if "env" in (param.name or "") and "ENV_ID" not in metavar:
                pytest.fail(f"{path}: argument {param.name} names an environment: show it as ENV_ID")


def test_the_root_has_the_global_options() -> None:
    options = {o for p in cli.params for o in getattr(p, "opts", [])}
    assert {"--repo", "--backend", "--debug"} <= options


@pytest.mark.parametrize("group", ["", *sorted(p for p, c in ALL if isinstance(c, click.Group))])
def test_every_listing_shows_whole_one_line_summaries(group: str) -> None:
    result = subprocess.run(
        [*ENVCTL, *group.split(), "--help"],
        cwd=ROOT,
        env=cli_env({"COLUMNS": "60"}),  # a narrow terminal: click would cut summaries with '...'
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("Commands:", 1)[1]
    assert "..." not in listing, listing
    for path, command in ALL:
        parent, _, name = path.rpartition(" ")
        if parent == group and not command.hidden:
            text = COMMANDS[name][1] if not group else summary(command)
            assert text and "\n" not in text and text.endswith((".", ")")), (path, text)
            assert " ".join(text.split()[:3]) in " ".join(listing.split()), (path, text)


def test_a_per_command_repo_still_works_and_says_it_is_deprecated(tmp_path: Path) -> None:
    result = envctl("build", "no.such", "--rev", "HEAD", "--repo", str(tmp_path), cwd=tmp_path)
    assert "deprecated" in result.stderr and "envctl --repo PATH build" in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr  # then: tmp_path is not a git repository
    assert "is not a git repository" in result.stderr


# completion --------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with two specs and a ledger that knows a third image and two runs."""
    (tmp_path / "environments").mkdir()
    for image in ("nlp.keras-batch", "nlp.torch"):
        (tmp_path / "environments" / f"{image}.yaml").write_text(f"image: {image}\n")
    (tmp_path / "environments" / "README.md").write_text("not a spec\n")
    ledger = Ledger.open(f"sqlite:///{tmp_path / '.envctl' / 'ledger.db'}")
    version = Version(
        image="cv.segment",
        sha="a" * 40,
        tree="b" * 40,
        inputs_key="k",
        build_key="k",
        digest="sha256:" + "c" * 64,
        image_ref="localhost:5000/cv.segment@sha256:" + "c" * 64,
        size=1,
        reused_from=None,
        labels={},
        sbom={},
        created_at=now(),
    )
    ledger.record_version(version)
    with ledger.transaction() as conn:
        move(
            conn, read(conn, "cv.segment", "staging"), version.sha, version.digest, "promote", Who(actor="t")
        )
    for run_id in ("20261123-aaaa", "20261123-bbbb"):
        records.start(ledger, run_id=run_id, branch="staging", sha="a" * 40, log=tmp_path / "l", trigger="t")
    assert [p.image for p in pointers.pointers(ledger)] == ["cv.segment"]
    return tmp_path


def complete(repo: Path, words: str, shell: str = "bash") -> list[str]:
    """What click's completion answers for `words` (the last one being completed), as the shell asks."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = cli_env({"_ENVCTL_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    result = subprocess.run(
        ENVCTL, cwd=repo, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    if shell == "bash":
        return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line.startswith("plain,")]
    lines = result.stdout.splitlines()
    return [lines[i + 1] for i in range(0, len(lines), 3) if lines[i] == "plain"]


def test_images_complete_from_the_specs_and_the_ledger(repo: Path) -> None:
    assert complete(repo, "envctl build ") == ["cv.segment", "nlp.keras-batch", "nlp.torch"]
    assert complete(repo, "envctl status nlp.t") == ["nlp.torch"]
    assert complete(repo, "envctl rollback cv") == ["cv.segment"]
    assert complete(repo, "envctl sync nlp.", shell="zsh") == ["nlp.keras-batch", "nlp.torch"]


def test_environment_ids_complete_with_every_stage(repo: Path) -> None:
    assert complete(repo, "envctl promote nlp.torch") == [
        "nlp.torch.staging",
        "nlp.torch.production",
        "nlp.torch.fallback",
    ]
    assert complete(repo, "envctl diff cv.segment.staging cv.segment.p") == ["cv.segment.production"]
    assert complete(repo, "envctl instances create box --env cv.segment.f") == ["cv.segment.fallback"]
    found = complete(repo, "envctl history nlp.k")
    assert found[0] == "nlp.keras-batch" and "nlp.keras-batch.production" in found


def test_run_ids_complete_from_the_ledger(repo: Path) -> None:
    assert sorted(complete(repo, "envctl pipeline show 2026")) == ["20261123-aaaa", "20261123-bbbb"]
    assert complete(repo, "envctl pipeline show 20261123-b") == ["20261123-bbbb"]


def test_the_global_repo_option_points_completion_elsewhere(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert complete(elsewhere, "envctl build ") == []
    assert complete(elsewhere, f"envctl --repo {repo} build nlp.") == ["nlp.keras-batch", "nlp.torch"]


def test_completion_with_a_broken_setting_completes_nothing_quietly(repo: Path) -> None:
    (repo / "pyproject.toml").write_text("[tool.envctl]\nledgr_url = 'x'\n")
    assert complete(repo, "envctl promote ") == []


def test_completion_never_creates_or_migrates_a_ledger(repo: Path, tmp_path: Path) -> None:
    import sqlite3

    ledger = repo / ".envctl" / "ledger.db"
    with sqlite3.connect(ledger) as conn:  # a ledger one schema behind this envctl
        conn.execute("UPDATE schema_version SET version = version - 1")
    assert complete(repo, "envctl promote nlp.torch") == [
        "nlp.torch.staging",
        "nlp.torch.production",
        "nlp.torch.fallback",
    ]  # from the specs alone
    with sqlite3.connect(ledger) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION - 1
    fresh = tmp_path / "fresh"
    (fresh / "environments").mkdir(parents=True)
    assert complete(fresh, "envctl pipeline show ") == []
    assert not (fresh / ".envctl").exists()


# start-up ----------------------------------------------------------------------

HEAVY = ("docker", "sqlalchemy", "git", "google", "requests", "yaml", "pydantic")


def loaded_modules(argv: list[str], cwd: Path) -> set[str]:
    """Top-level modules a command imports beyond what the bare interpreter loads on its own."""
    code = (
        "import sys, json, runpy\n"
        "before = set(sys.modules)\n"
        "sys.argv = ['envctl', *json.loads(sys.argv[1])]\n"
        "from pipeline.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})), file=sys.stderr)\n"
    )
    env = cli_env({"PYTHONPATH": str(ROOT)})
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def test_status_of_an_empty_ledger_imports_no_heavy_module(tmp_path: Path) -> None:
    (tmp_path / "environments").mkdir()
    loaded = loaded_modules(["status", "--json"], tmp_path)
    assert "click" in loaded  # the probe sees what the command imports
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert not (tmp_path / ".envctl" / "ledger.db").exists()  # a read creates no ledger


@pytest.mark.parametrize(
    "words",
    [
        "envctl promote n",
        "envctl history n",
        "envctl build n",
        "envctl test n",
        "envctl status n",
    ],
)
def test_completion_imports_no_heavy_module(repo: Path, words: str) -> None:
    asked = {
        "_ENVCTL_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
    }
    os.environ.update(asked)
    try:
        loaded = loaded_modules([], repo)
    finally:
        for key in asked:
            os.environ.pop(key)
    assert "click" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
