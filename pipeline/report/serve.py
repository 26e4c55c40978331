"""`envctl report --serve`: the written site over HTTP on 127.0.0.1 until Ctrl-C.

Only requests addressed to this server by name (`Host: 127.0.0.1[:PORT]` or
`localhost[:PORT]`) are answered; any other Host gets 421. A page on another site
whose name was rebound to 127.0.0.1 (DNS rebinding) sends its own name as Host,
so it can't read the report (which carries pipeline logs).
"""

from __future__ import annotations

import functools
import http.server
import logging
from pathlib import Path

log = logging.getLogger(__name__)

LOCAL_NAMES = ("127.0.0.1", "localhost")


def allowed_host(host: str | None, port: int) -> bool:
    """Whether a request's Host header names this server: 127.0.0.1 or localhost, at most our port."""
    if not host:
        return False
    name, colon, given = host.strip().lower().rpartition(":")
    if not colon:
        name, given = given, ""
    return name in LOCAL_NAMES and given in {"", str(port)}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _addressed_to_us(self) -> bool:
        address = self.server.server_address
        port = int(address[1]) if isinstance(address, tuple) else 0
        if allowed_host(self.headers.get("Host"), port):
            return True
        self.send_error(421, "Misdirected Request", "this server answers only to 127.0.0.1 and localhost")
        return False

    def do_GET(self) -> None:
        if self._addressed_to_us():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._addressed_to_us():
            super().do_HEAD()


def server(root: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server of `root` bound to 127.0.0.1 (port 0: a free one); call serve_forever."""
    handler = functools.partial(_Quiet, directory=str(root))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def url(httpd: http.server.ThreadingHTTPServer) -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host!s}:{port}/"
