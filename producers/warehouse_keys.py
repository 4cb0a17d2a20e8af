"""The key column of a warehouse table, as item keys and back, exactly.

An item key is text (results.item_key); a source key may be an integer, text, a UUID, a
NUMERIC, a date, a time, a timestamp or bytes. Each key column gets one codec, chosen from
its type, or on SQLite from its type affinity, since SQLite stores what each row was given
rather than what the column declares. A codec turns the value the driver returned into text
and that text back into the same value, and checks that it does: a row whose key would not
come back equal is refused with a message naming the column, never written elsewhere.

The destination's key column is declared with the source column's own type and the key is
bound as the driver returned it (`StoredKey`), so the written-back key equals the source key
in the database's own comparison. Into another kind of database the key is converted to the
generic SQL type of its values; what cannot be converted exactly is refused up front."""

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, LargeBinary, Numeric, String, Time, Uuid
from sqlalchemy.engine import Dialect
from sqlalchemy.types import NullType, TypeDecorator, TypeEngine

from schemas.errors import UnusableKeyError
from schemas.storable import MAX_KEY_CHARS

KEY_TYPES = (
    "use a key column of integers, text, UUIDs, NUMERIC/DECIMAL, dates, times, timestamps or bytes"
)
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
INTEGER = re.compile(r"[+-]?\d+")
SQLITE_EXACT_DIGITS = 15  # SQLite keeps a NUMERIC value as a REAL: 15 significant digits


def _number_or_text(text: str) -> int | float | str:
    """SQLite's NUMERIC affinity: a value is an INTEGER, a REAL, or text that reads as no
    number (SQLite itself turns number-like text into a number)."""
    if INTEGER.fullmatch(text):
        return int(text)
    return float(text) if NUMBER.fullmatch(text) else text


def _sqlite_text(value: int | float | str) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class KeyCodec:
    column: str
    declared: str  # the column's type as its database declares it, for messages
    python: type  # what its values are, generically (int for INTEGER, Decimal for NUMERIC)
    holds: str  # what its values are, in words
    accepts: tuple[type, ...]  # the types the driver may return for one row's key
    to_text: Callable[[Any], str]
    from_text: Callable[[str], Any]
    affinity: str | None = None  # SQLite only

    def encode(self, value: Any) -> str:
        """The item key for a key read from the source; UnusableKeyError if it would not come
        back exactly. None (SQL NULL) is the caller's to handle."""
        if isinstance(value, bool) or not isinstance(value, self.accepts):
            raise UnusableKeyError(
                f"key column {self.column!r} ({self.declared}) holds {_shown(value)}, "
                f"not {self.holds}"
            )
        text = self.to_text(value)
        try:
            back = self.from_text(text)
        except (ValueError, ArithmeticError):
            back = None
        if type(back) is not type(value) or back != value:
            raise UnusableKeyError(
                f"key column {self.column!r} ({self.declared}): the key {_shown(value)} "
                "would not come back as it is"
            )
        if len(text) > MAX_KEY_CHARS:
            raise UnusableKeyError(
                f"key column {self.column!r}: a key is {len(text)} characters long as text; "
                f"keys are limited to {MAX_KEY_CHARS}"
            )
        return text

    def decode(self, text: str) -> Any:
        """The source's value of an item key made by `encode`."""
        return self.from_text(text)


def _shown(value: Any) -> str:
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40]}{'...' if len(shown) > 40 else ''}"


CODECS: dict[type, tuple[str, tuple[type, ...], Callable[[Any], str], Callable[[str], Any]]] = {
    int: ("an integer", (int,), str, int),
    str: ("text", (str,), _same, _same),
    uuid.UUID: ("a UUID", (uuid.UUID,), str, uuid.UUID),
    Decimal: ("a NUMERIC value", (Decimal,), str, Decimal),
    dt.datetime: ("a timestamp", (dt.datetime,), dt.datetime.isoformat, dt.datetime.fromisoformat),
    dt.date: ("a date", (dt.date,), dt.date.isoformat, dt.date.fromisoformat),
    dt.time: ("a time of day", (dt.time,), dt.time.isoformat, dt.time.fromisoformat),
    bytes: ("bytes", (bytes,), bytes.hex, bytes.fromhex),
}


