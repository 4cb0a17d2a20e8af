"""What `sluice listen` keeps and how it waits: its figures, and retries with backoff."""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from schemas.errors import BusError

log = logging.getLogger("sluice.listen")
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before each retry; the last repeats
LATENCIES_KEPT = 100_000  # recorded -> published of the last events, for the exit line
T = TypeVar("T")


@dataclass
class ListenerStats:
    consumed: int = 0
    recorded: int = 0
    repeated: int = 0  # redeliveries recognised by the inbox
    published: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    reconnects: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))

    def summary(self) -> dict[str, object]:
        """The counts, and recorded -> published in ms (p50, p99) over the last events."""
        lat = sorted(self.latencies)
        shown: dict[str, object] = {k: v for k, v in self.__dict__.items() if k != "latencies"}
        if lat:
            shown["publish_p50_ms"] = round(1000 * lat[len(lat) // 2], 1)
            shown["publish_p99_ms"] = round(1000 * lat[min(len(lat) - 1, len(lat) * 99 // 100)], 1)
        return shown


async def retrying(
    what: str,
    step: Callable[[], Awaitable[T]],
    stop: asyncio.Event | None = None,
    on_error: Callable[[], Awaitable[Any]] | None = None,
) -> T:
    """`step()` until it returns, waiting out BusErrors with backoff (raises CancelledError
    once `stop` is set). `on_error` runs after each failure (e.g. reconnect a sink)."""
    attempt = 0
    while True:
        try:
            return await step()
        except BusError as exc:
            wait = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            attempt += 1
            log.warning("%s: %s; again in %.1f s", what, exc, wait)
        if on_error is not None:
            with contextlib.suppress(Exception):
                await on_error()
        if stop is None:
            await asyncio.sleep(wait)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        if stop.is_set():
            raise asyncio.CancelledError


async def in_thread(what: str, fn: Callable[..., T], *args: Any) -> T:
    """A ledger call off the event loop; a failure (an outage) is a BusError, retried."""
    try:
        return await asyncio.to_thread(fn, *args)
    except Exception as exc:
        raise BusError(f"{what}: {type(exc).__name__}: {str(exc)[:300]}") from exc
