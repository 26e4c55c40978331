"""Promotion and rollback: the rules, then one ledger transaction, then the tags.

`pipeline.promote.policy` holds the rules (evidence, refusals) as pure functions;
`promote()` and `rollback()` gather their inputs (evidence, git ancestry, pins, the
registry) outside any transaction, move the pointers by compare-and-swap in one short
transaction per image (`pointers.compare_and_swap`: a lost race decides again), and
publish the tags after the ledger commits. The registry must answer before anything
is written, so a registry that is down leaves the ledger unchanged.
"""

from __future__ import annotations

import getpass
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.backends import Publisher, publisher_for
from pipeline.errors import Refused, Unavailable, UsageError
from pipeline.ledger import pointers as envs
from pipeline.ledger.model import Version
from pipeline.ledger.pointers import Change, EnvId, MoveLedger, Pointer, Stage, Who
from pipeline.proc import run
from pipeline.promote.policy import (
    Evidence,
    Signoffs,
    asked_by,
    evidence,
    evidence_for,
    refusals,
    rules_at,
)
from pipeline.publish.tags import publish, repair
from pipeline.settings import Settings
from pipeline.spec.rules import Rules

if TYPE_CHECKING:
    from pipeline.ledger.db import Ledger
    from pipeline.spec.model import Spec

log = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-f]+$")
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
MIN_PREFIX = 7
__all__ = ["Evidence", "Outcome", "Step", "promote", "refusals", "rollback", "set_pin"]


@dataclass(frozen=True, kw_only=True)
class Step:
    """One pointer move of a promotion or rollback."""

    stage: Stage
    from_sha: str | None
    to_sha: str
    from_digest: str | None
    to_digest: str


@dataclass(frozen=True, kw_only=True)
class Outcome:
    image: str
    action: str
    steps: list[Step] = field(default_factory=list)
    forced_over: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)  # tags a no-op found lost and put back

    @property
    def changed(self) -> bool:
        return bool(self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "action": self.action,
            "changed": self.changed,
            "forced_over": self.forced_over,
            "republished": self.republished,
            "moves": [
                {
                    "environment": f"{self.image}.{s.stage}",
                    "from_sha": s.from_sha,
                    "to_sha": s.to_sha,
                    "from_digest": s.from_digest,
                    "to_digest": s.to_digest,
                }
                for s in self.steps
            ],
        }


def _decide(reasons: list[str], force: bool, what: str) -> list[str]:
    if reasons and not force:
        raise Refused(f"{what} refused: {'; '.join(reasons)}; --force overrides (and is recorded)")
    return reasons


ACTOR_MAX = 256  # the ledger's column


def actor(settings: Settings) -> str:
    """ENVCTL_ACTOR, else git user.name of the repository, else the OS user (self-declared).

    `UsageError` for a blank ENVCTL_ACTOR or a name longer than the ledger keeps.
    """
    who = _actor(settings).strip()
    if not who:
        raise UsageError("ENVCTL_ACTOR is blank; set it to your name (or unset it to use git user.name)")
    if len(who) > ACTOR_MAX:
        raise UsageError(f"the actor name is {len(who)} characters long; give at most {ACTOR_MAX}")
    return who


def _actor(settings: Settings) -> str:
    if settings.actor:
        return settings.actor
    try:
        name = _git_user_name(settings.repo)
        if name and name.strip():
            return name
    except Exception as e:  # any git or config problem: fall through to the OS user
        log.debug("no git user.name: %s", e)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _git_user_name(repo: Path) -> str:
    """`user.name` as git reads it for the repository at (or above) `repo`; "" outside one."""
    if run(["git", "-C", repo, "rev-parse", "--git-dir"], timeout=30, check=False).returncode != 0:
        return ""
    found = run(["git", "-C", repo, "config", "--get", "user.name"], timeout=30, check=False)
    return found.stdout.decode(errors="replace").strip() if found.returncode == 0 else ""


