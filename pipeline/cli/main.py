"""`envctl`: the entry point; errors are caught here once and printed as one line."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from pipeline import __version__
from pipeline.errors import EnvctlError

# Every command: where it lives and its one-line summary. `--help` reads this table and
# imports nothing else; a command's module (and what it imports: docker, SQLAlchemy,
# git, Google clients) loads only when that command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": (
        "pipeline.cli.stack:group",
        "Start, inspect or stop the local Docker Engine, registry and base image.",
    ),
    "init": (
        "pipeline.cli.init:command",
        "Scaffold a repository for a new image, or import an existing one (--from DIR).",
    ),
    "validate": (
        "pipeline.cli.validate:command",
        "Check environments/*.yaml: one line per mistake, exit 2 if any.",
    ),
    "lint": (
        "pipeline.cli.lint:command",
        "Find what breaks notebooks in managed runs (installs, credentials, paths), by rule.",
    ),
    "build": ("pipeline.cli.build:command", "Build (or reuse) and push the version of IMAGE at a revision."),
    "test": (
        "pipeline.cli.test:command",
        "Run IMAGE's test notebooks inside the version built from a revision.",
    ),
    "pipeline": (
        "pipeline.cli.pipeline:group",
        "Run the staging or production pipeline; list and show runs.",
    ),
    "promote": ("pipeline.cli.moves:promote", "Point ENV_ID at the tested version of a revision."),
    "rollback": (
        "pipeline.cli.moves:rollback",
        "Point IMAGE's production back at fallback or an earlier tested version.",
    ),
    "pin": ("pipeline.cli.moves:pin", "Hold ENV_ID where it is: pipelines cannot move it until unpin."),
    "unpin": ("pipeline.cli.moves:unpin", "Let pipelines move ENV_ID again."),
    "sync": ("pipeline.cli.moves:sync", "Republish registry tags that differ from the ledger."),
    "signoff": (
        "pipeline.cli.signoff:command",
        "Record that you checked the version IMAGE.staging runs (production may need N).",
    ),
    "status": ("pipeline.cli.reads:status", "Every environment: version, digest, pin and drift of its tag."),
    "history": (
        "pipeline.cli.reads:history",
        "Every move of an environment or an image: when, who, from, to, why.",
    ),
    "describe": (
        "pipeline.cli.reads:describe",
        "ENV_ID's image@digest, SHA, test evidence and SBOM summary.",
    ),
    "diff": ("pipeline.cli.reads:diff", "Packages added, removed and changed between two environments."),
    "report": (
        "pipeline.cli.report:command",
        "Write a static HTML report of environments, history, runs and notebooks (--serve).",
    ),
    "bases": (
        "pipeline.cli.bases:command",
        "Each image's base: the digest staging and production were built on, and its digest now.",
    ),
    "prune": (
        "pipeline.cli.prune:command",
        "Delete registry versions nothing references (pointer, pin, instance, recent history).",
    ),
    "hooks": ("pipeline.cli.hooks:group", "Install the git hook that runs the pipelines on push."),
    "instances": ("pipeline.cli.instances:group", "Notebook instances started from an environment ID."),
    "cloud": ("pipeline.cli.cloud:group", "Set up the Google Cloud side: Cloud Build triggers and checks."),
}


class LazyGroup(click.Group):
    """A group whose commands load on first use; the listing comes from `COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, _, attribute = COMMANDS[cmd_name][0].partition(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary) for name, (_, summary) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="envctl")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    help="The repository with environments/ (default: the current one).",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "gcp"]),
    help="Where builds, tags and instances go (default: the backend setting, else local).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("--no-progress", is_flag=True, help="Plain lines instead of a live status line on a terminal.")
@click.pass_context
def cli(ctx: click.Context, repo: Path | None, backend: str | None, debug: bool, no_progress: bool) -> None:
    """Build, test, promote and roll back notebook images from one git repository.

    \b
    A push to `staging` builds an image per commit and tests its notebooks;
    a merge to `production` promotes exactly the tested bytes.
    Start with `envctl stack up`, then `envctl validate`.

    \b
    Exit codes: 0 done; 1 the operation said no; 2 bad input; 3 a part is unavailable.
    """
    ctx.obj = {"repo": repo, "backend": backend, "debug": debug or None}
    from pipeline import progress

    if no_progress:
        progress.disable()
    # Log lines go above the status line on a terminal (plain lines elsewhere).
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[progress.LogHandler()],
    )


def _unavailable_part(error: BaseException) -> str | None:
    """Which part failed, for errors of the libraries that talk to the parts."""
    module = type(error).__module__.split(".")[0]
    return {
        "docker": "the Docker Engine",
        "requests": "the Docker Engine or the registry",
        "urllib3": "the Docker Engine or the registry",
        "sqlalchemy": "the ledger",
        "psycopg": "the ledger",
        "sqlite3": "the ledger",
        "git": "git",
    }.get(module)


def _click_message(error: click.ClickException) -> str:
    """A usage mistake as one line, with where to read the usage (click prints three or more)."""
    message = " ".join(error.format_message().split())
    context = getattr(error, "ctx", None)
    if isinstance(error, click.UsageError) and context is not None:
        return f"{message.rstrip('.')}; see `{context.command_path} --help`"
    return message


def main(argv: list[str] | None = None) -> Any:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get(
        "ENVCTL_DEBUG", ""
    ).lower() in {"1", "true", "yes", "on"}
    try:
        return cli.main(args=argv, prog_name="envctl", standalone_mode=False)
    except EnvctlError as e:
        if debug:
            raise
        lines = str(e).splitlines() or [type(e).__name__]
        prefix = "envctl: error: "
        click.echo(prefix + lines[0], err=True)
        for line in lines[1:]:
            click.echo(line if lines[0].startswith("build failed") else prefix + line, err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("envctl: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("envctl: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # click 8.2+: a group run alone shows its help
            e.show()
        else:
            click.echo(f"envctl: error: {_click_message(e)}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except OSError as e:
        if debug:
            raise
        click.echo(f"envctl: error: {e.strerror or e} ({e.filename or type(e).__name__})", err=True)
        sys.exit(3)
    except Exception as e:
        part = _unavailable_part(e)
        if debug or part is None:
            raise
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        click.echo(f"envctl: error: {part} failed: {detail}; rerun with --debug for details", err=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
