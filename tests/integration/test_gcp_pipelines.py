"""cloudbuild/staging.yaml and production.yaml, rendered and run end to end against the fakes.

The envctl command lines of the configs' envctl steps run with their own environment
(ENVCTL_BACKEND=gcp, the registry and ledger substitutions) plus ENVCTL_GCP_ENDPOINTS
pointing at the fakes: Cloud Build builds, Artifact Registry holds the tags.

What is real and what is not: the fake Cloud Build runs no Dockerfile. Its build returns
the digest of an image this test builds first on the local Docker Engine from the same
repository, at a parent commit with the same inputs, and whose notebooks the local test
stage runs for real (`envctl test`, local backend, same ledger). That run is the evidence
for the digest; the gcp staging pipeline finds it ("already passed its tests") instead
of testing again, since the test stage on Google Cloud (Vertex AI) is issue 12 and the
local engine can't pull from Artifact Registry here. No pass is recorded without a run.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytest.importorskip("google.cloud.devtools.cloudbuild_v1")

from tests.gcpfakes.artifactregistry import FakeArtifactRegistry
from tests.gcpfakes.cloudbuild import CloudBuildFake, Outcome
from tests.gcpfakes.storage import FakeStorage
from tests.helpers import ROOT, envctl
from tests.integration.test_gcp_build import BUCKET, REGISTRY, REPOSITORY_NAME, gcp_repo
from tests.minirepo import MiniRepo, git

pytestmark = pytest.mark.integration


def render(text: str, substitutions: dict[str, str]) -> str:
    """Cloud Build's substitution: `$NAME` and `${NAME}`; `$$` is a dollar."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        return substitutions[name]

    return re.sub(r"\$\$|\$\{([A-Z_][A-Z0-9_]*)\}|\$([A-Z_][A-Z0-9_]*)", one, text)


def envctl_steps(config_path: Path, substitutions: dict[str, str]) -> list[tuple[list[str], dict[str, str]]]:
    """The envctl command lines of the config, with the environment their step sets."""
    config = yaml.safe_load(config_path.read_text())
    found = []
    for step in config["steps"]:
        env = dict(render(e, substitutions).split("=", 1) for e in step.get("env", []))
        args = [render(a, substitutions) for a in step.get("args", [])]
        if step.get("entrypoint") == "envctl":
            found.append((args, env))
            continue
        script = args[-1] if args else ""
        for line in script.splitlines():
            if line.strip().startswith("envctl "):
                found.append((shlex.split(line.strip())[1:], env))
    return found


@dataclass
class Pipelines:
    mini: MiniRepo
    root: Path
    cloudbuild: CloudBuildFake
    registry: FakeArtifactRegistry
    storage: FakeStorage

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.root / 'ledger.db'}"

    def gcp_env(self) -> dict[str, str]:
        return {
            "ENVCTL_GCP_ENDPOINTS": (
                f"cloudbuild={self.cloudbuild.endpoint},artifactregistry={self.registry.endpoint},"
                f"storage={self.storage.endpoint}"
            ),
            "ENVCTL_GCP_TIMEOUT": "10",
            "ENVCTL_GCP_RETRY": "false",
            "ENVCTL_GCP_BUILD_POLL": "0",
            "ENVCTL_STATE_DIR": str(self.root / "state"),
        }

    def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"ENVCTL_LEDGER_URL": self.ledger_url, "ENVCTL_STATE_DIR": str(self.root / "local-state")}
        return envctl(*args, cwd=self.mini.path, env=env)

    def gcp(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "ENVCTL_BACKEND": "gcp",
            "ENVCTL_REGISTRY": REGISTRY,
            "ENVCTL_LEDGER_URL": self.ledger_url,
            **self.gcp_env(),
        }
        return envctl(*args, cwd=self.mini.path, env=env)

    def push(self, branch: str, sha: str) -> list[subprocess.CompletedProcess[str]]:
        """What the branch's trigger runs: the config's envctl lines, rendered for this push."""
        git(self.mini.path, "update-ref", f"refs/heads/{branch}", sha)
        substitutions = {
            "BRANCH_NAME": branch,
            "COMMIT_SHA": sha,
            "SHORT_SHA": sha[:7],
            "BUILD_ID": f"build-{branch}-{sha[:7]}",
            "PROJECT_ID": "proj",
            "_REGISTRY": REGISTRY,
            "_LEDGER_URL": self.ledger_url,
            "_ENVCTL_IMAGE": "europe-west4-docker.pkg.dev/proj/tools/envctl@sha256:" + "e" * 64,
            "_ARTIFACTS_BUCKET": "gs://proj-artifacts",
        }
        results = []
        for argv, step_env in envctl_steps(ROOT / "cloudbuild" / f"{branch}.yaml", substitutions):
            env = {k: v for k, v in step_env.items() if k.startswith("ENVCTL_")}
            if "ENVCTL_ARTIFACTS_DIR" in env:
                env["ENVCTL_ARTIFACTS_DIR"] = str(self.root / "workspace" / "artifacts")
            env.update(self.gcp_env())
            results.append(envctl(*argv, cwd=self.mini.path, env=env, timeout=600))
        return results

    def evidence_from_a_local_run(self, sha: str) -> str:
        """Build `sha` on the local engine and run its notebooks for real; return the digest."""
        built = self.local("build", self.mini.image, "--rev", sha, "--json", "--quiet")
        assert built.returncode == 0, built.stderr
        tested = self.local("test", self.mini.image, "--rev", sha)
        assert tested.returncode == 0, tested.stderr
        digest: str = json.loads(built.stdout)["digest"]
        return digest

    def status(self) -> dict[str, dict[str, object]]:
        result = self.gcp("status", self.mini.image, "--json")
        assert result.returncode == 0, result.stderr
        return {row["stage"]: row for row in json.loads(result.stdout)}

    def tags(self) -> dict[str, str]:
        return self.registry.tags_of(REPOSITORY_NAME, self.mini.image)


