"""What builds borrow from this machine at run time: apt mirror, CA bundle, pip settings.

Nothing here is written into the repository; the values are read when a build runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pipeline.errors import Unavailable

CA_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
_PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout", "retries")


def apt_mirror(suite: str) -> str:
    """The Debian mirror this machine's apt uses for `suite`."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in stanza.splitlines())
                if v and not k.startswith("#")
            )
            if suite in fields.get("suites", "").split() and "uris" in fields:
                return fields["uris"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if path.is_file():
            for line in path.read_text().splitlines():
                match = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
                if match and match.group(2) == suite:
                    return match.group(1)
    raise Unavailable(f"no apt source for Debian {suite} on this machine; add one to /etc/apt/sources.list.d")


USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def without_userinfo(url: str) -> tuple[str, str]:
    """`url` without its `user:password@`, and an apt auth.conf entry for them ("" without)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, ""
    host = parts.netloc.rpartition("@")[2]
    clean = parts._replace(netloc=host).geturl()
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    return clean, f"machine {host}{parts.path} login {user} password {password}\n"


def scrub_userinfo(text: str) -> str:
    """`text` with the `user:password@` of every URL in it removed."""
    return USERINFO.sub(r"\1", text)


def ca_bundle() -> Path | None:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), *CA_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def pip_conf() -> str:
    """The network settings of this machine's pip as a pip.conf; local paths dropped."""
    values: dict[str, str] = {}
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    for line in listed.splitlines():
        key, _, raw = line.partition("=")
        name = key.split(".", 1)[-1]
        if name in _PIP_KEYS:
            values[name] = raw.strip().strip("'\"")
    for name in _PIP_KEYS:
        env_value = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if env_value:
            values[name] = env_value
    lines = ["[global]"]
    for name, value in values.items():
        if name.endswith("index-url"):
            value = " ".join(u for u in value.split() if u.startswith(("http://", "https://")))
        if value:
            lines.append(f"{name} = {value}")
    return "\n".join(lines) + "\n"
