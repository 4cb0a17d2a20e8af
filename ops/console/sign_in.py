"""Signing in to the console with an API key, and out."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ops.console.guard import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    CheckedAction,
    sessions,
    set_cookie,
    sign_in_token,
    sign_in_token_matches,
    with_sign_in_token,
)
from ops.console.render import page
from storage.console_sessions import SESSION_HOURS

router = APIRouter(prefix="/console")


def _form(request: Request, error: str | None = None, status: int = 200) -> Response:
    token = sign_in_token(request)
    response = page(request, "sign_in.html", None, status_code=status, error=error, token=token)
    return with_sign_in_token(request, response, token)


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request) -> Response:
    return _form(request)


@router.post("/sign-in", response_model=None)
def sign_in(
    request: Request,
    api_key: Annotated[str, Form(max_length=200)] = "",
    token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    if not sign_in_token_matches(request, token):
        return _form(request, "The sign-in form expired or came from elsewhere: try again.", 403)
    sessions(request).sign_out(request.cookies.get(SESSION_COOKIE))  # the browser's last one
    session = sessions(request).sign_in(api_key.strip())
    if session is None:
        return _form(request, "Unknown or revoked API key.", 401)
    response = RedirectResponse("/console/jobs", status_code=303)
    set_cookie(response, request, SESSION_COOKIE, session.token, max_age=SESSION_HOURS * 3600)
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


@router.post("/sign-out")
def sign_out(request: Request, _checked: CheckedAction) -> RedirectResponse:
    sessions(request).sign_out(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response
