"""`envctl validate`: check environments/*.yaml against the work tree."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import complete
from pipeline.cli.common import emit_json, settings_of
from pipeline.errors import SpecError, shown
from pipeline.source import WorkTree
from pipeline.spec import model as spec


def _repo_relative(item: str, repo: Path) -> str:
    if "/" not in item and not item.endswith((".yaml", ".yml")):
        try:
            return spec.spec_path(spec.check_image_name(item))
        except ValueError as e:
            raise SpecError(f"invalid image name {shown(item)}: {e}") from e
    stem = Path(item).name.removesuffix(".yaml").removesuffix(".yml")
    try:
        spec.check_image_name(stem)
    except ValueError as e:
        raise SpecError(f"{shown(item)}: a spec is named <TEAM.TASK>.yaml; {e}") from e
    path = Path(item) if Path(item).is_absolute() else Path.cwd() / item
    try:
        return path.resolve().relative_to(repo).as_posix()
    except ValueError as e:
        raise SpecError(f"{item}: not inside the repository {repo}") from e


@click.command("validate")
@click.argument("specs", nargs=-1, shell_complete=complete.paths_or(complete.images))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(ctx: click.Context, specs: tuple[str, ...], as_json: bool) -> None:
    """Check SPEC files or image names (default: every environments/*.yaml).

    Each mistake is one line naming the file, the field, what is wrong and the fix.
    Exits 2 when any spec is wrong.
    """
    settings = settings_of(ctx)
    files = [_repo_relative(item, settings.repo) for item in specs]
    good, problems = spec.validate(WorkTree(settings.repo), files or None)
    if as_json:
        emit_json(
            {
                "valid": [s.image for s in good],
                "problems": [{"file": p.file, "field": p.field, "message": p.message} for p in problems],
            }
        )
    else:
        for s in good:
            click.echo(f"ok  {spec.spec_path(s.image)}  ({s.image})", err=True)
    if problems:
        raise SpecError("\n".join(str(p) for p in problems))
