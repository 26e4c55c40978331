"""Shared Google Cloud plumbing for the gcp backend: where, who, how long, and what went wrong.

Imported only by the gcp backend modules (never at CLI start): the Google client
libraries are imported inside the functions below.

- Where: `location(settings)` reads project, region and repository from the registry
  setting `REGION-docker.pkg.dev/PROJECT/REPOSITORY` (`gcp_project` and `gcp_region`
  fill what it doesn't name); `endpoints(settings)` reads `gcp_endpoints`
  (`cloudbuild=http://127.0.0.1:8001,artifactregistry=…,storage=…,aiplatform=…,scheduler=…`) to send an API to
  an emulator or a test fake, with the REST transport.
- Who: Application Default Credentials through google-auth; anonymous credentials when
  the API's endpoint is on loopback. Missing or expired credentials are `Unavailable`
  (exit 3) naming `gcloud auth application-default login`.
- How long: every call gets `policy.kwargs()` (a deadline, and a retry on transient
  errors unless `gcp_retry` is off) so a dead service fails in `gcp_timeout` seconds.
- What went wrong: `translated(...)` turns google.api_core and google.auth errors into
  envctl's errors, one line naming the resource and the fix.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from pipeline.errors import ConfigError, EnvctlError, Refused, Unavailable, UsageError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud.aiplatform_v1 import JobServiceClient
    from google.cloud.artifactregistry_v1 import ArtifactRegistryClient
    from google.cloud.devtools.cloudbuild_v1 import CloudBuildClient
    from google.cloud.notebooks_v2 import NotebookServiceClient
    from google.cloud.scheduler_v1 import CloudSchedulerClient
    from google.cloud.storage import Client as StorageClient

    from pipeline.settings import Settings

Api = Literal["cloudbuild", "artifactregistry", "storage", "notebooks", "aiplatform", "scheduler"]
APIS: tuple[Api, ...] = get_args(Api)
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
LOGIN_FIX = (
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
    "to the key file of the service account envctl should use"
)
#: The predefined role an account needs for what envctl does with each API.
ROLE = {
    "cloudbuild": "roles/cloudbuild.builds.editor",
    "artifactregistry": "roles/artifactregistry.writer",
    "storage": "roles/storage.objectAdmin",
    "notebooks": "roles/notebooks.admin",
    "aiplatform": "roles/aiplatform.user",
    "scheduler": "roles/cloudscheduler.admin",
}
SERVICE = {
    "cloudbuild": "cloudbuild.googleapis.com",
    "artifactregistry": "artifactregistry.googleapis.com",
    "storage": "storage.googleapis.com",
    "notebooks": "notebooks.googleapis.com",
    "aiplatform": "aiplatform.googleapis.com",
    "scheduler": "cloudscheduler.googleapis.com",
}


# -- where -----------------------------------------------------------------------------

_AR_HOST = re.compile(r"(?P<region>[a-z][a-z0-9-]*[a-z0-9])-docker\.pkg\.dev")


@dataclass(frozen=True, kw_only=True)
class Location:
    """A project, a region and (for the registry) an Artifact Registry Docker repository."""

    project: str
    region: str
    repository: str = ""

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def repository_name(self) -> str:
        return f"{self.parent}/repositories/{self.repository}"

    @property
    def registry_host(self) -> str:
        return f"{self.region}-docker.pkg.dev"

    def create_repository_fix(self) -> str:
        return (
            f"create it with `gcloud artifacts repositories create {self.repository} "
            f"--repository-format=docker --location={self.region} --project={self.project}`"
        )


def is_artifact_registry(host: str) -> bool:
    """True for an Artifact Registry Docker host (`europe-west4-docker.pkg.dev`)."""
    return _AR_HOST.fullmatch(host.split(":")[0]) is not None


def location(settings: Settings, *, need_repository: bool = True) -> Location:
    """Project, region and repository from the registry setting, `gcp_project` and `gcp_region`.

    `REGION-docker.pkg.dev/PROJECT/REPOSITORY` names all three; a setting that disagrees
    with it is refused (exit 2) instead of silently sending builds to another region.
    """
    host, _, path = settings.registry.partition("/")
    project, region, repository = settings.gcp_project, settings.gcp_region, ""
    match = _AR_HOST.fullmatch(host)
    if match:
        parts = path.strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"registry {settings.registry!r}: an Artifact Registry registry is "
                "REGION-docker.pkg.dev/PROJECT/REPOSITORY"
            )
        found = {"gcp_region": match["region"], "gcp_project": parts[0]}
        for key, value in found.items():
            setting = getattr(settings, key)
            if setting and setting != value:
                raise ConfigError(
                    f"{key} = {setting!r} disagrees with registry {settings.registry!r} ({value!r}); "
                    f"set one of them, or make them agree"
                )
        project, region, repository = parts[0], match["region"], parts[1]
    elif need_repository:
        raise ConfigError(
            f"registry {settings.registry!r} is not an Artifact Registry repository; with the gcp "
            "backend set ENVCTL_REGISTRY=REGION-docker.pkg.dev/PROJECT/REPOSITORY"
        )
    missing = [key for key, value in (("gcp_project", project), ("gcp_region", region)) if not value]
    if missing:
        raise ConfigError(
            f"no Google Cloud {' and '.join(k.removeprefix('gcp_') for k in missing)}: set "
            f"{' and '.join('ENVCTL_' + k.upper() for k in missing)}, or a registry "
            "REGION-docker.pkg.dev/PROJECT/REPOSITORY"
        )
    return Location(project=project, region=region, repository=repository)


# -- endpoints and credentials ------------------------------------------------------------


def endpoints(settings: Settings) -> dict[Api, str]:
    """The `gcp_endpoints` overrides by API; exit 2 on an unknown API or a URL that isn't http(s)."""
    found: dict[Api, str] = {}
    for item in filter(None, (part.strip() for part in settings.gcp_endpoints.split(","))):
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or name not in APIS:
            raise ConfigError(f"gcp_endpoints: {item!r} is not API=URL with API one of {', '.join(APIS)}")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ConfigError(f"gcp_endpoints: {name} = {url!r} is not an http(s) URL")
        if parsed.username or parsed.password:
            raise ConfigError(
                f"gcp_endpoints: {name} has credentials in its URL; envctl sends credentials only in headers"
            )
        if parsed.scheme == "http" and not is_loopback(parsed.hostname):
            raise ConfigError(
                f"gcp_endpoints: {name} = {url!r} is plain http off this machine; use https "
                "(http only on loopback)"
            )
        found[name] = url.rstrip("/")
    return found


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint(settings: Settings, api: Api) -> str | None:
    return endpoints(settings).get(api)


