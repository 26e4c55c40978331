"""The Cloud Storage artifact store: a run folder copied under `gs://BUCKET/PREFIX/<run id>/`.

Imported only when `artifacts_url` is a gs:// URL (google-cloud-storage, the `gcp` extra).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import output
from pipeline.errors import EnvctlError, Unavailable
from pipeline.gcp import Google, translate
from pipeline.settings import Settings
from pipeline.testing.keep import content_type, files_of, parse_gs_url

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CloudStorageStore:
    bucket: str
    prefix: str
    google: Google
    project: str | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> CloudStorageStore:
        bucket, prefix = parse_gs_url(settings.artifacts_url)
        return cls(
            bucket=bucket, prefix=prefix, google=Google(settings), project=settings.gcp_project or None
        )

    def folder(self, run_id: str) -> str:
        return f"{self.prefix}/{run_id}" if self.prefix else run_id

    def where(self, run_dir: Path, run_id: str) -> str:
        return f"gs://{self.bucket}/{self.folder(run_id)}/"

    def keep(self, run_dir: Path, run_id: str) -> str:
        """Copy every file of `run_dir`; on a failure remove what was copied and raise `Unavailable`."""
        where = self.where(run_dir, run_id)
        names = files_of(run_dir)
        written: list[str] = []
        bucket: Any = None
        try:
            bucket = self.google.storage(self.project).bucket(self.bucket)
            with output.step(f"copying {len(names)} artifact(s) of {run_id} to {where}"):
                for relative in names:
                    name = f"{self.folder(run_id)}/{relative.as_posix()}"
                    bucket.blob(name).upload_from_filename(
                        str(run_dir / relative), content_type=content_type(relative), **self.google.call()
                    )
                    written.append(name)
        except Exception as e:
            self._remove(bucket, written)
            error = e if isinstance(e, EnvctlError) else translate(e, f"gs://{self.bucket}", api="storage")
            if error is not None:
                detail = str(error).removeprefix("envctl: error: ")
            else:  # not Google's: a file of the run folder that vanished or can't be read, ...
                log.debug("copying the artifacts of %s failed", run_id, exc_info=True)
                detail = _local(e)
            raise Unavailable(
                f"copying the artifacts of run {run_id} to {where} failed: {detail}; nothing was "
                f"kept there and no evidence recorded (the local copy is {run_dir})"
            ) from e
        return where

    def _remove(self, bucket: Any, names: list[str]) -> None:
        """Best effort: a half-copied run folder would look like a run with missing notebooks."""
        for name in reversed(names):
            try:
                bucket.blob(name).delete(timeout=10, retry=None)
            except Exception as e:
                log.warning("could not remove gs://%s/%s after a failed copy: %s", self.bucket, name, e)


def _local(e: Exception) -> str:
    """One line for an error that isn't Google's (an OSError names its file)."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return f"{type(e).__name__}: {e}"
