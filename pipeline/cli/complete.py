"""Shell completion of image names, environment IDs and pipeline run IDs.

Click calls these while the user presses TAB (`_ENVCTL_COMPLETE=bash_complete`), so
they are cheap: image names are the file names of `environments/*.yaml`, environments
and runs come from a SQLite ledger through `ledger.quick` (SQLAlchemy only for another
database). Completion never fails: anything that goes wrong completes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import click

from pipeline.ledger.model import STAGES

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from pipeline.settings import Settings

log = logging.getLogger(__name__)
Completer = Callable[[click.Context, click.Parameter, str], "list[CompletionItem]"]


def _settings(ctx: click.Context) -> Settings:
    from pipeline.settings import load

    root = ctx.find_root()
    backend = root.params.get("backend")
    return load(repo=root.params.get("repo"), flags={"backend": backend} if backend else {})


def _spec_images(settings: Settings) -> set[str]:
    from pipeline.spec.names import SPEC_DIR, check_image_name

    found = set()
    for path in (settings.repo / SPEC_DIR).glob("*.y*ml"):
        if path.suffix in {".yaml", ".yml"}:
            try:
                found.add(check_image_name(path.stem))
            except ValueError:
                continue
    return found


def _ledger_images(settings: Settings) -> set[str]:
    from pipeline.ledger import quick

    # Only the read-only quick reader: pressing Tab must never create or migrate a ledger
    # (a PostgreSQL ledger, or one of another schema, completes from the specs alone).
    return set(quick.known_images(settings.ledger_url) or ())


def _run_ids(settings: Settings) -> list[str]:
    from pipeline.ledger import quick

    return list(quick.run_ids(settings.ledger_url) or ())  # read-only, as `_ledger_images`


def _safely(what: str, produce: Callable[[Settings], Iterable[str]], ctx: click.Context) -> list[str]:
    try:
        return sorted(set(produce(_settings(ctx))))
    except Exception as e:  # completion must never print a traceback into the shell
        log.debug("no completion of %s: %s", what, e)
        return []


def _matching(candidates: Iterable[str], incomplete: str) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(c) for c in candidates if c.startswith(incomplete)]


def images(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """IMAGE: the specs of the repository and the images the ledger knows."""
    found = _safely("images", lambda s: _spec_images(s) | _ledger_images(s), ctx)
    return _matching(found, incomplete)


def env_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """ENV_ID: every IMAGE.STAGE of the known images."""
    found = _safely("images", lambda s: _spec_images(s) | _ledger_images(s), ctx)
    return _matching((f"{image}.{stage}" for image in found for stage in STAGES), incomplete)


def images_or_env_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """ENV_ID|IMAGE: both."""
    return images(ctx, param, incomplete) + env_ids(ctx, param, incomplete)


def run_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """RUN_ID: the newest pipeline runs of the ledger."""
    return _matching(_safely("runs", _run_ids, ctx), incomplete)


def paths_or(completer: Completer) -> Completer:
    """A completer that offers files too (for arguments that take an image or a path)."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        return [*completer(ctx, param, incomplete), CompletionItem(incomplete, type="file")]

    return complete
