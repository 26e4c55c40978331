"""Versions for the environment tests, made without `envctl build`.

Tiny images (FROM the local base, one COPY of a marker: no container runs) are built
once per session; each test pushes them under its own repository `test.<random>`,
makes a git repository whose commits are the versions' SHAs and records the versions
and their evidence in its own ledger.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.build.engine import connect, push
from pipeline.ledger.db import Ledger, TestRun, Version, now, record_test_run
from pipeline.publish.oci import Registry
from tests.helpers import envctl, login

BASE = "localhost:5000/dlc/base-cpu:local"
MARKERS = 4
BASE_LABELS = {
    "org.opencontainers.image.base.name": BASE,
    "org.opencontainers.image.base.digest": "sha256:" + "b" * 64,
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


@dataclass
class World:
    """One test's image, git repository, ledger and versions (c1 -> c2 -> c3, side from c1)."""

    root: Path
    repo: Path
    image: str
    ledger_url: str
    ledger: Ledger
    sha: dict[str, str] = field(default_factory=dict)
    digest: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            "ENVCTL_LEDGER_URL": self.ledger_url,
            "ENVCTL_STATE_DIR": str(self.root / "state"),
            **self.extra_env,
        }

    def envctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return envctl(*args, cwd=self.repo, env=self.env, timeout=timeout)

    def json(self, *args: str) -> Any:
        result = self.envctl(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def evidence(self, name: str, passed: bool) -> None:
        record_test_run(
            self.ledger,
            TestRun(
                run_id=uuid.uuid4().hex,
                image=self.image,
                sha=self.sha[name],
                digest=self.digest[name],
                passed=passed,
                summary={"notebooks": 1, "failed": 0 if passed else 1},
                artifacts="",
                started_at=now(),
                finished_at=now(),
            ),
        )

    def commit_spec(self, name: str, spec: str, like: str) -> None:
        """A commit `name` on main whose spec is `spec`, recorded as a version of `like`'s digest."""
        (self.repo / "environments").mkdir(exist_ok=True)
        (self.repo / "environments" / f"{self.image}.yaml").write_text(spec)
        (self.repo / "file").write_text(name)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", name)
        self.sha[name] = git(self.repo, "rev-parse", "HEAD")
        self.digest[name] = self.digest[like]
        self.ledger.record_version(
            Version(
                image=self.image,
                sha=self.sha[name],
                tree=git(self.repo, "rev-parse", f"{self.sha[name]}^{{tree}}"),
                inputs_key=name,
                build_key=f"{name}-key",
                digest=self.digest[name],
                image_ref=f"localhost:5000/{self.image}@{self.digest[name]}",
                size=None,
                reused_from=None,
                labels=BASE_LABELS,
                sbom={},
                created_at=now(),
            )
        )

    def status(self) -> dict[str, dict[str, Any]]:
        return {e["stage"]: e for e in self.json("status", self.image)}

    def pointer(self, stage: str) -> str | None:
        found = self.status().get(stage)
        return found["sha"] if found else None


SBOMS: dict[str, dict[str, Any]] = {
    "c1": {
        "pip": [{"name": "numpy", "version": "1.26.4"}, {"name": "keras", "version": "3.0.0"}],
        "dpkg": [{"name": "python3", "version": "3.11.2-1"}],
    },
    "c2": {
        "pip": [{"name": "numpy", "version": "2.0.0"}, {"name": "pandas", "version": "2.2.2"}],
        "dpkg": [{"name": "python3", "version": "3.12.1-1"}],
    },
}


def make_world(
    tmp_path: Path,
    ledger_url: str,
    images: list[str],
    names: tuple[str, ...] = ("c1", "c2", "c3", "side"),
    registry: str = "localhost:5000",
) -> World:
    """Commits c1 -> c2 -> c3 on `main` and `side` from c1, each a version with its own digest."""
    image = f"test.env-{secrets.token_hex(4)}"
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "owner@example.com")
    git(repo, "config", "user.name", "Image Owner")
    world = World(
        root=tmp_path, repo=repo, image=image, ledger_url=ledger_url, ledger=Ledger.open(ledger_url)
    )
    if registry != "localhost:5000":
        world.extra_env = {"ENVCTL_REGISTRY": registry}
    for name in ("c1", "c2", "c3"):
        (repo / "file").write_text(name)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", name)
        world.sha[name] = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "side", world.sha["c1"])
    (repo / "file").write_text("side")
    git(repo, "commit", "-q", "-am", "side")
    world.sha["side"] = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")

    client = connect()
    for i, name in enumerate(names):
        ref = f"{registry}/{image}:{world.sha[name]}"
        client.images.get(images[i % len(images)]).tag(ref)
        try:
            world.digest[name] = push(client, ref, auth=login(registry))
        finally:
            client.images.remove(ref)
        world.ledger.record_version(
            Version(
                image=image,
                sha=world.sha[name],
                tree=git(repo, "rev-parse", f"{world.sha[name]}^{{tree}}"),
                inputs_key=name,
                build_key=f"{name}-{secrets.token_hex(4)}",
                digest=world.digest[name],
                image_ref=ref,
                size=None,
                reused_from=None,
                labels=BASE_LABELS,
                sbom=SBOMS.get(name, {}),
                created_at=now(),
            )
        )
    return world


class OwnRegistry:
    """A docker-registry of one test on 127.0.0.1:<free port>, started and stopped by its PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, readonly: bool = False) -> None:
        storage: dict[str, object] = {
            "filesystem": {"rootdirectory": str(self.root / "storage")},
            "delete": {"enabled": True},
        }
        if readonly:
            storage["maintenance"] = {"readonly": {"enabled": True}}
        config = {"version": 0.1, "log": {"level": "error"}, "storage": storage, "http": {"addr": self.host}}
        path = self.root / "registry.yml"
        path.write_text(yaml.safe_dump(config))
        log = (self.root / "registry.log").open("ab")
        self.process = subprocess.Popen(["docker-registry", "serve", str(path)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while not Registry(self.host, timeout=2).ping():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"docker-registry did not start; see {self.root / 'registry.log'}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None
