"""The REST API: FastAPI over the same Client the CLI and SDK use. `sluice api` serves it.

create_app(Settings()) -> FastAPI      # OpenAPI at /openapi.json, docs at /docs
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from producers.api import events, jobs, metrics
from producers.api.auth import BodyLimit
from producers.api.bodies import request_bodies
from producers.api.services import Services
from producers.client import Client
from schemas.errors import ConfigError, JobNotFoundError, SluiceError, TooManyItemsError
from schemas.settings import Settings
from schemas.storable import escaped_text
from storage.apikeys import ApiKeys
from storage.callback_ledger import Callbacks
from storage.tenancy import TenantReads

DESCRIPTION = """Submit batch jobs (inline items, a file upload or a SQL table) and single
events; follow them; fetch results as paginated JSON or streamed JSONL, CSV or Parquet.

Every `/v1` route needs an API key (`Authorization: Bearer <key>` or `X-API-Key`). A key
belongs to one tenant, which sees only its own jobs, results and models. Callbacks are signed:
`X-Sluice-Signature: sha256=<hex HMAC-SHA256 of the raw body under the key's secret>`."""


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
        request_bodies(client.catalog, settings.api_max_items),
    )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(metrics.router)
    _errors(app)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    jobs.document_request_bodies(app, app.state.sluice.bodies)
    return app


def _errors(app: FastAPI) -> None:
    def handler(status: int) -> Any:
        async def respond(_request: Request, exc: Exception) -> JSONResponse:
            # a message may quote the input (a column named "\ud800"): sent escaped
            return JSONResponse({"detail": escaped_text(str(exc))}, status_code=status)

        return respond

    app.add_exception_handler(JobNotFoundError, handler(404))
    app.add_exception_handler(TooManyItemsError, handler(413))
    app.add_exception_handler(ConfigError, handler(503))
    app.add_exception_handler(SluiceError, handler(400))