def on_loopback(url: str | None) -> bool:
    return url is not None and is_loopback(urllib.parse.urlsplit(url).hostname or "")


def credentials(settings: Settings, api: Api) -> Credentials:
    """Anonymous for an endpoint on loopback (emulators, tests); else Application Default Credentials."""
    if on_loopback(endpoint(settings, api)):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    return default_credentials()


def default_credentials() -> Credentials:
    """Application Default Credentials; `Unavailable` (exit 3) naming the login when there are none."""
    import google.auth
    from google.auth import exceptions as auth_errors

    quiet = logging.getLogger("google.auth._default")  # "No project ID could be determined": envctl names it
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        found, _project = google.auth.default(scopes=list(SCOPES))
    except auth_errors.GoogleAuthError as e:
        raise Unavailable(f"no Google Cloud credentials ({_short(e)}); {LOGIN_FIX}") from e
    finally:
        quiet.setLevel(level)
    return found


def access_token() -> str:
    """A fresh OAuth access token from the default credentials (for the registry protocol)."""
    from google.auth import exceptions as auth_errors
    from google.auth.transport.requests import Request

    found = default_credentials()
    try:
        found.refresh(Request())  # type: ignore[no-untyped-call]
    except auth_errors.GoogleAuthError as e:
        raise Unavailable(
            f"the Google Cloud credentials could not be refreshed ({_short(e)}); {LOGIN_FIX}"
        ) from e
    token = found.token
    if not token:
        raise Unavailable(f"the Google Cloud credentials gave no access token; {LOGIN_FIX}")
    return str(token)


# -- how long ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CallPolicy:
    """The deadline of one call and whether transient errors are retried within it."""

    timeout: float = 60.0
    retry: bool = True

    @classmethod
    def for_settings(cls, settings: Settings) -> CallPolicy:
        return cls(timeout=float(settings.gcp_timeout), retry=settings.gcp_retry)

    def kwargs(self) -> dict[str, Any]:
        """`timeout=` and `retry=` for any client method of the Google libraries."""
        from google.api_core import exceptions as api
        from google.api_core.retry import Retry, if_exception_type

        retry = None
        if self.retry:
            transient = if_exception_type(
                api.ServiceUnavailable, api.InternalServerError, api.TooManyRequests, api.GatewayTimeout
            )
            retry = Retry(initial=0.5, maximum=8.0, multiplier=2.0, predicate=transient, timeout=self.timeout)
        return {"timeout": self.timeout, "retry": retry}


