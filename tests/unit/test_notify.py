"""Notifications without the stack: real HTTP servers on 127.0.0.1, a real command, SQLite.

What must never happen: a redirect followed, a plain-http webhook off this host, a
secret reaching the command, an event id that changes on the retry.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline import notify
from pipeline.errors import ConfigError
from pipeline.ledger.db import Ledger
from pipeline.ledger.pointers import Change, Pointer, Stage, Who, compare_and_swap, history
from pipeline.settings import Settings, load


class Server:
    """Records every request; answers each with `status` (and a Location for 3xx)."""

    def __init__(self, status: int, location: str = "") -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                me.seen.append((self.command, self.path, body))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for s in made:
        s.close()


@pytest.fixture(autouse=True)
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "RETRY_DELAY", 0.0)


def _event(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        image="a.b",
        stage="staging",
        action="promote",
        from_sha=None,
        to_sha="c" * 40,
        from_digest=None,
        to_digest="sha256:" + "d" * 64,
        actor="ann",
        reason=None,
        forced=False,
    )
    return notify.move_event(**(base | kw))


def test_a_redirect_is_a_failed_delivery_and_is_never_followed(
    tmp_path: Path, servers: list[Server], capsys: pytest.CaptureFixture[str]
) -> None:
    inside = Server(200)
    servers.append(inside)
    bouncer = Server(302, location=inside.url + "/internal")
    servers.append(bouncer)
    notify.send(Settings(repo=tmp_path, notify_url=bouncer.url + "/hook"), _event())
    assert [m for m, _, _ in bouncer.seen] == ["POST", "POST"]  # tried twice, both refused
    assert inside.seen == []  # never followed, as a GET or otherwise
    assert "failed twice (HTTP 302)" in capsys.readouterr().err


def test_plain_http_only_to_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not https"):
        load(repo=tmp_path, env={"ENVCTL_NOTIFY_URL": "http://10.1.2.3/hook"})
    assert load(repo=tmp_path, env={"ENVCTL_NOTIFY_URL": "http://[::1]:9/x"}).notify_url
    with pytest.raises(notify.DeliveryFailed, match="not https"):
        notify._post("http://metadata.internal/x", b"{}")


SECRETS = {
    "ENVCTL_LEDGER_PASSWORD": "s3cret-ledger",
    "ENVCTL_REGISTRY_TOKEN": "s3cret-registry",
    "ENVCTL_NOTIFY_URL": "https://chat.example/hooks/s3cret-hook",
    "ENVCTL_LEDGER_URL": "postgresql://envctl:s3cret-url@db.example/envctl",
    "PGPASSWORD": "s3cret-pg",
    "GOOGLE_APPLICATION_CREDENTIALS": "/keys/s3cret-sa.json",
    "DOCKER_CONFIG": "/home/x/.docker-s3cret",
}

DUMP = "import json, os, sys; sys.stdin.read(); open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"


def test_the_command_gets_only_the_allowed_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    out = tmp_path / "env.json"
    notify.send(Settings(repo=tmp_path, notify_command=(sys.executable, "-c", DUMP, str(out))), _event())
    got = json.loads(out.read_text())
    assert "s3cret" not in json.dumps(got)
    assert set(got) - {"PATH", "HOME", "LANG", "TZ", "TMPDIR"} <= {k for k in got if k.startswith("LC_")} | {
        "PWD"  # none of envctl's: whatever remains is what Python itself sets
    }
    assert got["LC_ALL"] == "C.UTF-8" and "PATH" in got


def test_the_command_arguments_never_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notify.send(
        Settings(
            repo=tmp_path, notify_command=(sys.executable, "-c", "raise SystemExit(3)", "--token=s3cret")
        ),
        _event(),
    )
    err = capsys.readouterr().err
    assert "failed twice (exit 3)" in err and "s3cret" not in err
    with pytest.raises(ConfigError) as caught:
        load(repo=tmp_path, env={"ENVCTL_NOTIFY_COMMAND": '["tee", 3, "s3cret"]'})
    assert "s3cret" not in str(caught.value)


def test_text_is_one_short_escaped_line() -> None:
    text = _event(reason="a\n\n  <script>&\t" + "x" * 500)["text"]
    assert "\n" not in text and "  " not in text and len(text) <= notify.TEXT_MAX + 20
    assert "<" not in text and "&lt;script&gt;&amp;" in text


def test_a_pin_of_an_empty_environment_has_no_sha() -> None:
    event = _event(action="pin", from_sha=None, to_sha="", from_digest=None, to_digest="")
    assert (event["from_sha"], event["to_sha"], event["to_digest"]) == (None, None, None)


def test_a_move_event_carries_the_ledger_event_id_and_time(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")

    def decide(seen: dict[Stage, Pointer]) -> list[Change]:
        return [
            Change(
                expected=seen["staging"],
                sha="a" * 40,
                digest="sha256:" + "a" * 64,
                action="promote",
                who=Who(actor="ann"),
            )
        ]

    [change] = compare_and_swap(ledger, "a.b", decide)
    [recorded] = history(ledger, "a.b")
    event = notify.move_event(
        image="a.b",
        stage="staging",
        action="promote",
        from_sha=None,
        to_sha=change.sha,
        from_digest=None,
        to_digest=change.digest,
        actor="ann",
        reason=None,
        forced=False,
        event_id=change.event_id,
        at=change.at,
    )
    assert event["event_id"] == f"move-{recorded.id}"
    assert event["at"] == recorded.at.isoformat()


def test_deferred_events_go_after_the_block_in_one_deadline(
    tmp_path: Path, servers: list[Server], capsys: pytest.CaptureFixture[str]
) -> None:
    hook = Server(200)
    servers.append(hook)
    settings = Settings(repo=tmp_path, notify_url=hook.url + "/h")
    with notify.deferred(settings):
        notify.send(settings, _event())
        notify.send(settings, _event(stage="production"))
        assert hook.seen == []  # held while the block (the image lock) runs
    assert [json.loads(b)["stage"] for _, _, b in hook.seen] == ["staging", "production"]
    with notify.deferred(settings, deadline=0.0):
        notify.send(settings, _event())
    assert len(hook.seen) == 2
    assert "1 event(s) not delivered within 0 s" in capsys.readouterr().err
