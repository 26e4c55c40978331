"""The few OCI distribution calls envctl makes, in one place.

Manifests are read and written as bytes, so a retag keeps the exact manifest and its
digest and moves no layer. Works against a local distribution registry (plain HTTP
on loopback) and, with a bearer token, against Artifact Registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.errors import Unavailable, UsageError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

RETRIES = 3
POOL = 16  # connections kept per host (concurrent tag reads)
RETRY_STATUS = frozenset({500, 502, 503, 504})

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


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` into ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


@dataclass(frozen=True)
class Credentials:
    """What a registry's token service accepts: a user and password, or a ready token.

    The repr shows the user only: the password and the token never reach a log line.
    """

    username: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)


def check_realm(realm: str, registry: str, allowed: Iterable[str] = ()) -> None:
    """`UsageError` unless credentials may go to the token service `realm` of `registry`.

    A token service is trusted on the registry's own host (any loopback name counts as
    the same host for a registry on loopback) or on a host of `allowed` (the
    `registry_auth_hosts` setting), over https, or plain http to a loopback host. Anything
    else would hand the credentials to whoever the registry, or a party between it and
    us, names.
    """
    from pipeline.gcp import is_loopback  # no Google library is imported by this

    parts = urlsplit(realm)
    host = (parts.hostname or "").lower()
    own = urlsplit(f"//{registry}").hostname or registry
    same = host == own.lower() or (is_loopback(host) and is_loopback(own.lower()))
    trusted = same or host in {h.lower() for h in allowed}
    if (parts.scheme == "https" and trusted) or (parts.scheme == "http" and trusted and is_loopback(host)):
        return
    raise UsageError(
        f"registry {registry} names the token service {parts.scheme}://{host or '?'}, which envctl does "
        "not send credentials to (https on the registry's host or on a host in ENVCTL_REGISTRY_AUTH_HOSTS; "
        "http only on loopback); nothing was sent"
    )


def docker_config_path() -> Path:
    """The Docker client's config.json: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`."""
    return Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"


def docker_credentials(host: str, config: Path | None = None) -> Credentials:
    """Credentials for `host` from the docker client's config.json (`auths`), if any."""
    path = config or docker_config_path()
    try:
        auths = json.loads(path.read_text()).get("auths", {})
    except (OSError, ValueError):
        return Credentials()
    entry = auths.get(host) or auths.get(f"https://{host}") or {}
    username = password = ""
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            log.warning("ignoring an unreadable auth entry for %s in %s", host, path)
    if entry.get("identitytoken"):
        password = entry["identitytoken"]
    return Credentials(username=username, password=password, token=entry.get("registrytoken", ""))


def _repository_of(path: str) -> str:
    """The repository part of a /v2 API path (a token's scope): `/team/img/manifests/x` -> `/team/img`."""
    for marker in ("/manifests/", "/blobs/", "/tags/"):
        if marker in path:
            return path.split(marker, 1)[0]
    return path


