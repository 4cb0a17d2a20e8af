"""Who is signed in to the console, and the checks every console action passes.

Sign-in exchanges an API key for a session cookie (storage/console_sessions.py): HttpOnly
(no script reads it), SameSite=Strict (no other site's page sends it), Secure over HTTPS,
scoped to /console. Every action (a POST) must also carry the session's CSRF token in its
form; the sign-in form carries a one-off token doubled in a cookie of its own.
"""

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request, Response

from schemas.errors import NotSignedIn
from storage.apikeys import ApiKeyInfo
from storage.console_sessions import ConsoleSessions, SignedIn

SESSION_COOKIE = "sluice_console"
SIGN_IN_COOKIE = "sluice_console_sign_in"
COOKIE_PATH = "/console"


def sessions(request: Request) -> ConsoleSessions:
    return request.app.state.console_sessions  # type: ignore[no-any-return]


def visitor(request: Request) -> SignedIn:
    signed = sessions(request).lookup(request.cookies.get(SESSION_COOKIE))
    if signed is None:
        raise NotSignedIn()
    return signed


Visitor = Annotated[SignedIn, Depends(visitor)]


@dataclass(frozen=True)
class Action:
    """A console action that passed its CSRF check."""

    key: ApiKeyInfo
    csrf: str


def action(signed: Visitor, csrf: Annotated[str, Form()] = "") -> Action:
    if not hmac.compare_digest(csrf.encode(), signed.csrf.encode()):
        raise HTTPException(403, "this form has expired or came from elsewhere: reload the page")
    return Action(signed.key, signed.csrf)


CheckedAction = Annotated[Action, Depends(action)]


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def with_sign_in_token(request: Request, response: Response, token: str) -> Response:
    """The sign-in form's one-off token (new_token()), doubled in its own cookie: a form
    posted from another site cannot sign a browser in with the attacker's key."""
    set_cookie(response, request, SIGN_IN_COOKIE, token, max_age=3600)
    return response


def sign_in_token(request: Request) -> str:
    """The browser's sign-in token if it has one (several sign-in tabs share it), else new."""
    return request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(24)


def sign_in_token_matches(request: Request, given: str) -> bool:
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())