@pytest.fixture
def pipelines(tmp_path: Path) -> Iterator[Pipelines]:
    storage = FakeStorage(buckets=(BUCKET,))
    registry = FakeArtifactRegistry(REPOSITORY_NAME)
    cloudbuild = CloudBuildFake(storage=storage, registry=registry)
    with storage, registry, cloudbuild:
        yield Pipelines(gcp_repo(tmp_path), tmp_path, cloudbuild, registry, storage)


def _commit(mini: MiniRepo, path: str, text: str, message: str) -> str:
    mini.write(path, text)
    return mini.commit(message)


def test_staging_and_production_configs_run_end_to_end_on_the_gcp_backend(pipelines: Pipelines) -> None:
    mini = pipelines.mini
    # Round 1: evidence for S1's inputs at its parent S0 (a local build and a real notebook run).
    s0 = _commit(mini, "NOTES.md", "0\n", "notes 0")
    d1 = pipelines.evidence_from_a_local_run(s0)
    s1 = _commit(mini, "NOTES.md", "1\n", "notes 1: same image inputs")
    pipelines.cloudbuild.script(Outcome(digest=d1))
    (staging,) = pipelines.push("staging", s1)
    assert staging.returncode == 0, staging.stderr
    assert "already passed its tests" in staging.stderr
    (create,) = pipelines.cloudbuild.sent("POST", r".*/builds")
    assert create.json()["images"] == [f"{REGISTRY}/{mini.image}:{s1}"]
    assert pipelines.tags()[s1] == d1 and pipelines.tags()["staging"] == d1

    (production,) = pipelines.push("production", s1)
    assert production.returncode == 0, production.stderr
    assert pipelines.tags()["production"] == d1

    # Round 2: a new image; production moves to it and keeps round 1 as fallback.
    s2a = _commit(mini, f"docker/{mini.image}/extra.txt", "more\n", "an input changes")
    d2 = pipelines.evidence_from_a_local_run(s2a)
    assert d2 != d1
    s2 = _commit(mini, "NOTES.md", "2\n", "notes 2: same image inputs")
    pipelines.cloudbuild.script(Outcome(digest=d2))
    (staging,) = pipelines.push("staging", s2)
    assert staging.returncode == 0, staging.stderr
    assert len(pipelines.cloudbuild.sent("POST", r".*/builds")) == 2
    (production,) = pipelines.push("production", s2)
    assert production.returncode == 0, production.stderr
    tags = pipelines.tags()
    assert (tags["staging"], tags["production"], tags["fallback"]) == (d2, d2, d1)

    status = pipelines.status()
    assert (status["production"]["sha"], status["production"]["digest"]) == (s2, d2)
    assert (status["fallback"]["sha"], status["fallback"]["digest"]) == (s1, d1)
    assert status["production"]["image_ref"] == f"{REGISTRY}/{mini.image}@{d2}"
    assert not status["production"]["drift"]

    # A production push of the same tree again changes nothing and sends no build.
    (again,) = pipelines.push("production", s2)
    assert again.returncode == 0, again.stderr
    assert len(pipelines.cloudbuild.sent("POST", r".*/builds")) == 2

    # Rollback: production := fallback, as an Artifact Registry tag update.
    rolled = pipelines.gcp("rollback", mini.image, "--reason", "e2e")
    assert rolled.returncode == 0, rolled.stderr
    assert pipelines.tags()["production"] == d1
    status = pipelines.status()
    assert (status["production"]["sha"], status["production"]["digest"]) == (s1, d1)
    assert not status["production"]["drift"]


def test_the_config_reader_finds_the_envctl_line_in_a_script_or_an_envctl_entrypoint(tmp_path: Path) -> None:
    subs = {
        "BRANCH_NAME": "staging",
        "COMMIT_SHA": "c" * 40,
        "_REGISTRY": "r",
        "_ENVCTL_IMAGE": "img@sha256:1",
    }
    script = {"name": "python:3.11", "entrypoint": "bash", "env": ["ENVCTL_REGISTRY=${_REGISTRY}"]}
    script["args"] = [
        "-ceu",
        'pip install .\nenvctl pipeline run --branch "$BRANCH_NAME" --rev "$COMMIT_SHA"\n',
    ]
    pinned = {"name": "${_ENVCTL_IMAGE}", "entrypoint": "envctl", "env": ["ENVCTL_REGISTRY=${_REGISTRY}"]}
    pinned["args"] = ["pipeline", "run", "--branch", "$BRANCH_NAME", "--rev", "$COMMIT_SHA", "--repo", "."]
    git_step = {"name": "gcr.io/cloud-builders/git", "args": ["fetch", "--unshallow"]}
    for steps in ([script], [git_step, pinned]):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"steps": steps}))
        ((argv, env),) = envctl_steps(path, subs)
        assert argv[:6] == ["pipeline", "run", "--branch", "staging", "--rev", "c" * 40]
        assert env == {"ENVCTL_REGISTRY": "r"}
    assert render("$$HOME ${_REGISTRY}/$BRANCH_NAME", subs) == "$HOME r/staging"
