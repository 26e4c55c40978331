"""A mini repository of one tiny image, made from tests/data/minirepo as a real git repo."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import DATA

TEMPLATE = DATA / "minirepo"


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


@dataclass
class MiniRepo:
    path: Path
    image: str

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative.replace("__IMAGE__", self.image)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def read(self, relative: str) -> str:
        return (self.path / relative.replace("__IMAGE__", self.image)).read_text()

    def commit(self, message: str) -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def env(self, state: Path) -> dict[str, str]:
        """ENVCTL_* settings that keep this repo's ledger and artifacts apart."""
        return {"ENVCTL_STATE_DIR": str(state)}


def make(tmp_path: Path, prefix: str = "test") -> MiniRepo:
    """A fresh repo with one commit on `staging`, its image named <prefix>.mini-<random>."""
    image = f"{prefix}.mini-{secrets.token_hex(4)}"
    repo = tmp_path / "repo"
    for source in TEMPLATE.rglob("*"):
        if source.is_file():
            target = repo / source.relative_to(TEMPLATE).as_posix().replace("__IMAGE__", image)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = source.read_text().replace("__IMAGE__", image)
            target.write_text(text)
    git(repo, "init", "-q", "-b", "staging")
    git(repo, "config", "user.email", "owner@example.com")
    git(repo, "config", "user.name", "Image Owner")
    mini = MiniRepo(repo, image)
    mini.commit("first version")
    return mini


def remove_local_images(name: str) -> None:
    """Remove every local tag of the image repository `name` (a test's clean-up)."""
    import contextlib

    from pipeline.build.engine import connect

    client = connect()
    for image in client.images.list(name=name):
        for tag in image.tags:
            with contextlib.suppress(Exception):
                client.images.remove(tag, force=True)
