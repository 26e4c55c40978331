"""Bearer-token auth of `pipeline.publish.oci`, against a tiny fake at the HTTP boundary.

The local registry runs without auth; Artifact Registry (which needs the token flow)
can't run here. The fake answers like a token-protected registry: 401 with a
`WWW-Authenticate: Bearer realm=…` challenge, a token endpoint, then the manifest.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.errors import Unavailable, UsageError
from pipeline.publish.oci import Credentials, Registry, check_realm, parse_challenge
from tests.helpers import serving

MEDIA = "application/vnd.oci.image.manifest.v1+json"
BODY = json.dumps({"schemaVersion": 2, "mediaType": MEDIA, "layers": []}).encode()


class Fake(ThreadingHTTPServer):
    requests_seen: list[tuple[str, str, dict[str, str]]]
    tags: dict[str, bytes]
    realm: str  # the token service the challenge names; empty: this server's /token


class Handler(BaseHTTPRequestHandler):
    server: Fake

    def log_message(self, *args: Any) -> None:
        pass

    def _seen(self) -> None:
        self.server.requests_seen.append((self.command, self.path, dict(self.headers)))

    def _challenge(self, scope: str) -> None:
        realm = self.server.realm or f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.send_response(401)
        self.send_header(
            "WWW-Authenticate", f'Bearer realm="{realm}",service="fake.registry",scope="{scope}"'
        )
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _authorised(self, action: str) -> bool:
        given = self.headers.get("Authorization", "")
        return (
            given.startswith("Bearer token for repository:team/task:") and action in given.rsplit(":", 1)[1]
        )

    def do_GET(self) -> None:
        self._seen()
        if self.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(b"robot:secret").decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(403)
                self.end_headers()
                return
            scope = parse_qs(urlsplit(self.path).query).get("scope", [""])[0]
            data = json.dumps({"token": f"token for {scope}"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if not self._authorised("pull"):
            self._challenge("repository:team/task:pull")
            return
        body = self.server.tags.get(self.path.rsplit("/", 1)[-1])
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", MEDIA)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def do_PUT(self) -> None:
        self._seen()
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        if not self._authorised("push"):
            self._challenge("repository:team/task:pull,push")
            return
        self.server.tags[self.path.rsplit("/", 1)[-1]] = data
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def fake() -> Iterator[Fake]:
    server = Fake(("127.0.0.1", 0), Handler)
    server.requests_seen = []
    server.tags = {"v1": BODY}
    server.realm = ""
    with serving(server):
        yield server


def test_challenge_is_parsed() -> None:
    scheme, params = parse_challenge('Bearer realm="https://a/token",service="a",scope="repository:x:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://a/token", "service": "a", "scope": "repository:x:pull"}


def test_bearer_challenge_flow_fetches_a_token_and_retags(fake: Fake) -> None:
    registry = Registry(f"127.0.0.1:{fake.server_address[1]}", credentials=Credentials("robot", "secret"))
    digest = registry.retag("team/task", "v1", "production")
    assert digest == "sha256:" + hashlib.sha256(BODY).hexdigest()
    assert fake.tags["production"] == BODY  # the exact bytes
    token_requests = [r for r in fake.requests_seen if r[1].startswith("/token")]
    assert any("scope=repository%3Ateam%2Ftask%3Apull%2Cpush" in r[1] for r in token_requests)
    assert all("service=fake.registry" in r[1] for r in token_requests)
    put = [r for r in fake.requests_seen if r[0] == "PUT"][-1]
    assert put[2]["Authorization"] == "Bearer token for repository:team/task:pull,push"
    assert put[2]["Content-Type"] == MEDIA


def test_a_configured_token_is_sent_up_front(fake: Fake) -> None:
    registry = Registry(f"127.0.0.1:{fake.server_address[1]}", token="token for repository:team/task:pull")
    assert registry.digest_of("team/task", "v1") is not None
    assert [r[0] for r in fake.requests_seen] == ["GET"]  # no challenge round trip


def test_refused_credentials_are_one_clear_error(fake: Fake) -> None:
    registry = Registry(f"127.0.0.1:{fake.server_address[1]}", credentials=Credentials("robot", "wrong"))
    with pytest.raises(Unavailable, match=r"token service .* refused a token"):
        registry.manifest("team/task", "v1")


def test_credentials_never_show_the_password_or_token() -> None:
    shown = repr(Credentials("robot", "pa55-word", "t0ken-value"))
    assert "robot" in shown
    assert "pa55-word" not in shown and "t0ken-value" not in shown


@pytest.mark.parametrize(
    ("realm", "registry", "allowed"),
    [
        ("https://europe-docker.pkg.dev/v2/token", "europe-docker.pkg.dev", ()),
        ("https://EUROPE-docker.pkg.dev:443/v2/token", "europe-docker.pkg.dev", ()),
        ("https://auth.docker.io/token", "registry-1.docker.io", ("auth.docker.io",)),
        ("http://127.0.0.1:5001/token", "localhost:5000", ()),
        ("http://localhost/token", "127.0.0.1:5000", ()),
        ("https://127.0.0.1:5001/token", "localhost:5000", ()),
    ],
)
def test_token_services_on_the_registry_or_an_allowed_host_are_trusted(
    realm: str, registry: str, allowed: tuple[str, ...]
) -> None:
    check_realm(realm, registry, allowed)


@pytest.mark.parametrize(
    ("realm", "registry", "allowed"),
    [
        ("https://attacker.example/token", "europe-docker.pkg.dev", ()),
        ("https://auth.docker.io/token", "registry-1.docker.io", ()),  # not allowed: not the registry's host
        ("http://europe-docker.pkg.dev/v2/token", "europe-docker.pkg.dev", ()),  # plain http off loopback
        ("http://auth.docker.io/token", "registry-1.docker.io", ("auth.docker.io",)),
        ("https://europe-docker.pkg.dev.attacker.example/token", "europe-docker.pkg.dev", ()),
        ("http://127.0.0.1:8080/token", "europe-docker.pkg.dev", ()),  # a remote registry naming our loopback
        ("ftp://europe-docker.pkg.dev/token", "europe-docker.pkg.dev", ()),
        ("/token", "europe-docker.pkg.dev", ()),
    ],
)
def test_other_token_services_are_refused(realm: str, registry: str, allowed: tuple[str, ...]) -> None:
    with pytest.raises(UsageError, match="nothing was sent") as refused:
        check_realm(realm, registry, allowed)
    assert len(str(refused.value).splitlines()) == 1


@pytest.mark.parametrize("realm", ["https://attacker.example/token", "http://attacker.example/token"])
def test_a_challenge_naming_a_foreign_token_service_gets_no_credentials(fake: Fake, realm: str) -> None:
    fake.realm = realm
    registry = Registry(f"127.0.0.1:{fake.server_address[1]}", credentials=Credentials("robot", "secret"))
    with pytest.raises(UsageError, match=r"names the token service .*attacker\.example.*nothing was sent"):
        registry.manifest("team/task", "v1")
    assert [r[0] for r in fake.requests_seen] == ["GET"]  # the challenged read, and nothing else
    assert all("Authorization" not in r[2] for r in fake.requests_seen)
