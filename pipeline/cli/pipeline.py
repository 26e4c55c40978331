"""`envctl pipeline run | list | show`: the staging and production pipelines."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from pipeline import output
from pipeline.cli import complete
from pipeline.cli.common import Group, deprecated_repo, emit_json, settings_of, table
from pipeline.errors import Refused, Unavailable, UsageError
from pipeline.ledger.db import Ledger
from pipeline.pipelines import records as runs
from pipeline.pipelines.flows import Outcome, check_branch, run_pipeline
from pipeline.promote.policy import describe_ran_on
from pipeline.settings import Settings
from pipeline.source import default_rev, open_repo, resolve


class _Tee(io.TextIOBase):
    """Write to the terminal and to the run's log at once."""

    def __init__(self, first: TextIO, second: TextIO) -> None:
        self.first, self.second = first, second

    def write(self, text: str) -> int:
        self.first.write(text)
        self.second.write(text)
        return len(text)

    def flush(self) -> None:
        self.first.flush()
        self.second.flush()

    def isatty(self) -> bool:
        return self.first.isatty()


def _same_file(stream: TextIO, path: Path) -> bool:
    try:
        a, b = os.fstat(stream.fileno()), os.stat(path)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def execute(
    settings: Settings,
    *,
    branch: str,
    rev: str,
    run_id: str | None = None,
    trigger: str = "manual",
    force_all: bool = False,
    only: dict[str, str] | None = None,
    reason: str | None = None,
    allow_cpu: bool = False,
) -> tuple[runs.PipelineRun, Outcome]:
    """Run one pipeline with its record and log; the hooks call this too."""
    from pipeline.build.engine import connect

    chosen = check_branch(branch)
    repo = open_repo(settings.repo)
    if repo.bare and settings.state_dir.is_relative_to(settings.repo):
        output.warn(
            f"the ledger is inside the bare repository ({settings.state_dir}); set ENVCTL_STATE_DIR "
            "to share it with your checkout (hooks installed with `envctl hooks install` carry it)"
        )
    tree = resolve(repo, rev)
    ledger = Ledger.for_settings(settings)
    try:
        client: Any = connect(settings.docker_host, timeout=30)
    except Unavailable:
        client = None
    for dead in runs.reap(ledger, client):
        output.warn(f"pipeline {dead} was killed before it finished; marked failed")
    run_id = run_id or runs.new_run_id()
    log_path = runs.log_path(settings.state_dir, run_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    runs.start(
        ledger, run_id=run_id, branch=chosen, sha=tree.sha, log=log_path, trigger=trigger, reason=reason
    )
    original = sys.stderr
    with open(log_path, "a", buffering=1) as log_file:
        if not _same_file(original, log_path):
            sys.stderr = _Tee(original, log_file)
        outcome = Outcome()
        state: runs.RunState = "failed"
        try:
            output.info(f"pipeline {run_id}: {chosen} at {tree.sha[:12]} ({trigger})")
            if reason:
                output.info(f"pipeline {run_id}: {reason}")
            outcome = run_pipeline(
                settings,
                repo,
                tree,
                chosen,
                ledger,
                run_id,
                force_all=force_all,
                only=only,
                allow_cpu=allow_cpu,
            )
            state = outcome.state
            output.info(f"pipeline {run_id}: {state}")
        except KeyboardInterrupt:
            outcome.verdicts.clear()
            raise
        finally:
            runs.finish(ledger, run_id, state, {k: v.to_json() for k, v in outcome.verdicts.items()})
            sys.stderr = original
    return runs.get(ledger, run_id), outcome


def print_run(run: runs.PipelineRun) -> None:
    table(
        ["IMAGE", "VERDICT", "DETAIL"],
        [[image, v.get("state", ""), v.get("detail", "")] for image, v in sorted(run.verdicts.items())],
    )
    for image, verdict in sorted(run.verdicts.items()):
        if isinstance(verdict, dict) and verdict.get("test_run"):
            where = describe_ran_on(verdict.get("ran_on"))
            click.echo(f"{image}: tested by {verdict['test_run']} on {where}")
        if isinstance(verdict, dict) and verdict.get("artifacts"):
            click.echo(f"{image}: test run {verdict.get('test_run')}: artifacts in {verdict['artifacts']}")


@click.group("pipeline", cls=Group)
def group() -> None:
    """Run the staging or production pipeline by hand; list and show runs."""


@group.command("run")
@click.option("--branch", required=True, help="staging or production.")
@click.option("--rev", help="The commit to run for (branch, tag, SHA or prefix).")
@deprecated_repo
@click.option("--all", "force_all", is_flag=True, help="Staging: every image, changed or not.")
@click.option(
    "--refresh-base",
    is_flag=True,
    help="Staging: rebuild, test and promote only the images whose base image moved (`envctl bases`).",
)
@click.option(
    "--allow-cpu",
    is_flag=True,
    help="Staging, local backend: test a spec that asks for an accelerator on the CPU (recorded).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.option("--run-id", hidden=True)
@click.option("--trigger", hidden=True)
@click.pass_context
def run_command(
    ctx: click.Context,
    branch: str,
    rev: str | None,
    repo: Path | None,
    force_all: bool,
    refresh_base: bool,
    allow_cpu: bool,
    as_json: bool,
    run_id: str | None,
    trigger: str | None,
) -> None:
    """Run the pipeline of BRANCH for commit REV, as a push would.

    \b
    staging:    a version of REV per image (a retag when its inputs already passed,
                else build or reuse and test), then staging := REV
    production: promote the tested version whose inputs equal REV's; never builds
    --refresh-base (staging): for each image whose staging version was built on
                another digest of its base than the base names now, build
                staging's commit again on the new base (a commit envctl writes,
                see README), test it and move staging; nothing else runs

    Exits 0 when every image passed or had nothing to do, 1 when one failed or was
    refused, 3 when a part was unavailable. A re-run for a done SHA moves nothing
    and republishes the tags the registry lost.
    """
    settings = settings_of(ctx, repo=repo)
    if refresh_base:
        if check_branch(branch) != "staging" or force_all:
            raise UsageError("--refresh-base runs on the staging branch only, without --all")
        records = _refresh(settings, rev, trigger or "base-refresh")
    elif rev is None:
        raise UsageError("give the commit to run for with --rev REV (or --refresh-base)")
    else:
        records = [
            execute(
                settings,
                branch=branch,
                rev=rev,
                run_id=run_id,
                trigger=trigger or "manual",
                force_all=force_all,
                allow_cpu=allow_cpu,
            )
        ]
    if as_json:
        emit_json(records[0][0].to_json() if not refresh_base else [r.to_json() for r, _ in records])
    else:
        for record, _ in records:
            print_run(record)
            output.info(f"log: {record.log}")
    for record, outcome in records:
        if outcome.exit_code == 3:
            raise Unavailable(
                f"pipeline {record.run_id} could not finish: a part is unavailable (see {record.log})"
            )
        if outcome.exit_code:
            bad = [k for k, v in outcome.verdicts.items() if v.state not in {"promoted", "noop", "unchanged"}]
            raise Refused(f"pipeline {record.run_id} failed for {', '.join(bad)}; see {record.log}")


def _refresh(settings: Settings, rev: str | None, trigger: str) -> list[tuple[runs.PipelineRun, Outcome]]:
    """One staging run per staging commit whose images' bases moved; none when no base moved."""
    from pipeline.backends import base_reader_for, platform_for
    from pipeline.pipelines import refresh
    from pipeline.spec.model import images_at

    repo = open_repo(settings.repo)
    head = resolve(repo, rev or default_rev(repo))
    ledger = Ledger.for_settings(settings)
    read = base_reader_for(settings)
    plans, rows = refresh.plan(ledger, repo, images_at(head), platform_for(settings), read)
    for row in rows:
        if row.error:
            output.warn(f"{row.image}: {row.error}")
    unreadable = [row.image for row in rows if row.error and row.current is None]
    if not plans:
        output.info("no base moved; nothing to rebuild")
    done = []
    for plan in plans:
        sha = refresh.commit(repo, plan)
        output.info(f"{', '.join(sorted(plan.reasons))}: rebuilding {plan.origin.sha[:12]} as {sha[:12]}")
        done.append(
            execute(
                settings,
                branch="staging",
                rev=sha,
                trigger=trigger,
                force_all=True,
                only=plan.reasons,
                reason=plan.reason,
            )
        )
    if unreadable:
        for record, _ in done:
            print_run(record)
        raise (UsageError if any(row.bad_input for row in rows if row.image in unreadable) else Unavailable)(
            f"the base of {', '.join(unreadable)} could not be read (see the warnings above); "
            "its refresh did not run"
        )
    return done


@group.command("list")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=20,
    show_default=True,
    help="How many runs, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.pass_context
def list_command(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Show recent pipeline runs: ID, branch, SHA, state, duration."""
    settings = settings_of(ctx)
    found = runs.listing(Ledger.for_settings(settings), limit)
    if as_json:
        emit_json([r.to_json() for r in found])
        return
    table(
        ["RUN", "BRANCH", "SHA", "STATE", "STARTED", "SECONDS", "IMAGES"],
        [
            [
                r.run_id,
                r.branch,
                r.sha[:12],
                r.state,
                r.started_at.isoformat(timespec="seconds"),
                r.to_json()["seconds"],
                ", ".join(f"{k}={v.get('state')}" for k, v in sorted(r.verdicts.items()) if k != "_"),
            ]
            for r in found
        ],
    )


@group.command("show")
@click.argument("run_id", shell_complete=complete.run_ids)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.option("--log", "with_log", is_flag=True, help="Print the run's log too.")
@click.pass_context
def show_command(ctx: click.Context, run_id: str, as_json: bool, with_log: bool) -> None:
    """Show one run (an ID or its prefix): verdict per image and log path."""
    settings = settings_of(ctx)
    record = runs.get(Ledger.for_settings(settings), run_id)
    if as_json:
        emit_json(record.to_json())
    else:
        click.echo(f"run {record.run_id}: {record.branch} at {record.sha} ({record.trigger}) {record.state}")
        if record.reason:
            click.echo(f"reason: {record.reason}")
        print_run(record)
        click.echo(f"log: {record.log}")
    if with_log:
        click.echo(Path(record.log).read_text(errors="replace") if Path(record.log).exists() else "(no log)")
