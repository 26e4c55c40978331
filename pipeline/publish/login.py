"""The write credentials of the local registry: made by `stack up`, read by every push.

`envctl stack up` generates them once into a 0600 file in the stack folder and logs
this user's Docker client in with them (the `auths` entry `docker login` writes, in
`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), so envctl in any repository
and the Docker Engine's pushes find them. Reads need none. They reach the registry's
front only: never a build argument, a context file or a build's environment.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pipeline.publish.oci import Credentials, docker_config_path, docker_credentials
from pipeline.settings import Settings

FILE = "registry-credentials.json"
USERNAME = "envctl"


@dataclass(frozen=True)
class Keys:
    """What the front checks: a client's basic credentials, and the token it hands out for them."""

    registry: str
    credentials: Credentials
    write_token: str


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def read(stack_dir: Path, registry: str) -> Keys | None:
    """The keys `stack up` made for `registry` in this stack folder, if any."""
    try:
        data = json.loads((stack_dir / FILE).read_text())
        if data["registry"] != registry:
            return None
        credentials = Credentials(username=str(data["username"]), password=str(data["password"]))
        return Keys(registry=registry, credentials=credentials, write_token=str(data["write_token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure(stack_dir: Path, registry: str) -> Keys:
    """The stack's keys for `registry`: the ones on file, else new random ones (kept 0600)."""
    keys = read(stack_dir, registry)
    if keys is not None:
        return keys
    keys = Keys(
        registry=registry,
        credentials=Credentials(username=USERNAME, password=secrets.token_urlsafe(32)),
        write_token=secrets.token_urlsafe(32),
    )
    record = {
        "registry": registry,
        "username": keys.credentials.username,
        "password": keys.credentials.password,
        "write_token": keys.write_token,
    }
    write_private(stack_dir / FILE, json.dumps(record, indent=2) + "\n")
    return keys


def basic_header(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def docker_login(registry: str, credentials: Credentials) -> bool:
    """Record the credentials for `registry` as `docker login` does; True when that changed the file."""
    path = docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        config = {}
    except (OSError, ValueError):
        return False  # a config we can't read is the user's; leave it alone
    if not isinstance(config, dict):
        return False
    auths = config.setdefault("auths", {})
    pair = f"{credentials.username}:{credentials.password}".encode()
    entry = {"auth": base64.b64encode(pair).decode()}
    if auths.get(registry) == entry:
        return False
    auths[registry] = entry
    write_private(path, json.dumps(config, indent="\t") + "\n")
    return True


def credentials(settings: Settings, host: str) -> Credentials:
    """What envctl authenticates to `host` with: this stack's keys, else the Docker client's login."""
    keys = read(settings.stack_dir, host)
    return keys.credentials if keys is not None else docker_credentials(host)
