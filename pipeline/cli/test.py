"""`envctl test IMAGE --rev REV`: run the test notebooks of one version and report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pipeline import output
from pipeline.backends import test_runner_for
from pipeline.cli import complete
from pipeline.cli.common import emit_json, settings_of, table
from pipeline.errors import Refused, Unavailable, UsageError

if TYPE_CHECKING:
    from pipeline.testing import Result, TestReport


def _progress(result: Result) -> None:
    where = result.verdict.where()
    output.info(
        f"  {result.verdict.outcome:<17} {result.name}  {result.seconds:.1f} s"
        + (f"  ({where})" if where else "")
    )


def _print(report: TestReport) -> None:
    table(
        ["NOTEBOOK", "RESULT", "DURATION", "CELL", "ERROR"],
        [
            [r.name, r.verdict.outcome, f"{r.seconds:.1f} s", r.verdict.where(), r.verdict.error[:80]]
            for r in report.results
        ],
    )
    for check in report.checks:
        click.echo(f"{check.name}: {'ok' if check.passed else check.verdict.outcome}", err=True)
    failures = [r for r in (*report.checks, *report.results) if not r.passed]
    for result in failures:
        click.echo("")
        click.echo(
            f"{result.name}: {result.verdict.outcome}"
            + (f" at {result.verdict.where()}" if result.verdict.where() else "")
        )
        if result.verdict.source_line:
            click.echo(f"    {result.verdict.source_line}")
        if result.verdict.error:
            click.echo(f"  error: {result.verdict.error}")
        click.echo(f"  hint: {result.verdict.hint}")
        opened = result.html or result.notebook or result.log
        if opened:
            click.echo(f"  see: {report.artifacts / opened}")


@click.command("test")
@click.argument("image", shell_complete=complete.images)
@click.option(
    "--rev", required=True, help="The commit (branch, tag, SHA or SHA prefix) whose version to test."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="Containers (or Vertex AI jobs) at once (default: the CPU count).",
)
@click.option(
    "--allow-cpu",
    is_flag=True,
    help="Locally, run a spec that asks for an accelerator on the CPU (recorded; production refuses it).",
)
@click.pass_context
def command(
    ctx: click.Context, image: str, rev: str, as_json: bool, jobs: int | None, allow_cpu: bool
) -> None:
    """Run every test notebook and smoke check of IMAGE inside the version built from REV.

    \b
    One container per notebook, from the version's digest, with papermill: on the local
    Docker Engine, or with the gcp backend as Vertex AI custom jobs on the spec's `cloud`
    machine and accelerator. Executed notebooks, junit.xml and summary.json go to the
    artifacts folder; the run is recorded in the ledger as evidence, with where it ran.
    Exits 1 when anything failed.
    """
    from pipeline import source
    from pipeline.ledger.db import Ledger
    from pipeline.promote.policy import describe_ran_on
    from pipeline.spec import model as spec_module
    from pipeline.testing.model import INFRASTRUCTURE

    settings = settings_of(ctx, jobs=jobs)
    tree = source.resolve(source.open_repo(settings.repo), rev)
    spec = spec_module.load(tree, image)
    ledger = Ledger.for_settings(settings)
    version = ledger.get_version(image, tree.sha)
    if version is None:
        raise UsageError(
            f"{image} has no version for {tree.sha[:12]}; run `envctl build {image} --rev {rev}` first"
        )
    with output.step(f"test {image} at {tree.sha[:12]} ({version.digest[:19]})"):
        report = test_runner_for(settings, allow_cpu=allow_cpu).run(
            spec,
            tree,
            version,
            jobs=settings.jobs,
            ledger=ledger,
            on_result=_progress,
            on_warning=output.warn,
        )
    if as_json:
        emit_json(report.to_json())
    else:
        _print(report)
    output.info(f"ran on: {describe_ran_on(report.ran_on)}")
    output.info(f"artifacts: {report.artifacts}" + (f" (kept in {report.kept_at})" if report.kept_at else ""))
    if report.infrastructure_failed:
        first = next(r for r in (*report.checks, *report.results) if r.verdict.outcome in INFRASTRUCTURE)
        raise Unavailable(
            f"the test run of {image} at {tree.sha[:12]} hit an infrastructure error ({first.name}: "
            f"{first.verdict.outcome}); no evidence was recorded; {first.verdict.hint}"
        )
    if not report.passed:
        failed = sum(1 for r in report.results if not r.passed)
        raise Refused(f"{failed} of {len(report.results)} tests failed for {image} at {tree.sha[:12]}")
