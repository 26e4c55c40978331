"""Notifications on the real stack: a webhook on 127.0.0.1 and a command get every event.

The webhook is a real HTTP server in this process; envctl runs in child processes as a
pipeline or an operator would. The URL carries a token in its path and query, which
must never show in envctl's output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.publish.oci import Registry
from tests import minirepo
from tests.helpers import envctl, login
from tests.stageworld import World, make_world

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.stagefixtures"]

TOKEN = "tok3n-s3cret"


class Webhook:
    """An HTTP server on 127.0.0.1:<free port> that records each POST and answers `statuses` in turn."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.received.append(json.loads(body))
                hook.headers.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/{TOKEN}?token={TOKEN}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def kinds(self) -> list[tuple[str, str, str | None]]:
        return [(e["kind"], e["environment"], e.get("action") or e.get("state")) for e in self.received]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


@pytest.fixture
def sworld(tmp_path: Path, marker_images: list[str]) -> World:
    """The environments' world on a SQLite ledger (delivery does not depend on the ledger)."""
    return make_world(tmp_path, f"sqlite:///{tmp_path / 'state' / 'ledger.db'}", marker_images)


def no_secret(result: subprocess.CompletedProcess[str]) -> None:
    assert TOKEN not in result.stdout + result.stderr, result.stderr


def warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if "warning" in line]


def test_every_move_and_drift_reaches_the_webhook(sworld: World, webhook: Webhook) -> None:
    img, world = sworld.image, sworld
    world.extra_env = {"ENVCTL_NOTIFY_URL": webhook.url, "ENVCTL_ACTOR": "alice"}
    world.evidence("c2", True)
    moves = [
        world.envctl("promote", f"{img}.staging", "--rev", world.sha["c1"]),
        world.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"], "--reason", "new numpy"),
        world.envctl("promote", f"{img}.production", "--rev", world.sha["c2"]),
        world.envctl("pin", f"{img}.production", "--reason", "incident 42"),
        world.envctl("unpin", f"{img}.production"),
    ]
    for result in moves:
        assert result.returncode == 0, result.stderr
        no_secret(result)
        assert warnings(result) == []
    assert webhook.kinds() == [
        ("move", f"{img}.staging", "promote"),
        ("move", f"{img}.staging", "promote"),
        ("move", f"{img}.production", "promote"),
        ("move", f"{img}.production", "pin"),
        ("move", f"{img}.production", "unpin"),
    ]
    second = webhook.received[1]
    assert (second["from_sha"], second["to_sha"]) == (world.sha["c1"], world.sha["c2"])
    assert (second["from_digest"], second["to_digest"]) == (world.digest["c1"], world.digest["c2"])
    assert (second["actor"], second["reason"], second["forced"], second["schema"]) == (
        "alice",
        "new numpy",
        False,
        1,
    )
    assert second["text"] == (
        f"{img}.staging: promote {world.sha['c1'][:12]} → {world.sha['c2'][:12]} "
        f"({world.digest['c2'][:19]}) by alice: new numpy"
    )
    assert webhook.headers[0]["content-type"] == "application/json"
    assert webhook.headers[0]["path"] == f"/hooks/{TOKEN}?token={TOKEN}"

    # Drift: someone retags staging by hand. Status shows it and sends nothing (a read,
    # run often); the repair by a no-op promote sends it, and so does sync's.
    registry = Registry("localhost:5000", credentials=login())
    moved = registry.manifest(img, world.digest["c3"])
    assert moved is not None
    registry.put_manifest(img, "staging", moved)
    before = len(webhook.received)
    assert world.envctl("status", img).returncode == 0
    assert len(webhook.received) == before
    assert world.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"]).returncode == 0
    registry.put_manifest(img, "staging", moved)
    assert world.envctl("sync", img).returncode == 0
    drift = webhook.received[before:]
    assert [(e["kind"], e["environment"], e["drift"], e["repaired"]) for e in drift] == [
        ("drift", f"{img}.staging", "moved", True),
        ("drift", f"{img}.staging", "moved", True),
    ]
    assert drift[0]["digest"] == world.digest["c2"]
    assert "republished by `envctl sync`" in drift[0]["text"] and f"{img}:staging" in drift[0]["text"]


def test_a_failed_delivery_is_retried_once(sworld: World, webhook: Webhook) -> None:
    img, world = sworld.image, sworld
    world.extra_env = {"ENVCTL_NOTIFY_URL": webhook.url}
    webhook.statuses = [500, 200]

    moved = world.envctl("promote", f"{img}.staging", "--rev", world.sha["c1"])

    assert moved.returncode == 0, moved.stderr
    assert warnings(moved) == []
    assert len(webhook.received) == 2
    assert webhook.received[0] == webhook.received[1]
    assert webhook.received[0]["to_digest"] == world.digest["c1"]


def test_a_webhook_that_always_fails_never_fails_the_move(sworld: World, webhook: Webhook) -> None:
    img, world = sworld.image, sworld
    world.extra_env = {"ENVCTL_NOTIFY_URL": webhook.url}
    webhook.statuses = [500] * 10

    moved = world.envctl("promote", f"{img}.staging", "--rev", world.sha["c1"])

    assert moved.returncode == 0, moved.stderr
    assert world.pointer("staging") == world.sha["c1"]
    assert len(webhook.received) == 2  # the first try and one retry
    assert warnings(moved) == [
        f"warning: notify: webhook http://127.0.0.1:{webhook.port}/… failed twice (HTTP 500); "
        f"the move event of {img}.staging was not delivered"
    ]
    no_secret(moved)

    # Nobody listening at all: the same, one line.
    webhook.close()
    world.extra_env = {"ENVCTL_NOTIFY_URL": webhook.url}
    again = world.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"])
    assert again.returncode == 0, again.stderr
    assert world.pointer("staging") == world.sha["c2"]
    assert len(warnings(again)) == 1 and "failed twice" in warnings(again)[0]
    no_secret(again)


