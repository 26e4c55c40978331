"""`envctl build IMAGE --rev REV`: build (or reuse) and push the version of a commit."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline import output
from pipeline.cli import complete
from pipeline.cli.common import deprecated_repo, emit_json, settings_of


@click.command("build")
@click.argument("image", shell_complete=complete.images)
@click.option("--rev", required=True, help="Branch, tag, full SHA or SHA prefix (7+ characters).")
@deprecated_repo
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Hide the build log.")
@click.option("--no-cache", is_flag=True, help="Build every step anew (when a build does run).")
@click.pass_context
def command(
    ctx: click.Context, image: str, rev: str, repo: Path | None, as_json: bool, quiet: bool, no_cache: bool
) -> None:
    """Build IMAGE as it is at commit REV and push <registry>/IMAGE:<full SHA>.

    The spec, Dockerfile and context are read from the commit, never the work tree.
    When a version with the same build inputs exists, the SHA is tagged onto its
    digest with no build. Prints the digest; exits 1 when a Dockerfile step fails.

    \b
    Example:
      envctl build nlp.keras-batch --rev staging
    """
    from pipeline.build.stage import build_version
    from pipeline.ledger.db import Ledger
    from pipeline.source import open_repo, resolve

    settings = settings_of(ctx, repo=repo)
    git_repo = open_repo(settings.repo)
    tree = resolve(git_repo, rev)
    ledger = Ledger.for_settings(settings)
    progress = output.BuildProgress()
    try:
        result = build_version(
            settings,
            git_repo,
            tree,
            image,
            ledger=ledger,
            on_line=None if quiet else progress,
            no_cache=no_cache,
        )
    finally:
        progress.close()
    if as_json:
        emit_json(result.as_json())
    else:
        output.info(f"{image} {tree.sha[:12]}: {result.action} {result.version.image_ref}")
        click.echo(result.version.digest)
