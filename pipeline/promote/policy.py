"""The promotion policy: what counts as evidence, and why a move is refused.

Evidence is defined here once and used by the pipelines, `promote`, `rollback` and
`describe` alike. A test run's verdict depends on the bytes (the digest) and on the
test inputs of the commit it ran for (the tests key: the spec's tests section and the
files the run mounts, `pipeline.spec.keys`). So a run is evidence for a version when it
tested the version's digest and either ran for the version's own commit or used the
same tests key. Runs recorded before tests keys existed count only for their own commit.

Production may also ask for testers' sign-offs (`promotion.production.signoffs` in the
spec): that many distinct people must have run `envctl signoff` on the version's digest.

Where a run ran is part of its worth: a run on the CPU (`envctl test --allow-cpu`) of a
spec that asks for an accelerator proves nothing about the GPU code paths, so production
refuses it unless forced (the accelerator is in the tests key, so such a run can only
count for a spec that asks for the same one). The rule reads the accelerator from the
version's spec too (`asked_by`), so a run recorded before envctl kept where runs ran
(no `ran_on`) does not pass for a spec that asks for one either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, assert_never

from pipeline.errors import UsageError
from pipeline.ledger.model import Stage, TestRun, Version

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.ledger.pointers import MoveLedger
    from pipeline.settings import Settings
    from pipeline.spec.rules import Rules

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """The runs that count for one version, and whether the latest of them passed."""

    runs: int
    passed: bool
    run_id: str | None = None  # the run that decides
    ran_on: dict[str, Any] | None = None  # where it ran (None: before envctl recorded it)
    asked: str | None = None  # the accelerator the version's spec asks for (None: none or unknown)
    unread: str | None = None  # why the version's spec can't be read (production refuses it)

    @property
    def cpu_for_accelerator(self) -> str | None:
        """The accelerator the spec asks for when the deciding run ran without one (or didn't say)."""
        where = self.ran_on or {}
        asked = self.asked or where.get("asked")
        return str(asked) if asked and not where.get("accelerator") else None


def describe_ran_on(ran_on: dict[str, Any] | None) -> str:
    """`local CPU`, `vertex n1-standard-8 + 1 x NVIDIA_TESLA_T4 (us-central1)`, or `unknown`."""
    if not ran_on:
        return "unknown (recorded before envctl kept it)"
    if ran_on.get("backend") != "vertex":
        text = "local CPU"
    else:
        text = f"Vertex AI {ran_on.get('machine')}"
        accelerator = ran_on.get("accelerator")
        if accelerator:
            text += f" + {accelerator.get('count')} x {accelerator.get('type')}"
        if ran_on.get("region"):
            text += f" ({ran_on['region']})"
    if ran_on.get("asked") and not ran_on.get("accelerator"):
        text += f", although the spec asks for {ran_on['asked']}"
    return text


@dataclass(frozen=True, kw_only=True)
class Signoffs:
    """How many distinct testers production asks for, and who signed the digest so far."""

    required: int
    people: tuple[str, ...] = ()
    staging: str = "IMAGE.staging"  # the environment testers sign
    sha: str = ""  # the version's commit and digest: what a sign-off must name
    digest: str = ""


def counts_for(run: TestRun, *, sha: str, test_key: str | None) -> bool:
    """Whether `run` (of the same digest) is evidence for the commit `sha` with `test_key`."""
    return run.sha == sha or (test_key is not None and run.test_key == test_key)


def evidence(ledger: MoveLedger, image: str, digest: str, *, sha: str, test_key: str | None) -> Evidence:
    """The evidence for the digest `digest` as the commit `sha` (with tests key `test_key`) would use it."""
    runs = [r for r in ledger.test_runs(image, digest) if counts_for(r, sha=sha, test_key=test_key)]
    if not runs:
        return Evidence(runs=0, passed=False)
    return Evidence(runs=len(runs), passed=runs[-1].passed, run_id=runs[-1].run_id, ran_on=runs[-1].ran_on)


def evidence_for(
    ledger: MoveLedger, version: Version, *, asked: str | None = None, unread: str | None = None
) -> Evidence:
    """The version's evidence; `asked`, `unread`: what `asked_by` says of its spec."""
    found = evidence(ledger, version.image, version.digest, sha=version.sha, test_key=version.test_key)
    return replace(found, asked=asked, unread=unread)


def asked_by(settings: Settings, version: Version | None) -> tuple[str | None, str | None]:
    """The accelerator (`1 x NVIDIA_TESLA_T4`) of the spec at the version's commit, and why it is unknown.

    (None, None): the spec asks for none (or the commit has no spec); (None, reason): the
    spec at that commit can't be read (a commit this clone lacks, a tree git refuses, a
    spec that does not parse), which production refuses as `_rule_at` does: an unknown
    accelerator must not let a CPU run pass for a GPU spec.
    """
    if version is None:
        return None, None
    try:
        rules = rules_at(settings, version.image, version.sha)
    except (UsageError, OSError, ValueError) as e:
        log.debug("no spec of %s at %s: %s", version.image, version.sha[:12], e)
        return None, (
            f"the spec of {version.image} at {version.sha[:12]} can't be read ({e}), so its "
            "accelerator is unknown; fix or fetch that commit or use --force (recorded)"
        )
    return (None if rules is None else rules.accelerator), None


def rules_at(settings: Settings, image: str, sha: str) -> Rules | None:
    """The rules of the spec of `image` at the commit `sha` (full); None: that commit has no spec.

    Read with the git program (`source.read_at`), as the rules of a move need one file
    of one commit, and validated whole (`spec.rules.read`: kept in the state folder by
    the spec's bytes, so the spec model loads once per spec). A commit never changes, so
    what was read is kept for the process (a promotion asks for the accelerator and the
    sign-offs of one commit). `UsageError` (a `SpecError` for a spec that does not
    validate) when the commit can't be read; that is tried again each time.
    """
    from pipeline.source import read_at
    from pipeline.spec import rules
    from pipeline.spec.names import spec_path

    cache = settings.state_dir if settings.state_dir.is_absolute() else None  # never beside the cwd
    key = (settings.repo, cache, image, sha)
    if key not in _READ:
        path = spec_path(image)
        text = read_at(settings.repo, sha, path)
        _READ[key] = None if text is None else rules.read(text, path, cache)
    return _READ[key]


_READ: dict[tuple[Path, Path | None, str, str], Rules | None] = {}


def refusals(
    *,
    stage: Stage,
    target: str,
    evidence: Evidence | None,
    descends: bool | None,
    pinned: list[str],
    signoffs: Signoffs | None = None,
) -> list[str]:
    """Why a move of `stage` to the version `target` (a short SHA) is refused; empty: allowed.

    `evidence` is None when the stage needs none; `descends` is None when the stage
    need not move forward (or has no current version); `signoffs` is None when the
    stage asks for no sign-off.
    """
    reasons = [f"{name} is pinned" for name in pinned]
    if evidence is not None and stage == "production" and evidence.unread:
        reasons.append(evidence.unread)
    if evidence is not None:
        if evidence.runs == 0:
            reasons.append(f"{target} has no test evidence; run `envctl test` first")
        elif not evidence.passed:
            reasons.append(f"the latest test run of {target} failed")
        elif stage == "production" and evidence.cpu_for_accelerator:
            where = "ran on the CPU" if evidence.ran_on else "does not record where it ran (it is that old)"
            reasons.append(
                f"the test run {evidence.run_id} of {target} {where} but its spec asks for "
                f"{evidence.cpu_for_accelerator}; test it on Vertex AI (ENVCTL_BACKEND=gcp) first"
            )
    if signoffs is not None and len(signoffs.people) < signoffs.required:
        signed = f"signed by {', '.join(signoffs.people)}" if signoffs.people else "nobody signed yet"
        reasons.append(
            f"{target} has {len(signoffs.people)} of the {signoffs.required} testers' sign-offs "
            f"production needs ({signed})"
            + (
                f"; testers sign {signoffs.digest} with "
                f"`envctl signoff {signoffs.staging} --rev {signoffs.sha[:12]}`"
                if signoffs.digest
                else f"; testers run `envctl signoff {signoffs.staging}`"
            )
        )
    if descends is False:
        reasons.append(
            f"{target} does not descend from the current staging version (staging only moves forward)"
        )
    match stage:
        case "staging" | "production" | "fallback":
            pass
        case _:
            assert_never(stage)
    return reasons
