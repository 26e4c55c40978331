"""`envctl build` with the gcp backend: Cloud Build through the real clients, against fakes.

The fakes keep state: the build context lands in the fake Cloud Storage, the fake Cloud
Build moves the build through its statuses and writes its log, and on success the fake
Artifact Registry serves the digest it reports.
"""

from __future__ import annotations

import gzip
import io
import json
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.devtools.cloudbuild_v1")

from pipeline.ledger.db import Ledger
from tests import minirepo
from tests.gcpfakes.artifactregistry import FakeArtifactRegistry
from tests.gcpfakes.cloudbuild import CloudBuildFake, Outcome, Status
from tests.gcpfakes.storage import FakeStorage
from tests.helpers import ENVCTL, cli_env, envctl

PROJECT, REGION, REPOSITORY = "proj", "europe-west4", "images"
REPOSITORY_NAME = f"projects/{PROJECT}/locations/{REGION}/repositories/{REPOSITORY}"
REGISTRY = f"{REGION}-docker.pkg.dev/{PROJECT}/{REPOSITORY}"
BUCKET = f"{PROJECT}_cloudbuild"
LOCAL_BASE = "localhost:5000/dlc/base-cpu:local"


@dataclass
class Cloud:
    cloudbuild: CloudBuildFake
    storage: FakeStorage
    registry: FakeArtifactRegistry
    mini: minirepo.MiniRepo
    root: Path

    def env(self) -> dict[str, str]:
        return {
            "ENVCTL_BACKEND": "gcp",
            "ENVCTL_REGISTRY": REGISTRY,
            "ENVCTL_GCP_ENDPOINTS": (
                f"cloudbuild={self.cloudbuild.endpoint},artifactregistry={self.registry.endpoint},"
                f"storage={self.storage.endpoint}"
            ),
            "ENVCTL_GCP_TIMEOUT": "5",
            "ENVCTL_GCP_RETRY": "false",
            "ENVCTL_GCP_BUILD_POLL": "0",
            "ENVCTL_STATE_DIR": str(self.root / "state"),
        }

    def build(self, rev: str = "staging") -> tuple[int, str, str]:
        result = envctl("build", self.mini.image, "--rev", rev, "--json", cwd=self.mini.path, env=self.env())
        return result.returncode, result.stdout, result.stderr

    def ledger(self) -> Ledger:
        return Ledger.open(f"sqlite:///{self.root / 'state' / 'ledger.db'}")

    def creates(self) -> list[dict[str, object]]:
        return [r.json() for r in self.cloudbuild.sent("POST", r".*/builds")]


def gcp_repo(tmp_path: Path) -> minirepo.MiniRepo:
    """The mini repository with a gcp base this machine can resolve (the local stand-in)."""
    mini = minirepo.make(tmp_path)
    spec = mini.read("environments/__IMAGE__.yaml")
    mini.write("environments/__IMAGE__.yaml", spec.replace(
        "gcp: us-docker.pkg.dev/deeplearning-platform-release/gcr.io/base-cpu.py310", f"gcp: {LOCAL_BASE}"
    ))  # fmt: skip
    mini.commit("build on the local stand-in of the base on gcp too")
    return mini


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    storage = FakeStorage(buckets=(BUCKET,))
    registry = FakeArtifactRegistry(REPOSITORY_NAME)
    cloudbuild = CloudBuildFake(storage=storage, registry=registry)
    with storage, registry, cloudbuild:
        yield Cloud(cloudbuild, storage, registry, gcp_repo(tmp_path), tmp_path)


