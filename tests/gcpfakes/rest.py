"""A small stateful REST fake of a Google API, spoken to by the real client libraries.

The clients are built with `transport="rest"` and an `http://127.0.0.1:PORT` endpoint
(see pipeline/gcp.py); this server answers them the way Google's front ends do:

- routes by method and a regular expression on the path, decoded exactly once (the
  clients encode a `%2F` in a package id again, as `%252F`);
- ignores the `$alt` query parameter the REST transport adds;
- answers JSON made with the proto-plus types' `to_json`, reads bodies with
  `from_json(..., ignore_unknown_fields=True)` (see `FakeRequest.message`);
- errors as HTTP status + `{"error": {"code", "message", "status", "details"}}`, which
  the clients raise as `NotFound`, `Forbidden`/`PermissionDenied`, ...;
- long-running operations kept in `operations` and served at
  `GET /v1/{name=**/operations/*}`;
- every request is kept in `requests` for the tests to assert on.

A subclass (or a test) adds routes with `route(method, pattern)`; `fail(...)` makes the
next matching requests fail with a Google error; `stop()` (or leaving the `with` block)
closes the port so that a "dead" service can be tested.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: gRPC status name -> HTTP status, as Google's REST front ends map them.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class GoogleError(Exception):
    """Raised by a route to answer with a Google error body."""

    def __init__(
        self, status: str, message: str, *, reason: str = "", metadata: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": HTTP_STATUS[self.status],
            "message": self.message,
            "status": self.status,
        }
        if self.reason:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": self.reason,
                    "domain": "googleapis.com",
                    "metadata": self.metadata,
                }
            ]
        return {"error": error}


def service_disabled(service: str, project: str) -> GoogleError:
    """The error Google answers when an API is not enabled in a project."""
    return GoogleError(
        "PERMISSION_DENIED",
        f"{service} API has not been used in project {project} before or it is disabled.",
        reason="SERVICE_DISABLED",
        metadata={"service": service, "consumer": f"projects/{project}"},
    )


@dataclass
class FakeRequest:
    """One request as the fake saw it: path decoded once, `$alt` dropped."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    groups: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def message(self, kind: Any) -> Any:
        """The body as a proto-plus message of `kind`."""
        return kind.from_json(self.body or b"{}", ignore_unknown_fields=True)

    def param(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class FakeResponse:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[FakeRequest], "FakeResponse | dict[str, Any] | str | bytes | None"]


def proto_json(message: Any) -> str:
    """A proto-plus message (or a raw protobuf one) as the JSON Google's REST API answers."""
    from google.protobuf import json_format

    if hasattr(type(message), "to_json"):
        text: str = type(message).to_json(message)
        return text
    return str(json_format.MessageToJson(message))


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    error: GoogleError
    times: int


