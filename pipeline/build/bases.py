"""Base watch: the base digest each environment's version was built on, and the base's digest now.

A version records its base at build time in its labels (`org.opencontainers.image.base.name`
and `.base.digest`, `pipeline.build.stage`). The base reference of the spec is resolved in
its registry now; when staging was built on another digest of the same reference, the
base moved and `envctl pipeline run --branch staging --refresh-base` rebuilds the image.
A spec's `build.base.track` (a pattern with a group around the release number, such as
`^m(\\d+)$`) lists the release tags of the base repository above the current one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.build.stage import LABEL_PREFIX
from pipeline.errors import Unavailable, UsageError
from pipeline.ledger.db import Ledger, Version
from pipeline.ledger.pointers import Stage, current
from pipeline.publish.oci import Registry, docker_credentials, split_ref
from pipeline.source import GitTree
from pipeline.spec.model import Spec, load

log = logging.getLogger(__name__)

#: Reads a base reference: (the digest it names now or None, its repository's tags if asked).
BaseReader = Callable[[str, bool], tuple[str | None, list[str]]]
BASE_NAME = f"{LABEL_PREFIX}.base.name"
BASE_DIGEST = f"{LABEL_PREFIX}.base.digest"
WATCHED: tuple[Stage, ...] = ("staging", "production")


@dataclass(frozen=True, kw_only=True)
class BuiltOn:
    """The base one environment's version was built on."""

    sha: str
    digest: str
    base: str | None
    base_digest: str | None

    def to_json(self) -> dict[str, Any]:
        return {"sha": self.sha, "digest": self.digest, "base": self.base, "base_digest": self.base_digest}


@dataclass(kw_only=True)
class BaseWatch:
    """One image: its base reference, the digest it names now, and what its environments were built on."""

    image: str
    base: str
    current: str | None  # None: the reference is not in its registry
    built_on: dict[Stage, BuiltOn | None] = field(default_factory=dict)
    track: str | None = None
    newer: list[str] = field(default_factory=list)
    error: str | None = None
    bad_input: bool = False  # the error is the spec's (exit 2), not the registry's (exit 3)

    def moved(self, stage: Stage = "staging") -> bool:
        """The stage's version was built on another digest of the same base reference."""
        found = self.built_on.get(stage)
        if found is None or self.current is None or found.base_digest is None:
            return False
        return found.base == self.base and found.base_digest != self.current

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "base": self.base,
            "current_digest": self.current,
            **{stage: (b.to_json() if (b := self.built_on.get(stage)) else None) for stage in WATCHED},
            "moved": {stage: self.moved(stage) for stage in WATCHED},
            "track": self.track,
            "newer_tags": self.newer,
            "error": self.error,
        }


def built_on(version: Version) -> BuiltOn:
    return BuiltOn(
        sha=version.sha,
        digest=version.digest,
        base=version.labels.get(BASE_NAME),
        base_digest=version.labels.get(BASE_DIGEST),
    )


def read_oci(
    reference: str, with_tags: bool, auth_hosts: tuple[str, ...] = ()
) -> tuple[str | None, list[str]]:
    """The digest `reference` names now (None: absent) and, when asked, every tag of its repository.

    Through the registry protocol (`GET /v2/<name>/manifests/<tag>`, `/tags/list`), with the
    Docker client's credentials for the host, or Google's on Artifact Registry.
    """
    host, repo, tag = split_ref(reference)
    registry = Registry(host, credentials=docker_credentials(host), timeout=30, auth_hosts=auth_hosts)
    manifest = registry.manifest(repo, tag)
    return (manifest.digest if manifest else None), (registry.tags(repo) if with_tags else [])


def release_key(pattern: re.Pattern[str], tag: str) -> tuple[int, ...] | None:
    """The release numbers `pattern`'s groups find in `tag` (`m125` -> (125,)); None: not a release."""
    match = pattern.fullmatch(tag) or pattern.match(tag)
    if match is None:
        return None
    numbers = [g for g in match.groups() if g is not None]
    if not numbers or not all(n.isdigit() for n in numbers):
        return None
    return tuple(int(n) for n in numbers)


def newer_releases(track: str, tag: str, tags: list[str]) -> list[str]:
    """The tags of `tags` that `track` reads as releases above `tag`, oldest first.

    When `tag` itself is no release (`latest`, `local`), every release is listed.
    """
    pattern = re.compile(track)
    mine = release_key(pattern, tag)
    releases = [(key, t) for t in tags if (key := release_key(pattern, t)) is not None]
    return [t for key, t in sorted(releases) if mine is None or key > mine]


def watch_image(ledger: Ledger, spec: Spec, platform: str, read: BaseReader) -> BaseWatch:
    reference = spec.base_for(platform)
    row = BaseWatch(image=spec.image, base=reference, current=None, track=spec.build.base.track)
    for stage in WATCHED:
        pointer = current(ledger, spec.image, stage)
        version = ledger.get_version(spec.image, pointer.sha) if pointer and pointer.sha else None
        if version is not None and pointer is not None and version.digest != pointer.digest:
            version = None  # the pointer names other bytes than the version row: no claim about them
        row.built_on[stage] = built_on(version) if version is not None else None
    try:
        row.current, tags = read(reference, bool(spec.build.base.track))
        if row.current is None:
            row.error = f"{reference} is not in its registry"
        if spec.build.base.track:
            row.newer = newer_releases(spec.build.base.track, split_ref(reference)[2], tags)
    except Unavailable as e:
        row.error = str(e)
    except UsageError as e:
        row.error, row.bad_input = str(e), True
    return row


def watch(
    ledger: Ledger, tree: GitTree, platform: str, images: list[str], read: BaseReader
) -> list[BaseWatch]:
    """The base watch of every image of `images`, with its spec as of `tree`."""
    return [watch_image(ledger, load(tree, image), platform, read) for image in images]
