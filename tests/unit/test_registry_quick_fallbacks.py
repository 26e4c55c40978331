"""Where the loopback `http.client` path of `pipeline.publish.oci` hands over or tries again:
a `Basic` challenge (the requests session sends the credentials), an idle keep-alive
connection the registry closed (sent once more on a new one, never twice when answered),
and a registry that is not on the loopback (never this path).

A small HTTP/1.1 server on 127.0.0.1 logs each request it answers: method, path, the
Authorization header and the User-Agent (requests sends one; http.client sends none).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipeline.errors import Unavailable
from pipeline.publish.oci import Credentials, Manifest, Registry
from tests.helpers import serving

MEDIA = "application/vnd.oci.image.manifest.v1+json"
BODY = json.dumps({"schemaVersion": 2, "mediaType": MEDIA, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()
USER, PASSWORD = "ann", "s3cret-pass"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    basic: str | None  # the Authorization header it asks for; None: none
    close_after_answer: bool  # close the connection after each answer, without saying so
    answered: list[tuple[str, str, str, str]]  # method, path, Authorization, User-Agent
    connections: set[int]  # the client ports seen


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.server.close_after_answer:
            self.close_connection = True  # an idle timeout: no `Connection: close` was said

    def _allowed(self, method: str) -> bool:
        auth = self.headers.get("Authorization", "")
        self.server.answered.append((method, self.path, auth, self.headers.get("User-Agent", "")))
        self.server.connections.add(self.client_address[1])
        if self.server.basic is not None and auth != self.server.basic:
            self._respond(401, b"{}", {"WWW-Authenticate": 'Basic realm="registry"'})
            return False
        return True

    def do_GET(self) -> None:
        if not self._allowed("GET"):
            return
        if self.path == "/v2/":
            self._respond(200, b"{}")
            return
        self._respond(200, BODY, {"Content-Type": MEDIA, "Docker-Content-Digest": DIGEST})

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self._allowed("PUT"):
            self._respond(201, b"", {"Docker-Content-Digest": DIGEST})


@pytest.fixture
def server() -> Iterator[Server]:
    made = Server(("127.0.0.1", 0), Handler)
    made.basic, made.close_after_answer, made.answered, made.connections = None, False, [], set()
    with serving(made):
        yield made


def _registry(server: Server, **kwargs: Any) -> Registry:
    return Registry(f"127.0.0.1:{server.server_address[1]}", **{"timeout": 5, **kwargs})


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_basic_challenge_hands_over_to_the_session_which_sends_the_credentials(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.basic = _basic(USER, PASSWORD)
    caplog.set_level(logging.DEBUG)
    registry = _registry(server, credentials=Credentials(username=USER, password=PASSWORD))
    found = registry.manifest("team/img", "staging")
    assert found is not None and found.digest == DIGEST
    assert registry.put_manifest(
        "team/img", "production", Manifest(body=BODY, media_type=MEDIA, digest=DIGEST)
    )
    assert registry.digest_of("team/img", "production") == DIGEST
    # the first read went over http.client with no credentials; the challenge handed the
    # rest to the requests session, which sends Basic credentials; http.client never did
    first, *rest = server.answered
    assert first[:3] == ("GET", "/v2/team/img/manifests/staging", "") and first[3] == ""
    assert rest and all(auth == server.basic for _, _, auth, _ in rest), rest
    assert all(agent.startswith("python-requests/") for *_, agent in rest), rest
    assert [m for m, *_ in rest].count("PUT") == 1
    assert PASSWORD not in repr(registry.credentials) and PASSWORD not in caplog.text


def test_wrong_basic_credentials_are_one_error_line(server: Server) -> None:
    server.basic = _basic(USER, PASSWORD)
    registry = _registry(server, credentials=Credentials(username=USER, password="wrong"))
    with pytest.raises(Unavailable) as refused:
        registry.manifest("team/img", "staging")
    message = str(refused.value)
    assert refused.value.exit_code == 3 and "\n" not in message
    assert message == (
        f"registry {registry.host} refused the credentials (HTTP 401); "
        f"log in with `docker login {registry.host}` and try again"
    )
    assert "wrong" not in message


def test_a_basic_challenge_without_credentials_says_none_are_configured(server: Server) -> None:
    server.basic = _basic(USER, PASSWORD)
    with pytest.raises(Unavailable, match=r"needs credentials for this \(HTTP 401\) and none are configured"):
        _registry(server).manifest("team/img", "staging")
    assert [(m, auth) for m, _, auth, _ in server.answered] == [("GET", "")]  # no second, blind try


def test_an_idle_connection_the_registry_closed_is_opened_again_and_nothing_is_sent_twice(
    server: Server,
) -> None:
    server.close_after_answer = True
    registry = _registry(server)
    assert registry.digest_of("team/img", "staging") == DIGEST
    time.sleep(0.2)  # the registry has closed the connection this thread keeps
    assert registry.digest_of("team/img", "staging") == DIGEST
    time.sleep(0.2)
    assert registry.put_manifest(
        "team/img", "production", Manifest(body=BODY, media_type=MEDIA, digest=DIGEST)
    )
    # each request was answered once, each on a connection of its own
    assert [(m, p) for m, p, _, _ in server.answered] == [
        ("GET", "/v2/team/img/manifests/staging"),
        ("GET", "/v2/team/img/manifests/staging"),
        ("PUT", "/v2/team/img/manifests/production"),
    ]
    assert len(server.connections) == 3
    assert all(agent == "" for *_, agent in server.answered)  # all over http.client


def test_a_registry_that_drops_every_request_is_one_error_line(server: Server) -> None:
    class Dropping(Handler):
        def handle_one_request(self) -> None:
            self.rfile.readline()
            self.close_connection = True  # read the request line, answer nothing

    server.RequestHandlerClass = Dropping
    registry = _registry(server)
    with pytest.raises(Unavailable) as dropped:
        registry.digest_of("team/img", "staging")
    assert str(dropped.value) == (
        f"registry {registry.host} does not answer (RemoteDisconnected); start it with `envctl stack up`"
    )


@pytest.mark.parametrize("host", ["registry.example:5000", "10.0.0.1:5000", "127.0.0.2:5000"])
def test_a_registry_off_the_loopback_never_takes_the_http_client_path(host: str) -> None:
    registry = Registry(host, timeout=1)
    assert not registry.local and registry.base.startswith("https://")
    assert registry._quick_request("/team/img/manifests/x", {}) is None  # no connection is made


@pytest.mark.parametrize("host", ["localhost:5000", "127.0.0.1:5000"])
def test_a_loopback_registry_is_reached_over_plain_http_at_127_0_0_1(host: str) -> None:
    registry = Registry(host, timeout=1)
    assert registry.local and registry.base == "http://127.0.0.1:5000/v2"
