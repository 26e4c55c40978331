"""promote, rollback, sync and status on the gcp backend move and read Artifact Registry tags.

The real `envctl` runs in a child process with ENVCTL_BACKEND=gcp, an Artifact Registry
registry, and ENVCTL_GCP_ENDPOINTS pointing the real client library at a local fake
(tests/gcpfakes/artifactregistry.py). No Docker needed: the ledger is seeded with
versions (their digests) and passing evidence, as a staging pipeline leaves it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.artifactregistry_v1")

from pipeline.ledger import pointers
from pipeline.ledger.db import Ledger, TestRun, Version, now, record_test_run
from tests.gcpfakes.artifactregistry import WRITER, FakeArtifactRegistry
from tests.gcpfakes.rest import GoogleError, service_disabled
from tests.helpers import envctl
from tests.ledgerfacts import artifact_registry_env

IMAGE = "team.task"
REPOSITORY = "projects/proj/locations/europe-west4/repositories/repo"
REGISTRY = "europe-west4-docker.pkg.dev/proj/repo"
PACKAGE = f"{REPOSITORY}/packages/{IMAGE}"
SHA_A, SHA_B = "a" * 40, "b" * 40
DIGEST_A, DIGEST_B = "sha256:" + "a1" * 32, "sha256:" + "b2" * 32


@dataclass
class World:
    fake: FakeArtifactRegistry
    folder: Path
    env: dict[str, str]
    ledger_url: str

    def run(self, *args: str, **extra: str) -> tuple[int, str, str]:
        done = envctl(*args, cwd=self.folder, env={**self.env, **extra}, timeout=120)
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout, done.stderr

    def tags(self) -> dict[str, str]:
        return self.fake.tags_of(REPOSITORY, IMAGE)

    def events(self) -> list[tuple[str, str | None]]:
        return [(e.stage, e.to_sha) for e in pointers.history(Ledger.open(self.ledger_url), IMAGE)]

    def status(self) -> dict[str, dict[str, object]]:
        code, out, err = self.run("status", "--json")
        assert code == 0, err
        return {row["stage"]: row for row in json.loads(out)}


def _version(sha: str, digest: str) -> Version:
    return Version(
        image=IMAGE,
        sha=sha,
        tree=sha[:1] * 40,
        inputs_key=sha,
        build_key=sha,
        digest=digest,
        image_ref=f"{REGISTRY}/{IMAGE}@{digest}",
        size=None,
        reused_from=None,
        labels={},
        sbom={},
        created_at=now(),
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    folder = tmp_path / "repo"
    (folder / "environments").mkdir(parents=True)
    state = tmp_path / "state"
    state.mkdir()
    ledger_url = f"sqlite:///{state / 'ledger.db'}"
    ledger = Ledger.open(ledger_url)
    for sha, digest in ((SHA_A, DIGEST_A), (SHA_B, DIGEST_B)):
        ledger.record_version(_version(sha, digest))
        stamp = now()
        record_test_run(
            ledger,
            TestRun(
                run_id=f"run-{sha[:4]}",
                image=IMAGE,
                sha=sha,
                digest=digest,
                passed=True,
                summary={},
                artifacts="",
                started_at=stamp,
                finished_at=stamp,
            ),
        )
    with FakeArtifactRegistry(REPOSITORY) as fake:
        fake.push(REPOSITORY, IMAGE, DIGEST_A, tags=(SHA_A,))
        fake.push(REPOSITORY, IMAGE, DIGEST_B, tags=(SHA_B,))
        env = {**artifact_registry_env(fake.endpoint, REGISTRY, state), "ENVCTL_ACTOR": "tester"}
        yield World(fake, folder, env, ledger_url)


# The world's commits are ledger rows only (no git repository), so production can't read
# their sign-off rule and refuses unless forced, which is recorded; the tags are what is tested.
UNREAD_RULE = ("--force", "--reason", "no repository in this test world")


def _tag_writes(fake: FakeArtifactRegistry) -> list[tuple[str, str, str]]:
    """(method, tag, version digest) of each tag write, with the mask checked on updates."""
    found = []
    for request in fake.writes():
        body = request.json()
        if request.method == "POST":
            assert request.path == f"/v1/{PACKAGE}/tags"
            found.append(("create", request.param("tagId"), body["version"].rpartition("/")[2]))
        elif request.method == "PATCH":
            assert request.param("updateMask") == "version", request.query
            assert set(body) == {"version"}  # the name travels in the URL; the mask names the field
            found.append(("update", request.path.rpartition("/")[2], body["version"].rpartition("/")[2]))
    return found


def test_promote_rollback_status_and_sync_move_artifact_registry_tags(world: World) -> None:
    fake = world.fake
    code, _, err = world.run("promote", f"{IMAGE}.staging", "--rev", SHA_A)
    assert code == 0, err
    assert world.tags()["staging"] == DIGEST_A
    assert _tag_writes(fake) == [("create", "staging", DIGEST_A)]
    # the first look at the tag found it absent, so it was created (never an update of a missing tag)
    assert fake.sent("GET", f"/v1/{PACKAGE}/tags/staging")

    code, _, err = world.run("promote", f"{IMAGE}.production", "--rev", SHA_A, *UNREAD_RULE)
    assert code == 0, err
    code, _, err = world.run("promote", f"{IMAGE}.production", "--rev", SHA_B, *UNREAD_RULE)
    assert code == 0, err
    assert world.tags()["production"] == DIGEST_B and world.tags()["fallback"] == DIGEST_A
    assert _tag_writes(fake)[1:] == [
        ("create", "production", DIGEST_A),
        ("create", "fallback", DIGEST_A),
        ("update", "production", DIGEST_B),
    ]

    code, _, err = world.run("rollback", IMAGE)
    assert code == 0, err
    assert world.tags()["production"] == DIGEST_A and world.tags()["fallback"] == DIGEST_A
    assert _tag_writes(fake)[4:] == [("update", "production", DIGEST_A)]

    status = world.status()
    assert {s: row["drift"] for s, row in status.items()} == {
        "staging": None,
        "production": None,
        "fallback": None,
    }
    assert status["production"]["tag"] == f"{REGISTRY}/{IMAGE}:production"
    assert status["production"]["image_ref"] == f"{REGISTRY}/{IMAGE}@{DIGEST_A}"
    assert status["production"]["tag_digest"] == DIGEST_A

    # behind envctl's back: production moved, staging deleted
    with fake.lock:
        fake.packages[(REPOSITORY, IMAGE)].tags["production"] = DIGEST_B
        del fake.packages[(REPOSITORY, IMAGE)].tags["staging"]
    status = world.status()
    assert status["production"]["drift"] == "moved" and status["production"]["tag_digest"] == DIGEST_B
    assert status["staging"]["drift"] == "missing"
    assert status["fallback"]["drift"] is None

    writes_before = len(_tag_writes(fake))
    events_before = world.events()
    code, _, err = world.run("sync")
    assert code == 0, err
    assert world.tags() == {
        SHA_A: DIGEST_A,
        SHA_B: DIGEST_B,
        "staging": DIGEST_A,
        "production": DIGEST_A,
        "fallback": DIGEST_A,
    }
    assert sorted(_tag_writes(fake)[writes_before:]) == [
        ("create", "staging", DIGEST_A),
        ("update", "production", DIGEST_A),
    ]
    assert world.events() == events_before  # sync republishes; the ledger does not move
    assert {row["drift"] for row in world.status().values()} == {None}

    # a second sync finds nothing to do and writes nothing
    writes_before = len(fake.writes())
    code, _, err = world.run("sync")
    assert code == 0, err
    assert len(fake.writes()) == writes_before


def _unchanged(world: World, *args: str, code: int, match: str, **extra: str) -> str:
    events, tags = world.events(), world.tags()
    started = time.monotonic()
    got, _, err = world.run(*args, **extra)
    assert got == code, err
    assert time.monotonic() - started < 20
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback, no library noise
    line = err.strip()
    assert match in line, err
    assert world.events() == events and world.tags() == tags
    return line


def test_permission_denied_changes_nothing(world: World) -> None:
    world.fake.granted = WRITER - {"artifactregistry.tags.create", "artifactregistry.tags.update"}
    line = _unchanged(world, "promote", f"{IMAGE}.staging", "--rev", SHA_A, code=3, match="permission denied")
    assert "artifactregistry.tags.create" in line and "roles/artifactregistry.writer" in line

    world.fake.granted = WRITER - {"artifactregistry.repositories.get"}
    _unchanged(
        world,
        "rollback",
        IMAGE,
        "--to",
        SHA_A,
        code=3,
        match="permission denied on Artifact Registry repository",
    )
    code, _, err = world.run("status")
    assert code == 3 and "permission denied" in err and "drift is unknown" in err, err


def test_a_missing_repository_names_the_command_that_creates_it(world: World) -> None:
    line = _unchanged(
        world,
        "promote",
        f"{IMAGE}.staging",
        "--rev",
        SHA_A,
        code=2,
        match="does not exist",
        ENVCTL_REGISTRY="europe-west4-docker.pkg.dev/proj/other",
    )
    assert (
        "gcloud artifacts repositories create other --repository-format=docker --location=europe-west4"
        in line
    )


def test_api_not_enabled_and_quota_are_one_line_exit_3(world: World) -> None:
    world.fake.fail("GET", f"/v1/{REPOSITORY}", service_disabled("artifactregistry.googleapis.com", "proj"))
    _unchanged(
        world,
        "promote",
        f"{IMAGE}.staging",
        "--rev",
        SHA_A,
        code=3,
        match="gcloud services enable artifactregistry.googleapis.com --project=proj",
    )
    world.fake.clear_failures()
    world.fake.fail(
        "POST", f"/v1/{PACKAGE}/tags", GoogleError("RESOURCE_EXHAUSTED", "Quota exceeded for writes")
    )
    code, _, err = world.run("promote", f"{IMAGE}.staging", "--rev", SHA_A)
    # the ledger is the commit point: it moved, the tag write failed; the line says to sync
    assert code == 3 and "quota exhausted" in err and "envctl sync" in err, err
    world.fake.clear_failures()
    code, _, err = world.run("sync", IMAGE)
    assert code == 0, err
    assert world.tags()["staging"] == DIGEST_A


def test_a_version_missing_from_the_repository_is_refused_before_the_ledger_moves(world: World) -> None:
    with world.fake.lock:
        del world.fake.packages[(REPOSITORY, IMAGE)].versions[DIGEST_B]
    _unchanged(world, "promote", f"{IMAGE}.staging", "--rev", SHA_B, code=3, match="is not in the registry")


def test_a_dead_artifact_registry_fails_fast_with_exit_3(world: World) -> None:
    code, _, err = world.run("promote", f"{IMAGE}.staging", "--rev", SHA_A)
    assert code == 0, err
    world.fake.stop()
    _unchanged(
        world, "promote", f"{IMAGE}.production", "--rev", SHA_A, code=3, match="Artifact Registry repository"
    )
    _unchanged(world, "sync", code=3, match="does not answer")
    code, out, err = world.run("status", "--json")
    assert code == 3 and "drift is unknown" in err, err
    assert {row["stage"]: row["drift"] for row in json.loads(out)}["staging"] == "unknown"


def test_missing_credentials_name_the_login(world: World, tmp_path: Path) -> None:
    env = {k: v for k, v in world.env.items() if k != "ENVCTL_GCP_ENDPOINTS"}
    done = envctl(
        "promote",
        f"{IMAGE}.staging",
        "--rev",
        SHA_A,
        cwd=world.folder,
        env={**env, "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "no-such-key.json")},
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "gcloud auth application-default login" in done.stderr
    assert world.events() == []
