"""Tag listing follows every `Link` page, relative or absolute on the same registry, else refuses.

A tiny HTTP server on 127.0.0.1 plays a registry that pages `/tags/list` (as Artifact
Registry and Harbor do, with absolute links); the real `Registry` client reads it.
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


class Paged(ThreadingHTTPServer):
    next_link: str  # "{base}" is replaced by this server's http://host:port


class Handler(BaseHTTPRequestHandler):
    server: Paged

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        second = "last=a" in self.path
        body = json.dumps({"name": "team/task", "tags": ["b"] if second else ["a"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if not second:
            host, port = self.server.server_address[:2]
            link = self.server.next_link.replace("{base}", f"http://{host}:{port}")
            self.send_header("Link", f'<{link}>; rel="next"')
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def paged() -> Iterator[Paged]:
    server = Paged(("127.0.0.1", 0), Handler)
    with serving(server):
        yield server


@pytest.mark.parametrize(
    "link", ["/v2/team/task/tags/list?n=1000&last=a", "{base}/v2/team/task/tags/list?n=1000&last=a"]
)
def test_tags_follow_relative_and_same_host_absolute_pages(paged: Paged, link: str) -> None:
    paged.next_link = link
    registry = Registry(f"127.0.0.1:{paged.server_address[1]}", timeout=5)
    assert registry.tags("team/task") == ["a", "b"]


def test_a_next_page_on_another_host_is_unavailable_not_the_end(paged: Paged) -> None:
    paged.next_link = "http://elsewhere.example/v2/team/task/tags/list?last=a"
    registry = Registry(f"127.0.0.1:{paged.server_address[1]}", timeout=5)
    with pytest.raises(Unavailable, match="pages envctl can't follow"):
        registry.tags("team/task")