def _who(settings: Settings, reason: str | None, forced_over: list[str]) -> Who:
    note = reason
    if forced_over:
        note = f"{reason + ' ' if reason else ''}[forced over: {'; '.join(forced_over)}]"
    return Who(
        actor=actor(settings), ci_run_id=settings.ci_run_id or None, reason=note, forced=bool(forced_over)
    )


def _check_prefix(rev: str) -> None:
    if _HEX.match(rev) and len(rev) < MIN_PREFIX:
        raise UsageError(f"SHA prefix {rev!r} is too short; give at least {MIN_PREFIX} characters")


def find_version(ledger: MoveLedger, image: str, prefix: str) -> Version:
    """The version of `image` whose SHA starts with `prefix` (7+ hex characters), exactly one."""
    _check_prefix(prefix)
    if not _HEX.match(prefix):
        raise UsageError(f"{prefix!r} is not a SHA prefix; give 7 to 40 hex characters")
    found = [v for v in ledger.list_versions(image) if v.sha.startswith(prefix)]
    if not found:
        raise UsageError(
            f"no version of {image} has a SHA starting with {prefix}; `envctl history {image}` lists moves"
        )
    if len(found) > 1:
        shas = ", ".join(v.sha[:12] for v in found)
        raise UsageError(f"SHA prefix {prefix} is ambiguous for {image} ({shas}); give more characters")
    return found[0]


def resolve_version(settings: Settings, ledger: MoveLedger, image: str, rev: str) -> Version:
    """The version built from REV (branch, tag, SHA or prefix) of the repository."""
    from pipeline.source import open_repo, resolve

    _check_prefix(rev)
    if _FULL_SHA.match(rev):
        version = ledger.get_version(image, rev)
        if version is not None:
            return version  # what git would name too (or the ledger, for a commit this clone lacks)
    try:
        sha = resolve(open_repo(settings.repo), rev).sha
    except UsageError:
        if _HEX.match(rev) and len(rev) >= MIN_PREFIX:
            return find_version(ledger, image, rev)  # a commit this clone lacks, but the ledger knows
        raise
    version = ledger.get_version(image, sha)
    if version is None:
        raise UsageError(
            f"{image} was never built from {sha[:12]}; run `envctl build {image} --rev {sha[:12]}` first"
        )
    return version


def descends(settings: Settings, old: str, new: str) -> bool:
    """True when `new` has `old` as an ancestor (git merge-base --is-ancestor)."""
    from pipeline.source import git_read

    result = git_read(settings.repo, "merge-base", "--is-ancestor", old, new)
    if result.returncode in {0, 1}:
        return result.returncode == 0
    log.info("git cannot compare %s and %s: %s", old[:12], new[:12], result.stderr.decode(errors="replace"))
    return False


def not_pruned(version: Version) -> None:
    """`Refused` (exit 1) for a version `envctl prune` took out of the registry, naming the rebuild."""
    if version.pruned_at is not None:
        refresh = ""
        if version.origin != version.sha:
            refresh = (
                f" (a base refresh of {version.origin[:12]}: where this clone lacks its commit, as after "
                f"Cloud Build, run `envctl pipeline run --branch staging --refresh-base` while staging "
                f"holds {version.origin[:12]}, or build a new commit)"
            )
        raise Refused(
            f"{version.image} {version.sha[:12]} ({version.digest[:19]}) was pruned from the registry "
            f"on {version.pruned_at:%Y-%m-%d}; rebuild it with "
            f"`envctl build {version.image} --rev {version.sha}`{refresh} and try again; nothing was changed"
        )


def required_signoffs(settings: Settings, version: Version) -> int | None:
    """`promotion.production.signoffs` of the image's spec at the version's commit.

    None when that commit can't be read (a commit this clone lacks: a version known only
    to the ledger, no repository here, no git, a spec that no longer parses).
    """
    return _rule_at(settings, version.image, version.sha)


