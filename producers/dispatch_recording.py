"""A Dispatcher that records what it is asked to send and sends nothing, as dramatiq's
StubBroker or httpx's MockTransport do: for tests, and for anything that records jobs without
a broker (the sweeper sends them once one answers).

    dispatcher = RecordingDispatcher()
    client = Client(settings, dispatcher=dispatcher)
    job_id = client.submit_texts(["a", "b", "c"], task="embed")
    dispatcher.chunk_ids                   # every chunk id sent, in order
    dispatcher.sends[0].lane               # and each send's queue, lane and priority
    dispatcher.fail()                      # from now on every send raises, as an unreachable
                                           # broker does: the job is recorded, not queued
"""

from collections.abc import Iterable
from dataclasses import dataclass

UNREACHABLE = "the broker did not answer (RecordingDispatcher.fail)"


@dataclass(frozen=True)
class ChunkSend:
    """One send of chunks: `lane` is None for a send to an exact queue (send_chunks, the
    sweeper's), else `queue` is the job's modality queue and `lane` its fair-share lane."""

    chunk_ids: tuple[str, ...]
    queue: str
    lane: int | None
    priority: int


class RecordingDispatcher:
    """Implements producers.dispatch.Dispatcher; a send that fails records nothing."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.sends: list[ChunkSend] = []
        self.training_runs: list[str] = []
        self.failure = failure  # raised by every send while set

    @property
    def chunk_ids(self) -> list[str]:
        """Every chunk id sent so far, in the order sent."""
        return [chunk_id for send in self.sends for chunk_id in send.chunk_ids]

    def fail(self, error: Exception | None = None) -> None:
        """Make every send from now on raise `error` (default: a ConnectionError)."""
        self.failure = error or ConnectionError(UNREACHABLE)

    def recover(self) -> None:
        """Sends succeed again."""
        self.failure = None

    def clear(self) -> None:
        """Forget what was sent."""
        self.sends.clear()
        self.training_runs.clear()

    def send_job_chunks(
        self, chunk_ids: Iterable[str], queue: str, lane: int, priority: int = 5
    ) -> int:
        return self._record(ChunkSend(tuple(chunk_ids), queue, lane, priority))

    def send_chunks(self, chunk_ids: Iterable[str], queue: str, priority: int = 5) -> int:
        return self._record(ChunkSend(tuple(chunk_ids), queue, None, priority))

    def send_training(self, run_id: str) -> None:
        if self.failure is not None:
            raise self.failure
        self.training_runs.append(run_id)

    def on_send(self, send: ChunkSend) -> None:
        """Called after each send of chunks is recorded. Nothing here; a subclass may act on
        it (a test's inline worker completes the chunks through the ledger)."""

    def _record(self, send: ChunkSend) -> int:
        if self.failure is not None:
            raise self.failure
        self.sends.append(send)
        self.on_send(send)
        return len(send.chunk_ids)
