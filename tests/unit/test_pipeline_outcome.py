"""A pipeline run's exit code follows the contract: 0 done, 1 said no, 2 bad input, 3 unavailable."""

from __future__ import annotations

import pytest

from pipeline.pipelines.flows import ImageState, ImageVerdict, Outcome


def outcome(*states: tuple[ImageState, bool]) -> Outcome:
    return Outcome(
        {f"t.i{n}": ImageVerdict(image=f"t.i{n}", state=s, unavailable=u) for n, (s, u) in enumerate(states)}
    )


@pytest.mark.parametrize(
    ("states", "code"),
    [
        ((("promoted", False), ("noop", False)), 0),
        ((("invalid", False),), 2),  # every image's spec is malformed: bad input
        ((("invalid", False), ("promoted", False)), 2),
        ((("invalid", False), ("failed", False)), 1),  # a test said no too
        ((("failed", False),), 1),
        ((("error", True),), 3),
        ((("error", True), ("invalid", False)), 1),  # mixed causes: the run said no
    ],
)
def test_exit_code(states: tuple[tuple[ImageState, bool], ...], code: int) -> None:
    assert outcome(*states).exit_code == code
