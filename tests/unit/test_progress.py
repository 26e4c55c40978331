"""The status line: rewritten in place on a real pseudo-terminal, plain lines on a pipe or in CI."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
from collections.abc import Iterator

import pytest

from pipeline import output, progress


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, io.TextIOWrapper]]:
    """A real pseudo-terminal; `on_terminal` puts stderr on it (in the test's body: pytest's
    capture sets sys.stderr again between setup and call). Yields the leader fd."""
    leader, follower = pty.openpty()
    stream = open(follower, "w", buffering=1, closefd=True)  # noqa: SIM115 - closed below
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ENVCTL_NO_PROGRESS", raising=False)
    monkeypatch.setitem(progress._state, "off", False)
    monkeypatch.setitem(progress._state, "shown", "")
    try:
        yield leader, stream
    finally:
        stream.close()
        os.close(leader)


def on_terminal(monkeypatch: pytest.MonkeyPatch, terminal: tuple[int, io.TextIOWrapper]) -> int:
    monkeypatch.setattr("sys.stderr", terminal[1])
    return terminal[0]


def drawn(leader: int) -> str:
    chunks = []
    while True:
        import select

        ready, _, _ = select.select([leader], [], [], 0.2)
        if not ready:
            return b"".join(chunks).decode()
        chunks.append(os.read(leader, 65536))


PUSH = [
    {"status": "The push refers to repository [localhost:5000/x]"},
    {"status": "Preparing", "id": "aaa"},
    {"status": "Preparing", "id": "bbb"},
    {"status": "Layer already exists", "id": "bbb"},
    {"status": "Pushing", "id": "aaa", "progressDetail": {"current": 1_500_000, "total": 3_000_000}},
    {"status": "Pushing", "id": "aaa", "progressDetail": {"current": 3_000_000, "total": 3_000_000}},
    {"status": "Pushed", "id": "aaa"},
    {"status": "x: digest: sha256:00 size: 1"},
]


def test_push_on_a_terminal_rewrites_one_line_with_layers_bytes_and_rate(
    terminal: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = on_terminal(monkeypatch, terminal)
    transfer = progress.Transfer("localhost:5000/x:abc")
    for chunk in PUSH:
        transfer.update(chunk)
    transfer.close()
    text = drawn(leader)
    updates = re.findall(r"\r([^\r\n]*)\x1b\[K", text)
    assert "  pushing localhost:5000/x:abc: 1 of 2 layers, 0 B of 0 B, 0 B/s" in updates
    assert any(
        re.fullmatch(r"  pushing \S+: 2 of 2 layers, 3\.0 MB of 3\.0 MB, [\d.]+ \S+/s", u) for u in updates
    )
    assert re.search(r"pushed 1 layer\(s\) \(1 already there\), 3\.0 MB in [\d.]+ s", text)


def test_build_steps_on_a_terminal_show_the_step_and_its_last_line(
    terminal: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = on_terminal(monkeypatch, terminal)
    steps = progress.Steps()
    for line in [
        "#5 [2/3] RUN pip install x",
        "#5 0.512 Collecting x",
        "#5 DONE 1.2s",
        "Step 3/4 : RUN true",
    ]:
        steps(line)
    steps.close()
    updates = re.findall(r"\r([^\r\n]*)\x1b\[K", drawn(leader))
    assert updates[:4] == [
        "  [2/3] RUN pip install x",
        "  [2/3] RUN pip install x 0:00 | Collecting x",
        "  [2/3] RUN pip install x 0:00 | DONE 1.2s",
        "  Step 3/4 : RUN true",
    ]


def test_messages_go_above_the_status_line(
    terminal: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = on_terminal(monkeypatch, terminal)
    with progress.Counter("testing img", 2) as status:
        status.started("nb/a.ipynb")
        output.info("  passed a.ipynb")
        status.finished("nb/a.ipynb")
    text = drawn(leader)
    # the line is erased, the message printed, the status line drawn again below it
    assert re.search(
        r"\r\x1b\[K  passed a\.ipynb\r\n\r  testing img: 0 of 2 done, 0:00 elapsed; running a\.ipynb 0:00",
        text,
    )
    assert "1 of 2 done, 0:00 elapsed" in text
    assert text.endswith("\r\x1b[K")  # nothing left on the line when the counter closes


@pytest.mark.parametrize("why", ["pipe", "CI", "flag"])
def test_plain_lines_without_a_terminal_in_ci_or_with_no_progress(
    why: str,
    terminal: tuple[int, io.TextIOWrapper],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    leader = on_terminal(monkeypatch, terminal)
    read_fd, write_fd = os.pipe()
    if why == "pipe":
        monkeypatch.setattr("sys.stderr", open(write_fd, "w", buffering=1))  # noqa: SIM115
    else:
        os.close(write_fd)
        if why == "CI":
            monkeypatch.setenv("CI", "true")
        else:
            progress.disable()
    assert not progress.live()
    steps = progress.Steps()
    steps("#5 [2/3] RUN echo hi")
    steps("#5 0.2 hi")
    transfer = progress.Transfer("localhost:5000/x:abc")
    for chunk in PUSH:
        transfer.update(chunk)
    transfer.close()
    with progress.Counter("testing img", 1) as status:
        status.started("a.ipynb")
        status.finished("a.ipynb")
    if why == "pipe":
        import sys

        sys.stderr.close()
        text = os.read(read_fd, 65536).decode()
    else:
        text = drawn(leader).replace("\r\n", "\n")
    os.close(read_fd)
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines()[:2] == ["  #5 [2/3] RUN echo hi", "  #5 0.2 hi"]
    assert re.search(r"^  pushed 1 layer\(s\) \(1 already there\), 3\.0 MB in", text, re.M)
    assert "of 1 done" not in text


def test_log_records_go_above_the_status_line(
    terminal: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = on_terminal(monkeypatch, terminal)
    logger = logging.getLogger("envctl.test.progress")
    handler = progress.LogHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    with progress.Counter("testing img", 2) as status:
        status.started("nb/a.ipynb")
        logger.warning("could not remove container abc")
    text = drawn(leader)
    assert re.search(
        r"\r\x1b\[Kenvctl\.test\.progress: could not remove container abc\r\n\r  testing img: 0 of 2 done",
        text,
    )


def test_a_failed_push_prints_no_summary(
    terminal: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = on_terminal(monkeypatch, terminal)
    transfer = progress.Transfer("localhost:5000/x:abc")
    for chunk in PUSH[:3]:
        transfer.update(chunk)
    transfer.close(summary=False)
    text = drawn(leader)
    assert "pushing localhost:5000/x:abc" in text and "pushed" not in text
    assert text.endswith("\r\x1b[K")