def sqlite_affinity(declared: str) -> str:
    """The affinity SQLite gives a column declared `declared` (sqlite.org/datatype3.html)."""
    name = declared.upper()
    if "INT" in name:
        return "INTEGER"
    if any(word in name for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in name or not name:
        return "BLOB"
    if any(word in name for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def key_codec(column: Any, dialect: Dialect) -> KeyCodec:
    """The codec of a reflected key column; UnusableKeyError, naming the column and its
    type, when its values could not come back exactly."""
    type_ = column.type
    if isinstance(type_, NullType):
        raise UnusableKeyError(
            f"key column {column.name!r} has no declared type, so its values may be of any "
            f"kind; {KEY_TYPES}"
        )
    declared = type_.compile(dialect=dialect)
    try:
        python = type_.python_type
    except NotImplementedError:
        python = object
    why = {
        float: "approximate numbers do not come back exactly",
        bool: "true/false is no key",
    }.get(python, "not a type whose values come back exactly as text")
    if python not in CODECS:
        raise UnusableKeyError(
            f"key column {column.name!r} is {declared}: {why}; {KEY_TYPES}, "
            "or choose another --key-column"
        )
    if dialect.name == "sqlite":
        affinity = sqlite_affinity(declared)
        by_affinity = {"INTEGER": int, "TEXT": str, "BLOB": bytes}
        if affinity in by_affinity:
            holds, accepts, to_text, from_text = CODECS[by_affinity[affinity]]
        elif affinity == "NUMERIC":  # numbers and text, as each row was given them
            holds, accepts, to_text, from_text = (
                "a number or text",
                (int, float, str),
                _sqlite_text,
                _number_or_text,
            )
        else:
            raise UnusableKeyError(
                f"key column {column.name!r} is {declared} (REAL on SQLite): approximate "
                f"numbers do not come back exactly; {KEY_TYPES}"
            )
        return KeyCodec(column.name, declared, python, holds, accepts, to_text, from_text, affinity)
    holds, accepts, to_text, from_text = CODECS[python]
    return KeyCodec(column.name, declared, python, holds, accepts, to_text, from_text)


class StoredKey(TypeDecorator[Any]):
    """A key column declared as `stored` whose values are bound and read exactly as the
    driver gives them: the key written back is the value the source row holds."""

    impl = NullType
    cache_ok = True

    def __init__(self, stored: TypeEngine[Any]) -> None:
        super().__init__()
        self.stored = stored

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(self.stored)

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


def dest_key_type(
    codec: KeyCodec, source_type: TypeEngine[Any], source: Dialect, dest: Dialect
) -> TypeEngine[Any]:
    """The destination's key column type. Same kind of database: the source's own type
    (integers BIGINT and text VARCHAR(512), as they always were), values as stored. Another
    kind: the generic SQL type of the values; UnusableKeyError where that is not exact."""
    if source.name == dest.name:
        if codec.python is int and codec.affinity in (None, "INTEGER"):
            return StoredKey(BigInteger())
        if codec.python is str:
            return StoredKey(String(MAX_KEY_CHARS))
        return StoredKey(source_type)
    refuse = (
        f"key column {codec.column!r} ({codec.declared} on {source.name}) cannot be written "
        f"to a {dest.name} database exactly"
    )
    if codec.affinity == "NUMERIC":
        raise UnusableKeyError(
            f"{refuse}: SQLite holds numbers and text in it as each row was given them; write "
            "back into the source database (no --dest-url), or use an INTEGER or TEXT key"
        )
    if codec.python is Decimal:
        precision, scale = (
            getattr(source_type, "precision", None),
            getattr(source_type, "scale", None),
        )
        if dest.name == "sqlite" and not (precision and precision <= SQLITE_EXACT_DIGITS):
            raise UnusableKeyError(
                f"{refuse}: SQLite keeps at most {SQLITE_EXACT_DIGITS} significant digits of a "
                "NUMERIC; write back into the source database (no --dest-url)"
            )
        return Numeric(precision, scale, asdecimal=True)
    timezone = bool(getattr(source_type, "timezone", False))
    generic: dict[type, TypeEngine[Any]] = {
        int: BigInteger(),
        str: String(MAX_KEY_CHARS),
        uuid.UUID: Uuid(as_uuid=True),
        dt.datetime: DateTime(timezone=timezone),
        dt.date: Date(),
        dt.time: Time(timezone=timezone),
        bytes: LargeBinary(),
    }
    return generic[codec.python]


def same_kind(existing: TypeEngine[Any], wanted: TypeEngine[Any], dialect: Dialect) -> bool:
    """Whether an existing destination key column holds keys of the kind written to it."""
    wanted_type = wanted.stored if isinstance(wanted, StoredKey) else wanted
    if dialect.name == "sqlite":
        return sqlite_affinity(existing.compile(dialect=dialect)) == sqlite_affinity(
            wanted_type.compile(dialect=dialect)
        )
    try:
        return bool(existing.python_type is wanted_type.python_type)
    except NotImplementedError:
        return False
