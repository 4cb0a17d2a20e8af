"""An OpenAI-compatible surface at /openai/v1 (issue 25): Files and Batches for batch jobs
written against OpenAI's Batch API, and the synchronous /chat/completions and /embeddings
for small calls, each a one-request job on the same queues (batched with other traffic by
the Ray actor). Point the official client at it: `OpenAI(base_url=".../openai/v1",
api_key=<a Sluice API key>)`. Errors come in OpenAI's shape: {"error": {message, type,
param, code}}."""

import math
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from producers.api.events import job_after
from producers.api.params import Principal
from producers.api.problems import status_of
from producers.api.services import services
from producers.openai_responses import (
    chat_completion,
    embeddings,
    error_body,
    failure_of,
    requests_of,
    stamp,
)
from producers.openai_service import OpenAIBatchService, drawn_seed, file_json, page
from schemas.errors import (
    ModelNotFoundError,
    NotQueuedError,
    OpenAIRequestError,
    QuotaExceededError,
    SluiceError,
)
from schemas.openai_requests import CHAT, EMBEDDINGS, TASK_OF_ENDPOINT, body_model, request_items
from schemas.storable import escaped_text

PREFIX = "/openai/v1"
# Not in Sluice's /openapi.json: this surface's contract is OpenAI's API reference, and the
# official client (tests/integration/test_openai_api.py) holds it to that.
router = APIRouter(prefix=PREFIX, tags=["openai"], include_in_schema=False)
PIECE = 2**20
T = TypeVar("T")
SYNC_GRACE_S = 5  # a synchronous call's job ends this long after the caller stops waiting
# The official clients retry a 5xx (twice by default): a call that timed out, or a row that
# failed in the worker, would only run again as a new job.
NO_RETRY = {"x-should-retry": "false"}
SYNC_KEY = "request"  # the key of a synchronous call's item (its list's: request␞N)


def batch_service(request: Request) -> OpenAIBatchService:
    state = request.app.state
    if getattr(state, "openai", None) is None:
        state.openai = OpenAIBatchService(services(request).client)
    return state.openai  # type: ignore[no-any-return]


