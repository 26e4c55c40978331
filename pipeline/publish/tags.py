"""Registry tags as a published view of the ledger: `<registry>/<image>:<stage>`.

The ledger is the commit point. After it commits, `publish` retags the manifest the
ledger names (bytes unchanged, no layer moves); `drift` compares each tag with the
ledger and `sync` republishes what differs.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pipeline.backends import Publisher
from pipeline.errors import EnvctlError, Unavailable
from pipeline.ledger.model import Pointer, Stage

if TYPE_CHECKING:
    from pipeline.ledger.pointers import MoveLedger

log = logging.getLogger(__name__)

Drift = Literal["missing", "moved", "unknown"]


@dataclass(frozen=True)
class TagState:
    pointer: Pointer
    tag_digest: str | None
    drift: Drift | None

    def to_json(self, publisher: Publisher) -> dict[str, Any]:
        p = self.pointer
        return {
            "environment": f"{p.image}.{p.stage}",
            "image": p.image,
            "stage": p.stage,
            "sha": p.sha,
            "digest": p.digest,
            "image_ref": publisher.image_ref(p.image, p.digest) if p.digest else None,
            "tag": publisher.tag_ref(p.image, p.stage),
            "tag_digest": self.tag_digest,
            "updated_at": p.updated_at.isoformat() if p.updated_at else None,
            "generation": p.generation,
            "pinned": p.pinned,
            "pin_reason": p.pin_reason,
            "pinned_by": p.pinned_by,
            "drift": self.drift,
        }


def tag_state(publisher: Publisher, pointer: Pointer) -> TagState:
    """Compare one published tag with the ledger; `unknown` when the registry can't say."""
    if pointer.digest is None:
        return TagState(pointer, None, None)
    try:
        found = publisher.digest_of(pointer.image, pointer.stage)
    except EnvctlError as e:
        log.info("cannot read %s: %s", publisher.tag_ref(pointer.image, pointer.stage), e)
        return TagState(pointer, None, "unknown")
    if found is None:
        return TagState(pointer, None, "missing")
    return TagState(pointer, found, None if found == pointer.digest else "moved")


#: Tag reads in flight at once: one registry round trip each, so `status` of a hundred
#: images costs a few round trips of time, not three hundred (bench/scale.py).
READERS = 8


def tag_states(publisher: Publisher, pointers: list[Pointer]) -> list[TagState]:
    """`tag_state` of every pointer, read concurrently, in the order of `pointers`."""
    reads = [p for p in pointers if p.digest is not None]
    if len(reads) <= 1:
        return [tag_state(publisher, p) for p in pointers]
    with ThreadPoolExecutor(max_workers=min(READERS, len(reads)), thread_name_prefix="tags") as pool:
        return list(pool.map(lambda p: tag_state(publisher, p), pointers))


def states(ledger: MoveLedger, publisher: Publisher, image: str | None = None) -> list[TagState]:
    from pipeline.ledger import pointers as environments

    return tag_states(publisher, environments.pointers(ledger, image))


def publish(ledger: MoveLedger, publisher: Publisher, image: str, stages: list[Stage]) -> None:
    """Tag what the ledger names now; re-read after each write so racing publishers converge.

    Raises `Unavailable` telling to run `envctl sync` when the registry fails: the
    ledger has already moved and stays the truth.
    """
    from pipeline.ledger import pointers as environments

    for stage in stages:
        try:
            for _ in range(5):
                pointer = environments.current(ledger, image, stage)
                if pointer is None or pointer.digest is None:
                    break
                publisher.tag(image, pointer.digest, stage)
                again = environments.current(ledger, image, stage)
                if again is None or again.digest == pointer.digest:
                    break
        except EnvctlError as e:
            raise Unavailable(
                f"the ledger moved {image}.{stage}, but publishing {publisher.tag_ref(image, stage)} "
                f"failed ({e}); run `envctl sync {image}` when the registry is back"
            ) from e


def repair(
    ledger: MoveLedger,
    publisher: Publisher,
    image: str,
    stages: list[Stage],
    *,
    found: list[TagState] | None = None,
) -> list[str]:
    """Republish the tags of `stages` that the registry lost or moved; the references republished.

    `found` gets the state of each tag republished (what the drift was), for notifications.

    The no-op paths call this: a command killed between the ledger's commit and the tag
    write left the ledger right and the tag wrong, and a re-run puts the tag back.
    """
    from pipeline.ledger import pointers as environments

    fixed = []
    for stage in stages:
        pointer = environments.current(ledger, image, stage)
        if pointer is None:
            continue
        state = tag_state(publisher, pointer)
        if state.drift is None:
            continue
        publish(ledger, publisher, image, [stage])
        if found is not None:
            found.append(state)
        fixed.append(publisher.tag_ref(image, stage))
    return fixed


def sync(ledger: MoveLedger, publisher: Publisher, image: str | None = None) -> list[TagState]:
    """Republish every tag that differs from the ledger; returns the states that were fixed."""
    publisher.require()
    fixed = []
    for state in states(ledger, publisher, image):
        if state.drift is None:
            continue
        publish(ledger, publisher, state.pointer.image, [state.pointer.stage])
        fixed.append(state)
    return fixed
