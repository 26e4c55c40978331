"""`envctl`: the entry point; errors are caught here once and printed as one line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from pipeline import __version__
from pipeline.cli import build, moves, reads, stack, test, validate
from pipeline.cli import hooks as hooks_cli
from pipeline.cli import instances as instances_cli
from pipeline.cli import pipeline as pipeline_cli
from pipeline.errors import EnvctlError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="envctl")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    help="The repository with environments/ (default: the current one).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, repo: Path | None, debug: bool) -> None:
    """Build, test, promote and roll back notebook images from one git repository.

    \b
    A push to `staging` builds an image per commit and tests its notebooks;
    a merge to `production` promotes exactly the tested bytes.
    Start with `envctl stack up`, then `envctl validate`.

    \b
    Exit codes: 0 done; 1 the operation said no; 2 bad input; 3 a part is unavailable.
    """
    ctx.obj = {"repo": repo, "debug": debug or None}
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")


cli.add_command(stack.group)
cli.add_command(build.command)
cli.add_command(validate.command)
cli.add_command(test.command)
cli.add_command(pipeline_cli.group)
cli.add_command(hooks_cli.group)
cli.add_command(instances_cli.group)
for _command in (*moves.commands, *reads.commands):
    cli.add_command(_command)


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
        e.show()
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
