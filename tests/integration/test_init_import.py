"""`envctl init --from .` on the managed-environments sample, then the whole local flow.

The sample (tests/data/managed-environments: a root Dockerfile FROM the tf-gpu Deep
Learning Containers image with `pip install --user`, old-format notebooks in
test_notebooks/, cloudbuild-staging.yaml naming the image) is copied into a fresh git
repository, imported, committed, validated, built on the local stand-in and tested,
with no edit by hand.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import minirepo
from tests.helpers import BASE_IMAGE, DATA, envctl

pytestmark = pytest.mark.integration

SAMPLE = DATA / "managed-environments"
IMAGE = "team1.task1"


@pytest.fixture
def sample(tmp_path: Path) -> Iterator[Path]:
    repo = tmp_path / "managed-environments"
    shutil.copytree(SAMPLE, repo)
    minirepo.git(repo, "init", "-q", "-b", "staging")
    minirepo.git(repo, "config", "user.email", "owner@example.com")
    minirepo.git(repo, "config", "user.name", "Image Owner")
    minirepo.git(repo, "add", "-A")
    minirepo.git(repo, "commit", "-q", "-m", "the repository before envctl")
    try:
        yield repo
    finally:
        minirepo.remove_local_images(f"localhost:5000/{IMAGE}")


def test_imported_sample_validates_builds_and_its_notebooks_pass(sample: Path, tmp_path: Path) -> None:
    env = {"ENVCTL_STATE_DIR": str(tmp_path / "state"), "ENVCTL_BASE_IMAGE": BASE_IMAGE}
    imported = envctl("init", "--from", ".", cwd=sample, env=env)
    assert imported.returncode == 0, imported.stderr
    assert "moved Dockerfile to docker/team1.task1/Dockerfile" in imported.stderr
    assert "the test notebooks stay in test_notebooks/" in imported.stderr
    spec = (sample / "environments" / f"{IMAGE}.yaml").read_text()
    assert "gcp: gcr.io/deeplearning-platform-release/tf-gpu.1-15" in spec
    assert f"local: {BASE_IMAGE}" in spec

    minirepo.git(sample, "add", "-A")
    minirepo.git(sample, "commit", "-q", "-m", "envctl init --from .")
    again = envctl("init", "--from", ".", cwd=sample, env=env)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert minirepo.git(sample, "status", "--porcelain") == ""

    validated = envctl("validate", cwd=sample, env=env)
    assert validated.returncode == 0, validated.stderr
    built = envctl("build", IMAGE, "--rev", "HEAD", "--json", "--quiet", cwd=sample, env=env, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    assert json.loads(built.stdout)["action"] == "built"
    tested = envctl("test", IMAGE, "--rev", "HEAD", "--json", cwd=sample, env=env, timeout=900)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    report = json.loads(tested.stdout)
    notebooks = sorted((r["name"], r["passed"]) for r in report["results"] if r["kind"] == "notebook")
    assert notebooks == [("test_notebooks/1.ipynb", True), ("test_notebooks/2.ipynb", True)]
