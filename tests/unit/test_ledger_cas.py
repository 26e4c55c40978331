"""Compare-and-swap, forced to lose: a second writer moves a pointer between the read and the swap.

The race is made deterministic with `compare_and_swap`'s `on_read` hook: the first
decision is taken on pointers that another ledger connection (a separate engine, as
another process would have) moves before the swap. On SQLite and on PostgreSQL, and on
SQLite also through the standard library's `LiteLedger` (what `promote` uses), alone and
racing a SQLAlchemy ledger either way round.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import Refused
from pipeline.ledger.pointers import (
    Change,
    Decide,
    MoveLedger,
    Pointer,
    Stage,
    Who,
    compare_and_swap,
    current,
    history,
)
from tests.ledgerfacts import MOVE_LEDGERS, move_ledgers

pytest_plugins = ["tests.pg"]

IMAGE = "test.cas"
SHA = {name: name * 40 for name in "abcd"}
DIGEST = {name: "sha256:" + name * 64 for name in "abcd"}
WHO = Who(actor="tester")


def _to(stage: Stage, name: str, *, also_fallback: bool = False) -> Decide:
    """A decision: move `stage` to version `name` (production keeps the old one as fallback)."""

    def decide(seen: dict[Stage, Pointer]) -> list[Change]:
        target = seen[stage]
        if target.sha == SHA[name]:
            return []
        changes = []
        if also_fallback and target.sha is not None and target.digest is not None:
            changes.append(
                Change(
                    expected=seen["fallback"], sha=target.sha, digest=target.digest, action="promote", who=WHO
                )
            )
        changes.append(Change(expected=target, sha=SHA[name], digest=DIGEST[name], action="promote", who=WHO))
        return changes

    return decide


@pytest.fixture(params=MOVE_LEDGERS)
def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[MoveLedger, MoveLedger]:
    """A ledger and another one on the same database, as a second process would have."""
    return move_ledgers(request, tmp_path)


def _chain_is_unbroken(ledger: MoveLedger) -> None:
    last: dict[str, str | None] = {}
    for event in history(ledger, IMAGE):
        assert event.from_digest == last.get(event.stage), event
        last[event.stage] = event.to_digest


def test_the_loser_decides_again_and_moves_when_still_valid(ledgers: tuple[MoveLedger, MoveLedger]) -> None:
    ledger, other = ledgers
    compare_and_swap(ledger, IMAGE, _to("production", "a", also_fallback=True))
    decisions: list[str | None] = []
    promote_c = _to("production", "c", also_fallback=True)

    def decide(seen: dict[Stage, Pointer]) -> list[Change]:
        decisions.append(seen["production"].sha)
        return promote_c(seen)

    def racer() -> None:
        if len(decisions) == 0:  # once: between the loser's read and its swap
            assert compare_and_swap(other, IMAGE, _to("production", "b", also_fallback=True))

    changes = compare_and_swap(ledger, IMAGE, decide, on_read=racer)

    assert decisions == [SHA["a"], SHA["b"]]  # decided on a, lost, decided again on b
    assert [(c.expected.stage, c.sha) for c in changes] == [("fallback", SHA["b"]), ("production", SHA["c"])]
    production, fallback = current(ledger, IMAGE, "production"), current(ledger, IMAGE, "fallback")
    assert production is not None and production.sha == SHA["c"]
    assert fallback is not None and fallback.sha == SHA["b"]  # not a: the racer's move is kept
    assert [e.to_sha for e in history(ledger, IMAGE, "production")] == [SHA["a"], SHA["b"], SHA["c"]]
    _chain_is_unbroken(ledger)


def test_the_loser_says_no_with_what_moved_when_no_longer_valid(
    ledgers: tuple[MoveLedger, MoveLedger],
) -> None:
    ledger, other = ledgers
    compare_and_swap(ledger, IMAGE, _to("staging", "a"))
    ancestors_of_d = {SHA["a"]}  # d descends from a, not from b
    calls = 0

    def forward_to_d(seen: dict[Stage, Pointer]) -> list[Change]:
        nonlocal calls
        calls += 1
        if seen["staging"].sha not in ancestors_of_d:
            raise Refused(f"promotion of {SHA['d'][:12]} refused: it does not descend from staging")
        return _to("staging", "d")(seen)

    def racer() -> None:
        if calls == 0:
            compare_and_swap(other, IMAGE, _to("staging", "b"))

    with pytest.raises(Refused) as lost:
        compare_and_swap(ledger, IMAGE, forward_to_d, on_read=racer)

    assert lost.value.exit_code == 1
    message = str(lost.value)
    assert message.startswith(
        f"{IMAGE}.staging moved from {SHA['a'][:12]} to {SHA['b'][:12]} while this command ran"
    ), message
    assert "does not descend" in message
    assert calls == 2
    staging = current(ledger, IMAGE, "staging")
    assert staging is not None and staging.sha == SHA["b"]
    assert [e.to_sha for e in history(ledger, IMAGE, "staging")] == [SHA["a"], SHA["b"]]


def test_a_pointer_that_keeps_moving_gives_up_with_exit_1(ledgers: tuple[MoveLedger, MoveLedger]) -> None:
    ledger, other = ledgers
    compare_and_swap(ledger, IMAGE, _to("staging", "a"))
    names = iter("bcbcbcbc")

    def racer() -> None:
        compare_and_swap(other, IMAGE, _to("staging", next(names)))

    with pytest.raises(
        Refused, match=r"moved from .* while this command ran, 3 times in a row; run it again"
    ):
        compare_and_swap(ledger, IMAGE, _to("staging", "d"), on_read=racer, attempts=3)
    staging = current(ledger, IMAGE, "staging")
    assert staging is not None and staging.sha != SHA["d"]