class FakeRestServer:
    """The base of every REST fake: routes, a request log, operations, injected failures."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[FakeRequest] = []
        self.operations: dict[str, str] = {}  # name -> Operation JSON
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._failures: list[_Failure] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.route("GET", r"/v1/(?P<name>(?:.+/)?operations/[^/]+)")(self._get_operation)

    # -- set-up -----------------------------------------------------------------------

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Register `handler` for `method` on paths that fully match `pattern` (named groups → `groups`).

        A route registered later wins over an earlier one that matches too, so a test can
        override one call of a fake.
        """

        def register(handler: Handler) -> Handler:
            self._routes.append((method, re.compile(pattern), handler))
            return handler

        return register

    def fail(self, method: str, pattern: str, error: GoogleError, *, times: int = 1_000_000) -> None:
        """Answer the next `times` requests matching `method` and `pattern` with `error`."""
        with self.lock:
            self._failures.append(_Failure(method, re.compile(pattern), error, times))

    def clear_failures(self) -> None:
        with self.lock:
            self._failures.clear()

    def add_operation(
        self,
        name: str,
        *,
        done: bool,
        metadata: Any = None,
        response: Any = None,
        error: GoogleError | None = None,
    ) -> str:
        """Keep a long-running operation (metadata and response packed as Any); returns its JSON."""
        from google.longrunning import operations_pb2
        from google.rpc import status_pb2

        op = operations_pb2.Operation(name=name, done=done)
        if metadata is not None:
            op.metadata.Pack(_raw(metadata))
        if response is not None:
            op.response.Pack(_raw(response))
        if error is not None:
            op.error.CopyFrom(status_pb2.Status(code=_GRPC_CODE[error.status], message=error.message))
        text = proto_json(op)
        with self.lock:
            self.operations[name] = text
        return text

    def _get_operation(self, request: FakeRequest) -> FakeResponse:
        with self.lock:
            text = self.operations.get(request.groups["name"])
        if text is None:
            raise GoogleError("NOT_FOUND", f"operation {request.groups['name']} not found")
        return FakeResponse(body=text.encode())

    # -- queries for the tests --------------------------------------------------------

    def sent(self, method: str | None = None, pattern: str | None = None) -> list[FakeRequest]:
        """The requests seen, optionally only those with `method` and a path matching `pattern`."""
        with self.lock:
            seen = list(self.requests)
        return [
            r
            for r in seen
            if (method is None or r.method == method) and (pattern is None or re.fullmatch(pattern, r.path))
        ]

    # -- life cycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake is not started")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeRestServer:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gcp-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeRestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- dispatch ---------------------------------------------------------------------

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(url.path)  # exactly once
        query = {
            k: v for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items() if k != "$alt"
        }
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        request = FakeRequest(h.command, path, query, {k.lower(): v for k, v in h.headers.items()}, body)
        with self.lock:
            self.requests.append(request)
        try:
            response = self._answer(request)
        except GoogleError as e:
            response = FakeResponse(HTTP_STATUS[e.status], json.dumps(e.body()).encode())
        except Exception as e:  # a bug in a fake: say so to the client, loudly
            response = FakeResponse(500, json.dumps(GoogleError("INTERNAL", f"fake: {e!r}").body()).encode())
        h.send_response(response.status)
        h.send_header("Content-Type", response.content_type)
        h.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(response.body)

    def _answer(self, request: FakeRequest) -> FakeResponse:
        with self.lock:
            for failure in self._failures:
                if (
                    failure.times > 0
                    and failure.method == request.method
                    and failure.pattern.fullmatch(request.path)
                ):
                    failure.times -= 1
                    raise failure.error
        for method, pattern, handler in reversed(self._routes):  # the latest registered wins
            match = pattern.fullmatch(request.path)
            if method == request.method and match:
                request.groups = {k: v for k, v in match.groupdict().items() if v is not None}
                return _response(handler(request))
        raise GoogleError("NOT_FOUND", f"fake: no route for {request.method} {request.path}")


def _response(answer: FakeResponse | dict[str, Any] | str | bytes | None) -> FakeResponse:
    if isinstance(answer, FakeResponse):
        return answer
    if answer is None:
        return FakeResponse(body=b"{}")
    if isinstance(answer, dict):
        return FakeResponse(body=json.dumps(answer).encode())
    if isinstance(answer, str):
        return FakeResponse(body=answer.encode())
    return FakeResponse(body=answer, content_type="application/octet-stream")


def _raw(message: Any) -> Any:
    """The raw protobuf message behind a proto-plus one."""
    pb = getattr(type(message), "pb", None)
    return pb(message) if pb is not None else message


_GRPC_CODE = {
    "CANCELLED": 1,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}


def pages(items: list[Any], request: FakeRequest, key: str, *, default_size: int = 50) -> dict[str, Any]:
    """One page of `items` (already JSON-ready dicts) as a List response under `key`."""
    size = int(request.param("pageSize") or default_size) or default_size
    start = int(request.param("pageToken") or 0)
    page = items[start : start + size]
    answer: dict[str, Any] = {key: page}
    if start + size < len(items):
        answer["nextPageToken"] = str(start + size)
    return answer


def iter_json(messages: list[Any]) -> Iterator[dict[str, Any]]:
    """proto-plus messages as dicts, as a List response holds them."""
    for message in messages:
        yield json.loads(proto_json(message))
