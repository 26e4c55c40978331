"""The local stack: engine, registry and base image, started and stopped for real."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.publish.oci import Registry
from tests.helpers import envctl

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_shows_every_part_ready() -> None:
    result = envctl("stack", "status", "--json")
    assert result.returncode == 0, result.stderr
    parts = {p["part"]: p for p in json.loads(result.stdout)}
    assert set(parts) == {"engine", "registry", "base"}
    assert all(p["ready"] for p in parts.values())
    assert parts["base"]["digest"].startswith("sha256:")
    assert parts["base"]["published_hash"] == parts["base"]["inputs_hash"]


def test_second_stack_up_changes_nothing() -> None:
    before = {p["part"]: p for p in json.loads(envctl("stack", "status", "--json").stdout)}
    result = envctl("stack", "up", "--json")
    assert result.returncode == 0, result.stderr
    after = {p["part"]: p for p in json.loads(envctl("stack", "status", "--json").stdout)}
    assert after["engine"]["pid"] == before["engine"]["pid"]
    assert after["registry"]["pid"] == before["registry"]["pid"]
    assert after["registry"]["front_pid"] == before["registry"]["front_pid"]
    assert after["base"]["digest"] == before["base"]["digest"]
    assert "building" not in result.stderr and "starting" not in result.stderr


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Settings for a second registry on a free port, with its own state folder and Docker login."""
    port = free_port()
    env = {
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "ENVCTL_STATE_DIR": str(tmp_path / "state"),
        "ENVCTL_REGISTRY": f"localhost:{port}",
        "ENVCTL_REGISTRY_LISTEN": f"127.0.0.1:{port}",
    }
    try:
        yield env
    finally:
        envctl("stack", "down", env=env)


def test_stack_up_starts_a_registry_and_down_stops_only_it(isolated: dict[str, str]) -> None:
    up = envctl("stack", "up", "--skip-base", "--json", env=isolated)
    assert up.returncode == 0, up.stderr
    registry = Registry(isolated["ENVCTL_REGISTRY"])
    assert registry.ping()
    status = {p["part"]: p for p in json.loads(envctl("stack", "status", "--json", env=isolated).stdout)}
    assert status["registry"]["managed"] is True
    assert status["registry"]["writes"] == "credentials"
    assert status["registry"]["front_pid"] is not None
    assert status["engine"]["managed"] is False  # the shared engine was not started by this state folder
    storage = Path(isolated["ENVCTL_STATE_DIR"]) / "stack" / "registry"
    assert storage.is_dir()

    down = envctl("stack", "down", env=isolated)
    assert down.returncode == 0, down.stderr
    assert "registry: stopped" in down.stderr
    assert not Path(status["registry"]["socket"]).exists()
    assert "dockerd: not started by envctl; left alone" in down.stderr
    assert not registry.ping()
    assert storage.is_dir(), "stack down keeps the data"
    assert envctl("stack", "status", env=isolated).returncode == 3


def test_registry_that_cannot_start_exits_3_with_the_log(isolated: dict[str, str]) -> None:
    port = int(isolated["ENVCTL_REGISTRY_LISTEN"].rsplit(":", 1)[1])
    with socket.socket() as blocker:  # something else holds the port and speaks no HTTP
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        result = envctl("stack", "up", "--skip-base", env=isolated)
    assert result.returncode == 3
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("envctl: error: registry-front exited with")
    assert str(Path(isolated["ENVCTL_STATE_DIR"]) / "stack" / "registry-front.log") in line
    assert "Traceback" not in result.stderr


def test_unreachable_engine_exits_3(tmp_path: Path) -> None:
    env = {"ENVCTL_STATE_DIR": str(tmp_path), "ENVCTL_DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    result = envctl("stack", "up", env=env)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("envctl: error: the Docker Engine at unix://")
