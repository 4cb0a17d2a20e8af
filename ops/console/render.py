"""What console pages share: the templates, and a page rendered for a signed-in visitor."""

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from producers.api.services import Services, services
from storage.console_sessions import SignedIn


def templates(request: Request) -> Jinja2Templates:
    return request.app.state.console_templates  # type: ignore[no-any-return]


def page(
    request: Request, name: str, signed: SignedIn | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return templates(request).TemplateResponse(
        request,
        name,
        {"signed": signed, "csrf": signed.csrf if signed else "", **context},
        status_code=status_code,
    )


def svc(request: Request) -> Services:
    return services(request)