class Registry:
    """A registry at `host` (`localhost:5000`, `europe-docker.pkg.dev`).

    Authentication, when the registry asks for it: a configured `token` is sent as a
    bearer token up front; on `401` with a `WWW-Authenticate: Bearer realm=…` challenge
    the client fetches a token from the realm for the challenged scope (with the
    username and password, or `oauth2accesstoken` and the configured token, as basic
    auth) and retries once; a `Basic` challenge is answered with the username and password.
    On Artifact Registry (`*-docker.pkg.dev`, or `google_adc=True`) with neither, the
    password is an access token from Google's Application Default Credentials, fetched
    only when the registry asks (user `oauth2accesstoken`).
    A token service must pass `check_realm` (its own host, or one of `auth_hosts`) first.
    """

    def __init__(
        self,
        host: str,
        *,
        token: str | None = None,
        credentials: Credentials | None = None,
        timeout: float = 30.0,
        google_adc: bool | None = None,
        auth_hosts: Iterable[str] = (),
    ) -> None:
        self.host = host
        self.auth_hosts = tuple(auth_hosts)
        if google_adc is None:
            from pipeline.gcp import is_artifact_registry  # no Google library is imported by this

            google_adc = is_artifact_registry(host)
        self.google_adc = google_adc
        self._adc_token = ""
        local = host.split(":")[0] in {"localhost", "127.0.0.1", "::1"}
        self.local = local
        netloc = host.replace("localhost", "127.0.0.1", 1) if local else host
        self.base = f"{'http' if local else 'https'}://{netloc}/v2"
        self._session: requests.Session | None = None
        self._plain = threading.local()  # each thread's keep-alive connection to a loopback registry
        self._tokens: dict[str, str] = {}  # repository path -> bearer token the registry gave for it
        self.credentials = credentials or Credentials()
        self.static_token = token or self.credentials.token or ""
        self.timeout = timeout

    @property
    def session(self) -> requests.Session:
        """The HTTP session, made on first use (importing requests costs start-up time)."""
        if self._session is None:
            import requests

            session = requests.Session()
            # Tag states are read by up to `publish.tags.READERS` threads sharing this session.
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # A loopback registry is reached directly: no proxy, no ~/.netrc (requests would
            # read both from the environment for every request, a third of a tag read's time).
            session.trust_env = not self.local
            if self.static_token:
                session.headers["Authorization"] = f"Bearer {self.static_token}"
            self._session = session
        return self._session

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request; idempotent ones (GET, HEAD, PUT of a manifest) are retried on a 5xx.

        A distribution registry on a file system answers 500 ("invalid checksum digest
        format") when a manifest is read while another client writes a tag's link file;
        the next read succeeds, so a short retry is the correct client behaviour.
        """
        import requests

        attempts = RETRIES + 1 if method in {"GET", "HEAD", "PUT"} else 1
        for attempt in range(attempts):
            try:
                response = self.session.request(method, self.base + path, timeout=self.timeout, **kwargs)
            except requests.ConnectionError as e:
                if attempt + 1 < attempts:
                    time.sleep(0.1 * 3**attempt)
                    continue
                raise self._no_answer(e) from e
            except requests.RequestException as e:
                raise Unavailable(f"registry {self.host} failed ({type(e).__name__}: {e})") from e
            if response.status_code in RETRY_STATUS and attempt + 1 < attempts:
                log.debug(
                    "registry %s answered %d to %s %s; retrying",
                    self.host,
                    response.status_code,
                    method,
                    path,
                )
                time.sleep(0.1 * 3**attempt)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        # A bearer token is scoped to one repository: each repository keeps its own, sent with
        # each request, so threads reading several images never send one another's token.
        scope = _repository_of(path)
        headers = dict(kwargs.pop("headers", None) or {})
        if scope in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        response = self._send(method, path, headers=headers, **kwargs)
        if response.status_code == 401 and self._answer(response.headers.get("WWW-Authenticate", ""), scope):
            if scope in self._tokens:
                headers["Authorization"] = f"Bearer {self._tokens[scope]}"
            response = self._send(method, path, headers=headers, **kwargs)
        if response.status_code == 401:
            raise self._unauthorised()
        return response

    def _unauthorised(self) -> Unavailable:
        """What a 401 that the credentials could not answer means."""
        if not (self.credentials.password or self.static_token):
            return Unavailable(
                f"registry {self.host} needs credentials for this (HTTP 401) and none are configured; "
                "`envctl stack up` logs the Docker client in to the local registry, "
                f"else log in with `docker login {self.host}`"
            )
        return Unavailable(
            f"registry {self.host} refused the credentials (HTTP 401); "
            f"log in with `docker login {self.host}` and try again"
        )

    def _answer(self, challenge: str, scope: str) -> bool:
        """Take the credentials the challenge asks for; False when there is nothing to try."""
        scheme, params = parse_challenge(challenge)
        user, password = self.credentials.username, self.credentials.password
        if not password and self.static_token:
            user, password = "oauth2accesstoken", self.static_token
        if not password and self.google_adc and scheme in {"basic", "bearer"}:
            from pipeline.gcp import access_token

            self._adc_token = self._adc_token or access_token()
            user, password = "oauth2accesstoken", self._adc_token
        if scheme == "basic" and password:
            self.session.auth = (user, password)
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        check_realm(params["realm"], self.host, self.auth_hosts)
        import requests

        query = {k: params[k] for k in ("service", "scope") if k in params}
        try:
            answer = requests.get(
                params["realm"],
                params=query,
                auth=(user, password) if password else None,
                timeout=self.timeout,
            )
        except requests.RequestException as e:
            raise Unavailable(f"the token service of {self.host} does not answer ({type(e).__name__})") from e
        if answer.status_code >= 400:
            raise Unavailable(
                f"the token service of {self.host} refused a token (HTTP {answer.status_code}); "
                f"log in with `docker login {self.host}`"
            )
        try:
            body = answer.json()
        except ValueError as e:
            raise Unavailable(f"the token service of {self.host} answered with no JSON") from e
        token = body.get("token") or body.get("access_token")
        if not token:
            raise Unavailable(f"the token service of {self.host} answered without a token")
        self._tokens[scope] = token
        return True

    def ping(self) -> bool:
        """Whether the registry answers its API root (200, or 401: it wants credentials)."""
        if self._session is None and self.base.startswith("http://"):
            return self._quick_ping()
        import requests

        try:
            response = self.session.get(self.base + "/", timeout=3)
        except requests.RequestException:
            return False
        return response.status_code in {200, 401}

    def _quick_ping(self) -> bool:
        """`ping` of a loopback registry with the standard library, before any session exists."""
        import http.client

        parts = urlsplit(self.base)
        connection = http.client.HTTPConnection(parts.netloc, timeout=3)
        headers = {"Authorization": f"Bearer {self.static_token}"} if self.static_token else {}
        try:
            connection.request("GET", parts.path + "/", headers=headers)
            return connection.getresponse().status in {200, 401}
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def require(self) -> None:
        """`Unavailable` unless the registry answers now (checked before a ledger write)."""
        if not self.ping():
            raise Unavailable(
                f"registry {self.host} does not answer; nothing was changed. "
                "Start it with `envctl stack up` and try again"
            )

    def digest_of(self, repo: str, reference: str) -> str | None:
        """The digest a tag names now, or None when the tag does not exist."""
        manifest = self.manifest(repo, reference)
        return manifest.digest if manifest else None

    def manifest(self, repo: str, reference: str) -> Manifest | None:
        path = f"/{repo}/manifests/{reference}"
        quick = self._quick_request(path, {"Accept": MANIFEST_TYPES})
        if quick is not None:
            status, answered, body = quick
            content_type = answered.get("Content-Type", "")
        else:
            response = self._request("GET", path, headers={"Accept": MANIFEST_TYPES})
            status, content_type, body = (
                response.status_code,
                response.headers.get("Content-Type", ""),
                response.content,
            )
        if status == 404:
            return None
        if 300 <= status < 400:
            target = answered.get("Location", "") if quick is not None else ""
            raise Unavailable(
                f"registry {self.host} redirected GET {repo}:{reference} to {target or 'elsewhere'}; "
                "envctl does not follow registry redirects"
            )
        self._refuse(status, body, f"read {repo}:{reference}")
        if status != 200:
            raise Unavailable(f"registry {self.host} refused to read {repo}:{reference}: HTTP {status}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return Manifest(body=body, media_type=content_type.split(";")[0], digest=digest)

    def _quick_request(
        self, path: str, headers: dict[str, str], *, method: str = "GET", data: bytes | None = None
    ) -> tuple[int, Message, bytes] | None:
        """A GET or PUT (of `data`: a manifest) of a loopback registry over this thread's
        keep-alive `http.client` connection: status, headers, body.

        Status reads a tag per environment; through requests each costs several times the
        registry's own time (bench/scale.py). The authentication is `_request`'s: a bearer
        token of the repository (or the configured one) up front, a challenge answered by
        `_answer` and the read sent once more, the same errors. None when only the requests
        path can answer: not a loopback registry, or Basic credentials (the session holds them).
        """
        if not self.local or (self._session is not None and self._session.auth is not None):
            return None
        scope = _repository_of(path)
        status, answered, body = self._plain_request(path, headers, scope, method, data)
        if status == 401 and self._answer(answered.get("WWW-Authenticate", ""), scope):
            if self._session is not None and self._session.auth is not None:
                return None  # a Basic challenge: the session sends the credentials
            status, answered, body = self._plain_request(path, headers, scope, method, data)
        if status == 401:
            raise self._unauthorised()
        return status, answered, body

    def _plain_request(
        self, path: str, headers: dict[str, str], scope: str, method: str, data: bytes | None
    ) -> tuple[int, Message, bytes]:
        """One GET or PUT over this thread's connection: status, headers, body.

        Retried at once when a reused keep-alive connection was closed by the registry, or
        (as `_send`) when the connection is refused or a 5xx answers; never after a timeout."""
        import http.client

        token = self._tokens.get(scope) or self.static_token
        sent = headers | ({"Authorization": f"Bearer {token}"} if token else {})
        url = urlsplit(self.base)
        for attempt in range(RETRIES + 1):
            connection = getattr(self._plain, "connection", None)
            if connection is None:
                connection = self._plain.connection = http.client.HTTPConnection(
                    url.netloc, timeout=self.timeout
                )
            reused = connection.sock is not None
            try:
                connection.request(method, url.path + path, body=data, headers=sent)
            except ValueError:  # also UnicodeEncodeError: never echo the header value
                self._drop(connection)
                raise Unavailable(f"registry {self.host}: the token is not a valid header value") from None
            except (OSError, http.client.HTTPException) as e:
                self._drop(connection)
                if attempt < RETRIES and isinstance(
                    e, (ConnectionRefusedError, BrokenPipeError, ConnectionResetError)
                ):
                    if not reused:
                        time.sleep(0.1 * 3**attempt)
                    continue
                raise self._no_answer(e) from e
            try:
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as e:
                self._drop(connection)
                closed = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
                if reused and attempt < RETRIES and isinstance(e, closed):
                    continue  # the registry closed an idle keep-alive connection: send once more
                raise self._no_answer(e) from e
            if response.will_close:
                self._drop(connection)
            if response.status in RETRY_STATUS and attempt < RETRIES:
                log.debug(
                    "registry %s answered %d to %s %s; retrying", self.host, response.status, method, path
                )
                time.sleep(0.1 * 3**attempt)
                continue
            return response.status, response.msg, body
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self, connection: Any) -> None:
        """Close this thread's keep-alive connection; the next request opens a new one."""
        connection.close()
        self._plain.connection = None

    def _no_answer(self, e: Exception) -> Unavailable:
        """The error of a request that got no answer (both paths); a timeout is never retried."""
        if isinstance(e, TimeoutError):
            return Unavailable(f"registry {self.host} timed out after {self.timeout:g} s")
        return Unavailable(
            f"registry {self.host} does not answer ({type(e).__name__}); start it with `envctl stack up`"
        )

    def put_manifest(self, repo: str, tag: str, manifest: Manifest) -> str:
        path, headers = f"/{repo}/manifests/{tag}", {"Content-Type": manifest.media_type}
        quick = self._quick_request(path, headers, method="PUT", data=manifest.body)
        if quick is not None:
            status, answered, body = quick
            self._refuse(status, body, f"tag {repo}:{tag}")
            if status != 201:
                raise Unavailable(f"registry {self.host} refused to tag {repo}:{tag}: HTTP {status}")
            digest = answered.get("Docker-Content-Digest") or self.digest_of(repo, tag) or "none"
        else:
            response = self._request("PUT", path, data=manifest.body, headers=headers)
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

    def tags(self, repo: str) -> list[str]:
        """Every tag of `repo` (`/v2/<repo>/tags/list`, following `Link` pages); [] when it is absent."""
        found: list[str] = []
        path: str | None = f"/{repo}/tags/list?n=1000"
        while path:
            response = self._request("GET", path)
            if response.status_code == 404:
                return found
            self._check(response, f"list the tags of {repo}")
            found.extend(response.json().get("tags") or [])
            path = self._next_page(response.links.get("next", {}).get("url", ""), repo)
        return found

    def _next_page(self, link: str, repo: str) -> str | None:
        """The path of a `Link: <…>; rel="next"` page: relative, or absolute on this registry.

        A link envctl can't follow is an error, never the end of the list: a tag on a page
        not read could name a digest that retention would then delete.
        """
        if not link:
            return None
        if link.startswith("/v2/"):
            return link.removeprefix("/v2")
        parts, base = urlsplit(link), urlsplit(self.base)
        if (parts.scheme, parts.netloc) == (base.scheme, base.netloc) and parts.path.startswith("/v2/"):
            return parts.path.removeprefix("/v2") + (f"?{parts.query}" if parts.query else "")
        raise Unavailable(
            f"registry {self.host} lists the tags of {repo} on pages envctl can't follow "
            f"(next page at {parts.scheme}://{parts.netloc}{parts.path}); nothing was changed"
        )

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """Delete the manifest `digest` (and the tags naming it); False when it was not there."""
        response = self._request("DELETE", f"/{repo}/manifests/{digest}")
        if response.status_code == 404:
            return False
        if response.status_code == 405:
            raise Unavailable(
                f"registry {self.host} does not allow deletes (HTTP 405); the local stack allows them "
                "to its credentials after `envctl stack up`"
            )
        self._check(response, f"delete {repo}@{digest[:19]}")
        return True

    def blob(self, repo: str, digest: str) -> bytes:
        response = self._request("GET", f"/{repo}/blobs/{digest}")
        self._check(response, f"read blob {digest[:19]} of {repo}")
        return response.content

    def labels(self, repo: str, reference: str) -> dict[str, str] | None:
        """The labels of the image a tag or digest names; None when it is not there."""
        manifest = self.manifest(repo, reference)
        return None if manifest is None else self.labels_of(repo, manifest)

    def labels_of(self, repo: str, manifest: Manifest) -> dict[str, str] | None:
        """The labels in the config of a single-platform manifest already fetched."""
        data = manifest.json()
        if "config" not in data:
            return None
        config: dict[str, Any] = json.loads(self.blob(repo, data["config"]["digest"]))
        labels: dict[str, str] = (config.get("config") or {}).get("Labels") or {}
        return labels

    def _check(self, response: requests.Response, what: str) -> None:
        self._refuse(response.status_code, response.content, what)

    def _refuse(self, status: int, body: bytes, what: str) -> None:
        if status >= 400:
            detail = body.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
            raise Unavailable(f"registry {self.host} refused to {what}: HTTP {status} {detail}")
