"""The front of the local registry: nginx on `registry_listen`, the registry's only network door.

The distribution registry listens on a unix socket in the stack folder, which a build
container (its own mount namespace) cannot reach even with the host network. The
front passes GET and HEAD to it for anyone (pulls, the test stage, users) and every
other method only with the write token, which it hands out for the stack's basic
credentials (`pipeline.publish.login`).

Why a token and not basic auth on writes: the Docker Engine sends credentials only when
`/v2/` answers 401 with a challenge, and refuses to pull anonymously after a `Basic`
challenge ("no basic auth credentials"). So `/v2/` challenges anonymous clients with
`Bearer`, and the front serves the token endpoint itself: the stack's credentials get
the write token, no credentials get an anonymous token that opens reads only, wrong
credentials get 401. Bodies stream both ways (layer pushes of hundreds of MB).
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
from pathlib import Path
from typing import Any

import requests

from pipeline import output
from pipeline.proc import which
from pipeline.publish.login import Keys, basic_header, write_private
from pipeline.settings import Settings
from pipeline.stack import apt, daemons

NAME = "registry-front"
CHALLENGE_SERVICE = "envctl-registry"

_UNAUTHORIZED = """\
        add_header WWW-Authenticate 'Bearer realm="http://$http_host/token",service="{service}"' always;
        add_header Docker-Distribution-Api-Version registry/2.0 always;
        return 401 '{{"errors":[{{"code":"UNAUTHORIZED","message":"{message}"}}]}}';"""

_PROXY = """\
      proxy_pass http://envctl_registry;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header Authorization "";"""


def config_path(settings: Settings) -> Path:
    return settings.stack_dir / "registry-front.conf"


def _user_line() -> str:
    """Workers run as this user (root's default, nobody, could not open the registry's socket)."""
    if os.geteuid() != 0:
        return ""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


def render(settings: Settings, keys: Keys, socket_path: Path) -> str:
    """The nginx configuration; it holds the credentials' hash inputs, so it is kept 0600."""
    stack = settings.stack_dir
    basic = basic_header(keys.credentials)
    token = keys.write_token
    unauthorized = _UNAUTHORIZED.format(service=CHALLENGE_SERVICE, message="authentication required")
    return f"""\
# Written by `envctl stack up`; see pipeline/stack/registry_front.py.
daemon off;
worker_processes 1;
{_user_line()}pid {stack / "registry-front.pid"};
error_log stderr notice;
events {{ worker_connections 512; }}
http {{
  access_log off;
  server_tokens off;
  map_hash_bucket_size 256;
  client_body_temp_path {stack / "registry-front" / "body"};
  proxy_temp_path {stack / "registry-front" / "proxy"};
  fastcgi_temp_path {stack / "registry-front" / "fastcgi"};
  uwsgi_temp_path {stack / "registry-front" / "uwsgi"};
  scgi_temp_path {stack / "registry-front" / "scgi"};
  upstream envctl_registry {{ server unix:{socket_path}; }}

  # The token endpoint's answer: the write token for the stack's credentials, an
  # anonymous one without credentials, none (401) for anything else.
  map $http_authorization $envctl_token {{
    "{basic}" "{token}";
    "" "anonymous";
    default "";
  }}
  map $http_authorization $envctl_writer {{
    "Bearer {token}" 1;
    "{basic}" 1;
    default 0;
  }}
  map "$request_method:$envctl_writer" $envctl_refused {{
    "~^(GET|HEAD):" 0;
    "~:1$" 0;
    default 1;
  }}

  server {{
    listen {settings.registry_listen};
    default_type application/json;
    client_max_body_size 0;
    chunked_transfer_encoding on;
    proxy_http_version 1.1;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_read_timeout 900s;
    proxy_send_timeout 900s;

    location = /token {{
      if ($envctl_token = "") {{
        return 401 '{{"errors":[{{"code":"UNAUTHORIZED","message":"wrong credentials"}}]}}';
      }}
      return 200 '{{"token":"$envctl_token","access_token":"$envctl_token","expires_in":3600}}';
    }}
    location = /v2/ {{
      if ($http_authorization = "") {{
{unauthorized}
      }}
{_PROXY}
    }}
    location /v2/ {{
      if ($envctl_refused) {{
{unauthorized}
      }}
{_PROXY}
    }}
    location / {{
      return 404 '{{"errors":[{{"code":"NOT_FOUND","message":"not a registry path"}}]}}';
    }}
  }}
}}
"""


def write_config(settings: Settings, keys: Keys, socket_path: Path) -> bool:
    """Write the configuration (0600); True when it changed."""
    path = config_path(settings)
    text = render(settings, keys, socket_path)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    write_private(path, text)
    return True


def serves(settings: Settings) -> bool:
    """The front answers and reaches the registry behind it (an anonymous read)."""
    try:
        response = requests.get(f"http://{settings.registry_listen}/v2/_catalog?n=1", timeout=3)
    except requests.RequestException:
        return False
    return response.status_code == 200


def writes(settings: Settings) -> str:
    """`credentials` when the registry on the address challenges anonymous clients, else `open`."""
    try:
        response = requests.get(f"http://{settings.registry_listen}/v2/", timeout=3)
    except requests.RequestException:
        return "unknown"
    return "credentials" if response.status_code == 401 else "open"


def running(settings: Settings) -> daemons.Record | None:
    record = daemons.read(settings.stack_dir, NAME)
    return record if record is not None and daemons.alive(record) else None


def up(settings: Settings, keys: Keys, socket_path: Path) -> daemons.Record:
    """Start the front unless it runs; a running one reloads a changed configuration."""
    changed = write_config(settings, keys, socket_path)
    record = running(settings)
    if record is not None:
        if changed:
            os.kill(record.pid, signal.SIGHUP)
            output.info("registry front: configuration changed; reloaded")
        return record
    if which("nginx") is None:
        apt.install("nginx")
    (settings.stack_dir / "registry-front").mkdir(parents=True, exist_ok=True)
    with output.step(f"starting the registry front on {settings.registry_listen}"):
        return daemons.start(
            settings.stack_dir,
            NAME,
            ["nginx", "-e", "stderr", "-p", str(settings.stack_dir), "-c", str(config_path(settings))],
            ready=lambda: serves(settings),
            deadline=30,
        )


def status(settings: Settings) -> dict[str, Any]:
    record = daemons.read(settings.stack_dir, NAME)
    alive = record is not None and daemons.alive(record)
    return {
        "front_pid": record.pid if record and alive else None,
        "front_log": record.log if record else None,
    }


def down(settings: Settings) -> bool:
    return daemons.stop(settings.stack_dir, NAME)
