"""The OpenAI-compatible Batch API over Sluice's jobs (issue 25): a batch is one job whose
items are its input file's requests (a bad line an `invalid` item), with the batch's
completion window as the job's deadline. Its output and error files are read from the job's
rows when asked for, never stored twice."""

import secrets
from collections.abc import Iterator
from itertools import chain
from typing import Any

from producers.client import Client
from producers.openai_responses import (
    BATCH_STATUS,
    ERRORS,
    OUTPUT,
    batch_lines,
    batch_object,
    requests_of,
    stamp,
)
from schemas.errors import NotQueuedError, OpenAIRequestError
from schemas.jobs import Item, messages_problem
from schemas.openai_requests import TASK_OF_ENDPOINT, BatchLines
from schemas.retention import tenant_limit_s
from schemas.states import JobStatus
from storage import tables as t
from storage.ledger import JobView
from storage.openai_batches import BatchRow, OpenAIBatches
from storage.openai_files import OpenAIFiles, StoredFile, lines_of

WINDOW = "24h"  # the only completion window OpenAI takes
WINDOW_S = 86_400
MAX_METADATA = 16  # OpenAI's: pairs, each key up to 64 characters and value up to 512


def drawn_seed() -> int:
    """The seed of a batch's (or a call's) sampled requests that bring none of their own."""
    return secrets.randbelow(2**31)


def checked_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if (
        not isinstance(metadata, dict)
        or len(metadata) > MAX_METADATA
        or not all(isinstance(k, str) and len(k) <= 64 for k in metadata)
        or not all(isinstance(v, str) and len(v) <= 512 for v in metadata.values())
    ):
        raise OpenAIRequestError(
            f"metadata must be at most {MAX_METADATA} string pairs (keys up to 64 characters, "
            "values up to 512)",
            "metadata",
        )
    return metadata


