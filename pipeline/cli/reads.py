"""`envctl status | history | describe | diff`: read the ledger (and the tags); all have --json."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from pipeline import output
from pipeline.backends import publisher_for
from pipeline.cli import complete
from pipeline.cli.common import emit_json, settings_of, table
from pipeline.errors import EnvctlError, Unavailable, UsageError
from pipeline.ledger import model
from pipeline.ledger.model import EnvId, Pointer, parse_env_id

if TYPE_CHECKING:
    from pipeline.ledger import signoffs as signed
    from pipeline.ledger.db import Ledger, Version
    from pipeline.settings import Settings

# Heavy modules (SQLAlchemy, GitPython, pydantic) are imported inside the commands that
# need them: `status` on a SQLite ledger reads it with the standard library (ledger.quick).

_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _short(value: str | None, n: int = 12) -> str:

    return value[:n] if value else "-"


@click.command("status")
@click.argument("image", required=False, shell_complete=complete.images)
@_json
@click.pass_context
def status(ctx: click.Context, image: str | None, as_json: bool) -> None:
    """Every environment (of IMAGE): version, digest, pin and drift of its registry tag.

    Drift is `missing` (tag absent), `moved` (tag names another digest) or `unknown`
    (registry down); `envctl sync` repairs it. Exits 3 when the registry is down.
    """
    from pipeline.publish import tags as publish

    settings = settings_of(ctx)
    pointers = _pointers(settings, image)
    publisher = publisher_for(settings, timeout=10)
    reachable = publisher.ping()
    if reachable:
        found = publish.tag_states(publisher, pointers)
    else:
        found = [publish.TagState(p, None, "unknown" if p.digest else None) for p in pointers]
    people = _signers(settings, pointers)

    def signers(p: Pointer) -> list[str]:
        return people.get((p.image, p.digest), []) if p.digest else []

    if as_json:
        emit_json([{**s.to_json(publisher), "signoffs": signers(s.pointer)} for s in found])
    else:
        rows = [
            [
                f"{s.pointer.image}.{s.pointer.stage}",
                _short(s.pointer.sha),
                _short(s.pointer.digest, 19),
                s.pointer.updated_at.strftime("%Y-%m-%d %H:%M:%S") if s.pointer.updated_at else "-",
                f"pinned: {s.pointer.pin_reason}" if s.pointer.pinned else "",
                ", ".join(signers(s.pointer)) or "-",
                f"drift: {s.drift}" if s.drift else "ok",
            ]
            for s in found
        ]
        table(["ENVIRONMENT", "SHA", "DIGEST", "UPDATED (UTC)", "PIN", "SIGNED OFF BY", "TAG"], rows)
        if any(s.drift in {"missing", "moved"} for s in found):
            output.warn("registry tags differ from the ledger; run `envctl sync` to republish them")
    if not reachable:
        try:
            publisher.require()  # says why: down, missing, permission denied
        except EnvctlError as e:
            said = Unavailable(f"{e}; drift is unknown")
            said.exit_code = e.exit_code
            raise said from e
        raise Unavailable(f"registry {publisher.host} does not answer; drift is unknown")


def _signers(settings: Settings, pointers: list[Pointer]) -> dict[tuple[str, str], list[str]]:
    """The distinct testers who signed each (image, digest) the pointers name: quick SQLite reads
    when they can answer, else SQLAlchemy."""
    from pipeline.ledger import quick

    named = {(p.image, p.digest) for p in pointers if p.digest}
    if not named:
        return {}  # nothing to ask the ledger (an empty one: no SQLAlchemy at all)
    if not settings.ledger_password:
        found = quick.signers(settings.ledger_url, named)
        if found is not None:
            return found
    from pipeline.ledger import signoffs as signed
    from pipeline.ledger.db import Ledger

    ledger = Ledger.for_settings(settings)
    return {
        (image, digest): signed.people(signed.for_digest(ledger, image, digest)) for image, digest in named
    }


def _pointers(settings: Settings, image: str | None) -> list[Pointer]:
    """Every environment (of `image`): quick SQLite reads when they can answer, else SQLAlchemy."""
    from pipeline.ledger import quick

    found: list[Pointer] | None = None
    if image is not None:
        model.check_image_name(image)
    if settings.ledger_password:
        pass  # only the ledger's own opening says what a password means (SQLite has none)
    elif image is None:
        found = quick.pointers(settings.ledger_url)
    else:
        known = quick.known_images(settings.ledger_url)
        if known is not None and image not in known:
            raise model.unknown_image(image, known)
        if known is not None:
            found = quick.pointers(settings.ledger_url, image)
    if found is not None:
        return found
    from pipeline.ledger import pointers as envs
    from pipeline.ledger.db import Ledger

    ledger = Ledger.for_settings(settings)
    if image is not None:
        envs.require_known(ledger, image)
    return envs.pointers(ledger, image)


def _target(ledger: Ledger, text: str) -> tuple[str, EnvId | None]:
    """ENV_ID or IMAGE: an ID when it ends in a stage, else an image name."""
    from pipeline.ledger import pointers as envs

    try:
        env = parse_env_id(text)
    except UsageError:
        envs.require_known(ledger, envs.check_image_name(text))
        return text, None
    envs.require_known(ledger, env.image)
    return env.image, env


@click.command("history")
@click.argument("target", metavar="ENV_ID|IMAGE", shell_complete=complete.images_or_env_ids)
@_json
@click.pass_context
def history(ctx: click.Context, target: str, as_json: bool) -> None:
    """Every move of one environment or of every environment of an image, oldest first."""
    from pipeline.ledger import pointers as envs
    from pipeline.ledger import signoffs as signed
    from pipeline.ledger.db import Ledger

    settings = settings_of(ctx)
    ledger = Ledger.for_settings(settings)
    image, env = _target(ledger, target)
    moved = envs.history(ledger, image, env.stage if env else None)
    keyed: list[tuple[datetime, int, int, dict[str, Any]]] = [(e.at, 0, e.id, e.to_json()) for e in moved]
    if env is None or env.stage == "staging":
        # by time, then moves before sign-offs at the same time, then in the order recorded
        keyed.extend(
            (x.at, 1, n, _signoff_entry(image, x)) for n, x in enumerate(signed.for_image(ledger, image))
        )
    keyed.sort(key=lambda k: k[:3])
    found = [k[3] for k in keyed]
    if as_json:
        emit_json(found)
        return
    rows = [
        [
            str(e["at"])[:19].replace("T", " "),
            e["environment"],
            e["action"] + (" (forced)" if e["forced"] else ""),
            _short(e["from_sha"]),
            _short(e["to_sha"]),
            e["actor"] + (f" [{e['ci_run_id']}]" if e["ci_run_id"] else ""),
            e["reason"] or "",
        ]
        for e in found
    ]
    table(["AT (UTC)", "ENVIRONMENT", "ACTION", "FROM", "TO", "ACTOR", "REASON"], rows)


def _signoff_entry(image: str, signoff: signed.Signoff) -> dict[str, Any]:
    """A sign-off as a history entry (action `signoff`, the same keys as a move; no pointer moved)."""

    return {
        "id": None,
        "at": signoff.at.isoformat(),
        "environment": f"{image}.staging",
        "image": image,
        "stage": "staging",
        "action": "signoff",
        "from_sha": signoff.sha,
        "to_sha": signoff.sha,
        "from_digest": signoff.digest,
        "to_digest": signoff.digest,
        "actor": signoff.actor,
        "ci_run_id": None,
        "reason": signoff.reason,
        "forced": False,
    }


def _version_of(ledger: Ledger, env: EnvId) -> Version:
    from pipeline.ledger import pointers as envs

    pointer = envs.current(ledger, env.image, env.stage)
    if pointer is None or pointer.sha is None:
        raise UsageError(f"{env} points at no version yet; promote one with `envctl promote {env} --rev REV`")
    version = ledger.get_version(env.image, pointer.sha)
    if version is None:
        raise Unavailable(f"the ledger names {pointer.sha[:12]} for {env} but has no such version")
    return version


def _signoff_line(found: list[signed.Signoff], required: int | None) -> str:
    from pipeline.ledger import signoffs as signed

    people = signed.people(found)
    need = f" of {required} production needs" if required else ""
    return f"{len(people)}{need}" + (f" ({', '.join(people)})" if people else "")


@click.command("describe")
@click.argument("env_id", shell_complete=complete.env_ids)
@_json
@click.pass_context
def describe(ctx: click.Context, env_id: str, as_json: bool) -> None:
    """ENV_ID's image@digest, SHA, test evidence, SBOM summary, pin and tag drift."""
    from pipeline.build import sbom_diff
    from pipeline.ledger import pointers as envs
    from pipeline.ledger import signoffs as signed
    from pipeline.ledger.db import Ledger, test_runs_for
    from pipeline.promote.moves import required_signoffs
    from pipeline.promote.policy import describe_ran_on, evidence_for
    from pipeline.publish import tags as publish

    env = parse_env_id(env_id)
    settings = settings_of(ctx)
    ledger = Ledger.for_settings(settings)
    envs.require_known(ledger, env.image)
    version = _version_of(ledger, env)
    pointer = envs.current(ledger, env.image, env.stage)
    publisher = publisher_for(settings, timeout=10)
    state = publish.tag_state(publisher, pointer) if pointer else None
    runs = test_runs_for(ledger, env.image, version.digest)
    signoffs = signed.for_digest(ledger, env.image, version.digest)
    proof = evidence_for(ledger, version)
    data: dict[str, Any] = {
        **(state.to_json(publisher) if state else {}),
        "version": {
            "sha": version.sha,
            "tree": version.tree,
            "digest": version.digest,
            "image_ref": version.image_ref,
            "size": version.size,
            "created_at": version.created_at.isoformat(),
            "labels": version.labels,
        },
        "evidence": [
            {
                "run_id": r.run_id,
                "passed": r.passed,
                "finished_at": r.finished_at.isoformat(),
                "artifacts": r.artifacts,
                "ran_on": r.ran_on,
                "summary": r.summary,
            }
            for r in runs
        ],
        "tested": proof.passed,
        "ran_on": proof.ran_on,
        "sbom": sbom_diff.summary(version),
        "signoffs": [x.to_json() for x in signoffs],
        "signoffs_required": required_signoffs(settings, version),
    }
    if as_json:
        emit_json(data)
        return
    sbom = data["sbom"]
    lines = [
        ("environment", str(env)),
        ("image", publisher.image_ref(env.image, version.digest)),
        ("sha", version.sha),
        ("built", version.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("evidence", f"{'passed' if data['tested'] else 'NOT passed'} ({len(runs)} run(s))"),
        ("artifacts", runs[-1].artifacts or "-" if runs else "-"),
        ("ran on", describe_ran_on(proof.ran_on) if proof.run_id else "-"),
        ("base", sbom["base"] or "-"),
        ("python", sbom["python"] or "-"),
        ("packages", ", ".join(f"{k} {n}" for k, n in sbom["packages"].items())),
        ("signoffs", _signoff_line(signoffs, data["signoffs_required"])),
        ("pinned", f"yes: {pointer.pin_reason}" if pointer and pointer.pinned else "no"),
        ("tag", f"drift: {state.drift}" if state and state.drift else "in sync"),
    ]
    for key, value in lines:
        click.echo(f"{key:<12} {value}")


@click.command("diff")
@click.argument("old_env", metavar="ENV_ID", shell_complete=complete.env_ids)
@click.argument("new_env", metavar="ENV_ID", shell_complete=complete.env_ids)
@_json
@click.pass_context
def diff(ctx: click.Context, old_env: str, new_env: str, as_json: bool) -> None:
    """Packages added, removed and changed from OLD_ENV to NEW_ENV, with base image and Python."""
    from pipeline.build import sbom_diff
    from pipeline.ledger import pointers as envs
    from pipeline.ledger.db import Ledger

    old, new = parse_env_id(old_env), parse_env_id(new_env)
    settings = settings_of(ctx)
    ledger = Ledger.for_settings(settings)
    for env in (old, new):
        envs.require_known(ledger, env.image)
    before, after = _version_of(ledger, old), _version_of(ledger, new)
    result = sbom_diff.diff(before, after)
    if as_json:
        emit_json(
            {
                "from": {"environment": str(old), "sha": before.sha},
                "to": {"environment": str(new), "sha": after.sha},
            }
            | result.to_json()
        )
        return
    click.echo(f"{old} ({before.sha[:12]}) -> {new} ({after.sha[:12]})")
    for line in result.lines() or ["no differences in packages, base image or Python"]:
        click.echo(line)


commands = [status, history, describe, diff]