def _rule_at(settings: Settings, image: str, sha: str) -> int | None:
    try:
        rules = rules_at(settings, image, sha)
        return 0 if rules is None else rules.signoffs  # no spec at that commit: no rule of it
    except (UsageError, OSError, ValueError) as e:
        log.debug("no spec of %s at %s: %s", image, sha[:12], type(e).__name__)
        return None


def _signoff_rule(
    settings: Settings, ledger: MoveLedger, version: Version, rule: int | None
) -> tuple[Signoffs | None, str | None]:
    """Production's sign-offs for `version`, and the refusal when a rule can't be read.

    The rule is the larger of the spec's at the version's commit (or `rule`, given) and at
    current production's commit: promoting an old commit does not escape a newer rule.
    """
    rules = {version.sha: rule if rule is not None else _rule_at(settings, version.image, version.sha)}
    current = envs.current(ledger, version.image, "production")
    if current is not None and current.sha is not None and current.sha not in rules:
        rules[current.sha] = _rule_at(settings, version.image, current.sha)
    unread = [sha for sha, n in rules.items() if n is None]
    if unread:
        return None, (
            f"can't read the sign-off rule of {unread[0][:12]} in {settings.repo}; "
            "fetch it or use --force (recorded)"
        )
    return signoffs_of(ledger, version, max(n or 0 for n in rules.values())), None


def _ever_in_production(ledger: MoveLedger, image: str, digest: str) -> bool:
    return any(e.to_digest == digest for e in envs.history(ledger, image, "production"))


def signoffs_of(ledger: MoveLedger, version: Version, required: int) -> Signoffs | None:
    """The sign-offs production checks for `version`; None when the spec asks for none."""
    if required <= 0:
        return None
    signed = ledger.signers(version.image, version.digest)
    return Signoffs(
        required=required,
        people=tuple(signed),
        staging=f"{version.image}.staging",
        sha=version.sha,
        digest=version.digest,
    )


def _proof(
    settings: Settings,
    ledger: MoveLedger,
    version: Version,
    *,
    refuse_unread: bool = True,
    spec: Spec | None = None,
) -> Evidence:
    """Production's evidence for `version`, with the accelerator its spec asks for (or why unknown).

    `refuse_unread` False: a spec that can't be read is no refusal (a rollback to a version
    production already ran, as its sign-offs are not asked either). `spec`: the spec the
    caller promotes for (the pipeline's tree); None reads it at the version's commit.
    """
    if spec is not None:
        asked, unread = Rules.of(spec).accelerator, None
    else:
        asked, unread = asked_by(settings, version)
    return evidence_for(ledger, version, asked=asked, unread=unread if refuse_unread else None)


def _ready(ledger: MoveLedger, publisher: Publisher, version: Version) -> None:
    not_pruned(version)
    publisher.require()
    if publisher.digest_of(version.image, version.digest) is None:
        raise Unavailable(
            f"{publisher.image_ref(version.image, version.digest)} is not in the registry; "
            f"push it again with `envctl build {version.image} --rev {version.sha[:12]}`"
        )