def test_a_gcp_build_uploads_the_context_submits_one_build_and_records_the_digest(cloud: Cloud) -> None:
    cloud.cloudbuild.script(
        Outcome(log=['Step #0 - "build": Step 1/4 : FROM base', 'Step #0 - "build": done'])
    )
    code, out, err = cloud.build()
    assert code == 0, err
    result = json.loads(out)
    assert result["action"] == "built"
    (sent,) = cloud.creates()
    (build_id,) = cloud.cloudbuild.builds
    tag = f"{REGISTRY}/{cloud.mini.image}:{result['sha']}"
    assert result["digest"] == cloud.cloudbuild.builds[build_id].results.images[0].digest
    assert result["image_ref"] == f"{REGISTRY}/{cloud.mini.image}@{result['digest']}"
    assert cloud.registry.tags_of(REPOSITORY_NAME, cloud.mini.image) == {result["sha"]: result["digest"]}

    source = sent["source"]["storageSource"]  # type: ignore[index]
    assert source["bucket"] == BUCKET
    archive = cloud.storage.data(BUCKET, source["object"])
    assert archive is not None
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        names = sorted(tar.getnames())
    assert names == [".dockerignore", "Dockerfile", "greeting.py"]

    build_step, sbom_step = sent["steps"]  # type: ignore[misc]
    args = build_step["args"]
    assert build_step["name"] == "gcr.io/cloud-builders/docker"
    assert args[:5] == ["build", "-f", "Dockerfile", "-t", tag]
    assert not any("network" in a for a in args)  # never the cloudbuild network (credentials)
    assert "GREETING=hello" in args and "BASE_IMAGE=localhost:5000/dlc/base-cpu@" in " ".join(args)
    assert f"org.opencontainers.image.revision={result['sha']}" in args
    assert sbom_step["args"][2] == tag and sbom_step["waitFor"] == ["build"]
    assert "--network=none" in sbom_step["args"][1]
    assert "$${Package}" in sbom_step["env"][0]  # escaped: Cloud Build substitutes $VAR
    assert sent["images"] == [tag]
    assert sent["logsBucket"] == f"gs://{BUCKET}"
    assert sent["options"]["logging"] in ("GCS_ONLY", 2)  # type: ignore[index]

    assert "Step 1/4 : FROM base" in err  # the log, relayed
    assert "WORKING" in err and "SUCCESS" in err
    version = cloud.ledger().get_version(cloud.mini.image, result["sha"])
    assert version is not None and version.digest == result["digest"]
    assert version.sbom["pip"] == [{"name": "papermill", "version": "2.6.0"}]
    assert version.size == 123_456_789


def test_a_second_commit_with_the_same_inputs_sends_no_build(cloud: Cloud) -> None:
    code, out, err = cloud.build()
    assert code == 0, err
    first = json.loads(out)
    cloud.mini.write("NOTES.md", "not part of any image\n")
    cloud.mini.commit("notes")
    code, out, err = cloud.build()
    assert code == 0, err
    second = json.loads(out)
    assert second["action"] == "reused" and second["digest"] == first["digest"]
    assert len(cloud.creates()) == 1
    tags = cloud.registry.tags_of(REPOSITORY_NAME, cloud.mini.image)
    assert tags[second["sha"]] == first["digest"]


def test_a_rebuild_of_a_pruned_version_giving_other_bytes_refuses_and_cleans_up(cloud: Cloud) -> None:
    from pipeline.ledger.db import now
    from tests.gcpfakes.artifactregistry import REPO_ADMIN, package_id

    code, out, err = cloud.build()
    assert code == 0, err
    first = json.loads(out)
    image = cloud.mini.image
    package = cloud.registry.packages[(REPOSITORY_NAME, package_id(image))]
    with cloud.registry.lock:  # `envctl prune` took it out of the registry
        package.versions.pop(first["digest"])
        package.tags.clear()
    cloud.ledger().set_pruned(image, first["digest"], now())

    # A builder's account may not delete (prune's may): the scratch tag stays, and it says so.
    code, out, err = cloud.build()  # Cloud Build has no cache of it: another digest comes back
    assert code == 3, err
    assert "can't be brought back: commit a change" in err and "Traceback" not in err
    assert "were deleted" not in err and "could not delete" in err and "envctl-rebuild-" in err
    left = cloud.registry.tags_of(REPOSITORY_NAME, image)
    assert list(left) == [f"envctl-rebuild-{first['sha']}"]

    cloud.registry.granted = REPO_ADMIN  # with the right to delete, nothing of the rebuild stays
    code, out, err = cloud.build()
    assert code == 3, err
    assert "the rebuild's bytes were deleted" in err
    assert cloud.registry.tags_of(REPOSITORY_NAME, image) == {}, err  # no envctl-rebuild-<sha> left
    assert set(package.versions) == set(left.values())  # nor this rebuild's bytes (only the first's)
    kept = cloud.ledger().get_version(image, first["sha"])
    assert kept is not None and kept.digest == first["digest"] and kept.pruned_at is not None


