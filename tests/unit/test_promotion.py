"""The promotion policy, environment IDs, SHA prefixes and SBOM diffs: fast, no stack needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.build import sbom_diff
from pipeline.errors import UsageError
from pipeline.ledger.db import Ledger, Version, now
from pipeline.ledger.pointers import EnvId, parse_env_id
from pipeline.promote.moves import Evidence, find_version, refusals
from pipeline.promote.policy import Signoffs


def test_environment_ids_split_at_the_last_dot() -> None:
    assert parse_env_id("nlp.keras-batch.production") == EnvId("nlp.keras-batch", "production")
    assert str(parse_env_id("cv.seg_2.fallback")) == "cv.seg_2.fallback"
    with pytest.raises(UsageError, match="unknown stage 'prod'"):
        parse_env_id("nlp.keras-batch.prod")
    for bad in ("production", "NLP.x.staging", ".staging", "a..b.staging"):
        with pytest.raises(UsageError):
            parse_env_id(bad)


def test_production_needs_passing_evidence() -> None:
    passing, failing, none = (
        Evidence(runs=2, passed=True),
        Evidence(runs=1, passed=False),
        Evidence(runs=0, passed=False),
    )
    assert refusals(stage="production", target="abc", evidence=passing, descends=None, pinned=[]) == []
    assert refusals(stage="production", target="abc", evidence=none, descends=None, pinned=[]) == [
        "abc has no test evidence; run `envctl test` first"
    ]
    assert refusals(stage="production", target="abc", evidence=failing, descends=None, pinned=[]) == [
        "the latest test run of abc failed"
    ]


def test_staging_moves_forward_and_pins_hold() -> None:
    assert refusals(stage="staging", target="abc", evidence=None, descends=True, pinned=[]) == []
    assert (
        "staging only moves forward"
        in refusals(stage="staging", target="abc", evidence=None, descends=False, pinned=[])[0]
    )
    reasons = refusals(stage="staging", target="abc", evidence=None, descends=False, pinned=["x.staging"])
    assert reasons[0] == "x.staging is pinned" and len(reasons) == 2


def _version(
    sha: str, sbom: dict[str, object] | None = None, labels: dict[str, str] | None = None
) -> Version:
    return Version(
        image="team.task",
        sha=sha,
        tree="0" * 40,
        inputs_key="i",
        build_key=sha,
        digest="sha256:" + sha.ljust(64, "0")[:64],
        image_ref="",
        size=None,
        reused_from=None,
        labels=labels or {},
        sbom=sbom or {},
        created_at=now(),
    )


def test_sha_prefixes_need_seven_characters_and_one_match(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    for sha in ("1234567a" + "0" * 32, "1234567b" + "0" * 32, "89abcdef" + "0" * 32):
        ledger.record_version(_version(sha))
    assert find_version(ledger, "team.task", "89abcde").sha.startswith("89abcdef")
    with pytest.raises(UsageError, match="too short"):
        find_version(ledger, "team.task", "89abcd")
    with pytest.raises(UsageError, match="ambiguous"):
        find_version(ledger, "team.task", "1234567")
    with pytest.raises(UsageError, match="no version"):
        find_version(ledger, "team.task", "fffffff")
    with pytest.raises(UsageError, match="not a SHA prefix"):
        find_version(ledger, "team.task", "staging")


def test_sbom_diff_reports_packages_base_and_python_tolerantly() -> None:
    old = _version(
        "a" * 40,
        {
            "pip": [{"name": "NumPy", "version": "1.26"}, "keras==3.0"],
            "dpkg": [{"name": "python3.11", "version": "3.11.2"}],
        },
        {sbom_diff.BASE_NAME: "dlc/base", sbom_diff.BASE_DIGEST: "sha256:1"},
    )
    new = _version(
        "b" * 40,
        {
            "pip": [{"name": "numpy", "version": "2.0"}, {"name": "pandas", "version": "2.2"}],
            "python": "3.12.1",
        },
        {sbom_diff.BASE_NAME: "dlc/base", sbom_diff.BASE_DIGEST: "sha256:2"},
    )
    result = sbom_diff.diff(old, new)
    assert [(c.kind, c.name, c.new) for c in result.added] == [("pip", "pandas", "2.2")]
    assert [(c.kind, c.name) for c in result.removed] == [("pip", "keras"), ("dpkg", "python3.11")]
    assert [(c.name, c.old, c.new) for c in result.changed] == [("numpy", "1.26", "2.0")]
    assert result.python == ("3.11.2", "3.12.1")
    assert result.base == ("dlc/base@sha256:1", "dlc/base@sha256:2")
    assert "python  3.11.2 -> 3.12.1" in result.lines()
    assert sbom_diff.diff(old, old).lines() == []


def test_production_counts_distinct_testers_and_names_who_signed() -> None:
    passing = Evidence(runs=1, passed=True)

    def why(people: tuple[str, ...], required: int = 2) -> list[str]:
        signed = Signoffs(required=required, people=people, staging="nlp.x.staging")
        return refusals(
            stage="production", target="abc", evidence=passing, descends=None, pinned=[], signoffs=signed
        )

    assert why(()) == [
        "abc has 0 of the 2 testers' sign-offs production needs (nobody signed yet); "
        "testers run `envctl signoff nlp.x.staging`"
    ]
    assert why(("alice",)) == [
        "abc has 1 of the 2 testers' sign-offs production needs (signed by alice); "
        "testers run `envctl signoff nlp.x.staging`"
    ]
    assert why(("alice", "bob")) == []
    assert why(("alice", "bob", "carol")) == []
    assert refusals(stage="production", target="abc", evidence=passing, descends=None, pinned=[]) == []


def test_the_same_person_signing_twice_counts_once(tmp_path: Path) -> None:
    from pipeline.ledger import signoffs

    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    for who in ("alice", "Alice ", "bob", "alice"):
        signoffs.record(
            ledger, image="nlp.x", sha="a" * 40, digest="sha256:" + "1" * 64, actor=who, reason=None
        )
    signoffs.record(
        ledger, image="nlp.x", sha="b" * 40, digest="sha256:" + "2" * 64, actor="carol", reason=None
    )
    assert signoffs.people(signoffs.for_digest(ledger, "nlp.x", "sha256:" + "1" * 64)) == ["alice", "bob"]
    assert [s.actor for s in signoffs.for_image(ledger, "nlp.x")][-1] == "carol"
