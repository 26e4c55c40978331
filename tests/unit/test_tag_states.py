"""`status` reads the registry tags concurrently, in the ledger's order, each state right.

The registry here is a small HTTP server speaking the manifest GET of the distribution
API that holds each request 0.2 s and counts the requests in flight at once (while held: a
handler thread still ending after its answer is not a request of the client's).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.ledger.model import STAGES, Pointer
from pipeline.publish import tags
from pipeline.publish.distribution import OciPublisher
from pipeline.publish.oci import Registry
from tests.helpers import serving

BODY = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()
OTHER = b'{"schemaVersion": 2, "other": true}'


class Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.served = 0


class Handler(BaseHTTPRequestHandler):
    server: Counting

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.in_flight += 1
            self.server.most = max(self.server.most, self.server.in_flight)
        time.sleep(0.2)
        with self.server.lock:
            # out of flight before the answer is sent: once the client has it, that reader
            # thread may send its next request while this handler thread is still ending
            self.server.in_flight -= 1
            self.server.served += 1
        # /v2/<image>/manifests/<stage>: team003.task's tags are missing, its production moved
        image, stage = self.path.split("/")[2], self.path.rsplit("/", 1)[1]
        if image == "team003.task" and stage == "staging":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = OTHER if (image, stage) == ("team003.task", "production") else BODY
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Counting]:
    httpd = Counting()
    with serving(httpd):
        yield httpd


def _pointer(image: str, stage: str, digest: str | None) -> Pointer:
    return Pointer(
        image=image,
        stage=stage,  # type: ignore[arg-type]
        sha="a" * 40 if digest else None,
        digest=digest,
        generation=1,
        pinned=digest is None,
        pin_reason=None,
        pinned_by=None,
        updated_at=None,
    )


def test_tag_states_are_read_concurrently_in_order(server: Counting) -> None:
    pointers = [_pointer(f"team{i:03d}.task", s, DIGEST) for i in range(10) for s in STAGES]
    pointers.insert(5, _pointer("team999.task", "fallback", None))  # pinned, never set: nothing to read
    publisher = OciPublisher(Registry(f"127.0.0.1:{server.server_address[1]}", timeout=10))
    found = tags.tag_states(publisher, pointers)
    assert [s.pointer for s in found] == pointers
    drift = {(s.pointer.image, s.pointer.stage): s.drift for s in found if s.drift}
    assert drift == {("team003.task", "staging"): "missing", ("team003.task", "production"): "moved"}
    assert found[5].drift is None and found[5].tag_digest is None
    assert server.served == 30
    assert server.most > 1, "tags were read one after another"
    assert server.most <= tags.READERS
