"""The few OCI distribution calls envctl makes, in one place.

Manifests are read and written as bytes, so a retag keeps the exact manifest and its
digest and moves no layer. Works against a local distribution registry (plain HTTP
on loopback) and, with a bearer token, against Artifact Registry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import requests

from pipeline.errors import Unavailable, UsageError

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


def split_ref(ref: str) -> tuple[str, str, str]:
    """`host/repo:tag` or `host/repo@sha256:…` into (host, repository, reference)."""
    host, _, rest = ref.partition("/")
    if not rest:
        raise UsageError(f"image reference {ref!r} has no registry host")
    if "@" in rest:
        repo, _, reference = rest.partition("@")
    else:
        repo, _, reference = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    return host, repo, reference


class Registry:
    """A registry at `host` (`localhost:5000`, `europe-docker.pkg.dev`)."""

    def __init__(self, host: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.host = host
        local = host.split(":")[0] in {"localhost", "127.0.0.1", "::1"}
        netloc = host.replace("localhost", "127.0.0.1", 1) if local else host
        self.base = f"{'http' if local else 'https'}://{netloc}/v2"
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, self.base + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise Unavailable(
                f"registry {self.host} does not answer ({type(e).__name__}); start it with `envctl stack up`"
            ) from e

    def ping(self) -> bool:
        try:
            response = self.session.get(self.base + "/", timeout=3)
        except requests.RequestException:
            return False
        return response.status_code in {200, 401}

    def manifest(self, repo: str, reference: str) -> Manifest | None:
        response = self._request("GET", f"/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
        if response.status_code == 404:
            return None
        self._check(response, f"read {repo}:{reference}")
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        media_type = response.headers.get("Content-Type", "").split(";")[0]
        return Manifest(body=body, media_type=media_type, digest=digest)

    def put_manifest(self, repo: str, tag: str, manifest: Manifest) -> str:
        response = self._request(
            "PUT",
            f"/{repo}/manifests/{tag}",
            data=manifest.body,
            headers={"Content-Type": manifest.media_type},
        )
        self._check(response, f"tag {repo}:{tag}")
        digest = response.headers.get("Docker-Content-Digest", manifest.digest)
        if digest != manifest.digest:
            raise Unavailable(f"registry stored {repo}:{tag} as {digest}, expected {manifest.digest}")
        return digest

    def retag(self, repo: str, source: str, tag: str) -> str:
        """Point `tag` at the manifest `source` names (a tag or digest), bytes unchanged."""
        manifest = self.manifest(repo, source)
        if manifest is None:
            raise UsageError(f"{self.host}/{repo}@{source} is not in the registry")
        return self.put_manifest(repo, tag, manifest)

    def blob(self, repo: str, digest: str) -> bytes:
        response = self._request("GET", f"/{repo}/blobs/{digest}")
        self._check(response, f"read blob {digest[:19]} of {repo}")
        return response.content

    def config(self, repo: str, reference: str) -> dict[str, Any] | None:
        """The image config of a single-platform manifest (labels under config.Labels)."""
        manifest = self.manifest(repo, reference)
        if manifest is None:
            return None
        data = manifest.json()
        if "config" not in data:
            return None
        config: dict[str, Any] = json.loads(self.blob(repo, data["config"]["digest"]))
        return config

    def labels(self, repo: str, reference: str) -> dict[str, str] | None:
        config = self.config(repo, reference)
        if config is None:
            return None
        labels: dict[str, str] = (config.get("config") or {}).get("Labels") or {}
        return labels

    def tags(self, repo: str) -> list[str]:
        response = self._request("GET", f"/{repo}/tags/list")
        if response.status_code == 404:
            return []
        self._check(response, f"list tags of {repo}")
        return sorted(response.json().get("tags") or [])

    def _check(self, response: requests.Response, what: str) -> None:
        if response.status_code >= 400:
            detail = response.text.strip().replace("\n", " ")[:200]
            raise Unavailable(f"registry {self.host} refused to {what}: HTTP {response.status_code} {detail}")
