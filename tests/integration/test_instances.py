"""Instances on the real stack: JupyterLab from an environment ID, stale after a move, upgraded by restart.

Each test has its own image, ledger and state dir (tests/stageworld.py) and runs the
real `envctl`; JupyterLab is reached over HTTP on 127.0.0.1 with the printed token.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import docker.errors
import pytest
import requests

from pipeline.build.engine import connect
from tests.stageworld import World, make_world

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.stagefixtures"]


@pytest.fixture
def sqlite_world(tmp_path: Path, marker_images: list[str]) -> World:
    """Versions c1 and c2 of a fresh image, in a SQLite ledger (the ledger is not what is tested here)."""
    return make_world(tmp_path, f"sqlite:///{tmp_path / 'state' / 'ledger.db'}", marker_images, ("c1", "c2"))


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envctl: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh instance name; its container and volume are removed whatever happens."""
    found = f"t-{secrets.token_hex(4)}"
    yield found
    client = connect()
    for container in client.containers.list(all=True, filters={"label": f"org.envctl.instance={found}"}):
        with contextlib.suppress(Exception):
            container.remove(force=True)
    with contextlib.suppress(Exception):
        client.volumes.get(f"envctl-{found}-work").remove(force=True)


def listed(world: World, name: str) -> dict[str, object]:
    found = {i["name"]: i for i in world.json("instances", "list")}
    assert name in found, found.keys()
    instance: dict[str, object] = found[name]
    return instance


def api(url: str, path: str) -> tuple[str, dict[str, str]]:
    """The server root of a printed URL and the token header it carries."""
    parts = urlparse(url)
    token = parse_qs(parts.query)["token"][0]
    return f"{parts.scheme}://{parts.netloc}{path}", {"Authorization": f"token {token}"}


def test_create_upgrade_by_restart_and_delete(sqlite_world: World, name: str) -> None:
    world = sqlite_world
    env = f"{world.image}.staging"
    assert world.envctl("promote", env, "--rev", world.sha["c1"]).returncode == 0

    created = world.envctl("instances", "create", name, "--env", env)
    assert created.returncode == 0, created.stderr
    url = created.stdout.strip()
    assert url.startswith("http://127.0.0.1:") and "token=" in url

    status, auth = api(url, "/api/status")
    assert requests.get(status, headers=auth, timeout=10).status_code == 200
    assert requests.get(status, timeout=10).status_code == 403  # the token is needed
    notes, _ = api(url, "/api/contents/notes.txt")
    put = requests.put(
        notes, headers=auth, json={"type": "file", "format": "text", "content": "kept"}, timeout=10
    )
    assert put.status_code in {200, 201}, put.text

    first = listed(world, name)
    assert first["environment"] == env
    assert first["digest"] == world.digest["c1"]
    assert first["image_ref"] == f"localhost:5000/{world.image}@{world.digest['c1']}"
    assert first["stale"] is False and first["status"] == "running" and first["url"] == url
    container = connect().containers.get(f"envctl-{name}")
    assert container.attrs["Config"]["Image"] == first["image_ref"]  # by digest, never by tag

    one_line_error(world.envctl("instances", "create", name, "--env", env), 2, "exists")

    assert world.envctl("promote", env, "--rev", world.sha["c2"]).returncode == 0
    stale = listed(world, name)
    assert stale["stale"] is True and stale["digest"] == world.digest["c1"]
    assert stale["current_digest"] == world.digest["c2"]
    assert stale["sha"] == world.sha["c1"]  # what a tester tried: the version it still runs
    table = world.envctl("instances", "list")
    row = next(line for line in table.stdout.splitlines() if name in line)
    assert "stale: restart to upgrade" in row
    assert world.sha["c1"][:12] in row and world.digest["c1"][:19] in row

    restarted = world.envctl("instances", "restart", name)
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip() == url  # same port and token
    upgraded = listed(world, name)
    assert upgraded["digest"] == world.digest["c2"] and upgraded["stale"] is False
    assert upgraded["sha"] == world.sha["c2"]
    got = requests.get(notes, headers=auth, timeout=10)
    assert got.status_code == 200 and got.json()["content"] == "kept"

    deleted = world.envctl("instances", "delete", name)
    assert deleted.returncode == 0, deleted.stderr
    assert f"envctl-{name}-work" in deleted.stderr  # the work volume is kept
    assert name not in {i["name"] for i in world.json("instances", "list")}
    with pytest.raises(requests.ConnectionError):
        requests.get(status, headers=auth, timeout=5)
    one_line_error(world.envctl("instances", "delete", name), 2, "no instance")

    again = world.envctl("instances", "create", name, "--env", env)  # the same name picks the work up
    assert again.returncode == 0, again.stderr
    notes, auth = api(again.stdout.strip(), "/api/contents/notes.txt")
    assert requests.get(notes, headers=auth, timeout=10).json()["content"] == "kept"
    assert world.envctl("instances", "delete", name, "--purge").returncode == 0
    with pytest.raises(docker.errors.NotFound):
        connect().volumes.get(f"envctl-{name}-work")


