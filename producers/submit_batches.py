"""An input of any size as batches of items ready to record (issue 16): the task's
`prepare_batch` on each, storable content, keys unique within the batch (across batches the
ledger's index keeps them so: storage/receiving.py), and the task's `check_input` once the
input has ended. Nothing here holds more than one batch; a generator of items stays one."""

import contextlib
import gc
from collections.abc import Iterable, Iterator
from itertools import islice, repeat
from operator import attrgetter, contains
from typing import Any

from schemas.errors import SluiceError
from schemas.jobs import Item, check_unique_keys
from schemas.storable import MAX_KEY_CHARS, storable_items
from schemas.task_spec import InputSeen, TaskSpec

RECEIVE_BATCH = 10_000  # items per transaction of a job written while `receiving`
OTHER_FIELDS = attrgetter(
    "path", "data", "record", "fields", "messages", "options"
)  # what a plain text item lacks


def prepared_batches(
    spec: TaskSpec, params: dict[str, Any], items: Iterable[Item], size: int = RECEIVE_BATCH
) -> Iterator[list[Item]]:
    """The items in lists of at most `size`, as the job records them. The end-of-input
    check raises (SluiceError) after the last batch is yielded: a caller writing batches as
    they come removes what it wrote (Client._record_and_send)."""
    with heap_frozen():
        yield from _prepared(spec, params, iter(items), size)


def _prepared(
    spec: TaskSpec, params: dict[str, Any], it: Iterator[Item], size: int
) -> Iterator[list[Item]]:
    seen = InputSeen()
    first = 1  # the input's number of the batch's first item, for messages
    while batch := list(islice(it, size)):
        seen.add(batch)
        try:
            batch = spec.params.prepare_batch(params, batch)
        except ValueError as exc:
            raise SluiceError(f"task {spec.name!r}: {exc}") from None
        batch = storable_batch(batch, first)  # a row no database can store never reaches one
        keys = [item.key for item in batch]
        if len(set(keys)) < len(keys):
            check_unique_keys(batch)  # names them
        first += len(batch)
        yield batch
    try:
        spec.params.check_input(params, seen)
    except ValueError as exc:
        raise SluiceError(f"task {spec.name!r}: {exc}") from None


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """The objects alive now left out of the garbage collector's passes while an input is
    read (gc.freeze). Its items live a batch or two, long enough to reach the oldest
    generation, whose passes then walk every object of the process (modules, the ORM's
    registries) again and again: measured, 0.75 of the 2.3 CPU seconds of a 100,000-row
    submit, 0.3 frozen (issue 16). Nothing is kept alive by it: unfrozen at the end, they
    are collected as before."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def storable_batch(batch: list[Item], first: int) -> list[Item]:
    """storable_items(batch, first), whose checks of every item cost as much as reading it: a
    batch of plain items (a key, a text or why it is invalid, nothing else) is checked in a
    few passes at C speed instead, and passed as it is when nothing in it could be refused;
    any other batch, and one that could, goes to storable_items for its outcomes."""
    if any(map(any, map(OTHER_FIELDS, batch))):  # media, records or fields: their own checks
        return storable_items(batch, first)
    texts = [item.text if item.invalid is None else item.invalid for item in batch]
    if any(type(text) is not str for text in texts):  # a number, a list...: storable_items
        return storable_items(batch, first)
    keys = [item.key for item in batch]
    if max(map(len, keys), default=0) > MAX_KEY_CHARS or not storable_texts(keys + texts):
        return storable_items(batch, first)
    return batch


def storable_texts(texts: list[str]) -> bool:
    """No NUL character and no lone surrogate in any of the texts (schemas.storable's
    unstorable_text of each, none held twice in memory)."""
    if any(map(contains, texts, repeat("\x00"))):
        return False
    try:
        for text in texts:
            if not text.isascii():
                text.encode()
    except UnicodeEncodeError:
        return False
    return True


def batches_of(items: Iterable[Item], size: int = RECEIVE_BATCH) -> Iterator[list[Item]]:
    """Items already prepared (a retry's), in lists of at most `size`."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