async def openai_error(_request: Request, exc: Exception) -> JSONResponse:
    """OpenAI's error shape, for every error of these routes."""
    if isinstance(exc, OpenAIRequestError):
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        body = error_body(escaped_text(str(exc)), kind, exc.param, exc.code)
        headers = NO_RETRY if exc.status >= 500 or exc.status == 409 else {}
        if exc.retry_after_s is not None:
            headers = {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse(body, status_code=exc.status, headers=headers)
    status = 429 if isinstance(exc, QuotaExceededError) else 400
    kind = "rate_limit_error" if status == 429 else "invalid_request_error"
    return JSONResponse(error_body(escaped_text(str(exc)), kind), status_code=status)


async def called(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the thread pool, any refusal of Sluice's as an OpenAI error."""
    try:
        return await run_in_threadpool(fn, *args)
    except OpenAIRequestError:
        raise
    except QuotaExceededError as exc:
        wait = max(0, int(getattr(exc, "retry_after_seconds", 1)))
        raise OpenAIRequestError(str(exc), None, "rate_limit_exceeded", 429, wait) from None
    except ModelNotFoundError as exc:
        raise OpenAIRequestError(str(exc), "model", "model_not_found", status=404) from None
    except SluiceError as exc:  # the status Sluice's own routes answer it with
        raise OpenAIRequestError(str(exc), status=status_of(exc)) from None


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise OpenAIRequestError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise OpenAIRequestError("the body must be a JSON object")
    return body


# -- files ---------------------------------------------------------------------------------
@router.post("/files")
async def upload_file(
    request: Request,
    key: Principal,
    file: UploadFile,
    purpose: Annotated[str, Form()],
) -> JSONResponse:
    """Upload a JSONL batch input (purpose `batch`), streamed into the store."""

    def pieces() -> Any:
        while piece := file.file.read(PIECE):
            yield piece

    svc = batch_service(request)
    stored = await called(
        svc.upload, key.tenant, purpose, file.filename or "upload.jsonl", pieces()
    )
    return JSONResponse(file_json(stored))


@router.get("/files/{file_id}")
async def get_file(request: Request, key: Principal, file_id: str) -> JSONResponse:
    svc = batch_service(request)
    return JSONResponse(await called(svc.file_object, key.tenant, file_id))


@router.get("/files/{file_id}/content")
async def file_content(request: Request, key: Principal, file_id: str) -> StreamingResponse:
    """The file's bytes, streamed (a batch's output and error files are read from its job's
    rows as they are sent)."""
    svc = batch_service(request)
    pieces = await called(svc.content, key.tenant, file_id)
    return StreamingResponse(pieces, media_type="application/jsonl")


@router.delete("/files/{file_id}")
async def delete_file(request: Request, key: Principal, file_id: str) -> JSONResponse:
    svc = batch_service(request)
    await called(svc.files.delete, key.tenant, file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


@router.get("/files")
async def list_files(
    request: Request,
    key: Principal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    purpose: str | None = None,
) -> JSONResponse:
    """A page of the tenant's files, newest first unless `order=asc`; `after`: a page's last."""
    svc = batch_service(request)
    found = await called(svc.files.listed, key.tenant, after, limit + 1, order == "desc", purpose)
    return JSONResponse(page([file_json(f) for f in found], limit))


# -- batches -------------------------------------------------------------------------------
@router.post("/batches")
async def create_batch(request: Request, key: Principal) -> JSONResponse:
    """One job for the input file's requests; its deadline is the completion window."""
    body = await _json(request)
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            raise OpenAIRequestError(f"{name} is required", name)
    svc = batch_service(request)
    batch = await called(
        svc.create,
        key.tenant,
        key.id,
        body["input_file_id"],
        body["endpoint"],
        body["completion_window"],
        body.get("metadata"),
    )
    return JSONResponse(batch)


@router.get("/batches/{batch_id}")
async def get_batch(request: Request, key: Principal, batch_id: str) -> JSONResponse:
    svc = batch_service(request)
    return JSONResponse(await called(svc.get, key.tenant, batch_id))


@router.get("/batches")
async def list_batches(
    request: Request,
    key: Principal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    svc = batch_service(request)
    return JSONResponse(await called(svc.listed, key.tenant, after, limit))


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, key: Principal, batch_id: str) -> JSONResponse:
    svc = batch_service(request)
    return JSONResponse(await called(svc.cancel, key.tenant, batch_id))


# -- synchronous calls ---------------------------------------------------------------------
async def _one_request(request: Request, key: Any, endpoint: str) -> tuple[Any, list[Any]]:
    """Run one request as a job and wait for it (up to SLUICE_API_MAX_WAIT): its job and
    [(item, row)]."""
    body = await _json(request)
    model = body_model(body)
    items = request_items(endpoint, SYNC_KEY, body, drawn_seed())
    svc = services(request)

    def submit() -> str:
        try:
            return svc.client.submit_items(
                items,
                TASK_OF_ENDPOINT[endpoint],
                model=model,
                tenant=key.tenant,
                api_key_id=key.id,
                source=f"openai {endpoint}",
                # a call given up on (504) does not run on for nobody
                deadline=math.ceil(svc.settings.api_max_wait) + SYNC_GRACE_S,
            )
        except NotQueuedError as exc:  # recorded: the sweeper sends it; the call waits on
            return exc.record_id

    job_id = await called(submit)
    view = await job_after(svc, key.tenant, job_id, svc.settings.api_max_wait)
    if not view.status.finished:
        raise OpenAIRequestError(
            f"not finished within {svc.settings.api_max_wait:g}s (SLUICE_API_MAX_WAIT); "
            f"its job {job_id} ends `expired` at the next sweep: GET /v1/jobs/{job_id}",
            code="timeout",
            status=504,
        )
    rows = await run_in_threadpool(lambda: list(svc.client.results(job_id)))
    ((_, pairs),) = requests_of(items, rows)  # the call's one request
    if (failure := failure_of(pairs, view.status)) is not None:
        raise OpenAIRequestError(failure.message, code=failure.code, status=failure.status or 500)
    return view, pairs


@router.post("/chat/completions")
async def chat_completions(request: Request, key: Principal) -> JSONResponse:
    """A chat completion from a local generator (the `generate` task), with `usage`."""
    view, pairs = await _one_request(request, key, CHAT)
    created = stamp(view.finished_at) or int(time.time())
    return JSONResponse(chat_completion(pairs[0][1], view.model, created, view.id))


@router.post("/embeddings")
async def create_embeddings(request: Request, key: Principal) -> JSONResponse:
    """Embeddings of a string or a list (the `embed` task), float or base64."""
    view, pairs = await _one_request(request, key, EMBEDDINGS)
    return JSONResponse(embeddings(pairs, view.model))


def register(app: Any) -> None:
    """The routes, and OpenAI's error shape for every refusal under PREFIX (a missing key,
    a malformed query) as for the routes' own."""
    app.include_router(router)
    app.add_exception_handler(OpenAIRequestError, openai_error)
    for kind, default in (
        (StarletteHTTPException, http_exception_handler),
        (RequestValidationError, request_validation_exception_handler),
    ):
        app.add_exception_handler(kind, shaped(default))


def shaped(default: Any) -> Any:
    async def respond(request: Request, exc: Exception) -> Any:
        if not request.url.path.startswith(PREFIX + "/"):
            return await default(request, exc)
        if isinstance(exc, RequestValidationError):
            first = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
            message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid"
            return JSONResponse(error_body(message, "invalid_request_error", where), 400)
        status = getattr(exc, "status_code", 500)
        kind = "authentication_error" if status == 401 else "invalid_request_error"
        body = error_body(escaped_text(str(getattr(exc, "detail", exc))), kind)
        return JSONResponse(body, status, headers=getattr(exc, "headers", None))

    return respond
