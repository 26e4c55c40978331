"""A stack of the test's own: `envctl stack up --skip-base` on a free port, never the shared one.

It has its own state folder (ledger, registry storage, credentials) and Docker client
config; `envctl stack down` ends it on every exit path.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.publish.oci import Credentials, docker_credentials
from tests.helpers import envctl


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    host: str  # localhost:PORT, as image references name it
    url: str  # http://127.0.0.1:PORT
    state: Path
    docker_config: Path

    def credentials(self) -> Credentials:
        return docker_credentials(self.host, self.docker_config / "config.json")

    def storage_bytes(self) -> int:
        """What the stack's registry stores on disk."""
        total = 0
        for root, _dirs, files in os.walk(self.state / "stack" / "registry"):
            total += sum((Path(root) / f).lstat().st_size for f in files)
        return total


@contextlib.contextmanager
def own_stack(root: Path) -> Iterator[Stack]:
    """Start a stack whose state and Docker config live under `root`; stop it at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        "ENVCTL_STATE_DIR": str(root / "state"),
        "ENVCTL_REGISTRY": f"localhost:{port}",
        "ENVCTL_REGISTRY_LISTEN": f"127.0.0.1:{port}",
        "DOCKER_CONFIG": str(root / "docker"),
    }
    try:
        up = envctl("stack", "up", "--skip-base", env=env)
        assert up.returncode == 0, up.stderr
        yield Stack(env, f"localhost:{port}", f"http://127.0.0.1:{port}", root / "state", root / "docker")
    finally:
        envctl("stack", "down", env=env)