def promote(
    settings: Settings,
    ledger: MoveLedger,
    env: EnvId,
    rev: str,
    *,
    force: bool = False,
    reason: str | None = None,
    publisher: Publisher | None = None,
    on_read: Callable[[], None] | None = None,
    spec: Spec | None = None,
) -> Outcome:
    """Point `env` at the version of REV; production keeps the old production as fallback.

    `on_read` runs between reading the pointers and the swap (see `compare_and_swap`).
    `spec`: the spec the caller promotes for (the pipeline's tree: its sign-off rule and
    accelerator); None reads them from the spec at the version's commit.
    """
    if env.stage == "fallback":
        raise UsageError(
            f"{env} moves only with production; "
            f"promote {env.image}.production or `envctl rollback {env.image}`"
        )
    envs.require_known(ledger, env.image)
    version = resolve_version(settings, ledger, env.image, rev)
    publisher = publisher or publisher_for(settings)
    proof = _proof(settings, ledger, version, spec=spec) if env.stage == "production" else None
    _ready(ledger, publisher, version)
    signed, unread = None, None
    if env.stage == "production":
        rule = None if spec is None else Rules.of(spec).signoffs
        signed, unread = _signoff_rule(settings, ledger, version, rule)
    forced_over: list[str] = []

    def decide(seen: dict[Stage, Pointer]) -> list[Change]:
        target, fallback = seen[env.stage], seen["fallback"]
        if target.sha == version.sha and target.digest == version.digest:
            log.info("%s already points at %s", env, version.sha[:12])
            return []
        moves_fallback = env.stage == "production" and target.digest is not None
        pinned = [str(EnvId(env.image, p.stage)) for p in (target, fallback) if p.pinned]
        if not moves_fallback:
            pinned = [p for p in pinned if not p.endswith(".fallback")]
        ahead = None
        if env.stage == "staging" and target.sha is not None:
            # A base refresh's version stands for the commit it rebuilt: pushes on top of
            # that commit move forward; the rebuilt commit itself would move back.
            at = ledger.get_version(env.image, target.sha)
            origin = at.origin if at is not None else target.sha
            back = origin != target.sha and version.sha == origin
            ahead = not back and descends(settings, origin, version.sha)
        reasons = refusals(
            stage=env.stage,
            target=version.sha[:12],
            evidence=proof,
            descends=ahead,
            pinned=pinned,
            signoffs=signed,
        ) + ([unread] if unread else [])
        forced_over[:] = _decide(reasons, force, f"promotion of {version.sha[:12]} to {env}")
        who = _who(settings, reason, forced_over)
        changes = []
        if moves_fallback and target.sha is not None and target.digest is not None:
            changes.append(
                Change(expected=fallback, sha=target.sha, digest=target.digest, action="promote", who=who)
            )
        changes.append(
            Change(expected=target, sha=version.sha, digest=version.digest, action="promote", who=who)
        )
        return changes

    changes = envs.compare_and_swap(ledger, env.image, decide, on_read=on_read)
    outcome = Outcome(image=env.image, action="promote", forced_over=forced_over if changes else [])
    outcome.steps.extend(_step(c.expected, c.sha, c.digest) for c in changes)
    if changes:
        try:
            publish(ledger, publisher, env.image, [s.stage for s in outcome.steps])
        finally:  # the ledger moved: that is the event, whether or not the tags follow
            _notify(settings, changes)
    else:
        stages: list[Stage] = [env.stage, "fallback"] if env.stage == "production" else [env.stage]
        outcome.republished.extend(_repair(settings, ledger, publisher, env.image, stages))
    return outcome


