"""Plugins of the whole test suite."""

import os
import signal
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.skips"]


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background by a non-interactive shell (`nohup … &`, some CI
    # runners) inherits SIGINT ignored, and so would every envctl it starts: the Ctrl-C
    # tests would hang or fail. A caught SIGINT here makes children start with the default
    # again (exec resets caught signals and keeps ignored ones).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _environment_left_as_found() -> Iterator[None]:
    """A test that leaves a variable behind fails, and the environment is put back.

    Every later test's envctl children inherit this process's environment: a registry
    token left by one unit test once made the git-hook pipelines of later integration
    tests send it, and fail, only when the suite ran in that order.
    """
    before = _variables()
    yield
    after = _variables()
    if after != before:
        for key in after.keys() - before.keys():
            del os.environ[key]
        os.environ.update(before)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        pytest.fail(f"the test left the environment changed: {', '.join(changed)}", pytrace=False)


def _variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # pytest's own
