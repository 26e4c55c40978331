"""`envctl init`: scaffold a repository for a new image, or import an existing layout."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import settings_of
from pipeline.spec.init import init


@click.command("init")
@click.option(
    "--image", help="The image's name, TEAM.TASK (import: default _IMAGE_NAME of cloudbuild*.yaml)."
)
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, path_type=Path),
    help="Import the layout in DIR: a root Dockerfile, test_notebooks/, cloudbuild*.yaml.",
    metavar="DIR",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist and differ.")
@click.pass_context
def command(ctx: click.Context, image: str | None, source: Path | None, force: bool) -> None:
    """Scaffold environments/, docker/, test-notebooks/, cloudbuild/ and .gitignore.

    With --from DIR, import an existing repository: its root Dockerfile moves to
    docker/IMAGE/ with `ARG BASE_IMAGE` and `FROM ${BASE_IMAGE}` (the original FROM
    becomes the spec's cloud base), its test notebooks stay where they are, and the
    spec is written. Running it again changes nothing; a file that exists is never
    overwritten without --force. Prints what it did and what to check next.

    \b
    Examples:
      envctl init --image nlp.keras-batch
      envctl init --from .
    """
    # The repository is the folder init runs in (or the global --repo), never a parent
    # folder that happens to hold .git or environments/.
    given = (ctx.find_root().obj or {}).get("repo")
    repo = (Path(given) if given else Path.cwd()).resolve()
    settings = settings_of(ctx)
    plan, done = init(repo, image=image, source=source, force=force, local_base=settings.base_image)
    for line in done:
        click.echo(line, err=True)
    for path in plan.kept:
        click.echo(f"{path} exists, left as is", err=True)
    for path in plan.stale:
        click.echo(
            f"kept {path}: it lacks FROM ${{BASE_IMAGE}}, which envctl builds with (--force overwrites it)",
            err=True,
        )
    if not done and not plan.stale:
        click.echo(f"nothing to do: {plan.image} is set up", err=True)
        return
    click.echo("next:", err=True)
    for note in plan.notes:
        click.echo(f"  - {note}", err=True)
