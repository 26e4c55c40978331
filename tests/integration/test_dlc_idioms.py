"""Dockerfile idioms of repositories derived from Deep Learning Containers, on the local base.

tests/data/dlc-idioms holds one image per idiom (`pip install --user`, `pip install -r
requirements.txt`, `apt-get install` of a system library, `USER jupyter` then `pip
install --user`, `ENV PATH=...`, a multi-stage build that compiles a wheel), each with a
notebook that uses what its Dockerfile made. Each is built by `envctl build` on the
Docker Engine and its notebook run by `envctl test` (papermill in the built image): what
works on the real images must work on the stand-in without an edit.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import minirepo
from tests.helpers import BASE_IMAGE, DATA, envctl

pytestmark = pytest.mark.integration

IDIOMS = DATA / "dlc-idioms"
NAMES = sorted(p.name for p in (IDIOMS / "docker").iterdir())


@dataclass
class Idioms:
    repo: Path
    team: str
    state: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return envctl(*args, cwd=self.repo, env={"ENVCTL_STATE_DIR": str(self.state)}, timeout=900)


@pytest.fixture(scope="module")
def idioms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Idioms]:
    root = tmp_path_factory.mktemp("idioms")
    repo = root / "repo"
    team = f"idioms{secrets.token_hex(3)}"
    shutil.copytree(IDIOMS, repo)
    for spec in sorted((repo / "environments").glob("*.yaml")):
        text = spec.read_text().replace("__TEAM__", team).replace("__BASE__", BASE_IMAGE)
        spec.with_name(spec.name.replace("__TEAM__", team)).write_text(text)
        spec.unlink()
    minirepo.git(repo, "init", "-q", "-b", "staging")
    minirepo.git(repo, "config", "user.email", "owner@example.com")
    minirepo.git(repo, "config", "user.name", "Image Owner")
    minirepo.git(repo, "add", "-A")
    minirepo.git(repo, "commit", "-q", "-m", "the idioms")
    try:
        yield Idioms(repo, team, root / "state")
    finally:
        for name in NAMES:
            minirepo.remove_local_images(f"localhost:5000/{team}.{name}")


def test_the_specs_validate(idioms: Idioms) -> None:
    result = idioms.run("validate")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ok  ") == len(NAMES) == 6


@pytest.mark.parametrize("name", NAMES)
def test_idiom_builds_and_its_notebook_passes(idioms: Idioms, name: str) -> None:
    image = f"{idioms.team}.{name}"
    built = idioms.run("build", image, "--rev", "HEAD", "--json", "--quiet")
    assert built.returncode == 0, built.stderr[-3000:]
    assert json.loads(built.stdout)["action"] == "built"
    tested = idioms.run("test", image, "--rev", "HEAD", "--json")
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    report = json.loads(tested.stdout)
    assert report["passed"] is True
    ran = [(r["name"], r["passed"]) for r in report["results"] if r["kind"] == "notebook"]
    assert ran == [(f"test-notebooks/{name}/check.ipynb", True)], report["results"]
