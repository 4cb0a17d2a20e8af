"""`sluice api` serves the REST API (producers/api) and, beside it, the console at `/`.

create_site(settings) -> FastAPI   # what `sluice api` runs
"""

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from ops.console import job_pages, jobs_pages, model_pages, sign_in, system_page
from producers.api import create_app
from producers.client import Client
from schemas.errors import NotSignedIn
from schemas.settings import Settings
from storage.console_sessions import ConsoleSessions
from storage.job_insight import JobInsight

HERE = Path(__file__).parent
# Scripts only from this server, no inline script, no framing; style attributes stay allowed
# (attribution colours are inline styles), images may be data: URIs (heatmaps).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ConsoleHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        if request.url.path == "/" or request.url.path.startswith("/console"):
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
        return response


def create_site(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    app = create_app(settings, client)
    install_console(app)
    return app


def install_console(app: FastAPI) -> None:
    engine = app.state.sluice.client.ledger.engine
    app.state.console_sessions = ConsoleSessions(engine)
    app.state.console_insight = JobInsight(engine)
    app.state.console_templates = Jinja2Templates(directory=HERE / "templates")
    app.add_middleware(ConsoleHeaders)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for router in (
        sign_in.router,
        jobs_pages.router,
        job_pages.router,
        model_pages.router,
        system_page.router,
    ):
        app.include_router(router, include_in_schema=False)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/console/jobs", status_code=303)

    async def sign_in_first(request: Request, _exc: Exception) -> Response:
        # a page goes to the sign-in page; a script's request (the progress poll) gets 401,
        # never a sign-in page that would renew the sign-in form's token under another tab
        if request.headers.get("sec-fetch-mode", "navigate") != "navigate" or (
            request.url.path.endswith(".json")
        ):
            return JSONResponse({"detail": "signed out: sign in again"}, status_code=401)
        return RedirectResponse("/console/sign-in", status_code=303)

    app.add_exception_handler(NotSignedIn, sign_in_first)
