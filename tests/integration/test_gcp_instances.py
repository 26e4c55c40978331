"""`envctl instances` on the gcp backend: a Workbench instance from an environment ID, end to end.

Real: the `envctl` CLI in a child process, the SQLite ledger, git (the spec's `cloud`
section is read at each version's commit), promotion. Google Cloud is the wire-level
fakes: Artifact Registry holds the versions' `<sha>` tags and the moved environment tags,
Workbench (notebooks v2) keeps the instances. Versions are recorded in the ledger
directly (no build: the fake Workbench pulls nothing), each with passing evidence.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytest.importorskip("google.cloud.notebooks_v2")

from pipeline.ledger.db import Ledger, TestRun, Version, now, record_test_run
from tests import minirepo
from tests.gcpfakes.artifactregistry import FakeArtifactRegistry
from tests.gcpfakes.notebooks import FakeNotebooks
from tests.helpers import envctl
from tests.integration.test_gcp_build import PROJECT, REGISTRY, REPOSITORY_NAME
from tests.minirepo import git

pytestmark = pytest.mark.integration
ZONE = "europe-west4-a"
PARENT = f"projects/{PROJECT}/locations/{ZONE}"
CLOUD = {
    "c1": "cloud:\n  machine_type: n1-standard-8\n  accelerator:\n    type: nvidia-tesla-t4\n    count: 1\n",
    "c2": "cloud:\n  machine_type: n1-highmem-8\n  accelerator:\n    type: nvidia-tesla-t4\n    count: 2\n",
}


def on_vertex(cloud: str) -> dict[str, object]:
    """Where a Vertex AI run of the spec's `cloud` section ran, as the Vertex runner records it."""
    section = yaml.safe_load(cloud)["cloud"]
    count = section["accelerator"]["count"]
    kind = section["accelerator"]["type"].upper().replace("-", "_")
    return {
        "backend": "vertex",
        "machine": section["machine_type"],
        "accelerator": {"type": kind, "count": count},
        "asked": f"{count} x {kind}",
        "region": "europe-west4",
    }


