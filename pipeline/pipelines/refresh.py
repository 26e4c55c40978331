"""The base refresh: rebuild, test and promote to staging every image whose base moved.

A version is one build of one commit, so a rebuild of staging's commit S on the moved
base needs a commit of its own: envctl writes S' with S's tree and S as its only parent,
and the trailer `Envctl-Refresh-Of: S` (the version carries it as a label; the build
honours the trailer only on such a commit). When staging holds a refresh S', the next
refresh plans from S again (S' may exist only in the clone that built it). No branch moves:
S' is kept under `refs/envctl/refresh/<S'>` so that it survives `git gc` and
`envctl build IMAGE --rev S'` can build it again. Staging treats S' as S (a push on
top of S moves forward), and production takes S' for a merge of S, being newer.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pipeline import output
from pipeline.build.bases import BaseReader, BaseWatch, watch_image
from pipeline.build.stage import REFRESH_TRAILER
from pipeline.errors import UsageError
from pipeline.ledger.db import Ledger
from pipeline.ledger.pointers import current
from pipeline.source import GitTree, resolve
from pipeline.spec.model import load

log = logging.getLogger(__name__)

REFRESH_REFS = "refs/envctl/refresh/"
AUTHOR = {
    "GIT_AUTHOR_NAME": "envctl",
    "GIT_AUTHOR_EMAIL": "envctl@localhost",
    "GIT_COMMITTER_NAME": "envctl",
    "GIT_COMMITTER_EMAIL": "envctl@localhost",
}


@dataclass
class Refresh:
    """The images of one staging commit whose bases moved, and why."""

    origin: GitTree
    reasons: dict[str, str] = field(default_factory=dict)  # image -> "base moved from … to …"

    @property
    def reason(self) -> str:
        return "; ".join(f"{image}: {why}" for image, why in sorted(self.reasons.items()))


def moved_reason(row: BaseWatch) -> str:
    was = row.built_on["staging"]
    before = was.base_digest if was is not None else None
    return f"base moved from {before} to {row.current}"


def plan(
    ledger: Ledger, repo: Any, images: list[str], platform: str, read: BaseReader
) -> tuple[list[Refresh], list[BaseWatch]]:
    """The refreshes to run (grouped by staging's commit) and every image's base watch."""
    groups: dict[str, Refresh] = {}
    rows: list[BaseWatch] = []
    for image in images:
        pointer = current(ledger, image, "staging")
        if pointer is None or pointer.sha is None:
            continue
        version = ledger.get_version(image, pointer.sha)
        # A refresh's own commit S' may live only in the clone that built it (Cloud Build):
        # plan from the commit it rebuilt, which is on the staging branch.
        origin = version.origin if version is not None else pointer.sha
        try:
            tree = resolve(repo, origin)
        except UsageError:
            output.warn(
                f"{image}: staging's commit {origin[:12]} is not in this repository; "
                "its base is not watched (fetch it, or push staging again)"
            )
            continue
        row = watch_image(ledger, load(tree, image), platform, read)
        rows.append(row)
        if version is None or not row.moved("staging"):
            continue
        groups.setdefault(tree.sha, Refresh(origin=tree)).reasons[image] = moved_reason(row)
    return list(groups.values()), rows


def commit(repo: Any, refresh: Refresh) -> str:
    """Write S' (S's tree, parent S, the trailer) and keep it under refs/envctl/refresh/."""
    origin = refresh.origin
    lines = defaultdict(list)
    for image, why in sorted(refresh.reasons.items()):
        lines[why].append(image)
    body = "\n".join(f"{', '.join(images)}: {why}" for why, images in lines.items())
    message = f"envctl: rebuild on moved bases\n\n{body}\n\n{REFRESH_TRAILER}: {origin.sha}\n"
    sha: str = repo.git.commit_tree(origin.tree_sha, "-p", origin.sha, "-m", message, env=AUTHOR)
    repo.git.update_ref(f"{REFRESH_REFS}{sha}", sha)
    return sha
