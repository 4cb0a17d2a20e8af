"""One clock for every lease: the database's.

Hosts' clocks drift apart. If each compared leases with its own, a sweeper running 25 s ahead
would take live chunks from healthy workers, and after three rounds dead-letter them. So every
lease write and comparison (chunks, training runs) uses the time of the database that stores
the leases. SQLite is the embedded, one-host ledger: its time is the host's.
"""

from datetime import UTC, datetime
from typing import overload

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def host_now() -> datetime:
    """This host's time: only for what no other host compares (display, elapsed times)."""
    return datetime.now(UTC)


def db_now(s: Session | Connection) -> datetime:
    """The database's time now (clock_timestamp, not the transaction's start: a transaction
    that waited on a lock must not write a lease that is already partly spent)."""
    bind = s.get_bind() if isinstance(s, Session) else s
    if bind.dialect.name == "postgresql":
        value = s.scalar(text("SELECT clock_timestamp()"))
        assert isinstance(value, datetime)
        return utc(value) or value
    return host_now()