@dataclass
class Workbench:
    mini: minirepo.MiniRepo
    root: Path
    registry: FakeArtifactRegistry
    notebooks: FakeNotebooks
    sha: dict[str, str] = field(default_factory=dict)
    digest: dict[str, str] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return self.mini.image

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.root / 'ledger.db'}"

    def envctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "ENVCTL_BACKEND": "gcp",
            "ENVCTL_REGISTRY": REGISTRY,
            "ENVCTL_LEDGER_URL": self.ledger_url,
            "ENVCTL_STATE_DIR": str(self.root / "state"),
            "ENVCTL_GCP_ENDPOINTS": (
                f"artifactregistry={self.registry.endpoint},notebooks={self.notebooks.endpoint}"
            ),
            "ENVCTL_GCP_TIMEOUT": "10",
            "ENVCTL_GCP_RETRY": "false",
            "ENVCTL_GCP_BUILD_POLL": "0",
        }
        return envctl(*args, cwd=self.mini.path, env=env, timeout=120)

    def instances(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.envctl("instances", "--project", PROJECT, "--zone", ZONE, *args)

    def version(self, name: str) -> None:
        """Commit the spec with `CLOUD[name]` and record that commit as a tested version."""
        spec = self.mini.read("environments/__IMAGE__.yaml").split("cloud:")[0]
        self.mini.write("environments/__IMAGE__.yaml", spec + CLOUD[name])
        sha = self.mini.commit(f"version {name}")
        digest = "sha256:" + secrets.token_hex(32)
        self.sha[name], self.digest[name] = sha, digest
        ledger = Ledger.open(self.ledger_url)
        ledger.record_version(
            Version(
                image=self.image,
                sha=sha,
                tree=git(self.mini.path, "rev-parse", f"{sha}^{{tree}}"),
                inputs_key=name,
                build_key=f"{name}-{secrets.token_hex(4)}",
                digest=digest,
                image_ref=f"{REGISTRY}/{self.image}@{digest}",
                size=None,
                reused_from=None,
                labels={},
                sbom={},
                created_at=now(),
            )
        )
        record_test_run(
            ledger,
            TestRun(
                run_id=uuid.uuid4().hex,
                image=self.image,
                sha=sha,
                digest=digest,
                passed=True,
                summary={"notebooks": 1, "failed": 0},
                artifacts="",
                started_at=now(),
                finished_at=now(),
                # Tested on Vertex AI on the spec's machine: production takes no CPU evidence
                # for a spec that asks for a GPU.
                ran_on=on_vertex(CLOUD[name]),
            ),
        )
        self.registry.push(REPOSITORY_NAME, self.image, digest, (sha,))

    def listed(self) -> dict[str, dict[str, object]]:
        result = self.instances("list", "--json")
        assert result.returncode == 0, result.stderr
        return {i["name"]: i for i in json.loads(result.stdout)}


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Workbench]:
    registry = FakeArtifactRegistry(REPOSITORY_NAME)
    notebooks = FakeNotebooks()
    with registry, notebooks:
        yield Workbench(minirepo.make(tmp_path), tmp_path, registry, notebooks)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("envctl: error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_workbench_instance_from_an_env_id_goes_stale_and_restarts_onto_the_new_version(
    bench: Workbench,
) -> None:
    env = f"{bench.image}.production"
    bench.version("c1")
    promoted = bench.envctl("promote", env, "--rev", bench.sha["c1"])
    assert promoted.returncode == 0, promoted.stderr

    created = bench.instances("create", "alice", "--env", env, "--json")
    assert created.returncode == 0, created.stderr
    assert "alice: PROVISIONING" in created.stderr  # the operation was followed
    shown = json.loads(created.stdout)
    assert (shown["digest"], shown["status"], shown["stale"]) == (bench.digest["c1"], "ACTIVE", False)
    (create,) = bench.notebooks.sent("POST", rf"/v2/{PARENT}/instances")
    assert create.param("instanceId") == "alice"
    setup = create.json()["gceSetup"]
    repository = f"{REGISTRY}/{bench.image}"
    assert setup["containerImage"] == {"repository": repository, "tag": bench.sha["c1"]}
    assert setup["machineType"] == "n1-standard-8"
    assert [a["coreCount"] for a in setup["acceleratorConfigs"]] == ["1"]
    assert setup["metadata"]["envctl-digest"] == bench.digest["c1"]
    disk = bench.notebooks.data_disk_of("alice")
    assert disk is not None

    # A promotion of a new version: the instance is listed as stale.
    bench.version("c2")
    assert bench.envctl("promote", env, "--rev", bench.sha["c2"]).returncode == 0
    alice = bench.listed()["alice"]
    assert (alice["stale"], alice["digest"], alice["current_digest"]) == (
        True,
        bench.digest["c1"],
        bench.digest["c2"],
    )
    table = bench.instances("list")
    assert "stale: restart to upgrade" in table.stdout

    # Restart: the same instance and data disk, on c2's image and c2's machine.
    restarted = bench.instances("restart", "alice")
    assert restarted.returncode == 0, restarted.stderr
    after = bench.notebooks.instance("alice")
    assert after.gce_setup.container_image.repository == repository
    assert after.gce_setup.container_image.tag == bench.sha["c2"]
    assert after.gce_setup.machine_type == "n1-highmem-8"
    assert [a.core_count for a in after.gce_setup.accelerator_configs] == [2]
    assert bench.notebooks.data_disk_of("alice") == disk
    assert after.state.name == "ACTIVE" and not bench.notebooks.sent("DELETE")
    assert bench.listed()["alice"]["stale"] is False

    deleted = bench.instances("delete", "alice")
    assert deleted.returncode == 0, deleted.stderr
    assert bench.notebooks.instance("alice") is None and bench.listed() == {}


def test_create_is_refused_when_the_sha_tag_names_another_digest(bench: Workbench) -> None:
    env = f"{bench.image}.staging"
    bench.version("c1")
    assert bench.envctl("promote", env, "--rev", bench.sha["c1"]).returncode == 0
    # Someone pushed other bytes under the version's own tag.
    bench.registry.push(REPOSITORY_NAME, bench.image, "sha256:" + "f" * 64, (bench.sha["c1"],))

    refused = bench.instances("create", "bob", "--env", env)
    one_line_error(refused, 1, f":{bench.sha['c1']} names sha256:ffff", bench.digest["c1"], "envctl sync")
    assert not bench.notebooks.sent("POST")

    unknown = bench.instances("restart", "nobody")
    one_line_error(unknown, 2, "no instance named 'nobody'")
