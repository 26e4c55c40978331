"""The Cloud Build builder's request: one docker build step, the SBOM step, escaping, the archive."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

pytest.importorskip("google.cloud.devtools.cloudbuild_v1")

from pipeline.backends import BuildRequest, ContextFile
from pipeline.build.cloudbuild import (
    LogRelay,
    archive_object,
    build_message,
    docker_image_name,
    escape,
    source_archive,
)
from pipeline.errors import UsageError

TAG = "europe-west4-docker.pkg.dev/proj/images/nlp.keras-batch:" + "a" * 40


def request(**changes: object) -> BuildRequest:
    fields: dict[str, object] = {
        "image": "nlp.keras-batch",
        "sha": "a" * 40,
        "files": {"Dockerfile": ContextFile(b"FROM x\n"), "run.sh": ContextFile(b"echo $HOME\n", 0o755)},
        "dockerfile": "Dockerfile",
        "tag": TAG,
        "buildargs": {"BASE_IMAGE": "base@sha256:" + "b" * 64, "PRICE": "$5"},
        "labels": {"org.opencontainers.image.revision": "a" * 40},
    }
    fields.update(changes)
    return BuildRequest(**fields)  # type: ignore[arg-type]


def test_the_archive_is_reproducible_and_holds_the_context() -> None:
    first, second = source_archive(request()), source_archive(request())
    assert first == second
    assert archive_object(request(), first) == archive_object(request(), second)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["Dockerfile", "run.sh"]
    assert members["run.sh"].mode == 0o755 and members["run.sh"].mtime == 0


def test_the_build_has_one_docker_step_the_sbom_step_and_pushes_the_tag() -> None:
    build = build_message(
        request(no_cache=True), bucket="b", source_object="o.tar.gz", sbom_at="gs://b/s/", timeout_seconds=900
    )
    docker, sbom = build.steps
    assert list(docker.args) == [
        "build", "-f", "Dockerfile", "-t", TAG,
        "--build-arg", "BASE_IMAGE=base@sha256:" + "b" * 64, "--build-arg", "PRICE=$$5",
        "--label", "org.opencontainers.image.revision=" + "a" * 40, "--no-cache", ".",
    ]  # fmt: skip
    assert list(docker.env) == ["DOCKER_BUILDKIT=1"]  # the documented secret mounts need BuildKit
    # The image runs its SBOM script in a container with no network: no metadata server,
    # so no credentials, in that step or in the build's RUN steps (no --network=cloudbuild).
    assert sbom.name == "gcr.io/cloud-builders/docker" and sbom.entrypoint == "bash"
    assert "docker run --rm --network=none" in sbom.args[1] and sbom.args[2] == TAG
    assert list(sbom.wait_for) == ["build"]
    (script,) = sbom.env
    assert script.startswith("ENVCTL_SBOM_SCRIPT=")
    assert "$${Package}" in script and "${Package}" not in script.replace("$${", "")
    assert list(build.images) == [TAG]
    assert build.source.storage_source.bucket == "b" and build.source.storage_source.object_ == "o.tar.gz"
    assert build.artifacts.objects.location == "gs://b/s/"
    assert build.logs_bucket == "gs://b" and build.options.logging.name == "GCS_ONLY"
    assert build.timeout.total_seconds() == 900


def test_escape_keeps_dollars_literal() -> None:
    assert escape("a$B ${C} $$") == "a$$B $${C} $$$$"


def test_the_log_relay_gives_each_complete_line_once_and_keeps_the_tail() -> None:
    seen: list[str] = []
    relay = LogRelay(seen.append)
    relay.feed("one\ntwo\nthr", final=False)
    relay.feed("one\ntwo\nthree\nfour\n", final=False)
    relay.feed("one\ntwo\nthree\nfour\nfive", final=True)
    assert seen == ["one", "two", "three", "four", "five"]
    assert relay.tail[-1] == "five"


def test_docker_image_names_escape_the_package() -> None:
    assert docker_image_name("europe-west4-docker.pkg.dev/p/r/team/img:t", "sha256:" + "c" * 64) == (
        "projects/p/locations/europe-west4/repositories/r/dockerImages/team%2Fimg@sha256:" + "c" * 64
    )
    with pytest.raises(UsageError):
        docker_image_name("localhost:5000/img:t", "sha256:" + "c" * 64)
