"""Where a test run's artifacts are kept: the local run folder, and a copy in Cloud Storage.

The one seam every test runner calls once its run folder is complete and before it
records the evidence: `store_for(settings).keep(run_dir, run_id)` returns where the
artifacts are (the ledger records that). With `artifacts_url = gs://BUCKET[/PREFIX]`
every file of the run folder (executed notebooks, HTML, junit.xml, summary.json, logs)
is copied under `gs://BUCKET/PREFIX/<run id>/`, summary.json last, so a reader that
finds the summary finds the whole run. A copy that fails removes what it wrote and is
`Unavailable` (exit 3): no evidence then points at half a folder.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings

LAST = "summary.json"  # written last: its presence says the folder is complete
TYPES = {".ipynb": "application/x-ipynb+json", ".log": "text/plain", ".xml": "application/xml"}


class ArtifactStore(Protocol):
    """Keeps a finished run folder; `where` is known before the copy (reports name it)."""

    def where(self, run_dir: Path, run_id: str) -> str: ...

    def keep(self, run_dir: Path, run_id: str) -> str: ...


@dataclass(frozen=True)
class LocalStore:
    """Artifacts stay in `artifacts_dir/<run id>`."""

    def where(self, run_dir: Path, run_id: str) -> str:
        return str(run_dir)

    def keep(self, run_dir: Path, run_id: str) -> str:
        return str(run_dir)


def parse_gs_url(url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes at its ends) of `gs://BUCKET[/PREFIX]`; `ConfigError` otherwise."""
    bucket, _, prefix = url.removeprefix("gs://").partition("/")
    if not url.startswith("gs://") or not bucket or "//" in prefix.strip("/"):
        raise ConfigError(
            f"artifacts_url {url!r} is not gs://BUCKET[/PREFIX]; leave it empty to keep the artifacts "
            "in artifacts_dir only"
        )
    return bucket, prefix.strip("/")


def content_type(path: Path) -> str:
    return TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def files_of(run_dir: Path) -> list[Path]:
    """The run folder's files, relative, summary.json last; hidden work folders left out."""
    found = [
        p.relative_to(run_dir)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(run_dir).parts)
    ]
    return sorted(found, key=lambda p: p.as_posix() == LAST)


def store_for(settings: Settings) -> ArtifactStore:
    """Cloud Storage when `artifacts_url` is set (on either backend), else the local folder."""
    if not settings.artifacts_url:
        return LocalStore()
    parse_gs_url(settings.artifacts_url)
    from pipeline.testing.gcs import CloudStorageStore

    return CloudStorageStore.for_settings(settings)
