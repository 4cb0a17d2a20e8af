"""The REST API: FastAPI over the same Client the CLI and SDK use. `sluice api` serves it.

create_app(Settings()) -> FastAPI      # OpenAPI at /openapi.json, docs at /docs
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from producers.api import events, job_control, jobs, metrics, openai_api, operator, usage
from producers.api.auth import BodyLimit, RouteCap
from producers.api.openapi_doc import publish_request_bodies
from producers.api.problems import STATUS_OF
from producers.api.services import Services
from producers.api.task_bodies import task_bodies
from producers.client import Client
from producers.openai_responses import error_body
from schemas.settings import Settings
from schemas.storable import escaped_text
from storage.apikeys import ApiKeys
from storage.callback_ledger import Callbacks
from storage.tenancy import TenantReads

DESCRIPTION = """Submit batch jobs (inline items, a file upload or a SQL table) and single
events; follow them; fetch results as paginated JSON or streamed JSONL, CSV or Parquet.

Every `/v1` route needs an API key (`Authorization: Bearer <key>` or `X-API-Key`). A key
belongs to one tenant, which sees only its own jobs, results and models. Callbacks are signed
per Standard Webhooks (https://www.standardwebhooks.com): `webhook-id` (the same on every retry:
dedupe by it), `webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{raw body}" keyed with the bytes of the key's callback
secret>`; with the `standardwebhooks` package, `Webhook("whsec_" + base64(secret))` verifies.
A `callback_url` must be http(s) and reach a public address."""


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    client = client or Client(settings)
    settings = client.settings
    engine = client.ledger.engine
    app = FastAPI(title="Sluice", version="1", description=DESCRIPTION)
    app.state.sluice = Services(
        settings,
        client,
        ApiKeys(engine),
        TenantReads(engine),
        Callbacks(engine),
        task_bodies(client.catalog, settings),
    )
    upload = RouteCap(  # a batch input file: OpenAI's cap, with room for the multipart
        settings.openai_max_file_bytes + 2**16,
        "SLUICE_OPENAI_MAX_FILE_BYTES",
        lambda message: error_body(message, "invalid_request_error", "file", "file_too_large"),
    )
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.api_max_body_bytes,
        by_path={f"{openai_api.PREFIX}/files": upload},
    )
    app.include_router(jobs.router)
    app.include_router(job_control.router)
    app.include_router(events.router)
    app.include_router(metrics.router)
    app.include_router(usage.router)
    app.include_router(operator.router)
    _errors(app)
    openai_api.register(app)  # after _errors: its errors take OpenAI's shape

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    publish_request_bodies(app, app.state.sluice.bodies)
    return app


def _errors(app: FastAPI) -> None:
    def handler(status: int) -> Any:
        async def respond(_request: Request, exc: Exception) -> JSONResponse:
            # a message may quote the input (a column named "\ud800"): sent escaped
            return JSONResponse({"detail": escaped_text(str(exc))}, status_code=status)

        return respond

    async def quota(_request: Request, exc: Exception) -> JSONResponse:
        seconds = getattr(exc, "retry_after_seconds", 1)
        return JSONResponse(
            {"detail": escaped_text(str(exc))},
            status_code=429,
            headers={"Retry-After": str(max(0, int(seconds)))},
        )

    async def method_not_allowed(request: Request, _exc: Exception) -> JSONResponse:
        # Starlette's 405 names the methods of one route; a path served by several (GET and
        # POST /v1/jobs) allows them all.
        allowed = {
            method
            for route in app.routes
            if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
            for method in route.methods or ()
        }
        body: dict[str, Any] = {"detail": "Method Not Allowed"}
        if request.url.path.startswith(openai_api.PREFIX + "/"):
            body = error_body("Method Not Allowed", "invalid_request_error")
        return JSONResponse(body, status_code=405, headers={"Allow": ", ".join(sorted(allowed))})

    app.add_exception_handler(405, method_not_allowed)
    for kind, status in STATUS_OF:
        app.add_exception_handler(kind, quota if status == 429 else handler(status))
