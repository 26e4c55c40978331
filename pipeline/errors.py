"""The error types of envctl; each carries the exit code of the command surface.

0 done; 1 the operation ran and said no; 2 bad input; 3 a part is unavailable.
`pipeline.cli.main` catches `EnvctlError` once and prints one line.
"""

from __future__ import annotations


class EnvctlError(Exception):
    """Base of every error envctl reports to a user: one line, what to do next."""

    exit_code = 1


class Refused(EnvctlError):
    """The operation ran and said no (tests failed, promotion refused)."""

    exit_code = 1


class BuildFailed(Refused):
    """A Dockerfile step failed."""


class UsageError(EnvctlError):
    """Bad input: unknown image, malformed spec, ambiguous SHA prefix."""

    exit_code = 2


class SpecError(UsageError):
    """A spec in environments/ is wrong; the message names file and field."""


class ConfigError(UsageError):
    """A setting is wrong (unknown key, bad value)."""


class Unavailable(EnvctlError):
    """A part is unavailable: Docker Engine, registry, ledger."""

    exit_code = 3


def shown(value: object, limit: int = 60) -> str:
    """`value` quoted for a message, cut to `limit` characters so that the line stays readable."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[: limit - 1]}…{length}"
