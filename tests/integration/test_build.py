"""The build stage on the real stack: Docker Engine, registry, git and the ledger."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pipeline.build.engine import connect
from pipeline.ledger.db import Ledger
from pipeline.publish.oci import Registry
from tests import minirepo
from tests.helpers import envctl
from tests.stageworld import OwnRegistry

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.stagefixtures"]


@pytest.fixture
def mini(tmp_path: Path) -> Iterator[minirepo.MiniRepo]:
    repo = minirepo.make(tmp_path)
    try:
        yield repo
    finally:
        minirepo.remove_local_images(f"localhost:5000/{repo.image}")


def build(mini: minirepo.MiniRepo, rev: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return envctl(
        "build",
        mini.image,
        "--rev",
        rev,
        "--json",
        "--quiet",
        cwd=mini.path,
        env=mini.env(tmp_path / "state"),
    )


def ledger(tmp_path: Path) -> Ledger:
    return Ledger.open(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")


def test_build_then_rebuild_then_reuse_then_new_digest(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    first_sha = minirepo.git(mini.path, "rev-parse", "HEAD")
    first = build(mini, "staging", tmp_path)
    assert first.returncode == 0, first.stderr
    built = json.loads(first.stdout)
    assert built["action"] == "built"
    assert built["sha"] == first_sha
    assert built["digest"].startswith("sha256:")

    # The same commit again: no build, the same digest.
    again = json.loads(build(mini, first_sha[:10], tmp_path).stdout)
    assert again["action"] == "existing"
    assert again["digest"] == built["digest"]

    # Only a test notebook changes: the new SHA is tagged onto the same digest.
    mini.write("test-notebooks/__IMAGE__/second.ipynb", mini.read("test-notebooks/__IMAGE__/greet.ipynb"))
    second_sha = mini.commit("add a notebook")
    reused = json.loads(build(mini, "staging", tmp_path).stdout)
    assert reused["action"] == "reused"
    assert reused["sha"] == second_sha
    assert reused["digest"] == built["digest"]
    assert reused["reused_from"] == first_sha
    registry = Registry("localhost:5000")
    manifest = registry.manifest(mini.image, second_sha)
    assert manifest is not None and manifest.digest == built["digest"]

    # A Dockerfile change builds a new digest.
    mini.write(
        "docker/__IMAGE__/Dockerfile",
        mini.read("docker/__IMAGE__/Dockerfile") + "RUN echo changed > /opt/changed\n",
    )
    third_sha = mini.commit("change the Dockerfile")
    changed = json.loads(build(mini, third_sha, tmp_path).stdout)
    assert changed["action"] == "built"
    assert changed["digest"] != built["digest"]

    recorded = {v.sha: v.digest for v in ledger(tmp_path).list_versions(mini.image)}
    assert recorded == {first_sha: built["digest"], second_sha: built["digest"], third_sha: changed["digest"]}


def test_plain_docker_pull_gets_the_recorded_digest(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    result = build(mini, "staging", tmp_path)
    assert result.returncode == 0, result.stderr
    sha, digest = json.loads(result.stdout)["sha"], json.loads(result.stdout)["digest"]
    ref = f"localhost:5000/{mini.image}:{sha}"
    client = connect()
    client.images.remove(ref, force=True)
    pulled = subprocess.run(["docker", "pull", ref], capture_output=True, text=True, timeout=300, check=True)
    assert f"Digest: {digest}" in pulled.stdout
    version = ledger(tmp_path).get_version(mini.image, sha)
    assert version is not None and version.digest == digest


def test_labels_and_sbom_are_recorded(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    result = build(mini, "staging", tmp_path)
    assert result.returncode == 0, result.stderr
    sha = json.loads(result.stdout)["sha"]
    labels = Registry("localhost:5000").labels(mini.image, sha)
    assert labels is not None
    assert labels["org.opencontainers.image.revision"] == sha
    assert labels["org.opencontainers.image.base.name"] == "localhost:5000/dlc/base-cpu:local"
    assert labels["org.opencontainers.image.base.digest"].startswith("sha256:")
    assert labels["org.opencontainers.image.created"]
    assert labels["org.opencontainers.image.source"]
    assert labels["org.envctl.version"]
    version = ledger(tmp_path).get_version(mini.image, sha)
    assert version is not None
    assert labels["org.envctl.build-key"] == version.build_key
    pip_names = {p["name"].lower() for p in version.sbom["pip"]}
    assert {"papermill", "ipykernel", "jupyterlab"} <= pip_names
    assert any(p["name"] == "python3" for p in version.sbom["dpkg"])
    assert version.size and version.size > 100_000_000


def test_dirty_work_tree_does_not_leak(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    mini.write("docker/__IMAGE__/greeting.py", "print('uncommitted')\n")
    result = build(mini, "staging", tmp_path)
    assert result.returncode == 0, result.stderr
    sha = json.loads(result.stdout)["sha"]
    out = connect().containers.run(
        f"localhost:5000/{mini.image}:{sha}", ["cat", "/opt/greeting.py"], network_mode="none", remove=True
    )
    assert b"uncommitted" not in out


def test_failing_run_exits_1_naming_the_step(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    mini.write(
        "docker/__IMAGE__/Dockerfile",
        mini.read("docker/__IMAGE__/Dockerfile") + "RUN echo about-to-fail && exit 3\n",
    )
    sha = mini.commit("break the build")
    result = build(mini, sha, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "build failed at step [" in result.stderr
    assert "RUN echo about-to-fail && exit 3: " in result.stderr.split("last")[0]
    assert "about-to-fail" in result.stderr.split("last")[1]
    assert "Traceback" not in result.stderr
    assert ledger(tmp_path).get_version(mini.image, sha) is None


def test_dockerfile_syntax_error_exits_1(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    mini.write("docker/__IMAGE__/Dockerfile", "FROM ${BASE_IMAGE}\nRUNX echo\n")
    sha = mini.commit("syntax error")
    result = build(mini, sha, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "unknown instruction" in result.stderr.lower()
    assert ledger(tmp_path).get_version(mini.image, sha) is None


@pytest.mark.parametrize(
    ("rev", "message"),
    [
        ("no-such-branch", "unknown revision 'no-such-branch'; give a branch, tag or commit SHA"),
        ("deadbeef00", "unknown revision 'deadbeef00'; no commit of this repository starts with it"),
    ],
)
def test_bad_revisions_exit_2(mini: minirepo.MiniRepo, tmp_path: Path, rev: str, message: str) -> None:
    result = build(mini, rev, tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ambiguous_prefix_exits_2(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    # 40,000 empty commits on a side branch make two share a 7-character prefix (birthday bound).
    stream = []
    for i in range(40_000):
        stream.append(
            f"commit refs/heads/noise\ncommitter t <t@example.com> {1_700_000_000 + i} +0000\n"
            f"data {len(str(i))}\n{i}\n\n"
        )
    subprocess.run(
        ["git", "-C", str(mini.path), "fast-import", "--quiet"], input="".join(stream), text=True, check=True
    )
    shas = minirepo.git(mini.path, "rev-list", "noise").split()
    seen: dict[str, str] = {}
    prefix = ""
    for sha in shas:
        if sha[:7] in seen:
            prefix = sha[:7]
            break
        seen[sha[:7]] = sha
    assert prefix, "no two of 40,000 commits shared a 7-character prefix"

    result = build(mini, prefix, tmp_path)

    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()
        == [
            f"envctl: error: SHA prefix '{prefix}' is ambiguous ({seen[prefix][:12]}, "
            f"{next(s for s in shas if s.startswith(prefix) and s != seen[prefix])[:12]}); give more characters"
        ]
        or "is ambiguous" in result.stderr
    )
    assert "ambiguous" in result.stderr and tmp_path.name not in result.stderr


def test_short_prefix_exits_2(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    sha = minirepo.git(mini.path, "rev-parse", "HEAD")
    result = build(mini, sha[:5], tmp_path)
    assert result.returncode == 2
    assert f"SHA prefix '{sha[:5]}' is too short; give at least 7 characters" in result.stderr


def test_image_without_spec_at_that_commit_exits_2(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    result = envctl(
        "build", "team.absent", "--rev", "staging", cwd=mini.path, env=mini.env(tmp_path / "state")
    )
    assert result.returncode == 2
    assert "unknown image 'team.absent'" in result.stderr


def test_unreachable_registry_exits_3(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    env = {**mini.env(tmp_path / "state"), "ENVCTL_REGISTRY": "localhost:5999"}
    result = envctl("build", mini.image, "--rev", "staging", cwd=mini.path, env=env)
    assert result.returncode == 3
    assert "localhost:5999" in result.stderr
    assert ledger(tmp_path).list_versions(mini.image) == []


def test_unreachable_engine_exits_3(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    env = {**mini.env(tmp_path / "state"), "ENVCTL_DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    result = envctl("build", mini.image, "--rev", "staging", cwd=mini.path, env=env)
    assert result.returncode == 3
    assert "Docker Engine does not answer" in result.stderr
    assert ledger(tmp_path).list_versions(mini.image) == []


def test_reuse_rebuilds_when_the_registry_lost_the_digest(
    mini: minirepo.MiniRepo, tmp_path: Path, own_registry: OwnRegistry
) -> None:
    env = {**mini.env(tmp_path / "state"), "ENVCTL_REGISTRY": own_registry.host}
    first = envctl("build", mini.image, "--rev", "staging", "--json", "--quiet", cwd=mini.path, env=env)
    assert first.returncode == 0, first.stderr
    built = json.loads(first.stdout)
    # Out of band, the registry loses the manifest (deletes are on in this registry of the test's own).
    deleted = requests.delete(
        f"http://{own_registry.host}/v2/{mini.image}/manifests/{built['digest']}", timeout=30
    )
    assert deleted.status_code == 202, deleted.text
    assert Registry(own_registry.host).manifest(mini.image, built["digest"]) is None

    # A new commit with the same build inputs: no reuse of a digest nobody can pull.
    mini.write("test-notebooks/__IMAGE__/second.ipynb", mini.read("test-notebooks/__IMAGE__/greet.ipynb"))
    second_sha = mini.commit("add a notebook")
    second = envctl("build", mini.image, "--rev", second_sha, "--json", "--quiet", cwd=mini.path, env=env)

    assert second.returncode == 0, second.stderr
    rebuilt = json.loads(second.stdout)
    assert rebuilt["action"] == "built"
    assert (
        f"reused digest {built['digest']} (of {built['sha'][:12]}) is gone from the registry; rebuilding"
        in (second.stderr)
    )
    _pulls(f"{own_registry.host}/{mini.image}@{rebuilt['digest']}")
    version = ledger(tmp_path).get_version(mini.image, second_sha)
    assert version is not None and version.digest == rebuilt["digest"]

    # The first commit again: its recorded digest is gone, so it is built again (same bytes).
    again = envctl("build", mini.image, "--rev", built["sha"], "--json", "--quiet", cwd=mini.path, env=env)
    assert again.returncode == 0, again.stderr
    assert f"recorded digest {built['digest']} is gone from the registry; rebuilding" in again.stderr
    assert json.loads(again.stdout)["digest"] == built["digest"]
    _pulls(f"{own_registry.host}/{mini.image}@{built['digest']}")


def _pulls(ref: str) -> None:
    """Plain `docker pull` of a reference by digest, after dropping every local copy of it."""
    client = connect()
    repository = ref.split("@")[0]
    for image in client.images.list(name=repository):
        client.images.remove(image.id, force=True)
    pulled = subprocess.run(["docker", "pull", ref], capture_output=True, text=True, timeout=300, check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert f"Digest: {ref.split('@')[1]}" in pulled.stdout
