"""The keep-alive `http.client` path of `pipeline.publish.oci` to a loopback registry,
against a small HTTP server on 127.0.0.1 that answers what each test sets."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipeline.errors import Unavailable
from pipeline.publish.oci import Manifest, Registry
from tests.helpers import serving

MEDIA = "application/vnd.oci.image.manifest.v1+json"
BODY = json.dumps({"schemaVersion": 2, "mediaType": MEDIA, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()


class Fake(ThreadingHTTPServer):
    get_status: int
    put_status: int
    put_digest: str | None
    delay: float
    seen: list[tuple[str, tuple[str, int]]]


class Handler(BaseHTTPRequestHandler):
    server: Fake
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.client_address))
        time.sleep(self.server.delay)
        status = self.server.get_status
        body = BODY if status == 200 else b"<html>moved</html>"
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "http://elsewhere.example/v2/x")
        self.send_header("Content-Type", MEDIA)
        self.send_header("Docker-Content-Digest", DIGEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append(("PUT", self.client_address))
        self.send_response(self.server.put_status)
        if self.server.put_digest:
            self.send_header("Docker-Content-Digest", self.server.put_digest)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def fake() -> Iterator[Fake]:
    server = Fake(("127.0.0.1", 0), Handler)
    server.get_status, server.put_status, server.put_digest, server.delay = 200, 201, DIGEST, 0.0
    server.seen = []
    with serving(server):
        yield server


def registry(fake: Fake, **kwargs: Any) -> Registry:
    return Registry(f"127.0.0.1:{fake.server_address[1]}", **{"timeout": 5, **kwargs})


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_is_refused_not_hashed_as_a_manifest(fake: Fake, status: int) -> None:
    fake.get_status = status
    with pytest.raises(Unavailable, match=r"redirected GET team/task:prod to http://elsewhere\.example"):
        registry(fake).manifest("team/task", "prod")


@pytest.mark.parametrize("status", [200, 202, 302])
def test_a_put_not_answered_201_is_not_tagged(fake: Fake, status: int) -> None:
    fake.put_status = status
    manifest = Manifest(body=BODY, media_type=MEDIA, digest=DIGEST)
    with pytest.raises(Unavailable, match=f"refused to tag team/task:prod: HTTP {status}"):
        registry(fake).put_manifest("team/task", "prod", manifest)


def test_a_put_without_digest_is_checked_with_a_read_of_the_tag(fake: Fake) -> None:
    fake.put_digest = None
    manifest = Manifest(body=BODY, media_type=MEDIA, digest=DIGEST)
    assert registry(fake).put_manifest("team/task", "prod", manifest) == DIGEST
    assert [method for method, _ in fake.seen] == ["PUT", "GET"]
    fake.seen.clear()
    fake.get_status = 404
    with pytest.raises(Unavailable, match="as none, expected"):
        registry(fake).put_manifest("team/task", "prod", manifest)


def test_a_timeout_is_not_retried(fake: Fake) -> None:
    fake.delay = 1.5
    with pytest.raises(Unavailable, match=r"timed out after 0.5 s") as caught:
        registry(fake, timeout=0.5).manifest("team/task", "prod")
    assert "stack up" not in str(caught.value)
    assert len(fake.seen) == 1


@pytest.mark.parametrize("token", ["tök€n", "a\r\nX-Evil: 1", "a\nb"])
def test_a_token_that_is_no_header_value_is_one_error_line(fake: Fake, token: str) -> None:
    with pytest.raises(Unavailable, match="token is not a valid header value") as caught:
        registry(fake, token=token).manifest("team/task", "prod")
    assert token not in str(caught.value)


def test_each_reader_thread_keeps_one_connection(fake: Fake) -> None:
    reg = registry(fake)

    def read() -> None:
        for _ in range(4):
            assert reg.manifest("team/task", "prod") is not None

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake.seen) == 12
    assert len({address for _, address in fake.seen}) == 3
