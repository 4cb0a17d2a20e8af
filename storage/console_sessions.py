"""Console sign-ins: an API key exchanged for a session cookie (ops/console).

The cookie is a random token; only its SHA-256 is stored, with the key it stands for and a
CSRF token that every console action must send back. A session ends after its lifetime, when
signed out, or at once when its key is revoked (every lookup joins the live key), so
revoking a key also closes the consoles opened with it.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import sessionmaker

from storage import tables as t
from storage.apikeys import ApiKeyInfo, ApiKeys, key_info
from storage.clock import db_now

SESSION_HOURS = 8


@dataclass(frozen=True)
class ConsoleSession:
    token: str  # the cookie's value: given once, at sign-in
    csrf: str


@dataclass(frozen=True)
class SignedIn:
    key: ApiKeyInfo
    csrf: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleSessions:
    def __init__(self, engine: Engine, lifetime: timedelta = timedelta(hours=SESSION_HOURS)):
        self._keys = ApiKeys(engine)
        self._session = sessionmaker(engine)
        self._lifetime = lifetime

    def sign_in(self, api_key: str) -> ConsoleSession | None:
        """A new session for a live key; None for an unknown or revoked one."""
        info = self._keys.authenticate(api_key)
        if info is None:
            return None
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._session.begin() as s:
            now = db_now(s)
            s.execute(delete(t.ConsoleSession).where(t.ConsoleSession.expires_at < now))
            s.add(
                t.ConsoleSession(
                    token_hash=_hash(token),
                    key_id=info.id,
                    csrf=csrf,
                    created_at=now,
                    expires_at=now + self._lifetime,
                )
            )
        return ConsoleSession(token, csrf)

    def lookup(self, token: str | None) -> SignedIn | None:
        """Who a cookie signs in, while the session lasts and its key is not revoked."""
        if not token:
            return None
        with self._session() as s:
            row = s.execute(
                select(t.ConsoleSession, t.ApiKey)
                .join(t.ApiKey, t.ApiKey.id == t.ConsoleSession.key_id)
                .where(
                    t.ConsoleSession.token_hash == _hash(token),
                    t.ConsoleSession.expires_at > db_now(s),
                    t.ApiKey.revoked_at.is_(None),
                )
            ).first()
            if row is None:
                return None
            session, key = row
            return SignedIn(key_info(key), session.csrf)

    def sign_out(self, token: str | None) -> None:
        if token:
            with self._session.begin() as s:
                s.execute(
                    delete(t.ConsoleSession).where(t.ConsoleSession.token_hash == _hash(token))
                )
