"""Job, item and result shapes, statuses and explanation policies."""

import hashlib
from typing import Any

from pydantic import BaseModel, Field

from schemas.errors import DuplicateKeysError, SluiceError
from schemas.states import ExplanationStatus, ItemStatus, JobStatus


class Item(BaseModel):
    """One unit of work as stored in a chunk. `invalid` is set when the producer already knows.

    Media travel by reference (claim check): `path` is a file under an input root, checked
    again by the worker; `data` is small inline base64. Never the bytes in a Celery message."""

    key: str
    text: Any = None
    path: str | None = None
    data: str | None = None
    # An object-store `path`'s ETag or version when it was submitted: a changed object is
    # refused, not processed in place of the one submitted.
    stamp: str | None = None
    record: dict[str, Any] | None = None
    # a text item's other fields, for tasks that read them (a prompt template's {title})
    fields: dict[str, str] | None = None
    invalid: str | None = None
    # What redaction found in it (schemas/redaction.py): {field, type, start, end, by}
    redactions: list[dict[str, Any]] | None = None
    # A conversation for a chat model ({role, content} turns, read with its chat template)
    # in place of `text`, and this item's own values of the task's row parameters
    # (TaskParams.row_params: an OpenAI batch line's max_tokens, temperature, seed...).
    messages: list[dict[str, str]] | None = None
    options: dict[str, Any] | None = None


class Explanation(BaseModel):
    method: str
    target: str | None = None
    tokens: list[str] = Field(default_factory=list)
    attributions: list[float] = Field(default_factory=list)
    convergence_delta: float | None = None
    status: ExplanationStatus = ExplanationStatus.OK
    error: str | None = None
    # Modality-specific shape of the attributions: an image grid's rows and columns, audio
    # segment boundaries in seconds, a record's values, baseline and top features.
    detail: dict[str, Any] | None = None


class Outcome(BaseModel):
    """What happened to one item: the row written to `results`."""

    key: str
    status: ItemStatus
    output: dict[str, Any] | None = None
    error: str | None = None
    explanation: Explanation | None = None
    # RowMark.CACHED: an `ok` row taken from the tenant's result cache; the model did not run
    cached: bool = False
    # A cached row's output as the cache holds it (JSON text): copied into its row unparsed
    # (an embedding's floats are not decoded and encoded again); `output` is then None.
    stored_output: str | None = None
    # What redaction found in the item and its output (schemas/redaction.py)
    redactions: list[dict[str, Any]] | None = None
    # The keyed digest of the input the model read (the worker's; storage/lineage.py)
    input_digest: str | None = None


# The job parameter that turns the result cache off for one job (`--no-cache`, REST
# `"cache": false`): recorded as `false`, absent when the cache is on (the default).
RESULT_CACHE_PARAM = "result_cache"


def cache_enabled(params: dict[str, Any]) -> bool:
    """Whether a job with these parameters may take rows from its tenant's result cache."""
    return params.get(RESULT_CACHE_PARAM, True) is not False


class JobSpec(BaseModel):
    task: str
    model: str
    model_version: str
    params: dict[str, Any] = Field(default_factory=dict)
    explain: str = "none"
    priority: int = Field(5, ge=0, le=9)
    source: str | None = None
    # Front doors: who owns the job, where to report its end, what it retries.
    tenant: str = "default"
    api_key_id: str | None = None
    callback_url: str | None = None
    parent_job_id: str | None = None
    idempotency_key: str | None = None
    # What makes its rows, as of submit (producers/model_refs.job_lineage; storage/lineage.py)
    lineage: dict[str, Any] | None = None
    # Seconds its data is kept after it ends (schemas/retention.py); None: until purged
    retention_s: int | None = None
    # Seconds from submit after which its unfinished rows end `expired` (the sweeper)
    deadline_s: int | None = None


class JobCounts(BaseModel):
    total: int
    ok: int = 0
    invalid: int = 0
    error: int = 0
    cached: int = 0  # of the `ok` ones: taken from the result cache (RowMark.CACHED)

    @property
    def processed(self) -> int:
        return self.ok + self.invalid + self.error


def job_status_for(counts: JobCounts) -> JobStatus:
    """The status a finished job must report: `succeeded` only when every item is ok."""
    if counts.ok == counts.total:
        return JobStatus.SUCCEEDED
    if counts.ok == 0:
        return JobStatus.FAILED
    return JobStatus.PARTIALLY_FAILED


class ExplainPolicy(BaseModel):
    """`none`, `all`, `sample:RATE` (0..1) or `low-confidence:THRESHOLD` (0..1)."""

    kind: str
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "ExplainPolicy":
        name, _, arg = text.strip().partition(":")
        if name in ("none", "all") and not arg:
            return cls(kind=name)
        if name in ("sample", "low-confidence") and arg:
            try:
                value = float(arg)
            except ValueError:
                value = -1.0
            if 0.0 <= value <= 1.0:
                return cls(kind=name, value=value)
        raise SluiceError(
            f"bad explain policy {text!r}: use none, all, sample:RATE or "
            "low-confidence:THRESHOLD with a number between 0 and 1"
        )

    def wants(self, job_id: str, key: str, confidence: float | None) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "sample":
            # Deterministic per item, so a retried chunk explains the same items.
            digest = hashlib.sha256(f"{job_id}/{key}".encode()).digest()
            return int.from_bytes(digest[:8], "big") / 2**64 < self.value
        if self.kind == "low-confidence":
            return confidence is not None and confidence < self.value
        return False


def text_problem(text: Any, column: str, cap: int) -> str | None:
    """Why this text cannot be processed, or None. Checked at submit and again in the worker."""
    if text is None:
        return f"missing text column {column!r}"
    if not isinstance(text, str):
        return f"text column {column!r} holds {type(text).__name__}, expected a string"
    if not text.strip():
        return "empty text"
    if len(text) > cap:
        return f"text is {len(text)} characters, over the cap of {cap} (SLUICE_MAX_TEXT_CHARS)"
    return None


def messages_problem(messages: list[dict[str, str]], cap: int) -> str | None:
    """Why a chat's turns (Item.messages) cannot be processed, or None: text_problem's
    checks over the turns together. Checked at submit and again in the worker."""
    size = sum(len(m.get("content", "")) for m in messages)
    if size > cap:
        return f"the messages hold {size} characters, over the cap of {cap}"
    if not any(m.get("content", "").strip() for m in messages):
        return "the messages hold no text"
    return None


def check_unique_keys(items: list["Item"]) -> None:
    """Every item of a job needs its own key (results are keyed by it): DuplicateKeysError
    naming the repeated ones. Checked at every front door and again by the ledger."""
    seen: set[str] = set()
    dupes: dict[str, None] = {}
    for item in items:
        if item.key in seen:
            dupes[item.key] = None
        seen.add(item.key)
    if dupes:
        raise DuplicateKeysError(list(dupes))
