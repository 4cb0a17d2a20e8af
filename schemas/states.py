"""Every state and outcome Sluice reports, defined once with its meaning. Exports, the
warehouse write-back, metrics, the report and every front door read them from here; a new
one (a row flag such as `truncated` or `cached`, a job state such as `expired`) is added here,
with its meaning, by the change that introduces it."""

from enum import StrEnum


class Described(StrEnum):
    """A state whose meaning is part of its definition (`.meaning`), for docs and UIs."""

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


class JobStatus(Described):
    RECEIVING = "receiving"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.RECEIVING, JobStatus.QUEUED, JobStatus.RUNNING)

    @property
    def admitted(self) -> bool:
        """Counted against its tenant's limit and lanes: every input received, not ended."""
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)


class ChunkState(Described):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in (ChunkState.DONE, ChunkState.DEAD, ChunkState.CANCELLED, ChunkState.EXPIRED)


class ItemStatus(Described):
    OK = "ok"
    INVALID = "invalid"
    ERROR = "error"


class ExplanationStatus(Described):
    OK = "ok"
    FAILED = "failed"


class RunStatus(Described):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


class CallbackState(Described):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class EnrichRunState(Described):
    SUBMITTING = "submitting"
    RUNNING = "running"
    DONE = "done"


class ClaimOutcome(Described):
    """The ledger's answer to a worker asking for a chunk (storage.ledger.Claim)."""

    CLAIMED = "claimed"
    DONE = "done"
    BUSY = "busy"
    CANCELLED = "cancelled"
    MISSING = "missing"
    RECEIVING = "receiving"


class DeliveryOutcome(Described):
    """How one delivery of a chunk's message ended for the worker that took it, when it did
    not end in a claim outcome (the Celery task's return value, also in its log line)."""

    DONE = "done"
    DEAD = "dead"
    LEASE_LOST = "lease-lost"


class RowFlag(Described):
    """Facts an `ok` row's output lists under `flags`: the output stands, with a caveat."""

    MAX_NEW_TOKENS = "max_new_tokens"
    EMPTY = "empty"
    CAPPED = "capped"


class RowMark(Described):
    """Facts about how a row was made, kept beside its output (a column of `results`, a field
    of every row read back, exported and written back), never inside it."""

    CACHED = "cached"


class FinishReason(Described):
    STOP = "stop"
    STOP_STRING = "stop_string"
    LENGTH = "length"


MEANINGS: dict[Described, str] = {
    JobStatus.RECEIVING: "a large input is being written in batches; no chunk is sent or "
    "started until the last batch commits (a failed submit removes what it wrote)",
    JobStatus.QUEUED: "recorded and queued; no chunk has started",
    JobStatus.RUNNING: "at least one chunk started; not every item has its outcome yet",
    JobStatus.SUCCEEDED: "every item ended ok",
    JobStatus.PARTIALLY_FAILED: "finished; some items ok, some invalid or error",
    JobStatus.FAILED: "finished; no item ok",
    JobStatus.CANCELLED: "stopped by a user; unfinished chunks dropped, finished results kept",
    JobStatus.EXPIRED: "its deadline (--deadline; an OpenAI batch's completion window) passed "
    "first: finished rows kept, every unfinished row ended error with the reason `expired`",
    ChunkState.QUEUED: "waiting for a worker (re-sent by the sweeper if its message is lost)",
    ChunkState.RUNNING: "held by a worker under a lease it renews",
    ChunkState.DONE: "every item's outcome written, in one transaction",
    ChunkState.DEAD: "dead-lettered after its attempts: every item recorded as error",
    ChunkState.CANCELLED: "dropped when its job was cancelled",
    ChunkState.EXPIRED: "unfinished when its job's deadline passed: every item ended error "
    "(expired)",
    RowFlag.MAX_NEW_TOKENS: "generation stopped at max_new_tokens: the text may be cut short",
    RowFlag.EMPTY: "the model generated nothing: an empty text, which is a valid output",
    RowFlag.CAPPED: "max_new_tokens was lowered to what the model's positions leave after "
    "the prompt; the row's notes say by how much",
    RowMark.CACHED: "an ok row whose output (and explanation, where the job's policy picks "
    "the row) was stored by an earlier job of the same tenant with the same input, model "
    "digest, task parameters, explanation settings and redaction: the model did not run for "
    'it (turn the cache off per job with --no-cache, or "cache": false over REST)',
    FinishReason.STOP: "the model ended the text (its end-of-sequence token)",
    FinishReason.STOP_STRING: "a stop string was generated; the text ends before it",
    FinishReason.LENGTH: "max_new_tokens (or the model's positions) ran out",
    ItemStatus.OK: "processed; the row holds the output (and an explanation if asked)",
    ItemStatus.INVALID: "bad input, refused with a message saying what is wrong",
    ItemStatus.ERROR: "failed after retries, or dead-lettered with its chunk",
    ExplanationStatus.OK: "attributions computed; the convergence delta is stored with them",
    ExplanationStatus.FAILED: "the explanation failed; the prediction stands",
    RunStatus.QUEUED: "recorded and queued for a training worker",
    RunStatus.RUNNING: "training on Ray Train under a lease; progress per epoch",
    RunStatus.SUCCEEDED: "trained and registered as the model's next version",
    RunStatus.FAILED: "stopped with its reason (bad data, attempts used up, time limit)",
    RunStatus.CANCELLED: "stopped by a user after its current epoch; nothing registered",
    CallbackState.PENDING: "to be delivered (retried with backoff)",
    CallbackState.DELIVERED: "the receiver answered 2xx",
    CallbackState.FAILED: "given up after the maximum attempts",
    EnrichRunState.SUBMITTING: "rows read; its job is being recorded (a resume looks it up)",
    EnrichRunState.RUNNING: "its job is queued or done; results not all written back yet",
    EnrichRunState.DONE: "every result written back and the watermark moved",
    ClaimOutcome.CLAIMED: "this worker holds the chunk under a fresh lease; its items follow",
    ClaimOutcome.DONE: "the chunk was already done (a redelivered message): nothing to do",
    ClaimOutcome.BUSY: "another worker holds a live lease on the chunk",
    ClaimOutcome.CANCELLED: "the chunk's job was cancelled",
    ClaimOutcome.MISSING: "no such chunk (its job was erased)",
    ClaimOutcome.RECEIVING: "its job's input is still being written: nothing runs before "
    "the last batch commits (its chunks are sent then)",
    DeliveryOutcome.DONE: "every item's outcome written and the chunk marked done",
    DeliveryOutcome.DEAD: "dead-lettered: its attempts are used up, its items ended error",
    DeliveryOutcome.LEASE_LOST: "its lease ran out or its job was cancelled: another worker "
    "(or nobody) finishes it",
}