def rollback(
    settings: Settings,
    ledger: MoveLedger,
    image: str,
    *,
    to: str | None = None,
    force: bool = False,
    reason: str | None = None,
    publisher: Publisher | None = None,
) -> Outcome:
    """`production` := `fallback`, or := the version whose SHA starts with `to`."""
    envs.check_image_name(image)
    envs.require_known(ledger, image)
    chosen = find_version(ledger, image, to) if to else None
    signed, unread = None, None
    new_to_production = False
    if chosen is not None:
        not_pruned(chosen)
        if not _ever_in_production(ledger, image, chosen.digest):
            # a version production never ran is a promotion by another name: its sign-offs apply,
            # and so does the refusal of a spec that can't be read (unknown accelerator)
            new_to_production = True
            signed, unread = _signoff_rule(settings, ledger, chosen, None)
    publisher = publisher or publisher_for(settings)
    publisher.require()
    forced_over: list[str] = []

    def decide(seen: dict[Stage, Pointer]) -> list[Change]:
        production = seen["production"]
        if chosen is not None:
            sha, digest = chosen.sha, chosen.digest
        else:
            fallback = seen["fallback"]
            if fallback.sha is None or fallback.digest is None:
                raise Refused(
                    f"{image} has no fallback to roll back to; name a tested version with "
                    f"`envctl rollback {image} --to SHA`"
                )
            sha, digest = fallback.sha, fallback.digest
        if production.sha == sha and production.digest == digest:
            log.info("%s.production already points at %s", image, sha[:12])
            return []
        target = chosen or ledger.get_version(image, sha)
        if target is not None and target.digest == digest:
            not_pruned(target)
        proof = (
            _proof(settings, ledger, target, refuse_unread=new_to_production)
            if target is not None and target.digest == digest
            else evidence(ledger, image, digest, sha=sha, test_key=None)
        )
        reasons = refusals(
            stage="production",
            target=sha[:12],
            evidence=proof,
            descends=None,
            pinned=[f"{image}.production"] if production.pinned else [],
            signoffs=signed if chosen is not None else None,
        ) + ([unread] if unread and chosen is not None else [])
        forced_over[:] = _decide(reasons, force, f"rollback of {image}.production to {sha[:12]}")
        if publisher.digest_of(image, digest) is None:
            raise Unavailable(
                f"{publisher.image_ref(image, digest)} is not in the registry; nothing was changed"
            )
        who = _who(settings, reason, forced_over)
        return [Change(expected=production, sha=sha, digest=digest, action="rollback", who=who)]

    changes = envs.compare_and_swap(ledger, image, decide)
    outcome = Outcome(image=image, action="rollback", forced_over=forced_over if changes else [])
    outcome.steps.extend(_step(c.expected, c.sha, c.digest) for c in changes)
    if changes:
        try:
            publish(ledger, publisher, image, ["production"])
        finally:
            _notify(settings, changes)
    else:
        outcome.republished.extend(_repair(settings, ledger, publisher, image, ["production"]))
    return outcome


def set_pin(settings: Settings, ledger: Ledger, env: EnvId, *, pinned: bool, reason: str | None) -> bool:
    """Pin or unpin an environment; False when it already was so (nothing recorded)."""
    envs.require_known(ledger, env.image)
    who = _who(settings, reason, [])  # reads git config: before the transaction
    with ledger.transaction() as conn:
        envs.lock_image(conn, env.image)
        pointer = envs.read(conn, env.image, env.stage)
        if pointer.pinned == pinned:
            return False
        event_id, at = envs.set_pin(conn, pointer, pinned, who)
    change = Change(
        expected=pointer,
        sha=pointer.sha or "",
        digest=pointer.digest or "",
        action="pin" if pinned else "unpin",
        who=who,
        event_id=event_id,
        at=at,
    )
    _notify(settings, [change])
    return True


def _repair(
    settings: Settings, ledger: MoveLedger, publisher: Publisher, image: str, stages: list[Stage]
) -> list[str]:
    """`repair` the tags of `stages`, with one `drift` event (repaired) per tag put back."""
    from pipeline import notify
    from pipeline.publish.tags import TagState

    found: list[TagState] = []
    fixed = repair(ledger, publisher, image, stages, found=found)
    notify.drifts(settings, publisher, found, repaired=True)
    return fixed


def _notify(settings: Settings, changes: list[Change]) -> None:
    """One `move` event per committed pointer move (see `pipeline.notify`)."""
    from pipeline import notify

    for c in changes:
        notify.send(
            settings,
            notify.move_event(
                image=c.expected.image,
                stage=c.expected.stage,
                action=c.action,
                from_sha=c.expected.sha,
                to_sha=c.sha,
                from_digest=c.expected.digest,
                to_digest=c.digest,
                actor=c.who.actor,
                reason=c.who.reason,
                forced=c.who.forced,
                ci_run_id=c.who.ci_run_id,
                event_id=c.event_id,
                at=c.at,
            ),
        )


def _step(pointer: Pointer, sha: str, digest: str) -> Step:
    return Step(
        stage=pointer.stage, from_sha=pointer.sha, to_sha=sha, from_digest=pointer.digest, to_digest=digest
    )
