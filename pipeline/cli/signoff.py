"""`envctl signoff ENV_ID`: a tester's sign-off on the version staging points at."""

from __future__ import annotations

import click

from pipeline import output
from pipeline.cli import complete
from pipeline.cli.common import emit_json, settings_of
from pipeline.ledger.db import Ledger
from pipeline.promote.signoff import sign


@click.command("signoff", short_help="Record that you checked the version IMAGE.staging runs.")
@click.argument("env_id", metavar="ENV_ID", shell_complete=complete.env_ids)
@click.option("--rev", help="Sign this tested version (SHA) instead of what staging points at now.")
@click.option("--reason", help="What you checked; recorded with the sign-off.")
@click.option("--json", "as_json", is_flag=True, help="Print the sign-off as JSON.")
@click.pass_context
def command(ctx: click.Context, env_id: str, rev: str | None, reason: str | None, as_json: bool) -> None:
    """Record that you checked the version IMAGE.staging points at now (or --rev SHA), by its digest.

    \b
    Who you are comes from ENVCTL_ACTOR, else git user.name, else the OS user
    (self-declared; CI may not sign off).
    A spec's `promotion.production.signoffs: N` makes production refuse a version
    until N distinct people signed its digest (`promote --force` overrides, recorded).
    Exits 2 for anything but a staging environment that points at a version, a --rev
    that is not a tested version of the image, a blank actor, or a CI run.
    """
    settings = settings_of(ctx)
    done, people = sign(settings, Ledger.for_settings(settings), env_id, reason=reason, rev=rev)
    if as_json:
        emit_json({**done.to_json(), "environment": f"{done.image}.staging", "signed_by": people})
        return
    output.info(
        f"{done.image}.staging: {done.actor} signed off {done.sha[:12]} ({done.digest}); "
        f"signed by {len(people)}: {', '.join(people)}"
    )
