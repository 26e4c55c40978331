"""The Cloud Storage fake answers google-cloud-storage: bucket get, uploads, downloads, lists."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("google.cloud.storage")

from pipeline import gcp
from pipeline.errors import UsageError
from pipeline.settings import Settings
from tests.gcpfakes.storage import FakeStorage


def _google(fake: FakeStorage) -> gcp.Google:
    settings = Settings(
        repo=Path("."),
        registry="europe-west4-docker.pkg.dev/proj/repo",
        backend="gcp",
        gcp_endpoints=f"storage={fake.endpoint}",
        gcp_timeout=5,
        gcp_retry=False,
    )
    return gcp.Google(settings)


def test_upload_download_and_list_through_the_real_client() -> None:
    with FakeStorage(buckets=("proj_cloudbuild",)) as fake:
        google = _google(fake)
        client = google.storage("proj")
        bucket = client.get_bucket("proj_cloudbuild", **google.call())
        assert bucket.name == "proj_cloudbuild"

        blob = bucket.blob("source/nlp.keras-batch/abc.tar.gz")
        blob.upload_from_string(b"\x1f\x8b tarball", content_type="application/gzip", **google.call())
        assert fake.data("proj_cloudbuild", "source/nlp.keras-batch/abc.tar.gz") == b"\x1f\x8b tarball"
        (upload,) = fake.sent("POST")
        assert upload.path == "/upload/storage/v1/b/proj_cloudbuild/o"
        assert upload.param("uploadType") == "multipart"

        fake.put("proj_cloudbuild", "logs/log-123.txt", b"step 1\nstep 2\n")
        text = bucket.blob("logs/log-123.txt").download_as_bytes(**google.call())
        assert text == b"step 1\nstep 2\n"
        assert fake.sent("GET", r"/download/storage/v1/b/proj_cloudbuild/o/logs/log-123.txt")

        names = [b.name for b in client.list_blobs("proj_cloudbuild", prefix="logs/", **google.call())]
        assert names == ["logs/log-123.txt"]
        assert bucket.get_blob("logs/missing.txt", **google.call()) is None


def test_resumable_upload_of_a_file(tmp_path: Path) -> None:
    source = tmp_path / "context.tar.gz"
    source.write_bytes(b"x" * 300_000)
    with FakeStorage(buckets=("b",)) as fake:
        google = _google(fake)
        blob = google.storage("proj").bucket("b").blob("ctx.tar.gz", chunk_size=256 * 1024)
        with source.open("rb") as stream:  # no size given: the client uploads in resumable chunks
            blob.upload_from_file(stream, **google.call())
        assert fake.data("b", "ctx.tar.gz") == source.read_bytes()
        assert fake.sent("POST")[0].param("uploadType") == "resumable"
        assert len(fake.sent("PUT")) == 2


def test_a_missing_bucket_is_one_line_naming_it() -> None:
    with FakeStorage() as fake:
        google = _google(fake)
        with (
            pytest.raises(UsageError, match="bucket gs://nope does not exist") as missing,
            gcp.translated(
                "bucket gs://nope",
                api="storage",
                missing="create it with `gcloud storage buckets create gs://nope`",
            ),
        ):
            google.storage("proj").get_bucket("nope", **google.call())
        assert "gcloud storage buckets create" in str(missing.value)