# -- clients -------------------------------------------------------------------------------


class Google:
    """The Google clients for one settings, built on first use, with the call policy to pass them.

    The API clients always use the REST transport: the same wire the tests' fakes and
    emulators speak, and a credentials failure surfaces as google.auth's own error
    (gRPC wraps it in a retryable UNAVAILABLE that would be retried to the deadline).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = CallPolicy.for_settings(settings)
        self._clients: dict[str, Any] = {}

    def __repr__(self) -> str:
        overridden = sorted(
            part.partition("=")[0].strip() for part in self.settings.gcp_endpoints.split(",") if part
        )
        return f"Google(overridden={overridden}, policy={self.policy})"

    def _options(self, api: Api) -> tuple[dict[str, Any], str | None]:
        from google.api_core.client_options import ClientOptions

        url = endpoint(self.settings, api)
        kwargs: dict[str, Any] = {"credentials": credentials(self.settings, api)}
        if url is not None:
            kwargs["client_options"] = ClientOptions(api_endpoint=url)
        return kwargs, url

    def artifact_registry(self) -> ArtifactRegistryClient:
        if "artifactregistry" not in self._clients:
            from google.cloud.artifactregistry_v1 import ArtifactRegistryClient

            kwargs, _url = self._options("artifactregistry")
            kwargs["transport"] = "rest"
            self._clients["artifactregistry"] = ArtifactRegistryClient(**kwargs)
        client: ArtifactRegistryClient = self._clients["artifactregistry"]
        return client

    def cloud_build(self) -> CloudBuildClient:
        if "cloudbuild" not in self._clients:
            from google.cloud.devtools.cloudbuild_v1 import CloudBuildClient

            kwargs, _url = self._options("cloudbuild")
            kwargs["transport"] = "rest"
            self._clients["cloudbuild"] = CloudBuildClient(**kwargs)
        client: CloudBuildClient = self._clients["cloudbuild"]
        return client

    def notebooks(self) -> NotebookServiceClient:
        if "notebooks" not in self._clients:
            from google.cloud.notebooks_v2 import NotebookServiceClient

            kwargs, _url = self._options("notebooks")
            kwargs["transport"] = "rest"
            self._clients["notebooks"] = NotebookServiceClient(**kwargs)
        client: NotebookServiceClient = self._clients["notebooks"]
        return client

    def scheduler(self) -> CloudSchedulerClient:
        if "scheduler" not in self._clients:
            from google.cloud.scheduler_v1 import CloudSchedulerClient

            kwargs, _url = self._options("scheduler")
            kwargs["transport"] = "rest"
            self._clients["scheduler"] = CloudSchedulerClient(**kwargs)
        client: CloudSchedulerClient = self._clients["scheduler"]
        return client

    def job_service(self, region: str) -> JobServiceClient:
        """Vertex AI's JobService at `REGION-aiplatform.googleapis.com` (its API is regional)."""
        key = f"aiplatform:{region}"
        if key not in self._clients:
            from google.api_core.client_options import ClientOptions
            from google.cloud.aiplatform_v1 import JobServiceClient

            kwargs, url = self._options("aiplatform")
            if url is None:
                kwargs["client_options"] = ClientOptions(api_endpoint=f"{region}-aiplatform.googleapis.com")
            kwargs["transport"] = "rest"
            self._clients[key] = JobServiceClient(**kwargs)
        client: JobServiceClient = self._clients[key]
        return client

    def storage(self, project: str | None) -> StorageClient:
        if "storage" not in self._clients:
            from google.cloud.storage import Client

            kwargs, _url = self._options("storage")
            self._clients["storage"] = Client(project=project, **kwargs)
        client: StorageClient = self._clients["storage"]
        return client

    def call(self) -> dict[str, Any]:
        """The keyword arguments every call takes: `client.get_tag(name=..., **google.call())`."""
        return self.policy.kwargs()


# -- what went wrong -----------------------------------------------------------------------