def test_bad_input_is_one_line_and_exit_2(sqlite_world: World, name: str) -> None:
    world = sqlite_world
    assert world.envctl("promote", f"{world.image}.staging", "--rev", world.sha["c1"]).returncode == 0
    create = ("instances", "create", name, "--env")
    one_line_error(world.envctl(*create, "nosuch.image.staging"), 2, "unknown image")
    one_line_error(world.envctl(*create, f"{world.image}.production"), 2, "no version yet")
    one_line_error(world.envctl(*create, f"{world.image}.nightly"), 2, "unknown stage")
    one_line_error(
        world.envctl("instances", "create", "Bad_Name", "--env", f"{world.image}.staging"), 2, "name"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        one_line_error(world.envctl(*create, f"{world.image}.staging", "--port", port), 2, f"port {port}")
    assert json.loads(world.envctl("instances", "list", "--json").stdout) is not None
    assert name not in {i["name"] for i in world.json("instances", "list")}


def test_the_token_is_on_no_command_line_and_still_opens_the_server(sqlite_world: World, name: str) -> None:
    """`ps` shows every process's argv to every local user: the token must not be there."""
    world = sqlite_world
    env = f"{world.image}.staging"
    assert world.envctl("promote", env, "--rev", world.sha["c1"]).returncode == 0
    created = world.envctl("instances", "create", name, "--env", env)
    assert created.returncode == 0, created.stderr
    url = created.stdout.strip()
    status, auth = api(url, "/api/status")
    token = auth["Authorization"].removeprefix("token ")
    assert len(token) >= 32

    container = connect().containers.get(f"envctl-{name}")
    config = container.attrs["Config"]
    for part in ("Cmd", "Entrypoint"):
        assert token not in json.dumps(config.get(part)), (part, config.get(part))
    assert token not in json.dumps(container.attrs.get("Args")) and token not in container.attrs["Path"]
    # What `ps` shows on the host: the container's processes and the main one's argv.
    top = container.top(ps_args="-eo pid,args")
    assert top["Processes"] and not any(token in " ".join(row) for row in top["Processes"]), top
    host_pid = container.attrs["State"]["Pid"]
    assert token.encode() not in Path(f"/proc/{host_pid}/cmdline").read_bytes()
    # ... and inside the container, every process's argv.
    inside = container.exec_run(["sh", "-c", "cat /proc/[0-9]*/cmdline"], demux=False)
    assert inside.exit_code == 0 and b"jupyter" in inside.output, inside.output[:500]
    assert token.encode() not in inside.output

    assert requests.get(status, headers=auth, timeout=10).status_code == 200
    assert requests.get(status, timeout=10).status_code == 403
    wrong = {"Authorization": f"token {secrets.token_hex(24)}"}
    assert requests.get(status, headers=wrong, timeout=10).status_code == 403
