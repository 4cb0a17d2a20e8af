"""API keys on every /v1 route (operator keys for the system view), and the request size
cap."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.apikeys import ApiKeyInfo

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="or X-API-Key")


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    api_key: Annotated[str | None, Depends(header_key)],
) -> ApiKeyInfo:
    """The caller's key (and so its tenant); 401 without a valid one."""
    key = credentials.credentials if credentials else api_key
    if not key:
        raise HTTPException(
            401,
            "missing API key: send 'Authorization: Bearer <key>' "
            "(create one with `sluice api-keys create --tenant T`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    info = request.app.state.sluice.keys.authenticate(key)
    if info is None:
        raise HTTPException(
            401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return info


def operator(info: Annotated[ApiKeyInfo, Depends(principal)]) -> ApiKeyInfo:
    """An operator's key; 403 for a tenant's (the system view is not a tenant's to see)."""
    if not info.operator:
        raise HTTPException(
            403,
            "this route needs an operator key (`sluice api-keys create --role operator`)",
        )
    return info


@dataclass(frozen=True)
class RouteCap:
    """A route's own body cap (an OpenAI batch file's upload): the setting that sets it,
    and its refusal in that surface's error shape."""

    max_bytes: int
    setting: str
    shape: Callable[[str], dict[str, Any]]


class BodyLimit:
    """413 for a body over the cap: at once from Content-Length, or while a chunked body
    streams in (the body is never read past the cap)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, by_path: dict[str, RouteCap] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.by_path = by_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        own = self.by_path.get(scope.get("path", ""))
        cap = own.max_bytes if own else self.max_bytes
        message = _message(cap, own.setting if own else None)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            await _too_large(send, own.shape(message) if own else {"detail": message})
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise HTTPException(413, _message(cap, own.setting if own else None))
            return message

        await self.app(scope, limited, send)


def _message(limit: int, setting: str | None) -> str:
    if setting:
        return f"request body over the cap of {limit} bytes ({setting})"
    return (
        f"request body over the cap of {limit} bytes (SLUICE_API_MAX_BODY_BYTES); "
        "split the job or use a SQL source"
    )


async def _too_large(send: Send, refusal: dict[str, Any]) -> None:
    import json

    body = json.dumps(refusal).encode()
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
