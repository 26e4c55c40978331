"""A fake of the Cloud Storage JSON API, as google-cloud-storage calls it.

Serves buckets get, objects insert (`uploadType=media`, `multipart`, and `resumable`
with its session PUTs), objects get (metadata, or the bytes with `alt=media`, at
`/storage/v1/...` and `/download/storage/v1/...`), objects list (prefix, delimiter,
pages) and delete. Objects keep bytes, generation, content type and hashes; the
download carries `x-goog-hash` so the client's checksum check runs.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tests.gcpfakes.rest import FakeRequest, FakeResponse, FakeRestServer, GoogleError

B = r"/storage/v1/b/(?P<bucket>[^/]+)"


@dataclass
class StoredObject:
    bucket: str
    name: str
    data: bytes
    content_type: str = "application/octet-stream"
    generation: int = 1
    metadata: dict[str, str] = field(default_factory=dict)
    updated: str = ""

    def resource(self, endpoint: str) -> dict[str, Any]:
        from urllib.parse import quote

        return {
            "kind": "storage#object",
            "id": f"{self.bucket}/{self.name}/{self.generation}",
            "name": self.name,
            "bucket": self.bucket,
            "generation": str(self.generation),
            "metageneration": "1",
            "contentType": self.content_type,
            "size": str(len(self.data)),
            "md5Hash": base64.b64encode(hashlib.md5(self.data).digest()).decode(),
            "crc32c": _crc32c(self.data),
            "mediaLink": f"{endpoint}/download/storage/v1/b/{self.bucket}/o/{quote(self.name, safe='')}"
            f"?generation={self.generation}&alt=media",
            "metadata": self.metadata,
            "timeCreated": self.updated,
            "updated": self.updated,
        }


def _crc32c(data: bytes) -> str:
    import google_crc32c

    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


class FakeStorage(FakeRestServer):
    """Buckets and objects in memory. `buckets` names the buckets that exist."""

    def __init__(self, buckets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.buckets: set[str] = set(buckets)
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self._sessions: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.route("GET", B)(self._get_bucket)
        self.route("GET", B + r"/o")(self._list)
        self.route("GET", r"(?:/download)?" + B + r"/o/(?P<object>.+)")(self._get)
        self.route("DELETE", B + r"/o/(?P<object>.+)")(self._delete)
        self.route("POST", r"/upload" + B + r"/o")(self._insert)
        self.route("PUT", r"/upload/resumable/(?P<session>\d+)")(self._resumable_put)

    # -- helpers for tests --------------------------------------------------------------

    def put(self, bucket: str, name: str, data: bytes, content_type: str = "text/plain") -> StoredObject:
        with self.lock:
            old = self.objects.get((bucket, name))
            stored = StoredObject(
                bucket,
                name,
                data,
                content_type,
                generation=(old.generation + 1) if old else 1,
                updated=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            )
            self.objects[(bucket, name)] = stored
            return stored

    def data(self, bucket: str, name: str) -> bytes | None:
        with self.lock:
            found = self.objects.get((bucket, name))
        return found.data if found else None

    # -- routes ------------------------------------------------------------------------

    def _bucket(self, request: FakeRequest) -> str:
        bucket = request.groups["bucket"]
        if bucket not in self.buckets:
            raise GoogleError("NOT_FOUND", f"The specified bucket does not exist: {bucket}")
        return bucket

    def _get_bucket(self, request: FakeRequest) -> dict[str, Any]:
        bucket = self._bucket(request)
        return {"kind": "storage#bucket", "id": bucket, "name": bucket, "location": "EUROPE-WEST4"}

    def _object(self, request: FakeRequest) -> StoredObject:
        bucket = self._bucket(request)
        with self.lock:
            found = self.objects.get((bucket, request.groups["object"]))
        if found is None:
            raise GoogleError("NOT_FOUND", f"No such object: {bucket}/{request.groups['object']}")
        generation = request.param("generation")
        if generation and str(found.generation) != generation:
            raise GoogleError("NOT_FOUND", f"No such object: {bucket}/{found.name}#{generation}")
        return found

    def _get(self, request: FakeRequest) -> FakeResponse | dict[str, Any]:
        found = self._object(request)
        if request.param("alt") != "media":
            return found.resource(self.endpoint)
        data = found.data
        headers = {
            "x-goog-hash": f"crc32c={_crc32c(data)},md5={base64.b64encode(hashlib.md5(data).digest()).decode()}",
            "x-goog-generation": str(found.generation),
        }
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if ranged:
            start = int(ranged[1])
            end = int(ranged[2]) if ranged[2] else len(data) - 1
            part = data[start : end + 1]
            headers["content-range"] = f"bytes {start}-{start + len(part) - 1}/{len(data)}"
            return FakeResponse(206, part, found.content_type, headers)
        return FakeResponse(200, data, found.content_type, headers)

    def _list(self, request: FakeRequest) -> dict[str, Any]:
        bucket = self._bucket(request)
        prefix, delimiter = request.param("prefix"), request.param("delimiter")
        with self.lock:
            names = sorted(n for b, n in self.objects if b == bucket and n.startswith(prefix))
            items, prefixes = [], set()
            for name in names:
                rest = name[len(prefix) :]
                if delimiter and delimiter in rest:
                    prefixes.add(prefix + rest.split(delimiter)[0] + delimiter)
                else:
                    items.append(self.objects[(bucket, name)].resource(self.endpoint))
        size = int(request.param("maxResults") or 1000)
        start = int(request.param("pageToken") or 0)
        answer: dict[str, Any] = {"kind": "storage#objects", "items": items[start : start + size]}
        if prefixes:
            answer["prefixes"] = sorted(prefixes)
        if start + size < len(items):
            answer["nextPageToken"] = str(start + size)
        return answer

    def _delete(self, request: FakeRequest) -> FakeResponse:
        found = self._object(request)
        with self.lock:
            del self.objects[(found.bucket, found.name)]
        return FakeResponse(204, b"")

    def _insert(self, request: FakeRequest) -> FakeResponse | dict[str, Any]:
        bucket = self._bucket(request)
        kind = request.param("uploadType")
        if kind == "media":
            name = request.param("name")
            content_type = request.headers.get("content-type", "application/octet-stream")
            return self.put(bucket, name, request.body, content_type).resource(self.endpoint)
        if kind == "multipart":
            meta, data, content_type = _multipart(request)
            stored = self.put(bucket, meta.get("name") or request.param("name"), data, content_type)
            stored.metadata = dict(meta.get("metadata") or {})
            return stored.resource(self.endpoint)
        if kind == "resumable":
            meta = request.json() if request.body else {}
            session = str(next(self._ids))
            with self.lock:
                self._sessions[session] = {
                    "bucket": bucket,
                    "name": meta.get("name") or request.param("name"),
                    "content_type": meta.get("contentType")
                    or request.headers.get("x-upload-content-type", "application/octet-stream"),
                    "metadata": dict(meta.get("metadata") or {}),
                    "data": b"",
                }
            return FakeResponse(200, b"", headers={"Location": f"{self.endpoint}/upload/resumable/{session}"})
        raise GoogleError("INVALID_ARGUMENT", f"fake: uploadType {kind!r} is not served")

    def _resumable_put(self, request: FakeRequest) -> FakeResponse | dict[str, Any]:
        with self.lock:
            session = self._sessions.get(request.groups["session"])
        if session is None:
            raise GoogleError("NOT_FOUND", "upload session not found")
        session["data"] += request.body
        total = re.search(r"/(\d+|\*)$", request.headers.get("content-range", ""))
        complete = total is not None and total[1] != "*" and len(session["data"]) >= int(total[1])
        if not complete:
            received = len(session["data"])
            return FakeResponse(308, b"", headers={"Range": f"bytes=0-{received - 1}"} if received else {})
        stored = self.put(session["bucket"], session["name"], session["data"], session["content_type"])
        stored.metadata = session["metadata"]
        return stored.resource(self.endpoint)


def _multipart(request: FakeRequest) -> tuple[dict[str, Any], bytes, str]:
    """The metadata, bytes and content type of a `multipart/related` upload."""
    header = request.headers.get("content-type", "")
    match = re.search(r'boundary="?([^";]+)"?', header)
    if not match:
        raise GoogleError("INVALID_ARGUMENT", "fake: multipart upload without a boundary")
    boundary = b"--" + match[1].encode()
    parts = [p for p in request.body.split(boundary) if p.strip() not in (b"", b"--")]
    if len(parts) < 2:
        raise GoogleError("INVALID_ARGUMENT", "fake: multipart upload needs metadata and media")
    decoded = []
    for part in parts[:2]:
        head, _, body = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in head.decode().split("\r\n") if line)
        )
        decoded.append((headers, body.removesuffix(b"\r\n")))
    meta = json.loads(decoded[0][1] or b"{}")
    content_type = meta.get("contentType") or decoded[1][0].get("content-type", "application/octet-stream")
    return meta, decoded[1][1], content_type
