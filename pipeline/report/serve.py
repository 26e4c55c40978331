"""`envctl report --serve`: the written site over HTTP on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import functools
import http.server
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def server(root: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server of `root` bound to 127.0.0.1 (port 0: a free one); call serve_forever."""
    handler = functools.partial(_Quiet, directory=str(root))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def url(httpd: http.server.ThreadingHTTPServer) -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host!s}:{port}/"
