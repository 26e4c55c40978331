"""What every command shares: settings from the context, JSON and table output."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from pipeline.settings import Settings, load


def settings_of(ctx: click.Context, **flags: Any) -> Settings:
    root = ctx.find_root()
    base: dict[str, Any] = dict(root.obj or {})
    repo = flags.pop("repo", None) or base.pop("repo", None)
    base.update({k: v for k, v in flags.items() if v is not None})
    return load(repo=repo, flags=base)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def notify_drift(settings: Settings, publisher: Any, found: Sequence[Any], *, repaired: bool) -> None:
    """One `drift` event per tag that differs from the ledger (`TagState`s of status or sync)."""
    from pipeline import notify

    for state in found:
        if state.drift not in {"missing", "moved"}:
            continue
        p = state.pointer
        notify.send(
            settings,
            notify.drift_event(
                image=p.image,
                stage=p.stage,
                sha=p.sha,
                digest=p.digest,
                drift=state.drift,
                tag=publisher.tag_ref(p.image, p.stage),
                repaired=repaired,
            ),
        )
