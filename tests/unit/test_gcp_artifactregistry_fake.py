"""The Artifact Registry fake keeps state as the real API does, read and written by the real client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.artifactregistry_v1")

from google.api_core import exceptions as gapi
from google.cloud import artifactregistry_v1 as ar
from google.protobuf.field_mask_pb2 import FieldMask

from pipeline import gcp
from pipeline.publish.artifact_registry import ArtifactRegistryPublisher
from pipeline.settings import Settings
from tests.gcpfakes.artifactregistry import FakeArtifactRegistry

REPOSITORY = "projects/proj/locations/europe-west4/repositories/repo"
PACKAGE = f"{REPOSITORY}/packages/team%2Fnested.img"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


@pytest.fixture
def fake() -> Iterator[FakeArtifactRegistry]:
    with FakeArtifactRegistry(REPOSITORY) as server:
        server.push(REPOSITORY, "team/nested.img", D1, tags=("v1",))
        server.push(REPOSITORY, "team/nested.img", D2)
        yield server


def _settings(fake: FakeArtifactRegistry) -> Settings:
    return Settings(
        repo=Path("."),
        registry="europe-west4-docker.pkg.dev/proj/repo",
        backend="gcp",
        gcp_endpoints=f"artifactregistry={fake.endpoint}",
        gcp_timeout=5,
        gcp_retry=False,
    )


def test_tags_versions_and_images_through_the_real_client(fake: FakeArtifactRegistry) -> None:
    google = gcp.Google(_settings(fake))
    client, call = google.artifact_registry(), google.call()

    created = client.create_tag(
        parent=PACKAGE, tag_id="staging", tag=ar.Tag(version=f"{PACKAGE}/versions/{D1}"), **call
    )
    assert created.name == f"{PACKAGE}/tags/staging"
    with pytest.raises(gapi.Conflict):
        client.create_tag(
            parent=PACKAGE, tag_id="staging", tag=ar.Tag(version=f"{PACKAGE}/versions/{D1}"), **call
        )
    with pytest.raises(gapi.NotFound):
        client.create_tag(
            parent=PACKAGE, tag_id="x", tag=ar.Tag(version=f"{PACKAGE}/versions/sha256:{'9' * 64}"), **call
        )

    moved = client.update_tag(
        tag=ar.Tag(name=f"{PACKAGE}/tags/staging", version=f"{PACKAGE}/versions/{D2}"),
        update_mask=FieldMask(paths=["version"]),
        **call,
    )
    assert moved.version.endswith(D2)
    patch = fake.sent("PATCH")[-1]
    assert patch.path == f"/v1/{PACKAGE}/tags/staging" and patch.param("updateMask") == "version"
    with pytest.raises(gapi.BadRequest):
        client.update_tag(
            tag=ar.Tag(name=f"{PACKAGE}/tags/staging"), update_mask=FieldMask(paths=["name"]), **call
        )
    with pytest.raises(gapi.NotFound):  # the fake never creates on update; envctl never relies on it
        client.update_tag(
            tag=ar.Tag(name=f"{PACKAGE}/tags/absent", version=f"{PACKAGE}/versions/{D2}"),
            update_mask=FieldMask(paths=["version"]),
            **call,
        )

    versions = list(client.list_versions(request={"parent": PACKAGE, "view": ar.VersionView.FULL}, **call))
    related = {
        v.name.rpartition("/")[2]: sorted(t.name.rpartition("/")[2] for t in v.related_tags) for v in versions
    }
    assert related == {D1: ["v1"], D2: ["staging"]}
    tags = list(
        client.list_tags(request={"parent": PACKAGE, "filter": f'version="{PACKAGE}/versions/{D2}"'}, **call)
    )
    assert [t.name.rpartition("/")[2] for t in tags] == ["staging"]

    images = list(client.list_docker_images(parent=REPOSITORY, **call))
    assert sorted(i.uri for i in images) == [
        f"europe-west4-docker.pkg.dev/proj/repo/team/nested.img@{D1}",
        f"europe-west4-docker.pkg.dev/proj/repo/team/nested.img@{D2}",
    ]
    image = client.get_docker_image(name=f"{REPOSITORY}/dockerImages/team%2Fnested.img@{D2}", **call)
    assert list(image.tags) == ["staging"]

    client.delete_tag(name=f"{PACKAGE}/tags/staging", **call)
    assert fake.tags_of(REPOSITORY, "team/nested.img") == {"v1": D1}


def test_the_publisher_escapes_a_slash_and_moves_a_tag_once(fake: FakeArtifactRegistry) -> None:
    publisher = ArtifactRegistryPublisher.for_settings(_settings(fake))
    assert publisher.package("team/nested.img") == PACKAGE
    assert publisher.tag_ref("team/nested.img", "production") == (
        "europe-west4-docker.pkg.dev/proj/repo/team/nested.img:production"
    )
    publisher.require()
    assert publisher.digest_of("team/nested.img", "v1") == D1
    assert publisher.digest_of("team/nested.img", D2) == D2
    assert publisher.digest_of("team/nested.img", "sha256:" + "3" * 64) is None
    assert publisher.digest_of("team/nested.img", "production") is None

    before = len(fake.writes())
    publisher.tag("team/nested.img", D2, "production")
    publisher.tag("team/nested.img", D2, "production")  # already there: read, no write
    publisher.tag("team/nested.img", D1, "production")
    writes = [(r.method, r.path.rpartition("/")[2]) for r in fake.writes()[before:]]
    assert writes == [("POST", "tags"), ("PATCH", "production")]
    assert fake.tags_of(REPOSITORY, "team/nested.img")["production"] == D1
    assert "token" not in repr(publisher).lower()


def test_a_tag_deleted_between_read_and_update_is_created(fake: FakeArtifactRegistry) -> None:
    publisher = ArtifactRegistryPublisher.for_settings(_settings(fake))
    original = fake._get_tag

    @fake.route(
        "GET",
        r"/v1/(?P<repo>projects/[^/]+/locations/[^/]+/repositories/[^/]+)/packages/(?P<package>[^/]+)/tags/(?P<tag>v1)",
    )
    def read_then_lose(request):  # type: ignore[no-untyped-def]
        answer = original(request)
        with fake.lock:
            del fake.packages[(REPOSITORY, "team%2Fnested.img")].tags["v1"]
        return answer

    publisher.tag("team/nested.img", D2, "v1")
    assert [r.method for r in fake.writes()] == ["PATCH", "POST"]
    assert fake.tags_of(REPOSITORY, "team/nested.img")["v1"] == D2
