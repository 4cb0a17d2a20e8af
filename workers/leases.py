"""Keeping a lease while work runs: a chunk's (workers/chunk_task.py) or a training run's
(workers/training/run_task.py). Only a dead worker's lease expires."""

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("sluice.worker")


class LeaseKeeper:
    """Renews a lease (a chunk's, a training run's) while it runs, so only a dead worker's
    lease expires. `renew` returns False once there is nothing left to keep."""

    def __init__(
        self,
        renew: Callable[[], bool],
        seconds: float,
        what: str,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """`on_lost` is called (from this keeper's thread) when the lease is gone: the work
        it covers is someone else's now, or cancelled, and should stop."""
        self.renew, self.seconds, self.what, self.on_lost = renew, seconds, what, on_lost
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.seconds / 3):
            try:
                if not self.renew():  # finished elsewhere, taken over or cancelled
                    if self.on_lost is not None and not self.stop.is_set():
                        log.warning("%s: lease lost; stopping its work", self.what)
                        self.on_lost()
                    return
            except Exception:  # a database hiccup: try again at the next tick
                log.warning("%s: lease renewal failed", self.what, exc_info=True)

    def __enter__(self) -> "LeaseKeeper":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
