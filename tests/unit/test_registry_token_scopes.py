"""Bearer tokens are per repository: `status` reads many images' tags at once from threads.

A token-protected registry (Artifact Registry's token flow, which can't run here) scopes
each token to one repository. The fake refuses a token of another repository, as such a
registry does, and counts the tokens it hands out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.publish.oci import Credentials, Registry
from tests.helpers import serving

MEDIA = "application/vnd.oci.image.manifest.v1+json"
BODY = json.dumps({"schemaVersion": 2, "mediaType": MEDIA, "layers": []}).encode()
REPOS = [f"team/image{i}" for i in range(12)]


class Fake(ThreadingHTTPServer):
    tokens_issued: list[str]
    lock: threading.Lock


class Handler(BaseHTTPRequestHandler):
    server: Fake

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/token"):
            scope = parse_qs(urlsplit(self.path).query)["scope"][0]
            repo = scope.split(":")[1]
            with self.server.lock:
                self.server.tokens_issued.append(repo)
            self._send(200, json.dumps({"token": f"tok:{repo}"}).encode())
            return
        repo = self.path.removeprefix("/v2/").split("/manifests/")[0]
        if self.headers.get("Authorization") != f"Bearer tok:{repo}":
            realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:{repo}:pull"'
            self._send(401, WWW_Authenticate=challenge)
            return
        self._send(200, BODY, Content_Type=MEDIA)


@pytest.fixture
def fake() -> Iterator[Fake]:
    server = Fake(("127.0.0.1", 0), Handler)
    server.tokens_issued = []
    server.lock = threading.Lock()
    with serving(server):
        yield server


def test_each_repository_keeps_its_own_token_across_concurrent_reads(fake: Fake) -> None:
    registry = Registry(f"127.0.0.1:{fake.server_address[1]}", credentials=Credentials("robot", "secret"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):  # as three `status` refreshes of one long-lived client would
            found = list(pool.map(lambda repo: registry.manifest(repo, "staging"), REPOS))
    assert all(m is not None for m in found)
    # One token per repository: a read never sends (nor replaces) another repository's token.
    assert sorted(fake.tokens_issued) == sorted(REPOS)
