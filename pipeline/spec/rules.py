"""The rules a move reads from a spec: production's sign-offs and the accelerator it asks for.

`envctl promote` and `rollback` read them from the spec at a version's commit. Reading
means validating the whole spec with the model (`pipeline.spec.model`), and importing
that model (pydantic) costs about 0.17 s, a third of a promotion. A commit's spec never
changes, so the rules of a spec that validated are kept on disk, keyed by a hash of its
bytes, its path and the model's own source: the next move of any commit with the same
spec bytes reads two numbers from a small JSON file instead. A spec that does not
validate is never kept (it is validated, and refused, each time); an entry that can't be
read is ignored and written again; a change to the model's source starts a new set of
entries. The entries live in the state folder (`ENVCTL_STATE_DIR`, beside the ledger)
and are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.spec.model import Spec

log = logging.getLogger(__name__)

#: The sources whose change can change what a spec's rules are (the model and what it imports to validate).
_SOURCES = ("model.py", "names.py", "rules.py", "lint/catalog.py", "../source.py")
CACHE = "spec-rules"
MAX_SIGNOFFS = 20  # ProductionRules.signoffs' upper bound


@dataclass(frozen=True, kw_only=True)
class Rules:
    """What production asks of a version by its spec."""

    signoffs: int = 0  # promotion.production.signoffs
    accelerator: str | None = None  # cloud.accelerator as `1 x NVIDIA_TESLA_T4`; None: none

    @classmethod
    def of(cls, spec: Spec) -> Rules:
        wanted = spec.cloud.accelerator
        return cls(
            signoffs=spec.promotion.production.signoffs, accelerator=None if wanted is None else str(wanted)
        )

    @classmethod
    def from_json(cls, data: Any) -> Rules | None:
        """The rules of a cache entry; None for anything this module would not have written."""
        if not isinstance(data, dict) or set(data) != {"signoffs", "accelerator"}:
            return None
        signoffs, accelerator = data["signoffs"], data["accelerator"]
        if type(signoffs) is not int or not 0 <= signoffs <= MAX_SIGNOFFS:
            return None
        if accelerator is not None and not isinstance(accelerator, str):
            return None
        return cls(signoffs=signoffs, accelerator=accelerator)


_fingerprint: str | None = None


def fingerprint() -> str:
    """A hash of the model's source: entries written by another model are not read."""
    global _fingerprint
    if _fingerprint is None:
        digest = hashlib.sha256()
        here = Path(__file__).parent
        for name in _SOURCES:
            digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
        _fingerprint = digest.hexdigest()
    return _fingerprint


def _key(text: bytes, path: str) -> str:
    return hashlib.sha256(fingerprint().encode() + b"\0" + path.encode() + b"\0" + text).hexdigest()


def read(text: bytes, path: str, state_dir: Path | None) -> Rules:
    """The rules of the spec `text` (the file `path` of some commit); `SpecError` when it does not validate.

    With `state_dir`, a spec validated before is answered from its cache entry.
    """
    entry = None
    if state_dir is not None:
        try:
            entry = state_dir / CACHE / f"{_key(text, path)}.json"
            cached = Rules.from_json(json.loads(entry.read_bytes()))
            if cached is not None:
                return cached
            log.debug("ignoring the spec rules cache entry %s: not one envctl writes", entry)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.debug("ignoring the spec rules cache entry %s: %s", entry, e)
    from pipeline.spec import model

    rules = Rules.of(model.parse(text, path))  # SpecError: never cached
    if entry is not None:
        _write(entry, rules)
    return rules


def _write(entry: Path, rules: Rules) -> None:
    """Write the entry atomically; a cache that can't be written only costs time."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"signoffs": rules.signoffs, "accelerator": rules.accelerator}, f)
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        log.debug("could not keep the spec rules in %s: %s", entry, e)
