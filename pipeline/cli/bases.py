"""`envctl bases`: the base digest each environment was built on, against the base's digest now."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline import output
from pipeline.cli.common import deprecated_repo, emit_json, settings_of, table


def _short(value: str | None, n: int = 19) -> str:
    return value[:n] if value else "-"


@click.command("bases")
@click.option("--rev", help="Read the specs at this commit (default: the staging branch, else HEAD).")
@deprecated_repo
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(ctx: click.Context, rev: str | None, repo: Path | None, as_json: bool) -> None:
    """Each image's base: the digest staging and production were built on, and its digest now.

    MOVED names the stages built on another digest of the same base reference;
    `envctl pipeline run --branch staging --refresh-base` rebuilds those images.
    With `build.base.track` in a spec, NEWER lists the base's newer release tags.
    Exits 3 when a base's registry does not answer, 2 when a base reference can't be watched.
    """
    from pipeline.backends import base_reader_for, platform_for
    from pipeline.build.bases import WATCHED, watch
    from pipeline.errors import Unavailable, UsageError
    from pipeline.ledger.db import Ledger
    from pipeline.source import default_rev, open_repo, resolve
    from pipeline.spec.model import images_at

    settings = settings_of(ctx, repo=repo)
    git_repo = open_repo(settings.repo)
    tree = resolve(git_repo, rev or default_rev(git_repo))
    ledger = Ledger.for_settings(settings)
    read = base_reader_for(settings)
    rows = watch(ledger, tree, platform_for(settings), images_at(tree), read)
    if as_json:
        emit_json([row.to_json() for row in rows])
    else:
        table(
            ["IMAGE", "BASE", "NOW", "STAGING ON", "PRODUCTION ON", "MOVED", "NEWER"],
            [
                [
                    row.image,
                    row.base,
                    _short(row.current),
                    _short(b.base_digest) if (b := row.built_on.get("staging")) else "-",
                    _short(b.base_digest) if (b := row.built_on.get("production")) else "-",
                    ",".join(s for s in WATCHED if row.moved(s)) or "-",
                    ",".join(row.newer) or "-",
                ]
                for row in rows
            ],
        )
    for row in rows:
        if row.error:
            output.warn(f"{row.image}: {row.error}")
    if any(row.bad_input for row in rows):
        raise UsageError("a base image reference is not one envctl can watch (see the warnings above)")
    if any(row.error and row.current is None for row in rows):
        raise Unavailable("a base image could not be read from its registry (see the warnings above)")
