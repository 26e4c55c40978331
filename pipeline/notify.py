"""Notifications: one JSON event for every pointer move, pipeline verdict and drift found.

Events go to the `notify_url` webhook (an HTTP POST) and/or the `notify_command` program
(the JSON on its standard input, no shell), as configured. Delivery never fails the
work that caused it: a failed delivery is tried once more, and a second failure is one
warning line. The webhook URL is shown only as `scheme://host/…` (its path, query and
user part may hold a token). The schema is in README.md ("Notifications").
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline import output
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Kind = Literal["move", "verdict", "drift"]
SCHEMA = 1
TIMEOUT = 10.0  # seconds one delivery may take
RETRY_DELAY = 1.0  # seconds before the one retry
#: Variables the command does not inherit: the secrets envctl itself runs with.
WITHHELD = ("ENVCTL_LEDGER_PASSWORD", "ENVCTL_REGISTRY_TOKEN", "ENVCTL_NOTIFY_URL")


class DeliveryFailed(Exception):
    """One delivery attempt failed; the message is safe to print (no URL in it)."""


def shown_url(url: str) -> str:
    """The webhook URL without what may be secret: `scheme://host[:port]/…`."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/…" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def _short(value: str | None, n: int = 12) -> str:
    return value[:n] if value else "(none)"


def _at() -> str:
    return datetime.now(UTC).isoformat()


def move_event(
    *,
    image: str,
    stage: str,
    action: str,
    from_sha: str | None,
    to_sha: str | None,
    from_digest: str | None,
    to_digest: str | None,
    actor: str,
    reason: str | None,
    forced: bool,
    ci_run_id: str | None = None,
) -> dict[str, Any]:
    env = f"{image}.{stage}"
    if action in {"pin", "unpin"}:
        what = f"{env}: {action}ned at {_short(to_sha)}"
    else:
        what = f"{env}: {action} {_short(from_sha)} -> {_short(to_sha)} ({_short(to_digest, 19)})"
    text = f"{what} by {actor}" + (" (forced)" if forced else "") + (f": {reason}" if reason else "")
    return {
        "schema": SCHEMA,
        "kind": "move",
        "at": _at(),
        "environment": env,
        "image": image,
        "stage": stage,
        "action": action,
        "from_sha": from_sha,
        "to_sha": to_sha,
        "from_digest": from_digest,
        "to_digest": to_digest,
        "actor": actor,
        "reason": reason,
        "forced": forced,
        "ci_run_id": ci_run_id,
        "text": text,
    }


def verdict_event(
    *,
    image: str,
    branch: str,
    run_id: str,
    state: str,
    sha: str | None,
    digest: str | None,
    detail: str,
) -> dict[str, Any]:
    text = f"pipeline {branch} {run_id}: {image} at {_short(sha)}: {state}" + (
        f": {detail}" if detail else ""
    )
    return {
        "schema": SCHEMA,
        "kind": "verdict",
        "at": _at(),
        "environment": f"{image}.{branch}",
        "image": image,
        "stage": branch,
        "branch": branch,
        "run_id": run_id,
        "state": state,
        "sha": sha,
        "digest": digest,
        "detail": detail,
        "text": text,
    }


def drift_event(
    *, image: str, stage: str, sha: str | None, digest: str | None, drift: str, tag: str, repaired: bool
) -> dict[str, Any]:
    env = f"{image}.{stage}"
    then = "republished by `envctl sync`" if repaired else "run `envctl sync` to republish it"
    text = (
        f"{env}: registry tag {tag} is {drift}; the ledger says {_short(sha)} ({_short(digest, 19)}); {then}"
    )
    return {
        "schema": SCHEMA,
        "kind": "drift",
        "at": _at(),
        "environment": env,
        "image": image,
        "stage": stage,
        "sha": sha,
        "digest": digest,
        "drift": drift,
        "tag": tag,
        "repaired": repaired,
        "text": text,
    }


def send(settings: Settings, event: dict[str, Any]) -> None:
    """Deliver one event wherever the settings say; never raises."""
    if not settings.notify_url and not settings.notify_command:
        return
    body = json.dumps(event, sort_keys=True).encode()
    what = f"{event.get('kind', 'an')} event of {event.get('environment', '?')}"
    if settings.notify_url:
        url = settings.notify_url
        _deliver(lambda: _post(url, body), f"webhook {shown_url(url)}", what)
    if settings.notify_command:
        command = settings.notify_command
        _deliver(lambda: _run(command, body), f"command {command[0]}", what)


def _deliver(attempt: Callable[[], None], where: str, what: str) -> None:
    for tries in (1, 2):
        try:
            attempt()
            log.debug("notified %s of the %s", where, what)
            return
        except Exception as e:  # a notification must never fail the move it reports
            said = str(e) if isinstance(e, DeliveryFailed) else type(e).__name__
            if tries == 1:
                log.info("notify: %s failed (%s); trying once more", where, said)
                time.sleep(RETRY_DELAY)
            else:
                output.warn(f"notify: {where} failed twice ({said}); the {what} was not delivered")


def _post(url: str, body: bytes) -> None:
    import urllib.error
    import urllib.request

    from pipeline import __version__

    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"envctl/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as e:
        raise DeliveryFailed(f"HTTP {e.code}") from None
    except urllib.error.URLError as e:
        raise DeliveryFailed(str(e.reason)) from None
    except (TimeoutError, OSError) as e:
        raise DeliveryFailed(
            type(e).__name__ + (f": {e.strerror}" if getattr(e, "strerror", None) else "")
        ) from None


def _run(command: tuple[str, ...], body: bytes) -> None:
    from pipeline.errors import Unavailable
    from pipeline.proc import run

    env = {k: v for k, v in os.environ.items() if k not in WITHHELD}
    try:
        result = run(list(command), timeout=TIMEOUT, check=False, env=env, input_bytes=body)
    except Unavailable as e:
        raise DeliveryFailed(str(e)) from None
    if result.returncode != 0:
        tail = (result.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise DeliveryFailed(f"exit {result.returncode}" + (f": {tail[0][:200]}" if tail else ""))
