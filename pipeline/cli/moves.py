"""`envctl promote | rollback | pin | unpin | sync`: the commands that move environments."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pipeline import output
from pipeline.cli import complete
from pipeline.cli.common import emit_json, settings_of
from pipeline.ledger.model import check_image_name, parse_env_id

if TYPE_CHECKING:
    from pipeline.promote.moves import Outcome

# SQLAlchemy, GitPython and requests load inside the commands (completion imports this module);
# promote and rollback of a SQLite ledger load none of them (`pipeline.ledger.lite`).

_force = click.option("--force", is_flag=True, help="Override the rules; recorded on the event.")
_reason = click.option("--reason", help="Why; recorded on the event.")
_json = click.option("--json", "as_json", is_flag=True, help="Print the moves as JSON.")


def _report(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        emit_json(outcome.to_json())
        return
    if outcome.forced_over:
        output.warn(f"forced over: {'; '.join(outcome.forced_over)}")
    for ref in outcome.republished:
        output.info(f"republished {ref}, which the registry had lost")
    if not outcome.changed:
        output.info(f"{outcome.image}: nothing to move")
    for step in outcome.steps:
        before = step.from_sha[:12] if step.from_sha else "(none)"
        output.info(f"{outcome.image}.{step.stage}: {before} -> {step.to_sha[:12]} ({step.to_digest})")


@click.command("promote")
@click.argument("env_id", shell_complete=complete.env_ids)
@click.option("--rev", required=True, help="Branch, tag, SHA or SHA prefix (7+) of a built version.")
@_force
@_reason
@_json
@click.pass_context
def promote(
    ctx: click.Context, env_id: str, rev: str, force: bool, reason: str | None, as_json: bool
) -> None:
    """Point ENV_ID (IMAGE.staging or IMAGE.production) at the version built from REV.

    \b
    staging moves only forward (REV descends from the current staging SHA);
    production needs passing test evidence for the version's digest and keeps
    the old production as IMAGE.fallback, in the same transaction.
    Exits 1 when a rule refuses (--force overrides), 3 when the registry is down.
    """
    from pipeline.ledger.lite import for_moves
    from pipeline.promote import moves as promotion

    env = parse_env_id(env_id)
    settings = settings_of(ctx)
    ledger = for_moves(settings)
    _report(promotion.promote(settings, ledger, env, rev, force=force, reason=reason), as_json)


@click.command("rollback")
@click.argument("image", shell_complete=complete.images)
@click.option(
    "--rev", "--to", "to", metavar="SHA_PREFIX", help="A tested version (7+ characters of its SHA)."
)
@_force
@_reason
@_json
@click.pass_context
def rollback(
    ctx: click.Context, image: str, to: str | None, force: bool, reason: str | None, as_json: bool
) -> None:
    """Point IMAGE.production back at IMAGE.fallback, or at the version --rev names.

    The target needs passing test evidence (--force overrides). A rollback is a
    new event; history is never rewritten.
    """
    from pipeline.ledger.lite import for_moves
    from pipeline.promote import moves as promotion

    settings = settings_of(ctx)
    ledger = for_moves(settings)
    _report(promotion.rollback(settings, ledger, image, to=to, force=force, reason=reason), as_json)


@click.command("pin")
@click.argument("env_id", shell_complete=complete.env_ids)
@click.option("--reason", required=True, help="Why it is held, e.g. 'incident 42'.")
@click.pass_context
def pin(ctx: click.Context, env_id: str, reason: str) -> None:
    """Hold ENV_ID where it is: every move is refused until `envctl unpin` (or --force)."""
    from pipeline.ledger.db import Ledger
    from pipeline.promote import moves as promotion

    env = parse_env_id(env_id)
    settings = settings_of(ctx)
    changed = promotion.set_pin(settings, Ledger.for_settings(settings), env, pinned=True, reason=reason)
    output.info(f"{env}: {'pinned' if changed else 'already pinned'}")


@click.command("unpin")
@click.argument("env_id", shell_complete=complete.env_ids)
@_reason
@click.pass_context
def unpin(ctx: click.Context, env_id: str, reason: str | None) -> None:
    """Let pipelines move ENV_ID again."""
    from pipeline.ledger.db import Ledger
    from pipeline.promote import moves as promotion

    env = parse_env_id(env_id)
    settings = settings_of(ctx)
    changed = promotion.set_pin(settings, Ledger.for_settings(settings), env, pinned=False, reason=reason)
    output.info(f"{env}: {'unpinned' if changed else 'was not pinned'}")


@click.command("sync")
@click.argument("image", required=False, shell_complete=complete.images)
@click.option("--json", "as_json", is_flag=True, help="Print the republished tags as JSON.")
@click.pass_context
def sync(ctx: click.Context, image: str | None, as_json: bool) -> None:
    """Republish the registry tags of IMAGE (default: every image) from the ledger."""
    from pipeline.backends import publisher_for
    from pipeline.ledger.db import Ledger
    from pipeline.ledger.pointers import require_known
    from pipeline.publish import tags as publish

    settings = settings_of(ctx)
    ledger = Ledger.for_settings(settings)
    if image is not None:
        require_known(ledger, check_image_name(image))
    publisher = publisher_for(settings)
    fixed = publish.sync(ledger, publisher, image)
    from pipeline import notify

    notify.drifts(settings, publisher, fixed, repaired=True)
    for state in fixed:
        p = state.pointer
        output.info(f"{p.image}.{p.stage}: {state.drift}; republished {publisher.tag_ref(p.image, p.stage)}")
    output.info(f"sync: {len(fixed)} tag(s) republished; the registry matches the ledger")
    if as_json:
        emit_json([{**state.to_json(publisher), "republished": True} for state in fixed])


commands = [promote, rollback, pin, unpin, sync]