@contextmanager
def translated(what: str, *, api: str, missing: str = "", missing_code: int = 2) -> Iterator[None]:
    """Turn Google errors raised inside into envctl's errors: one line naming `what` and the fix.

    `what` names the resource ("Artifact Registry repository projects/p/…/repositories/r"),
    `api` the service (`artifactregistry`), `missing` the fix when it doesn't exist.
    NotFound is exit 2 (or `missing_code`), bad arguments 2, everything that keeps a part
    from answering us (credentials, permission, quota, API disabled, outage) 3.
    """
    try:
        yield
    except EnvctlError:
        raise
    except Exception as e:
        error = translate(e, what, api=api, missing=missing, missing_code=missing_code)
        if error is None:
            raise
        raise error from e


def translate(
    e: Exception, what: str, *, api: str, missing: str = "", missing_code: int = 2
) -> EnvctlError | None:
    """The envctl error for a Google error `e` about `what`; None for an error that isn't Google's."""
    from google.api_core import exceptions as gapi
    from google.auth import exceptions as auth_errors
    from requests import exceptions as http

    service = SERVICE.get(api, f"{api}.googleapis.com")
    if isinstance(e, auth_errors.GoogleAuthError):
        return Unavailable(f"Google Cloud credentials failed for {what} ({_short(e)}); {LOGIN_FIX}")
    if isinstance(e, http.ConnectionError | http.Timeout):
        return Unavailable(f"{service} does not answer for {what} ({type(e).__name__}); try again later")
    if isinstance(e, gapi.RetryError):
        return Unavailable(f"{service} did not answer for {what} in time ({_short(e)}); try again later")
    if not isinstance(e, gapi.GoogleAPICallError):
        return None
    detail = _server_message(e)
    if isinstance(e, gapi.NotFound):
        fix = missing or "check the project, region and name in the settings"
        error: EnvctlError = UsageError(f"{what} does not exist ({detail}); {fix}")
        error.exit_code = missing_code
        return error
    if isinstance(e, gapi.Forbidden) and _disabled(e):
        project = (e.metadata or {}).get("consumer", "").removeprefix("projects/")
        where = f" --project={project}" if project else ""
        return Unavailable(
            f"the {service} API is not enabled for {what}; enable it with "
            f"`gcloud services enable {service}{where}`"
        )
    if isinstance(e, gapi.Forbidden):
        role = ROLE.get(api, "the role this needs")
        return Unavailable(
            f"permission denied on {what} ({detail}); grant the account envctl runs as {role}, "
            "or use a service account that has it"
        )
    if isinstance(e, gapi.Unauthorized):
        return Unavailable(f"Google Cloud did not accept the credentials for {what} ({detail}); {LOGIN_FIX}")
    if isinstance(e, gapi.TooManyRequests):
        return Unavailable(
            f"quota exhausted on {service} for {what} ({detail}); wait and try again, or raise the "
            "quota in the Cloud console"
        )
    if isinstance(e, gapi.AlreadyExists):
        return Refused(f"{what} already exists ({detail})")
    if isinstance(e, gapi.BadRequest):
        if _status(e) == "FAILED_PRECONDITION" or isinstance(e, gapi.FailedPrecondition):
            return UsageError(f"{what} is not in a state that allows this ({detail})")
        return UsageError(f"{service} refused the request for {what} as invalid ({detail})")
    if isinstance(e, gapi.ServerError):
        return Unavailable(f"{service} failed for {what} ({detail}); try again later")
    return Unavailable(f"{service} refused {what} ({type(e).__name__}: {detail})")


def _disabled(e: Any) -> bool:
    if getattr(e, "reason", None) == "SERVICE_DISABLED":
        return True
    text = str(getattr(e, "message", "")).lower()
    return "has not been used in project" in text or "it is disabled" in text


def _status(e: Any) -> str:
    """The `status` a REST error body names (`FAILED_PRECONDITION`), when there is one."""
    response = getattr(e, "response", None)
    try:
        return str(response.json()["error"]["status"]) if response is not None else ""
    except Exception:
        return ""


def _server_message(e: Any) -> str:
    """The service's own message, without the method and URL the REST transport puts before it."""
    response = getattr(e, "response", None)
    text = ""
    if response is not None:
        try:
            text = str(response.json()["error"]["message"])
        except Exception:
            text = ""
    if not text:
        text = str(getattr(e, "message", "") or e)
    return _short(text)


def _short(e: object, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


server_message = _server_message  # the service's own message of a Google error, one line
short = _short  # any text as one line of at most 200 characters
