"""An input of any size as batches of items ready to record (issue 16): the task's
`prepare_batch` on each, storable content, keys unique within the batch (across batches the
ledger's index keeps them so: storage/receiving.py), and the task's `check_input` once the
input has ended. Nothing here holds more than one batch; a generator of items stays one."""

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from schemas.errors import SluiceError
from schemas.jobs import Item, check_unique_keys
from schemas.storable import storable_items
from schemas.task_spec import InputSeen, TaskSpec

RECEIVE_BATCH = 10_000  # items per transaction of a job written while `receiving`


def prepared_batches(
    spec: TaskSpec, params: dict[str, Any], items: Iterable[Item], size: int = RECEIVE_BATCH
) -> Iterator[list[Item]]:
    """The items in lists of at most `size`, as the job records them. The end-of-input
    check raises (SluiceError) after the last batch is yielded: a caller writing batches as
    they come removes what it wrote (Client._record_and_send)."""
    seen = InputSeen()
    it = iter(items)
    first = 1  # the input's number of the batch's first item, for messages
    while batch := list(islice(it, size)):
        seen.add(batch)
        try:
            batch = spec.params.prepare_batch(params, batch)
        except ValueError as exc:
            raise SluiceError(f"task {spec.name!r}: {exc}") from None
        batch = storable_items(batch, first)  # a row no database can store never reaches one
        check_unique_keys(batch)
        first += len(batch)
        yield batch
    try:
        spec.params.check_input(params, seen)
    except ValueError as exc:
        raise SluiceError(f"task {spec.name!r}: {exc}") from None


def batches_of(items: Iterable[Item], size: int = RECEIVE_BATCH) -> Iterator[list[Item]]:
    """Items already prepared (a retry's), in lists of at most `size`."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
