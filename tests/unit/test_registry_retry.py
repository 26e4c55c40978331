"""Retries of `pipeline.publish.oci` on a 5xx, against a tiny HTTP server on 127.0.0.1.

The real distribution registry answers 500 ("invalid checksum digest format") when a
manifest is read while another client writes its tag; the race test met it. A fake is
used here only to make that answer happen on demand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipeline.errors import Unavailable
from pipeline.publish.oci import Registry
from tests.helpers import serving

MEDIA = "application/vnd.oci.image.manifest.v1+json"
BODY = json.dumps({"schemaVersion": 2, "mediaType": MEDIA, "layers": []}).encode()


class Flaky(ThreadingHTTPServer):
    failures_left: int
    seen: list[str]


class Handler(BaseHTTPRequestHandler):
    server: Flaky

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.server.seen.append(self.command)
        if self.server.failures_left > 0:
            self.server.failures_left -= 1
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200 if self.command == "GET" else 201)
        self.send_header("Content-Type", MEDIA)
        self.send_header("Content-Length", str(len(BODY) if self.command == "GET" else 0))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(BODY)

    do_GET = _answer

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self._answer()


@pytest.fixture
def flaky() -> Iterator[Flaky]:
    server = Flaky(("127.0.0.1", 0), Handler)
    server.seen = []
    server.failures_left = 0
    with serving(server):
        yield server


def test_a_transient_500_on_read_is_retried(flaky: Flaky) -> None:
    flaky.failures_left = 2
    registry = Registry(f"127.0.0.1:{flaky.server_address[1]}", timeout=5)
    manifest = registry.manifest("team/task", "production")
    assert manifest is not None and manifest.body == BODY
    assert flaky.seen == ["GET", "GET", "GET"]


def test_a_registry_that_keeps_failing_is_unavailable(flaky: Flaky) -> None:
    flaky.failures_left = 10
    registry = Registry(f"127.0.0.1:{flaky.server_address[1]}", timeout=5)
    with pytest.raises(Unavailable, match="HTTP 500"):
        registry.manifest("team/task", "production")
    assert len(flaky.seen) == 4
