"""Settings, resolved once in layers where the later wins.

defaults (everything local) < `[tool.envctl]` in pyproject.toml < `ENVCTL_*` < flags.
Unknown keys are rejected with the nearest valid key suggested.

Secrets (`ledger_password`, `registry_token`) never travel inside another value: a
password written into `ledger_url` is taken out of it, and the endpoints that receive a
secret from the environment come from the environment or flags, never from the
repository's own pyproject.toml (the repository may be a stranger's push).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from pipeline.errors import ConfigError

Backend = Literal["local", "gcp"]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting envctl reads; paths are absolute once resolved."""

    repo: Path
    registry: str = "localhost:5000"
    registry_listen: str = "127.0.0.1:5000"
    registry_token: str = field(default="", repr=False)
    registry_auth_hosts: str = ""
    ledger_url: str = ""
    ledger_password: str = field(default="", repr=False)
    state_dir: Path = Path(".envctl")
    artifacts_dir: Path = Path("")
    artifacts_url: str = (
        ""  # gs://BUCKET[/PREFIX]: every test run's artifacts are copied under <url>/<run id>/
    )
    base_image: str = "localhost:5000/dlc/base-cpu:local"
    backend: Backend = "local"
    gcp_project: str = ""
    gcp_region: str = ""
    gcp_endpoints: str = (
        ""  # `API=URL,…` (cloudbuild, artifactregistry, storage, notebooks, aiplatform, scheduler): fakes
    )
    gcp_timeout: int = 60  # seconds one Google API call may take, retries included
    gcp_retry: bool = True  # retry transient Google API errors within gcp_timeout
    gcp_build_bucket: str = ""  # build contexts, SBOMs and logs of Cloud Build; "": <project>_cloudbuild
    gcp_build_timeout: int = 7200  # seconds one Cloud Build build may take
    gcp_build_poll: int = 2  # seconds between two reads of a running build (and its log) or operation
    gcp_vertex_poll: int = 10  # seconds between two reads of the running Vertex AI test jobs
    gcp_vertex_grace: int = 1800  # seconds a test job may wait for a machine on top of its timeout
    gcp_connection: str = ""  # `envctl cloud setup`: the Cloud Build 2nd-gen connection
    gcp_repo_name: str = ""  # ... its repository (2nd gen), or
    gcp_github: str = ""  # ... OWNER/NAME through the Cloud Build GitHub app (1st gen)
    gcp_envctl_image: str = ""  # ... the pinned envctl image, by digest, the pipelines run
    gcp_artifacts_bucket: str = ""  # ... gs:// bucket of the test runs' artifacts
    gcp_ledger_secret: str = "envctl-ledger-staging-password"  # ... the base refresh's ledger password secret
    gcp_notify_secret: str = ""  # `cloud setup`: a Secret Manager secret holding ENVCTL_NOTIFY_URL
    gcp_scheduler_service_account: str = ""  # `cloud setup`: the base refresh's schedule calls as it
    gcp_refresh_schedule: str = "0 6 * * *"  # ... cron of the Cloud Scheduler job envctl-base-refresh
    gcp_refresh_timezone: str = "UTC"  # ... its time zone
    docker_host: str = ""
    notify_command: tuple[str, ...] = ()  # gets each event as JSON on stdin (argument list, no shell)
    notify_url: str = field(default="", repr=False)  # a webhook POSTed each event; may hold a token
    actor: str = ""
    ci_run_id: str = ""
    jobs: int = 0
    debug: bool = False

    @property
    def stack_dir(self) -> Path:
        # resolved: a stack reached through a symlink (checkouts sharing one) renders the
        # same daemon configs, so `stack up` from either sees nothing to restart
        return (self.state_dir / "stack").resolve()

    @property
    def auth_hosts(self) -> tuple[str, ...]:
        """Hosts besides the registry's own that may serve its tokens (comma-separated setting)."""
        return tuple(h.strip().lower() for h in self.registry_auth_hosts.split(",") if h.strip())


_KEYS = {f.name for f in fields(Settings)} - {"repo"}
#: Keys that send credentials, the source or the builds where they point: only the
#: environment or flags may set them (a pushed pyproject.toml is data, not configuration).
_NOT_FROM_REPO = {
    "gcp_endpoints",
    "registry_auth_hosts",
    "docker_host",
    "gcp_build_bucket",
    "artifacts_url",
    "notify_command",  # a program this host runs
    "notify_url",  # where every event goes: a push must not redirect them
}
#: Where a secret goes, and the variable that carries the secret: a repository's
#: [tool.envctl] may not name such an endpoint while the secret comes from the
#: environment (it would send the caller's secret wherever the repository says).
SECRET_ENDPOINTS = {"ledger_url": "ENVCTL_LEDGER_PASSWORD", "registry": "ENVCTL_REGISTRY_TOKEN"}


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(_KEYS), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(_KEYS))}"


