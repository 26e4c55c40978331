"""What every command shares: settings from the context, JSON and table output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline import output
from pipeline.settings import Settings, load

F = TypeVar("F", bound=Callable[..., Any])


def summary(command: click.Command) -> str:
    """A command's one-line summary: its short help, else the first sentence of its help, whole."""
    return command.short_help or command.get_short_help_str(limit=10_000)


class Group(click.Group):
    """A command group whose listing shows every summary whole (click cuts them to the width with '...')."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, summary(command)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _deprecated_repo(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None:
        output.warn(
            f"`{ctx.command_path} --repo PATH` is deprecated; write the global option first: "
            f"`envctl --repo PATH {ctx.command_path.removeprefix('envctl ')} ...`"
        )
    return value


def deprecated_repo(f: F) -> F:
    """The per-command `--repo` of older versions, hidden: `envctl --repo PATH COMMAND` is the one way."""
    option = click.option(
        "--repo",
        type=click.Path(file_okay=False, path_type=Path),
        hidden=True,
        callback=_deprecated_repo,
        help="Deprecated: use the global `envctl --repo PATH`.",
    )
    return option(f)


def settings_of(ctx: click.Context, **flags: Any) -> Settings:
    root = ctx.find_root()
    base: dict[str, Any] = dict(root.obj or {})
    repo = flags.pop("repo", None) or base.pop("repo", None)
    base.update({k: v for k, v in flags.items() if v is not None})
    return load(repo=repo, flags=base)


def emit_json(data: Any) -> None:
    # one write: `json.dump` to the stream writes each token (tens of thousands for `status`)
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
