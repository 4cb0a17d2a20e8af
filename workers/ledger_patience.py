"""Waiting out a ledger outage inside the task, before giving the message back to Celery.

A worker that cannot reach the database at claim time must not ack its message (the chunk
would wait for the sweeper) nor turn it at once into a delayed Celery retry: each retry is an
ETA message the worker holds in memory, and it fetches the next one, so an outage would drain
the whole queue into every worker. Waiting here holds one message (prefetch 1); the rest
stay in Redis, in order.
"""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from schemas.errors import SchemaVersionError

log = logging.getLogger("sluice.worker")
T = TypeVar("T")
OUTAGE = (DBAPIError, PoolTimeout, ConnectionError)


def patiently(what: str, call: Callable[[], T], deadline: float) -> T:
    """`call()`, tried again with backoff (0.5 s, doubling to 8 s) while the database cannot
    be reached, until `deadline` (time.monotonic()); then the last error is raised."""
    pause = 0.5
    while True:
        try:
            return call()
        except SchemaVersionError:
            raise
        except OUTAGE as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning("%s: the ledger cannot be reached (%s); trying again", what, exc)
            time.sleep(min(pause, left))  # an outage has no event to wait on
            pause = min(pause * 2, 8.0)
