"""Plugins of the whole test suite."""

import signal

import pytest

pytest_plugins = ["tests.skips"]


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background by a non-interactive shell (`nohup … &`, some CI
    # runners) inherits SIGINT ignored, and so would every envctl it starts: the Ctrl-C
    # tests would hang or fail. A caught SIGINT here makes children start with the default
    # again (exec resets caught signals and keeps ignored ones).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