def test_a_failing_build_is_exit_1_with_its_step_and_last_log_lines_and_no_version(cloud: Cloud) -> None:
    cloud.cloudbuild.script(
        Outcome(
            status="FAILURE",
            log=[f'Step #0 - "build": line {i}' for i in range(40)]
            + ['Step #0 - "build": No module named foo'],
        )
    )
    code, _out, err = cloud.build()
    assert code == 1, err
    error = err[err.index("envctl: error: build failed") :]
    assert 'build failed at step #0 "build"' in error
    assert "--- last 30 log lines" in error
    assert "No module named foo" in error and "line 39" in error and "line 5\n" not in error
    assert "Traceback" not in err
    assert cloud.ledger().list_versions(cloud.mini.image) == []
    assert cloud.registry.tags_of(REPOSITORY_NAME, cloud.mini.image) == {}


@pytest.mark.parametrize(("status", "exit_code", "words"), [
    ("TIMEOUT", 1, "timed out"),
    ("CANCELLED", 3, "was cancelled"),
    ("INTERNAL_ERROR", 3, "internal Cloud Build error"),
])  # fmt: skip
def test_a_build_that_does_not_finish_is_one_line_and_records_nothing(
    cloud: Cloud, status: str, exit_code: int, words: str
) -> None:
    cloud.cloudbuild.script(Outcome(status=status))
    code, _, err = cloud.build()
    assert code == exit_code, err
    (line,) = [x for x in err.splitlines() if x.startswith("envctl: error:")]
    assert words in line and "nothing was recorded" in line
    assert "Traceback" not in err
    assert cloud.ledger().list_versions(cloud.mini.image) == []


def test_a_missing_bucket_is_one_line_naming_it(cloud: Cloud) -> None:
    cloud.storage.buckets.clear()
    code, _, err = cloud.build()
    assert code == 2, err
    assert f"gs://{BUCKET}" in err and "Traceback" not in err
    assert cloud.cloudbuild.sent() == []


def test_a_dead_cloud_build_fails_fast_with_exit_3_and_records_nothing(cloud: Cloud) -> None:
    cloud.cloudbuild.stop()
    started = time.monotonic()
    code, _, err = cloud.build()
    assert code == 3, err
    assert time.monotonic() - started < 30
    (line,) = [x for x in err.splitlines() if x.startswith("envctl: error:")]
    assert "cloudbuild.googleapis.com" in line and "Traceback" not in err
    assert cloud.ledger().list_versions(cloud.mini.image) == []


def test_ctrl_c_cancels_the_running_build_and_records_nothing(cloud: Cloud) -> None:
    cloud.cloudbuild.script(Outcome(reads_to_finish=1_000_000))
    env = cli_env({**cloud.env(), "ENVCTL_GCP_BUILD_POLL": "1"})
    command = [*ENVCTL, "build", cloud.mini.image, "--rev", "staging"]
    with subprocess.Popen(command, cwd=cloud.mini.path, env=env, stderr=subprocess.PIPE, text=True) as child:
        deadline = time.monotonic() + 60
        while not any(b.status == Status.WORKING for b in list(cloud.cloudbuild.builds.values())):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.1)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    (build,) = cloud.cloudbuild.builds.values()
    assert build.status == Status.CANCELLED
    assert cloud.cloudbuild.sent("POST", r".*:cancel")
    assert cloud.ledger().list_versions(cloud.mini.image) == []
