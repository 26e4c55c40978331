"""The Cloud Build fake answers the real CloudBuildClient: triggers, builds, operations, logs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("google.cloud.devtools.cloudbuild_v1")

from google.api_core import exceptions as gapi
from google.cloud.devtools import cloudbuild_v1 as cb

from pipeline import gcp
from pipeline.settings import Settings
from tests.gcpfakes.cloudbuild import CloudBuildFake, Outcome
from tests.gcpfakes.storage import FakeStorage

PARENT = "projects/proj/locations/europe-west4"


def _google(fake: CloudBuildFake, storage: FakeStorage) -> gcp.Google:
    return gcp.Google(
        Settings(
            repo=Path("."),
            registry="europe-west4-docker.pkg.dev/proj/repo",
            backend="gcp",
            gcp_endpoints=f"cloudbuild={fake.endpoint},storage={storage.endpoint}",
            gcp_timeout=5,
            gcp_retry=False,
        )
    )


def test_a_trigger_is_found_by_name_or_id_and_a_run_is_a_long_running_operation() -> None:
    with FakeStorage(buckets=("logs",)) as storage, CloudBuildFake(storage=storage) as fake:
        google = _google(fake, storage)
        client = google.cloud_build()
        trigger = cb.BuildTrigger(
            name="envctl-staging",
            filename="cloudbuild/staging.yaml",
            build=cb.Build(steps=[cb.BuildStep(name="ubuntu")], logs_bucket="gs://logs"),
        )
        made = client.create_build_trigger(parent=PARENT, project_id="proj", trigger=trigger, **google.call())
        for key in (made.id, "envctl-staging"):
            found = client.get_build_trigger(
                name=f"{PARENT}/triggers/{key}", project_id="proj", trigger_id=key, **google.call()
            )
            assert found.id == made.id
        with pytest.raises(gapi.Conflict):
            client.create_build_trigger(parent=PARENT, project_id="proj", trigger=trigger, **google.call())
        fake.script(Outcome(log=["hello", "world"]))
        request = cb.RunBuildTriggerRequest(
            name=f"{PARENT}/triggers/envctl-staging", project_id="proj", trigger_id=made.id
        )
        operation = client.run_build_trigger(request=request, **google.call())
        build_id = operation.metadata.build.id
        assert fake.builds[build_id].status == cb.Build.Status.QUEUED
        build = operation.result(timeout=10)  # polls the operation until it is done
        assert build.status == cb.Build.Status.SUCCESS and build.build_trigger_id == made.id
        assert storage.data("logs", f"log-{build_id}.txt") == b"hello\nworld\n"
        assert any("/operations/" in r.path for r in fake.sent("GET"))


def test_a_build_can_be_cancelled_while_it_runs_and_unknown_builds_are_not_found() -> None:
    with FakeStorage() as storage, CloudBuildFake(storage=storage) as fake:
        google = _google(fake, storage)
        client = google.cloud_build()
        fake.script(Outcome(reads_to_finish=100))
        operation = client.create_build(
            project_id="proj",
            parent=PARENT,
            build=cb.Build(steps=[cb.BuildStep(name="ubuntu")]),
            **google.call(),
        )
        build_id = operation.metadata.build.id
        name = f"{PARENT}/builds/{build_id}"
        assert (
            client.get_build(name=name, project_id="proj", id=build_id, **google.call()).status.name
            == "WORKING"
        )
        cancelled = client.cancel_build(name=name, project_id="proj", id=build_id, **google.call())
        assert cancelled.status.name == "CANCELLED"
        with pytest.raises(gapi.NotFound):
            client.get_build(name=f"{PARENT}/builds/nope", project_id="proj", id="nope", **google.call())