class OpenAIBatchService:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.settings = client.settings
        engine = client.ledger.engine
        self.files = OpenAIFiles(engine, client.store, self.settings.openai_files_uri)
        self.batches = OpenAIBatches(engine)

    # -- files ------------------------------------------------------------------------------
    def upload(self, tenant: str, purpose: str, filename: str, pieces: Any) -> StoredFile:
        if purpose != "batch":
            raise OpenAIRequestError("purpose must be batch", "purpose")
        return self.files.save(
            tenant,
            purpose,
            filename,
            pieces,
            self.settings.openai_max_file_bytes,
            tenant_limit_s(self.settings, tenant),
        )

    def file_object(self, tenant: str, file_id: str) -> dict[str, Any]:
        if (batch := self._batch_of_file(tenant, file_id)) is not None:
            size = sum(len(line.encode()) for line in self._lines(batch, file_id))
            made = StoredFile(file_id, tenant, "batch_output", f"{file_id}.jsonl", size,
                              batch.created_at, None, None)  # fmt: skip
            return file_json(made)
        return file_json(self.files.get(tenant, file_id))

    def content(self, tenant: str, file_id: str) -> Iterator[bytes]:
        if (batch := self._batch_of_file(tenant, file_id)) is not None:
            return (line.encode() for line in self._lines(batch, file_id))
        return self.files.content(self.files.get(tenant, file_id))

    def _batch_of_file(self, tenant: str, file_id: str) -> BatchRow | None:
        for prefix in (OUTPUT, ERRORS):
            if file_id.startswith(prefix):
                return self.batches.get(tenant, file_id.removeprefix(prefix))
        return None

    def _lines(self, batch: BatchRow, file_id: str) -> Iterator[str]:
        view = self.client.ledger.job(batch.job_id)
        if not view.status.finished:
            raise OpenAIRequestError(f"{file_id} is written when its batch ends", status=404)
        items = self.client.ledger.iter_items(batch.job_id)
        rows = self.client.ledger.iter_results(batch.job_id)
        return batch_lines(batch, view, requests_of(items, rows), file_id.startswith(OUTPUT))

    # -- batches ----------------------------------------------------------------------------
    def create(
        self,
        tenant: str,
        api_key_id: str | None,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Any = None,
    ) -> dict[str, Any]:
        if endpoint not in TASK_OF_ENDPOINT:
            raise OpenAIRequestError(
                f"endpoint must be one of {', '.join(TASK_OF_ENDPOINT)}", "endpoint"
            )
        if completion_window != WINDOW:
            raise OpenAIRequestError(f"completion_window must be {WINDOW}", "completion_window")
        metadata = checked_metadata(metadata)
        stored = self.files.get(tenant, input_file_id)
        if stored.purpose != "batch":
            raise OpenAIRequestError(f"{input_file_id} is not a batch input", "input_file_id")
        batch_id = f"batch_{secrets.token_hex(12)}"
        lines = BatchLines(endpoint, drawn_seed())
        items = self._items(stored, lines)
        ahead: list[Item] = []
        for item in items:  # up to the first line that names the model
            ahead.append(item)
            if lines.model is not None:
                break
        if lines.model is None:
            first = ahead[0].invalid if ahead else "the file holds no request"
            raise OpenAIRequestError(f"no line of {input_file_id} is a usable request: {first}")
        try:
            job_id = self.client.submit_items(
                chain(ahead, items),
                TASK_OF_ENDPOINT[endpoint],
                model=lines.model,
                tenant=tenant,
                api_key_id=api_key_id,
                source=f"openai batch {batch_id}",
                deadline=self.settings.openai_completion_window_s or WINDOW_S,
            )
        except NotQueuedError as exc:  # recorded: the sweeper sends it once the broker answers
            job_id = exc.record_id
        row = self.batches.add(
            t.OpenAIBatch(
                id=batch_id, tenant=tenant, job_id=job_id, input_file_id=input_file_id,
                endpoint=endpoint, completion_window=completion_window, model=lines.model,
                batch_metadata=metadata, requests=lines.requests,
            )
        )  # fmt: skip
        return self.describe(row)

    def _items(self, stored: StoredFile, lines: BatchLines) -> Iterator[Item]:
        cap, chars = self.settings.openai_max_requests, self.settings.max_text_chars
        longest = self.settings.openai_max_line_bytes
        for count, line in enumerate(lines_of(self.files.content(stored), longest), 1):
            if count > cap:
                raise OpenAIRequestError(
                    f"the file holds over {cap} requests (SLUICE_OPENAI_MAX_REQUESTS): split it",
                    "input_file_id",
                )
            n = line.number
            made = lines.too_long(n, longest) if line.too_long else lines.items(line.data, n)
            for item in made:
                # the messages' cap, as a text's (SLUICE_MAX_TEXT_CHARS), at submit
                if item.messages and (problem := messages_problem(item.messages, chars)):
                    item = Item(key=item.key, invalid=f"line {n}: {problem}")
                yield item

    def describe(self, batch: BatchRow) -> dict[str, Any]:
        view = self.client.ledger.job(batch.job_id)
        return batch_object(batch, view, *self.request_counts(batch, view))

    def request_counts(self, batch: BatchRow, view: JobView) -> tuple[int, int]:
        """(completed, failed), by the rule of the output and error files: from the job's
        counts when every request is one item; else from its rows' keys, counted once more
        after the job ended and kept."""
        if batch.settled is not None:
            return batch.settled
        ended = view.status.finished
        if view.counts.total == batch.requests:
            ok, bad = view.counts.ok, view.counts.invalid + view.counts.error
            counts = (ok, batch.requests - ok if ended else bad)
        else:
            counts = self.batches.outcomes(batch, ended)
        if ended:
            self.batches.settle(batch.id, *counts)
        return counts

    def get(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return self.describe(self.batches.get(tenant, batch_id))

    def listed(self, tenant: str, after: str | None, limit: int) -> dict[str, Any]:
        rows = self.batches.listed(tenant, after, limit + 1)
        return page([self.describe(r) for r in rows[:limit]], limit, len(rows) > limit)

    def cancel(self, tenant: str, batch_id: str) -> dict[str, Any]:
        """Unfinished requests are dropped; what finished is kept (its output file). A batch
        that has ended is refused (409)."""
        batch = self.batches.get(tenant, batch_id)
        view = self.client.status(batch.job_id)
        if view.status is JobStatus.CANCELLED:  # asked again: the same answer
            return self.describe(batch)
        if not view.status.finished:
            view = self.client.cancel(batch.job_id)  # ends it unless it ended first
        if view.status is not JobStatus.CANCELLED:
            raise OpenAIRequestError(
                f"batch {batch_id} has already ended ({BATCH_STATUS[view.status]})",
                "batch_id",
                "batch_not_cancellable",
                status=409,
            )
        self.batches.mark_cancelled(batch_id)
        return self.describe(self.batches.get(tenant, batch_id))


def page(data: list[dict[str, Any]], limit: int, more: bool | None = None) -> dict[str, Any]:
    """A list in OpenAI's cursor shape; `data` may hold one item past the page (`more`)."""
    more = len(data) > limit if more is None else more
    data = data[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


def file_json(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": stored.bytes,
        "created_at": stamp(stored.created_at),
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "expires_at": stamp(stored.expires_at),
    }
