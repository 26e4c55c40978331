"""`artifacts_url = gs://…`: a real test run's artifacts copied to Cloud Storage, and shown where they are.

Real: the local stack (Docker Engine, registry, papermill in the built mini image), git,
the SQLite ledger, the `envctl` CLI. Cloud Storage is the wire-level fake, spoken to by
google-cloud-storage.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.storage")

from pipeline.ledger import db
from tests import minirepo
from tests.gcpfakes.rest import FakeRequest, GoogleError
from tests.gcpfakes.storage import FakeStorage, _multipart
from tests.helpers import envctl

pytestmark = pytest.mark.integration
BUCKET = "proj-artifacts"


@dataclass
class Runs:
    mini: minirepo.MiniRepo
    root: Path
    storage: FakeStorage

    def envctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "ENVCTL_STATE_DIR": str(self.root / "state"),
            "ENVCTL_ARTIFACTS_URL": f"gs://{BUCKET}/runs",
            "ENVCTL_GCP_ENDPOINTS": f"storage={self.storage.endpoint}",
            "ENVCTL_GCP_TIMEOUT": "10",
            "ENVCTL_GCP_RETRY": "false",
        }
        return envctl(*args, cwd=self.mini.path, env=env)

    def kept(self, run_id: str) -> dict[str, bytes]:
        prefix = f"runs/{run_id}/"
        with self.storage.lock:
            return {
                name.removeprefix(prefix): o.data
                for (bucket, name), o in self.storage.objects.items()
                if bucket == BUCKET and name.startswith(prefix)
            }


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Runs]:
    mini = minirepo.make(tmp_path)
    try:
        with FakeStorage(buckets=(BUCKET,)) as storage:
            assert isinstance(storage, FakeStorage)
            yield Runs(mini, tmp_path, storage)
    finally:
        minirepo.remove_local_images(f"localhost:5000/{mini.image}")


def test_a_runs_artifacts_are_copied_to_cloud_storage_and_shown_by_pipeline_show_and_describe(
    runs: Runs,
) -> None:
    ran = runs.envctl("pipeline", "run", "--branch", "staging", "--rev", "HEAD", "--json")
    assert ran.returncode == 0, ran.stderr
    record = json.loads(ran.stdout)
    verdict = record["verdicts"][runs.mini.image]
    test_run = verdict["test_run"]
    where = f"gs://{BUCKET}/runs/{test_run}/"
    assert verdict["artifacts"] == where

    # Every file of the local run folder, byte for byte; summary.json written last.
    local = runs.root / "state" / "runs" / test_run
    files = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    assert runs.kept(test_run) == files
    assert {"junit.xml", "summary.json"} <= set(files)
    assert any(n.endswith(".ipynb") for n in files) and any(n.endswith(".html") for n in files)
    uploads = [_object_name(r) for r in runs.storage.sent("POST", rf"/upload/storage/v1/b/{BUCKET}/o")]
    assert uploads[-1] == f"runs/{test_run}/summary.json" and len(uploads) == len(files)
    assert json.loads(files["summary.json"])["artifacts_url"] == where

    shown = runs.envctl("pipeline", "show", record["run_id"])
    assert shown.returncode == 0, shown.stderr
    assert f"{runs.mini.image}: test run {test_run}: artifacts in {where}" in shown.stdout

    described = runs.envctl("describe", f"{runs.mini.image}.staging")
    assert described.returncode == 0, described.stderr
    assert f"artifacts    {where}" in described.stdout
    as_json = json.loads(runs.envctl("describe", f"{runs.mini.image}.staging", "--json").stdout)
    assert [e["artifacts"] for e in as_json["evidence"]] == [where]


def test_a_failed_copy_is_one_line_exit_3_with_nothing_half_written(runs: Runs) -> None:
    built = runs.envctl("build", runs.mini.image, "--rev", "HEAD")
    assert built.returncode == 0, built.stderr

    # The bucket takes every file but the summary (the last one): the copy fails half-way.
    @runs.storage.route("POST", rf"/upload/storage/v1/b/(?P<bucket>{BUCKET})/o")
    def refuse_summary(request: FakeRequest) -> object:
        if _object_name(request).endswith("/summary.json"):
            raise GoogleError("PERMISSION_DENIED", "storage.objects.create denied on summary.json")
        return runs.storage._insert(request)

    tested = runs.envctl("test", runs.mini.image, "--rev", "HEAD")
    assert tested.returncode == 3, (tested.stdout, tested.stderr)
    errors = [line for line in tested.stderr.splitlines() if line.startswith("envctl: error: ")]
    assert len(errors) == 1 and "Traceback" not in tested.stderr, tested.stderr
    assert f"to gs://{BUCKET}/runs/" in errors[0] and "no evidence recorded" in errors[0]
    assert len(runs.storage.sent("POST")) > 1  # some files were copied before the failure ...
    assert not runs.storage.objects  # ... and removed again
    ledger = db.Ledger.open(f"sqlite:///{runs.root / 'state' / 'ledger.db'}")
    (version,) = ledger.list_versions(runs.mini.image)
    assert db.test_runs_for(ledger, runs.mini.image, version.digest) == []


def _object_name(request: FakeRequest) -> str:
    """The object an upload names (a multipart upload carries it in its metadata part)."""
    if request.param("name"):
        return request.param("name")
    meta, _data, _type = _multipart(request)
    return str(meta["name"])
