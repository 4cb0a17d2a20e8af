"""Finding the item that kills the model's process, so that it fails alone.

An item can crash the actor (a native library's segfault, an out-of-memory kill on one huge
input). Every chunk in flight on that actor then sees it die, and without isolation each
would be retried, kill it again with the culprit, and use up its attempts. Instead, a chunk
whose actor died is run again on a private actor (workers/runtime/actor_directory.py): whole
first (most chunks were only bystanders), then split in halves, then halves of the halves
that die again, at most ceil(log2 n) rounds, until the culprit is alone. An item is blamed
only when it killed a freshly restarted actor twice, alone; it ends `error` with the reason,
and every other item gets its real outcome.
"""

from collections.abc import Callable

from ray.exceptions import RayActorError

from schemas.jobs import Item, Outcome
from schemas.states import ItemStatus

ISOLATING = "isolating an item that kills the model's process"  # a released chunk's reason


def isolate(
    run: Callable[[list[Item]], list[Outcome]],
    ready: Callable[[], int],
    items: list[Item],
) -> list[Outcome]:
    """Outcomes for `items` in order, from `run` (a private actor), splitting around items
    whose processing kills it.

    `ready()` returns the actor's process id once it answers (after a death it restarts and
    reloads its model). Whether a failed call killed the process is judged by that id, not
    by the exception: Ray 2.60 reports a process that exits during a call as unavailable
    ("Socket closed"), the same as a call sent while it restarts, which no item caused."""

    def attempt(part: list[Item]) -> list[Outcome] | None:
        """The outcomes, or None when the process died while it ran this part."""
        while True:
            before = ready()
            try:
                return run(part)
            except RayActorError as exc:
                if exc.actor_init_failed:
                    raise
                if ready() != before:
                    return None
                # the same process still answers: a blip, the same part again

    def split(part: list[Item]) -> list[Outcome]:
        got = attempt(part)
        if got is not None:
            return got
        if len(part) > 1:
            middle = (len(part) + 1) // 2
            return split(part[:middle]) + split(part[middle:])
        got = attempt(part)  # twice alone, each time on a fresh process: it is this item
        if got is not None:
            return got
        return [
            Outcome(
                key=part[0].key,
                status=ItemStatus.ERROR,
                error="the model's process died while processing this item, alone, twice "
                "(found by splitting its chunk)",
            )
        ]

    return split(items)
