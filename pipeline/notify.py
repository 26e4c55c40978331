"""Notifications: one JSON event for every pointer move, pipeline verdict and drift repaired.

Events go to the `notify_url` webhook (an HTTP POST) and/or the `notify_command` program
(the JSON on its standard input, no shell), as configured. Delivery never fails the
work that caused it: a failed delivery is tried once more, and a second failure is one
warning line. The webhook URL is shown only as `scheme://host/…` (its path, query and
user part may hold a token); a redirect is a failure, never followed; the command gets
only PATH, HOME, LANG, LC_*, TZ and TMPDIR of the environment, and only its program is
ever shown. The schema is in README.md ("Notifications").
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from pipeline import output
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Kind = Literal["move", "verdict", "drift"]
SCHEMA = 1
TIMEOUT = 10.0  # seconds one delivery may take
RETRY_DELAY = 1.0  # seconds before the one retry
DEADLINE = 30.0  # seconds all the events of one batch (`deferred`) may take together
TEXT_MAX = 300  # characters of an event's `text`
#: The only variables the command gets from envctl's environment (and LC_*): never
#: envctl's secrets (ledger URL and password, registry token, cloud credentials...).
PASSED = ("PATH", "HOME", "LANG", "TZ", "TMPDIR")

_queue: ContextVar[list[dict[str, Any]] | None] = ContextVar("envctl_notify_queue", default=None)


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


def _at(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).isoformat()


def _text(text: str) -> str:
    """One line for a chat: whitespace collapsed, at most TEXT_MAX characters, <>& escaped."""
    line = re.sub(r"\s+", " ", text).strip()
    if len(line) > TEXT_MAX:
        line = line[: TEXT_MAX - 1] + "…"
    return html.escape(line, quote=False)


def shown_command(command: Sequence[str]) -> str:
    """The command as logs and errors show it: the program only (arguments may hold secrets)."""
    return command[0] + (" …" if len(command) > 1 else "") if command else "(none)"


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
    event_id: int | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    env = f"{image}.{stage}"
    to_sha = to_sha or None  # a pin of an empty environment: no SHA, like from_sha
    to_digest = to_digest or None
    if action in {"pin", "unpin"}:
        what = f"{env}: {action}ned at {_short(to_sha)}"
    else:
        what = f"{env}: {action} {_short(from_sha)} → {_short(to_sha)} ({_short(to_digest, 19)})"
    text = f"{what} by {actor}" + (" (forced)" if forced else "") + (f": {reason}" if reason else "")
    return {
        "schema": SCHEMA,
        "kind": "move",
        "event_id": f"move-{event_id}" if event_id is not None else f"move-{uuid.uuid4().hex}",
        "at": _at(at),
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
        "text": _text(text),
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
        "event_id": f"verdict-{run_id}-{image}",
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
        "text": _text(text),
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
        "event_id": f"drift-{uuid.uuid4().hex}",
        "at": _at(),
        "environment": env,
        "image": image,
        "stage": stage,
        "sha": sha,
        "digest": digest,
        "drift": drift,
        "tag": tag,
        "repaired": repaired,
        "text": _text(text),
    }


def drifts(settings: Settings, publisher: Any, found: Sequence[Any], *, repaired: bool) -> None:
    """One `drift` event per tag that differs from the ledger (`TagState`s that sync or a repair fixed)."""
    for state in found:
        if state.drift not in {"missing", "moved"}:
            continue
        p = state.pointer
        send(
            settings,
            drift_event(
                image=p.image,
                stage=p.stage,
                sha=p.sha,
                digest=p.digest,
                drift=state.drift,
                tag=publisher.tag_ref(p.image, p.stage),
                repaired=repaired,
            ),
        )


@contextmanager
def deferred(settings: Settings, deadline: float = DEADLINE) -> Iterator[None]:
    """Hold back the events sent inside the block; deliver them after it, within one deadline.

    Pipelines wrap their image lock in this: no run waits on a slow webhook while it
    holds the lock another run of the image queues on.
    """
    if _queue.get() is not None:  # already deferred by an outer block
        yield
        return
    held: list[dict[str, Any]] = []
    token = _queue.set(held)
    try:
        yield
    finally:
        _queue.reset(token)
        send_all(settings, held, deadline=deadline)


def send(settings: Settings, event: dict[str, Any]) -> None:
    """Deliver one event wherever the settings say (or hold it in a `deferred` block); never raises."""
    held = _queue.get()
    if held is not None:
        held.append(event)
        return
    send_all(settings, [event], deadline=None)


def send_all(settings: Settings, events: Sequence[dict[str, Any]], *, deadline: float | None) -> None:
    """Deliver `events` in order; with `deadline` (seconds), whatever is left when it passes is dropped."""
    if not events or (not settings.notify_url and not settings.notify_command):
        return
    end = None if deadline is None else time.monotonic() + deadline
    for n, event in enumerate(events):
        if end is not None and time.monotonic() >= end:
            output.warn(f"notify: {len(events) - n} event(s) not delivered within {deadline:g} s")
            return
        body = json.dumps(event, sort_keys=True).encode()
        what = f"{event.get('kind', 'an')} event of {event.get('environment', '?')}"
        if settings.notify_url:
            url = settings.notify_url
            _deliver(partial(_post, url, body), f"webhook {shown_url(url)}", what, end)
        if settings.notify_command:
            command = settings.notify_command
            _deliver(partial(_run, command, body), f"command {shown_command(command)}", what, end)


def _deliver(attempt: Callable[[float], None], where: str, what: str, end: float | None) -> None:
    for tries in (1, 2):
        left = TIMEOUT if end is None else min(TIMEOUT, end - time.monotonic())
        if left <= 0:
            output.warn(f"notify: {where} out of time; the {what} was not delivered")
            return
        try:
            attempt(left)
            log.debug("notified %s of the %s", where, what)
            return
        except Exception as e:  # a notification must never fail the move it reports
            said = str(e) if isinstance(e, DeliveryFailed) else type(e).__name__
            if tries == 1:
                log.info("notify: %s failed (%s); trying once more", where, said)
                time.sleep(RETRY_DELAY if end is None else max(0.0, min(RETRY_DELAY, end - time.monotonic())))
            else:
                output.warn(f"notify: {where} failed twice ({said}); the {what} was not delivered")


def is_loopback(host: str | None) -> bool:
    import ipaddress

    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _post(url: str, body: bytes, timeout: float = TIMEOUT) -> None:
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    from pipeline import __version__

    parts = urlsplit(url)
    if parts.scheme != "https" and not is_loopback(parts.hostname):
        raise DeliveryFailed("not https (plain http only to this host's loopback)")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # a 3xx is an HTTPError below: never re-sent, never turned into a GET

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"envctl/{__version__}"},
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        raise DeliveryFailed(f"HTTP {e.code}") from None
    except urllib.error.URLError as e:
        raise DeliveryFailed(str(e.reason)) from None
    except (TimeoutError, OSError) as e:
        raise DeliveryFailed(
            type(e).__name__ + (f": {e.strerror}" if getattr(e, "strerror", None) else "")
        ) from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"HTTP {status}")


def command_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """What the command inherits: PATH, HOME, LANG, LC_*, TZ, TMPDIR; nothing else."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k in PASSED or k.startswith("LC_")}


def _run(command: tuple[str, ...], body: bytes, timeout: float = TIMEOUT) -> None:
    """Run the command with the event on stdin; not `proc.run`, whose debug log shows every argument."""
    import shutil
    import subprocess

    program = shutil.which(command[0])
    if program is None:
        raise DeliveryFailed(f"{command[0]} is not installed")
    try:
        result = subprocess.run(
            [program, *command[1:]],
            input=body,
            capture_output=True,
            timeout=timeout,
            env=command_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeliveryFailed(f"did not finish within {timeout:.0f} s") from None
    except OSError as e:
        raise DeliveryFailed(type(e).__name__) from None
    if result.returncode != 0:
        tail = (result.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise DeliveryFailed(f"exit {result.returncode}" + (f": {tail[0][:200]}" if tail else ""))
