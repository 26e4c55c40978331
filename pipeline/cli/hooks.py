"""`envctl hooks install GIT_DIR [--wait]` and the hook's own entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline import output
from pipeline.cli.common import Group, settings_of
from pipeline.cli.pipeline import execute, print_run
from pipeline.errors import EnvctlError
from pipeline.pipelines import hooks as triggers


@click.group("hooks", cls=Group)
def group() -> None:
    """Git hooks that run the pipelines on push."""


@group.command("install")
@click.argument("git_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Run pipelines inside the push and show their output and verdict.")
@click.pass_context
def install(ctx: click.Context, git_dir: Path, wait: bool) -> None:
    """Install a post-receive hook in GIT_DIR (a bare repository).

    \b
    From then on `git push origin staging` runs the staging pipeline and
    `git push origin production` the production pipeline. Without --wait the push
    returns at once and says `pipeline <id> queued; log: <path>`. The hook carries
    this shell's envctl settings (state folder, ledger, registry); its secrets (ledger
    password, registry token) go to a file of their own, mode 0600, under
    ~/.config/envctl/hooks/, which the hook reads when its environment lacks them.
    """
    settings = settings_of(ctx)
    hook = triggers.install(settings, git_dir, wait=wait)
    output.info(
        f"installed {hook} ({'waits for' if wait else 'queues'} pipelines; ledger {settings.ledger_url})"
    )


@group.command("post-receive", hidden=True)
@click.option("--git-dir", "git_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--secrets-file", "secrets", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True)
@click.pass_context
def post_receive(ctx: click.Context, git_dir: Path, secrets: Path | None, wait: bool) -> None:
    """Read `old new ref` lines from standard input and start the pipelines."""
    triggers.clean_git_env()
    if secrets is not None:
        triggers.load_secrets(secrets)
    updates = triggers.parse_updates(sys.stdin.read())
    settings = settings_of(ctx, repo=git_dir)
    ignored = [u.ref for u in updates if u.ref not in triggers.BRANCH_REFS]
    if ignored:
        shown = ", ".join(repr(r) if not r.isprintable() else r for r in ignored)
        output.info(f"envctl: no pipeline for {shown} (pipelines run for staging and production)")
    for update in updates:
        branch = triggers.BRANCH_REFS.get(update.ref)
        if branch is None:
            continue
        if update.new == triggers.ZERO:
            output.info(f"envctl: {branch} was deleted; no pipeline")
            continue
        if not wait:
            run_id, log = triggers.spawn(settings, git_dir, branch, update.new)
            click.echo(f"pipeline {run_id} queued; log: {log}")
            continue
        try:
            record, _outcome = execute(settings, branch=branch, rev=update.new, trigger="hook")
        except EnvctlError as e:
            click.echo(f"envctl: pipeline for {branch} could not run: {e}", err=True)
            continue
        print_run(record)
        click.echo(f"pipeline {record.run_id}: {branch} {record.state}; log: {record.log}")
