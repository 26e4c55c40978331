"""`envctl prune`: delete from the registry the versions nothing references; the ledger keeps them."""

from __future__ import annotations

from datetime import timedelta

import click

from pipeline import output
from pipeline.cli.common import emit_json, settings_of, table


@click.command("prune")
@click.option(
    "--keep",
    type=click.IntRange(0, 10_000),
    default=3,
    show_default=True,
    help="Keep the last N targets of each environment's history.",
)
@click.option(
    "--older-than",
    "older_than",
    type=click.IntRange(0, 100_000),
    default=1,
    show_default=True,
    help="Only prune versions built more than DAYS days ago (0: any age).",
    metavar="DAYS",
)
@click.option("--dry-run", is_flag=True, help="Say what would be pruned; delete nothing.")
@click.option(
    "--project",
    envvar="GOOGLE_CLOUD_PROJECT",
    help="gcp backend: the project of the instances (those of every zone are kept).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(
    ctx: click.Context,
    keep: int,
    older_than: int,
    dry_run: bool,
    project: str | None,
    as_json: bool,
) -> None:
    """Delete the registry tags and manifests of versions nothing references.

    Kept: what a pointer (staging, production, fallback) or a pin holds, what an
    instance runs (on gcp: in any zone of the project), the last N targets of each
    environment's history, what is newer than --older-than days, and, for 7 days,
    what was never tested (it may await its test). The ledger keeps every version,
    marked pruned; `envctl build IMAGE --rev SHA` brings one back. Locally the
    registry's garbage collection runs afterwards, with the registry stopped, and
    the bytes freed are reported. Exits 3 when the registry, the ledger or the
    instances can't be read, or when the registry did not start again after it.
    """
    from pipeline.backends import garbage_collector_for, instance_host_for, publisher_for
    from pipeline.errors import Unavailable
    from pipeline.ledger.db import Ledger
    from pipeline.ledger.pointers import known_images
    from pipeline.pipelines.retention import prune
    from pipeline.stack.registry_server import RegistryDown

    settings = settings_of(ctx)
    ledger = Ledger.for_settings(settings)
    host = instance_host_for(settings, project=project, zone="-", command="envctl prune")
    in_use = {i.digest: i.name for i in host.list()}
    publisher = publisher_for(settings)
    plans = prune(
        settings,
        ledger,
        publisher,
        known_images(ledger),
        keep=keep,
        older_than=timedelta(days=older_than),
        in_use=in_use,
        dry_run=dry_run,
    )
    freed: int | None = None
    collect = garbage_collector_for(settings)
    if collect is not None and any(p.pruned for p in plans):
        try:
            freed = collect()
        except RegistryDown:
            raise
        except Unavailable as e:
            output.warn(f"garbage collection skipped: {e}; the deleted manifests' layers stay on disk")
    if as_json:
        emit_json({"dry_run": dry_run, "images": [p.to_json() for p in plans], "bytes_freed": freed})
        return
    table(
        ["IMAGE", "KEPT", "PRUNE" if dry_run else "PRUNED", "SKIPPED"],
        [[p.image, len(p.kept), len(p.prune) if dry_run else len(p.pruned), len(p.skipped)] for p in plans],
    )
    if freed is not None:
        output.info(f"registry garbage collection: {freed} bytes freed")