def _coerce(key: str, value: Any, origin: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[key]
    try:
        if kind == "int":
            return int(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(value)
        if kind == "Path":
            return Path(str(value))
        if kind == "tuple[str, ...]":
            return _arguments(value)
        if key == "notify_url" and value:
            return webhook_url(str(value), origin)
        if kind == "Backend":
            if value not in get_args(Backend):
                raise ValueError(value)
            return value
        if key == "ledger_url" and value:
            return database_url(str(value), origin)
        return str(value)
    except (TypeError, ValueError) as e:
        shown = "[...]" if key == "notify_command" else repr(value)  # its arguments may hold secrets
        raise ConfigError(f"{origin}: {key} = {shown} is not a valid {kind}") from e


def _arguments(value: Any) -> tuple[str, ...]:
    """An argument list: a TOML list of strings, or a string (a JSON list, else split as a shell would)."""
    import json
    import shlex

    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else shlex.split(text)
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        raise ValueError("not a list of strings")
    if value and not value[0].strip():
        raise ValueError("the program (first argument) is empty")
    return tuple(value)


def webhook_url(url: str, origin: str) -> str:
    """The URL if it is http(s) with a host, else `ConfigError` (not echoing it: it may hold a token)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as e:
        raise ConfigError(f"{origin}: notify_url is not a valid URL; write https://HOST/PATH") from e
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{origin}: notify_url is not an http(s) URL with a host; write https://HOST/PATH")
    from pipeline.notify import is_loopback

    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{origin}: notify_url is not https (plain http only to 127.0.0.1 or ::1); write https://HOST/PATH"
        )
    return url


def database_url(url: str, origin: str) -> str:
    """The ledger URL if SQLAlchemy reads it, else `ConfigError` (not echoing it: it may hold a password)."""
    if url.startswith("sqlite:///"):
        return url  # a file: no host or port to check (and no SQLAlchemy to import at start-up)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "write sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"
    try:
        port = make_url(url).port
    except ArgumentError as e:
        raise ConfigError(f"{origin}: ledger_url is not a database URL; {example}") from e
    except ValueError as e:  # SQLAlchemy's int() of the port
        raise ConfigError(f"{origin}: ledger_url has a port that is not a number; {example}") from e
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{origin}: ledger_url has port {port}, outside 1-65535; {example}")
    return url


def find_repo(start: Path) -> Path:
    """The repository root: the nearest folder upwards with .git or pyproject.toml."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists() or (folder / "environments").is_dir():
            return folder
        if (folder / "HEAD").is_file() and (folder / "objects").is_dir():
            return folder  # a bare repository
    return start


def load(
    *,
    repo: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    root = find_repo(repo if repo is not None else Path.cwd())
    values: dict[str, Any] = {}
    from_repository: dict[str, str] = {}  # key -> where the repository set it

    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("envctl", {})
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{pyproject}: not valid TOML: {e}") from e
        for key, value in table.items():
            origin = f"{pyproject} [tool.envctl]"
            if key.replace("-", "_") not in _KEYS:
                raise ConfigError(f"{origin}: unknown key '{key}'{_suggest(key)}")
            name = key.replace("-", "_")
            if name in _NOT_FROM_REPO:
                variable = f"ENVCTL_{name.upper()}"
                raise ConfigError(
                    f"{origin}: '{key}' may only come from the environment ({variable}) or a flag, "
                    "because credentials, sources or builds go where it points"
                )
            values[name] = _coerce(name, value, origin)
            from_repository[name] = origin

    for name, value in env.items():
        if not name.startswith("ENVCTL_"):
            continue
        key = name.removeprefix("ENVCTL_").lower()
        if key not in _KEYS:
            close = difflib.get_close_matches(key, sorted(_KEYS), n=1)
            hint = f"; did you mean ENVCTL_{close[0].upper()}?" if close else ""
            raise ConfigError(f"environment: unknown variable {name}{hint}")
        values[key] = _coerce(key, value, f"environment {name}")
        from_repository.pop(key, None)

    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
            from_repository.pop(key, None)

    for key, variable in SECRET_ENDPOINTS.items():
        if key in from_repository and env.get(variable):
            raise ConfigError(
                f"{from_repository[key]}: {key} is set by the repository while {variable} comes from "
                f"the environment; envctl sends that secret only where ENVCTL_{key.upper()} says: "
                "set it there, or remove the key"
            )

    settings = Settings(repo=root, **values)
    state = settings.state_dir if settings.state_dir.is_absolute() else root / settings.state_dir
    artifacts = settings.artifacts_dir
    if str(artifacts) in {"", "."}:
        artifacts = state / "runs"
    elif not artifacts.is_absolute():
        artifacts = root / artifacts
    ledger, password = without_password(
        settings.ledger_url or f"sqlite:///{state / 'ledger.db'}", settings.ledger_password
    )
    return dataclasses.replace(
        settings,
        state_dir=state,
        artifacts_dir=artifacts,
        ledger_url=ledger,
        ledger_password=password,
        jobs=settings.jobs or os.cpu_count() or 1,
    )


def without_password(url: str, password: str = "") -> tuple[str, str]:
    """The ledger URL with no password in it, and the password to connect with.

    A password written into the URL (`user:PASSWORD@host`, or libpq's `?password=`) moves
    to `ledger_password` (which wins when both are given), so no URL envctl prints, logs,
    writes into a hook or hands to a trigger carries it. The rest of the URL is kept as
    written, byte for byte.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    found: str | None = None
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        user, _, secret = userinfo.partition(":")
        netloc, found = f"{user}@{host}", unquote(secret)
    kept = []
    for item in parts.query.split("&") if parts.query else []:
        name, _, value = item.partition("=")
        if unquote(name) == "password":
            found = unquote(value)
        else:
            kept.append(item)
    if found is None:
        return url, password
    clean = urlunsplit(parts._replace(netloc=netloc, query="&".join(kept)))
    return clean, password or found
