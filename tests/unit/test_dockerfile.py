"""Which Dockerfiles run pip without the index settings (envctl warns about those)."""

from __future__ import annotations

import pytest

from pipeline.build.dockerfile import runs_pip_without


@pytest.mark.parametrize(
    ("text", "warned"),
    [
        ("FROM x\nRUN pip install pandas\n", True),
        ("FROM x\nRUN python3 -m pip install pandas\n", True),
        ("FROM x\nRUN --mount=type=secret,id=pipconf pip install pandas\n", False),
        (
            "FROM x\nRUN --mount=type=secret,id=cacert \\\n  --mount=type=secret,id=pipconf,uid=1000 \\\n  pip install a\n",
            False,
        ),
        ("FROM x\nRUN --mount=type=secret,id=pipconfx pip install pandas\n", True),
        ("FROM x\nRUN echo pip\n# RUN pip install nothing\n", False),
    ],
)
def test_runs_pip_without_the_settings(text: str, warned: bool) -> None:
    assert runs_pip_without(text, "pipconf") is warned