RECORDER = """
import json, os, sys
event = json.load(sys.stdin)
event["_withheld"] = sorted(k for k, v in os.environ.items() if k.startswith("ENVCTL_") or "s3cret" in v)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(event) + "\\n")
"""


def test_the_command_gets_each_event_on_stdin(sworld: World, webhook: Webhook, tmp_path: Path) -> None:
    img, world = sworld.image, sworld
    log = tmp_path / "events.jsonl"
    command = [sys.executable, "-c", RECORDER, str(log)]
    world.extra_env = {
        "ENVCTL_NOTIFY_COMMAND": json.dumps(command),
        "ENVCTL_NOTIFY_URL": webhook.url,
        # secrets envctl may run with that the command must not see (ENVCTL_* are checked too)
        "PGPASSWORD": "pg-s3cret",
        "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/s3cret-key.json",
    }
    world.evidence("c1", True)
    assert world.envctl("promote", f"{img}.production", "--rev", world.sha["c1"]).returncode == 0
    assert world.envctl("promote", f"{img}.production", "--rev", world.sha["c2"], "--force").returncode == 0
    rolled = world.envctl("rollback", img)
    assert rolled.returncode == 0, rolled.stderr

    got = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["kind"], e["environment"], e["action"]) for e in got] == [
        ("move", f"{img}.production", "promote"),
        ("move", f"{img}.fallback", "promote"),
        ("move", f"{img}.production", "promote"),
        ("move", f"{img}.production", "rollback"),
    ]
    assert got[2]["forced"] is True and "(forced)" in got[2]["text"]
    assert (got[3]["from_sha"], got[3]["to_sha"]) == (world.sha["c2"], world.sha["c1"])
    assert all(e["_withheld"] == [] for e in got)  # the command does not inherit envctl's secrets
    assert [{k: v for k, v in e.items() if k != "_withheld"} for e in got] == webhook.received

    # A command that fails is retried once, then one warning; the move stands.
    world.extra_env["ENVCTL_NOTIFY_COMMAND"] = json.dumps([sys.executable, "-c", "import sys; sys.exit(4)"])
    del world.extra_env["ENVCTL_NOTIFY_URL"]
    failed = world.envctl("pin", f"{img}.production", "--reason", "hold")
    assert failed.returncode == 0, failed.stderr
    assert world.status()["production"]["pinned"] is True
    assert warnings(failed) == [
        f"warning: notify: command {sys.executable} … failed twice (exit 4); "
        f"the move event of {img}.production was not delivered"
    ]


def test_a_staging_and_a_production_run_reach_the_webhook(tmp_path: Path, webhook: Webhook) -> None:
    mini = minirepo.make(tmp_path)
    spec = mini.read("environments/__IMAGE__.yaml")
    mini.write("environments/__IMAGE__.yaml", spec + "promotion:\n  production:\n    signoffs: 1\n")
    sha = mini.commit("production asks for one sign-off")
    env = {**mini.env(tmp_path / "state"), "ENVCTL_NOTIFY_URL": webhook.url, "ENVCTL_ACTOR": "ci"}
    image = mini.image
    try:
        staged = envctl("pipeline", "run", "--branch", "staging", "--rev", sha, cwd=mini.path, env=env)
        assert staged.returncode == 0, staged.stderr
        refused = envctl("pipeline", "run", "--branch", "production", "--rev", sha, cwd=mini.path, env=env)
        assert refused.returncode == 1, refused.stderr
        signed = envctl("signoff", f"{image}.staging", cwd=mini.path, env={**env, "ENVCTL_ACTOR": "tess"})
        assert signed.returncode == 0, signed.stderr
        done = envctl("pipeline", "run", "--branch", "production", "--rev", sha, cwd=mini.path, env=env)
        assert done.returncode == 0, done.stderr
        for result in (staged, refused, signed, done):
            no_secret(result)
            assert warnings(result) == []
    finally:
        minirepo.remove_local_images(f"localhost:5000/{image}")

    assert webhook.kinds() == [
        ("move", f"{image}.staging", "promote"),
        ("verdict", f"{image}.staging", "promoted"),
        ("verdict", f"{image}.production", "refused"),
        ("move", f"{image}.production", "promote"),
        ("verdict", f"{image}.production", "promoted"),
    ]
    move, staging, refusal, production, verdict = webhook.received
    digest = move["to_digest"]
    assert digest.startswith("sha256:") and move["to_sha"] == sha
    assert (staging["sha"], staging["digest"], staging["branch"]) == (sha, digest, "staging")
    assert "0 of the 1 testers' sign-offs production needs (nobody signed yet)" in refusal["text"]
    assert refusal["text"].startswith(
        f"pipeline production {refusal['run_id']}: {image} at {sha[:12]}: refused"
    )
    assert (production["to_sha"], production["to_digest"], production["actor"]) == (sha, digest, "ci")
    assert verdict["digest"] == digest
    assert verdict["text"] == (
        f"pipeline production {verdict['run_id']}: {image} at {sha[:12]}: promoted: "
        f"production := {sha[:12]} (tested as {digest[:19]})"
    )
    assert all(e["text"] for e in webhook.received)
