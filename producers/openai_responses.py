"""Sluice's rows in the OpenAI API's shapes (issue 25): a chat completion, an embeddings
list, a batch output or error line, a batch object. Only shapes: nothing here reads the
ledger."""

import base64
import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.jobs import Item
from schemas.openai_requests import CHAT, split_key
from schemas.states import ItemStatus, JobStatus
from storage.ledger import EXPIRED, JobView
from storage.openai_batches import BatchRow

# A batch's status as OpenAI names it, from its job's. `finalizing` and `cancelling` pass in
# one transaction here (a job's end, a cancel), so a poll never sees them.
BATCH_STATUS = {
    JobStatus.RECEIVING: "validating",
    JobStatus.QUEUED: "in_progress",
    JobStatus.RUNNING: "in_progress",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.PARTIALLY_FAILED: "completed",
    JobStatus.FAILED: "completed",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.EXPIRED: "expired",
}
OUTPUT, ERRORS = "file-out-", "file-err-"  # ids of a batch's files, made from its id


def stamp(when: datetime | None) -> int | None:
    return int(when.timestamp()) if when else None


def stable_id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def chat_completion(row: dict[str, Any], model: str, created: int, job_id: str) -> dict[str, Any]:
    out = row["output"] or {}
    prompt, completion = int(out.get("prompt_tokens") or 0), int(out.get("completion_tokens") or 0)
    return {
        "id": stable_id("chatcmpl-", job_id, row["key"]),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": out.get("text", ""), "refusal": None},
                "logprobs": None,
                # a stop string ends a text as the model's own end does, in OpenAI's terms
                "finish_reason": "length" if out.get("finish_reason") == "length" else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "system_fingerprint": f"sluice-{row.get('model_version') or 'unknown'}",
    }


def vector(values: list[float], encoding: str) -> list[float] | str:
    """float: the numbers; base64: little-endian float32 bytes, as the official clients read."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def embeddings(rows: list[tuple[Item, dict[str, Any]]], model: str) -> dict[str, Any]:
    """One embeddings response from a request's rows (one per input, in order)."""
    tokens = sum(int((r["output"] or {}).get("tokens_used") or 0) for _, r in rows)
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": n,
                "embedding": vector(
                    r["output"]["embedding"], (item.options or {}).get("encoding_format", "float")
                ),
            }
            for n, (item, r) in enumerate(rows)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class Failure:
    """Why a request did not end ok. `status` None: the batch never ran it (expired,
    cancelled), which OpenAI writes as the line's `error`, not as a response."""

    status: int | None
    message: str
    code: str | None = None

    def body(self) -> dict[str, Any]:
        kind = "server_error" if (self.status or 500) >= 500 else "invalid_request_error"
        return error_body(self.message, kind, None, self.code)


def failure_of(
    pairs: list[tuple[Item, dict[str, Any] | None]], status: JobStatus
) -> Failure | None:
    """The first failure among a request's (item, row) pairs, or None when all ended ok."""
    failed = [r for _, r in pairs if r is None or r["status"] != ItemStatus.OK]
    if not failed:
        return None
    row = failed[0]
    if row is None or (row["status"] == ItemStatus.ERROR and str(row["error"]).startswith(EXPIRED)):
        if status == JobStatus.EXPIRED:
            message = "This request could not be executed before the completion window expired."
            return Failure(None, message, "batch_expired")
        return Failure(None, "The batch was cancelled first.", "batch_cancelled")
    return Failure(400 if row["status"] == ItemStatus.INVALID else 500, str(row["error"]))


def requests_of(
    items: Iterable[Item], rows: Iterable[dict[str, Any]]
) -> Iterator[tuple[str | None, list[tuple[Item, dict[str, Any] | None]]]]:
    """A batch's requests in input order: (custom_id, [(item, its row or None)]). Items and
    rows both come in input order; a row is missing where its chunk never ran."""
    row_iter = iter(rows)
    row = next(row_iter, None)
    current: str | None = None
    held: list[tuple[Item, dict[str, Any] | None]] = []
    for item in items:
        request = split_key(item.key).request(item.key)
        if held and request != current:
            yield split_key(current or "").custom_id, held
            held = []
        current = request
        mine = row if row is not None and row["key"] == item.key else None
        if mine is not None:
            row = next(row_iter, None)
        held.append((item, mine))
    if held:
        yield split_key(current or "").custom_id, held


def batch_lines(
    batch: BatchRow, view: JobView, requests: Iterable[tuple[str | None, list[Any]]], ok: bool
) -> Iterator[str]:
    """The output (`ok`) or error file's lines of a batch, as JSON text."""
    import json

    created = stamp(view.finished_at) or stamp(batch.created_at) or 0
    for custom_id, pairs in requests:
        failure = failure_of(pairs, view.status)
        if (failure is None) != ok:
            continue
        line_id = stable_id("batch_req_", batch.id, pairs[0][0].key)  # a request's own
        response: Any = None
        error = None
        if failure is None:
            if batch.endpoint == CHAT:
                body = chat_completion(pairs[0][1], batch.model, created, view.id)
            else:
                body = embeddings(pairs, batch.model)  # type: ignore[arg-type]
            response = {"status_code": 200, "request_id": line_id, "body": body}
        elif failure.status is None:
            error = {"code": failure.code, "message": failure.message}
        else:
            response = {"status_code": failure.status, "request_id": line_id,
                        "body": failure.body()}  # fmt: skip
        line = {"id": line_id, "custom_id": custom_id, "response": response, "error": error}
        yield json.dumps(line, ensure_ascii=False) + "\n"


def batch_object(batch: BatchRow, view: JobView, completed: int, failed: int) -> dict[str, Any]:
    status = BATCH_STATUS[view.status]
    ended = view.status.finished
    end = stamp(view.finished_at)
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": status,
        "output_file_id": OUTPUT + batch.id if ended and completed else None,
        "error_file_id": ERRORS + batch.id if ended and completed < batch.requests else None,
        "created_at": stamp(batch.created_at),
        "in_progress_at": stamp(batch.created_at) if status != "validating" else None,
        "expires_at": stamp(view.deadline_at),
        "finalizing_at": end if status == "completed" else None,
        "completed_at": end if status == "completed" else None,
        "failed_at": None,
        "expired_at": end if status == "expired" else None,
        "cancelling_at": stamp(batch.cancelled_at),
        "cancelled_at": end if status == "cancelled" else None,
        "request_counts": {"total": batch.requests, "completed": completed, "failed": failed},
        "usage": usage(view),
        "metadata": batch.metadata,
        # Sluice's own: the job behind the batch, for its rows, lineage and explanations
        "sluice_job_id": view.id,
    }


def usage(view: JobView) -> dict[str, Any] | None:
    if view.tokens is None:
        return None
    return {
        "input_tokens": view.tokens.prompt,
        "output_tokens": view.tokens.completion,
        "total_tokens": view.tokens.total,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
