"""`envctl lint [IMAGE|NOTEBOOK...]`: what breaks notebooks in managed runs, by rule, before a build."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from pipeline import output
from pipeline.cli import complete
from pipeline.cli.common import emit_json, settings_of
from pipeline.errors import Refused, SpecError, UsageError
from pipeline.settings import Settings
from pipeline.source import Tree, WorkTree
from pipeline.spec import model as spec_module


def staging_sbom(settings: Settings, image: str) -> dict[str, Any] | None:
    """The SBOM of the version `IMAGE.staging` points at; None without a ledger or a version."""
    url = settings.ledger_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    from pipeline.ledger.db import Ledger
    from pipeline.ledger.pointers import current

    ledger = Ledger.open(url)
    pointer = current(ledger, image, "staging")
    if pointer is None or pointer.sha is None:
        return None
    version = ledger.get_version(image, pointer.sha)
    return version.sbom if version is not None and version.sbom else None


def _is_notebook(item: str) -> bool:
    return item.endswith(".ipynb") or os.sep in item or Path(item).is_file()


def _tree(settings: Settings, rev: str | None) -> Tree:
    if rev is None:
        return WorkTree(settings.repo)
    from pipeline import source

    return source.resolve(source.open_repo(settings.repo), rev)


@click.command("lint", short_help="Find what breaks notebooks in managed runs, rule by rule.")
@click.argument(
    "targets", nargs=-1, metavar="[IMAGE|NOTEBOOK]...", shell_complete=complete.paths_or(complete.images)
)
@click.option("--rev", help="Lint the files of this commit instead of the work tree.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option(
    "--sarif",
    "sarif_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the findings as SARIF 2.1.0 to this file (for code-scanning pages).",
)
@click.pass_context
def command(
    ctx: click.Context, targets: tuple[str, ...], rev: str | None, as_json: bool, sarif_file: Path | None
) -> None:
    """Lint the test notebooks of IMAGE (and its lint.paths), or NOTEBOOK files; default: every image.

    \b
    Rules: ENV001 installs in a notebook, ENV002 imports the image lacks, AUTH001 user
    sign-in, AUTH002 clients without project=, ENVV001 unset environment variables,
    PATH001 personal or missing paths, INT001 interactive input, RES001 GPU-only code.
    Suppress with `# envctl: ignore[RULE]` in the cell or `lint.ignore` in the spec.
    Exits 1 when an error-level finding is found.
    """
    from pipeline.spec.lint import report as lint_report
    from pipeline.spec.lint.runner import LintReport, lint_notebook, lint_spec, spec_context

    settings = settings_of(ctx)
    tree = _tree(settings, rev)
    images = [t for t in targets if not _is_notebook(t)]
    notebooks = [t for t in targets if _is_notebook(t)]
    specs: list[spec_module.Spec] = []
    if not targets:
        specs, problems = spec_module.validate(tree)
        if problems:
            raise SpecError("\n".join(str(p) for p in problems))
    specs += [spec_module.load(tree, image) for image in images]
    result = LintReport()
    for spec in specs:
        result.extend(lint_spec(spec, tree, sbom=staging_sbom(settings, spec.image)))
    if notebooks:
        owners, _ = spec_module.validate(tree) if not specs else (specs, [])
        files = frozenset(tree.files(""))
        for item in notebooks:
            path = Path(item) if Path(item).is_absolute() else Path.cwd() / item
            if not path.is_file():
                raise UsageError(f"{item}: no such notebook")
            try:
                rel = path.resolve().relative_to(settings.repo.resolve()).as_posix()
            except ValueError:
                rel = None
            owner = next((s for s in owners if rel and rel in spec_module.lint_notebooks(s, tree)), None)
            if owner is not None and rel is not None:
                result.extend(lint_spec(owner, tree, sbom=staging_sbom(settings, owner.image), only=[rel]))
                continue
            context = spec_context(None, tree, rel or item, None, files if rel else None)
            result.extend(lint_notebook(path.read_bytes(), context))
    if sarif_file is not None:
        sarif_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = sarif_file.with_name(f".{sarif_file.name}.tmp")
        temporary.write_text(lint_report.sarif_text(result))
        temporary.replace(sarif_file)
    if as_json:
        emit_json(result.to_json())
    else:
        for line in lint_report.lines(result):
            click.echo(line)
    for note in result.notes:
        output.info(f"note: {note}")
    errors, warnings = len(result.errors), len(result.findings) - len(result.errors)
    output.info(f"{len(result.notebooks)} notebook(s): {errors} error(s), {warnings} warning(s)")
    if errors:
        raise Refused(f"lint found {errors} error(s); fix them or suppress with # envctl: ignore[RULE]")
