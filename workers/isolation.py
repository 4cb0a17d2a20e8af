"""Finding the item that kills the model's process, so that it fails alone.

An item can crash the actor (a native library's segfault, an out-of-memory kill on one huge
input). Every chunk in flight on that actor then sees it die, and without isolation each
would be retried, kill it again with the culprit, and use up its attempts. Instead, a chunk
whose actor died is run again on a private actor (workers/runtime/actor_directory.py): whole
first (most chunks were only bystanders), then split in halves, then halves of the halves
that die again, at most ceil(log2 n) rounds, until the culprit is alone. It ends `error`
with the reason; every other item gets its real outcome.
"""

from collections.abc import Callable

from ray.exceptions import RayActorError

from schemas.jobs import Item, Outcome
from schemas.states import ItemStatus


def actor_died(exc: BaseException) -> bool:
    """The actor's process died while it worked (not: its model failed to load, which no
    item causes and a retry or the dead-letter handles)."""
    return isinstance(exc, RayActorError) and not exc.actor_init_failed


def isolate(run: Callable[[list[Item]], list[Outcome]], items: list[Item]) -> list[Outcome]:
    """Outcomes for `items` in order, from `run` (a private actor), splitting around items
    whose processing kills it."""
    try:
        return run(items)
    except RayActorError as exc:
        if not actor_died(exc):
            raise
        if len(items) == 1:
            first_line = (str(exc).splitlines() or [""])[0]
            return [
                Outcome(
                    key=items[0].key,
                    status=ItemStatus.ERROR,
                    error="the model's process died while processing this item, alone "
                    f"(found by splitting its chunk): {first_line}"[:1000],
                )
            ]
        middle = (len(items) + 1) // 2
        return isolate(run, items[:middle]) + isolate(run, items[middle:])
