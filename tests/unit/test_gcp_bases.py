"""`envctl bases` on the gcp backend reads a Deep Learning Containers base through Artifact Registry.

The real `envctl` runs with ENVCTL_BACKEND=gcp against the fake Artifact Registry
(real client library, REST): the base's tag is read with `get_tag`, its package's
release tags with `list_tags`. The ledger holds staging's version, built on the base's
previous digest (its labels, as the build stage records them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.artifactregistry_v1")

from pipeline.ledger.db import Ledger, Version, now
from tests import minirepo
from tests.gcpfakes.artifactregistry import FakeArtifactRegistry
from tests.helpers import envctl
from tests.ledgerfacts import artifact_registry_env, move

DLC = "projects/deeplearning-platform-release/locations/us/repositories/gcr.io"
BASE = "us-docker.pkg.dev/deeplearning-platform-release/gcr.io/base-cpu.py310"
OURS = "projects/proj/locations/europe-west4/repositories/repo"
REGISTRY = "europe-west4-docker.pkg.dev/proj/repo"
OLD, NEW, NEXT = ("sha256:" + c * 64 for c in "abc")


def test_bases_reads_the_dlc_base_and_its_newer_releases_from_artifact_registry(tmp_path: Path) -> None:
    mini = minirepo.make(tmp_path)
    spec = mini.read("environments/__IMAGE__.yaml").replace(
        f"    gcp: {BASE}\n", f"    gcp: {BASE}:m125\n    track: '^m(\\d+)$'\n"
    )
    mini.write("environments/__IMAGE__.yaml", spec)
    sha = mini.commit("watch the m-releases")
    state = tmp_path / "state"
    ledger = Ledger.open(f"sqlite:///{state / 'ledger.db'}")
    digest = "sha256:" + "d" * 64
    ledger.record_version(
        Version(
            image=mini.image,
            sha=sha,
            tree="0" * 40,
            inputs_key="i",
            build_key="b",
            digest=digest,
            image_ref=f"{REGISTRY}/{mini.image}@{digest}",
            size=None,
            reused_from=None,
            labels={
                "org.opencontainers.image.base.name": f"{BASE}:m125",
                "org.opencontainers.image.base.digest": OLD,
            },
            sbom={},
            created_at=now(),
        )
    )
    move(ledger, mini.image, "staging", sha, digest)
    with FakeArtifactRegistry(DLC, OURS) as fake:
        fake.push(DLC, "base-cpu.py310", OLD, tags=("m124",))
        fake.push(DLC, "base-cpu.py310", NEW, tags=("m125", "latest"))
        fake.push(DLC, "base-cpu.py310", NEXT, tags=("m126",))
        env = artifact_registry_env(fake.endpoint, REGISTRY, state)
        done = envctl("bases", "--json", cwd=mini.path, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)
        assert row["base"] == f"{BASE}:m125"
        assert row["current_digest"] == NEW
        assert row["staging"]["base_digest"] == OLD and row["staging"]["sha"] == sha
        assert row["production"] is None
        assert row["moved"] == {"staging": True, "production": False}
        assert row["newer_tags"] == ["m126"]
        package = f"/v1/{DLC}/packages/base-cpu.py310"
        assert [r.path for r in fake.sent("GET", f"{package}/tags/m125")]
        assert [r.path for r in fake.sent("GET", f"{package}/tags")]
        assert not fake.sent("DELETE") and not fake.sent("POST") and not fake.sent("PATCH")

        # The tag gone from the registry: exit 3, one line per image saying so.
        with fake.lock:
            del fake.packages[(DLC, "base-cpu.py310")].tags["m125"]
        gone = envctl("bases", cwd=mini.path, env=env, timeout=120)
        assert gone.returncode == 3, gone.stderr
        assert f"{BASE}:m125 is not in its registry" in gone.stderr
        assert "Traceback" not in gone.stderr
        # The base refresh can't read it either: exit 3 after the readable ones, one line each.
        refresh = envctl(
            "pipeline", "run", "--branch", "staging", "--refresh-base", cwd=mini.path, env=env, timeout=120
        )
        assert refresh.returncode == 3, refresh.stderr
        assert f"{BASE}:m125 is not in its registry" in refresh.stderr
        assert f"the base of {mini.image} could not be read" in refresh.stderr
        assert "Traceback" not in refresh.stderr

        # A base pinned by digest is the spec's mistake, not the registry's: exit 2.
        mini.write("environments/__IMAGE__.yaml", spec.replace(f"{BASE}:m125", f"{BASE}@{NEW}"))
        mini.commit("pin the base by digest")
        pinned = envctl("bases", "--rev", "HEAD", cwd=mini.path, env=env, timeout=120)
        assert pinned.returncode == 2, pinned.stderr
        assert "is pinned by digest; name a tag to watch it" in pinned.stderr
        assert "Traceback" not in pinned.stderr
