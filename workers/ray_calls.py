"""A chunk's calls to model actors, tracked so that they can be taken back.

Without this, a worker that stops waiting (the chunk's time limit, a lost lease, a cancelled
job) leaves the actor computing for nobody, holding the model for other chunks. Cancelling
the Ray task stops it: the actor's `process` is a coroutine, so Ray raises CancelledError in
it, and items of it still waiting in the batcher are dropped before they are run.
"""

import threading
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, TaskCancelledError

from schemas.errors import WorkCancelled


class ActorCalls:
    """`deadline` (time.monotonic()) comes before Celery's own soft and hard limits: only a
    wait that ends on its own can cancel the work (a signal cannot interrupt `ray.get`)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.cancelled = False
        # Set when the items ran on a private CPU actor (isolating one that killed the shared
        # actor): outputs made on another device and precision than the shared actor's, which
        # the result cache must not keep under the shared actor's key.
        self.isolated = False
        self._refs: set[Any] = set()
        self._lock = threading.Lock()

    def get(self, ref: Any) -> Any:
        """The call's result, within what is left of the chunk's time limit."""
        with self._lock:
            if self.cancelled:
                ray.cancel(ref)
                raise WorkCancelled("the chunk's work was cancelled")
            self._refs.add(ref)
        try:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise GetTimeoutError("the chunk's time limit ran out")
            return ray.get(ref, timeout=left)
        except TaskCancelledError as exc:
            if self.cancelled:
                raise WorkCancelled("the chunk's work was cancelled") from exc
            raise
        except BaseException:  # a timeout, a signal: nobody waits for it any more
            ray.cancel(ref)
            raise
        finally:
            with self._lock:
                self._refs.discard(ref)

    def cancel(self) -> None:
        """Called from the lease keeper's thread when the lease is lost or the job cancelled."""
        with self._lock:
            self.cancelled = True
            refs = list(self._refs)
        for ref in refs:
            ray.cancel(ref)
