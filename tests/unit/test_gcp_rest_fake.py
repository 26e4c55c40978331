"""The REST fake base answers the real Google client libraries as Google's front ends do."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.artifactregistry_v1")

from google.api_core import exceptions as gapi
from google.cloud import artifactregistry_v1 as ar

from pipeline import gcp
from pipeline.errors import Unavailable, UsageError
from pipeline.settings import Settings
from tests.gcpfakes.rest import FakeRestServer, GoogleError, proto_json, service_disabled

REPO = "projects/proj/locations/europe-west4/repositories/repo"


def _google(fake: FakeRestServer | None, port: int = 0) -> gcp.Google:
    url = fake.endpoint if fake else f"http://127.0.0.1:{port}"
    settings = Settings(
        repo=Path("."),
        registry="europe-west4-docker.pkg.dev/proj/repo",
        backend="gcp",
        gcp_endpoints=f"artifactregistry={url}",
        gcp_timeout=5,
        gcp_retry=False,
    )
    return gcp.Google(settings)


def _fake() -> FakeRestServer:
    fake = FakeRestServer()

    @fake.route("GET", r"/v1/(?P<name>projects/[^/]+/locations/[^/]+/repositories/[^/]+)")
    def get_repository(request):  # type: ignore[no-untyped-def]
        if request.groups["name"] != REPO:
            raise GoogleError("NOT_FOUND", f"Requested entity was not found: {request.groups['name']}")
        return proto_json(ar.Repository(name=REPO, format_=ar.Repository.Format.DOCKER))

    @fake.route("GET", r"/v1/(?P<name>.+/packages/[^/]+/tags/[^/]+)")
    def get_tag(request):  # type: ignore[no-untyped-def]
        return proto_json(ar.Tag(name=request.groups["name"], version="v"))

    return fake


def test_the_real_client_reads_a_resource_and_the_request_is_recorded() -> None:
    with _fake() as fake:
        google = _google(fake)
        repository = google.artifact_registry().get_repository(name=REPO, **google.call())
        assert repository.name == REPO
        assert repository.format_ == ar.Repository.Format.DOCKER
        (sent,) = fake.sent("GET")
        assert sent.path == f"/v1/{REPO}"
        assert "$alt" not in sent.query  # dropped, as Google ignores it for JSON


def test_the_path_is_decoded_exactly_once() -> None:
    """A package id with `%2F` reaches the fake as `%2F` (the client sent `%252F`)."""
    name = f"{REPO}/packages/team%2Fimg/tags/production"
    with _fake() as fake:
        google = _google(fake)
        tag = google.artifact_registry().get_tag(name=name, **google.call())
        assert tag.name == name
        assert fake.sent("GET")[0].path == f"/v1/{name}"


def test_errors_reach_the_client_as_google_exceptions_and_translate_to_one_line() -> None:
    with _fake() as fake:
        google = _google(fake)
        client = google.artifact_registry()
        with pytest.raises(gapi.NotFound):
            client.get_repository(name=REPO[: -len("repo")] + "nope", **google.call())

        with (
            pytest.raises(UsageError) as missing,
            gcp.translated("repository nope", api="artifactregistry", missing="create it"),
        ):
            client.get_repository(name=REPO[: -len("repo")] + "nope", **google.call())
        assert missing.value.exit_code == 2
        assert "repository nope does not exist" in str(missing.value) and "create it" in str(missing.value)

        fake.fail(
            "GET",
            r"/v1/projects/.*",
            GoogleError("PERMISSION_DENIED", "caller lacks artifactregistry.repositories.get"),
            times=1,
        )
        with (
            pytest.raises(Unavailable, match="permission denied on repository repo") as denied,
            gcp.translated("repository repo", api="artifactregistry"),
        ):
            client.get_repository(name=REPO, **google.call())
        assert denied.value.exit_code == 3

        fake.fail(
            "GET", r"/v1/projects/.*", service_disabled("artifactregistry.googleapis.com", "proj"), times=1
        )
        with (
            pytest.raises(
                Unavailable, match=r"gcloud services enable artifactregistry.googleapis.com --project=proj"
            ),
            gcp.translated("repository repo", api="artifactregistry"),
        ):
            client.get_repository(name=REPO, **google.call())

        fake.fail("GET", r"/v1/projects/.*", GoogleError("RESOURCE_EXHAUSTED", "quota"), times=1)
        with (
            pytest.raises(Unavailable, match="quota exhausted"),
            gcp.translated("repository repo", api="artifactregistry"),
        ):
            client.get_repository(name=REPO, **google.call())

        fake.fail("GET", r"/v1/projects/.*", GoogleError("FAILED_PRECONDITION", "not docker"), times=1)
        with (
            pytest.raises(UsageError, match="not in a state"),
            gcp.translated("repository repo", api="artifactregistry"),
        ):
            client.get_repository(name=REPO, **google.call())

        fake.fail("GET", r"/v1/projects/.*", GoogleError("UNAUTHENTICATED", "token expired"), times=1)
        with (
            pytest.raises(Unavailable, match="gcloud auth application-default login"),
            gcp.translated("repository repo", api="artifactregistry"),
        ):
            client.get_repository(name=REPO, **google.call())

        # the failures were used up: the next call succeeds
        assert client.get_repository(name=REPO, **google.call()).name == REPO


def test_long_running_operations_are_served() -> None:
    with _fake() as fake:
        fake.add_operation(
            "projects/proj/locations/europe-west4/operations/op1",
            done=True,
            metadata=ar.OperationMetadata(),
            response=ar.Repository(name=REPO),
        )
        google = _google(fake)
        from google.longrunning import operations_pb2

        op = google.artifact_registry().get_operation(
            operations_pb2.GetOperationRequest(name="projects/proj/locations/europe-west4/operations/op1")
        )
        assert op.done
        assert op.response.Unpack(ar.Repository.pb(ar.Repository()))


def test_a_dead_endpoint_fails_fast_as_unavailable() -> None:
    fake = _fake().start()
    port = fake.port
    fake.stop()
    google = _google(None, port=port)
    started = time.monotonic()
    with (
        pytest.raises(Unavailable, match="does not answer") as dead,
        gcp.translated("repository repo", api="artifactregistry"),
    ):
        google.artifact_registry().get_repository(name=REPO, **google.call())
    assert dead.value.exit_code == 3
    assert time.monotonic() - started < 5


def test_a_service_that_hangs_fails_at_the_deadline() -> None:
    fake = _fake()

    @fake.route("GET", r"/v1/projects/slow/locations/l/repositories/r")
    def slow(request):  # type: ignore[no-untyped-def]
        time.sleep(4)
        return {}

    with fake:
        google = _google(fake)
        google.policy = gcp.CallPolicy(timeout=1, retry=False)
        started = time.monotonic()
        with (
            pytest.raises(Unavailable, match="does not answer") as slow_error,
            gcp.translated("repository r", api="artifactregistry"),
        ):
            google.artifact_registry().get_repository(
                name="projects/slow/locations/l/repositories/r", **google.call()
            )
        assert slow_error.value.exit_code == 3
        assert time.monotonic() - started < 3.5
