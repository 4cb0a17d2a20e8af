"""A job's PII redaction policy (`--redact MODE`, `--redact-types T,...`), as recorded on the
job (params["redaction"]) and read by the producer, the worker and the result cache.

    none    nothing is looked for
    detect  the text is stored and processed as given; each row records what was found
            (field, type, character span), never the value
    mask    each value is replaced by its type (<EMAIL>, <PERSON>) before the model sees the
            text and before anything is stored
    hash    each value is replaced by a keyed token (<EMAIL:3f9a1c2b7d4e5f60>, HMAC-SHA256
            with the tenant's secret): equal values give equal tokens within a tenant

Pattern types are found by the producer before an item is written (storage/pii); names,
places and organisations by the entity model (SLUICE_PII_MODEL) in the worker, which replaces
the pending stored item with its redacted form in the completion transaction. A key that is
itself PII is hashed under `mask` as under `hash` (a mask would make keys collide)."""

from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from schemas.errors import SluiceError
from schemas.jobs import Item

# The redaction recorded on a job: {"mode", "types", "model"} (absent when `none`).
REDACTION_PARAM = "redaction"
# Found by the entity model in the worker; the others by patterns in the producer.
MODEL_TYPES = ("PERSON", "PLACE", "ORG")
# An entity model's labels, as taggers name them (CoNLL's PER/LOC, OntoNotes' GPE), to ours.
MODEL_LABELS = {
    "PERSON": "PERSON", "PER": "PERSON",
    "PLACE": "PLACE", "LOC": "PLACE", "LOCATION": "PLACE", "GPE": "PLACE",
    "ORG": "ORG", "ORGANIZATION": "ORG", "ORGANISATION": "ORG",
}  # fmt: skip


def model_type(label: str) -> str | None:
    """Our type of an entity model's label (B-/I- prefixes aside), or None."""
    return MODEL_LABELS.get(label.upper().removeprefix("B-").removeprefix("I-"))


class RedactMode(StrEnum):
    NONE = "none"
    DETECT = "detect"
    MASK = "mask"
    HASH = "hash"

    @property
    def replaces(self) -> bool:
        return self in (RedactMode.MASK, RedactMode.HASH)


class PiiModel(BaseModel):
    """The entity model the workers run for MODEL_TYPES, resolved at submit."""

    name: str
    version: str
    path: str


class Redaction(BaseModel):
    mode: RedactMode
    types: list[str]
    model: PiiModel | None = None  # set when `types` holds any of MODEL_TYPES

    @property
    def pattern_types(self) -> list[str]:
        return [t for t in self.types if t not in MODEL_TYPES]

    @property
    def model_types(self) -> list[str]:
        return [t for t in self.types if t in MODEL_TYPES]

    @classmethod
    def of_job(cls, params: dict[str, Any]) -> "Redaction | None":
        raw = params.get(REDACTION_PARAM)
        return cls.model_validate(raw) if raw else None


def parse_mode(text: str) -> RedactMode:
    try:
        return RedactMode(text.strip().lower())
    except ValueError:
        raise SluiceError(f"bad redaction mode {text!r}: use none, detect, mask or hash") from None


def parse_types(given: str | list[str] | None, known: tuple[str, ...]) -> list[str] | None:
    """`EMAIL,PHONE` or a list, checked against every known type (None: not given)."""
    if given is None:
        return None
    names = given.split(",") if isinstance(given, str) else list(given)
    wanted = [n.strip().upper() for n in names if n.strip()]
    if not wanted:
        raise SluiceError("--redact-types names no type; leave it out to act on every type")
    if unknown := sorted(set(wanted) - set(known)):
        raise SluiceError(f"unknown PII types {unknown}; known: {', '.join(known)}")
    return list(dict.fromkeys(wanted))


# Where a row's output carries text, per output shape: paths of keys, `*` for every element
# of a list, `**` for every string under it. Shapes absent here carry none (labels, vectors).
TEXT_OUTPUTS: dict[str, tuple[str, ...]] = {
    "transcript": ("text",),
    "generation": ("text", "json.**"),
    "answer": ("answer",),
    "entities": ("entities.*.text",),
    "fields": ("**",),
}

Path = tuple[str | int, ...]


def text_leaves(output: Any, patterns: tuple[str, ...]) -> list[tuple[Path, str]]:
    """The strings of `output` at `patterns` (TEXT_OUTPUTS), with their paths."""
    found: list[tuple[Path, str]] = []

    def walk(node: Any, parts: list[str], at: Path) -> None:
        if not parts:
            if isinstance(node, str):
                found.append((at, node))
            return
        head, rest = parts[0], parts[1:]
        if head == "**":
            if isinstance(node, str):
                found.append((at, node))
            elif isinstance(node, dict):
                for k, v in node.items():
                    walk(v, parts, (*at, k))
            elif isinstance(node, list):
                for n, v in enumerate(node):
                    walk(v, parts, (*at, n))
        elif head == "*" and isinstance(node, list):
            for n, v in enumerate(node):
                walk(v, rest, (*at, n))
        elif isinstance(node, dict) and head in node:
            walk(node[head], rest, (*at, head))

    for pattern in patterns:
        walk(output, pattern.split("."), ())
    return found


def put_leaf(output: Any, at: Path, value: str) -> None:
    node = output
    for part in at[:-1]:
        node = node[part]
    node[at[-1]] = value


def path_name(prefix: str, at: Path) -> str:
    return ".".join([prefix, *(str(p) for p in at)])


# -- an item's texts, named as in its findings ----------------------------------------------


def item_texts(item: Item) -> list[tuple[str, str]]:
    """(field, text) of every text an item carries: `text`, `fields.NAME`, `record.NAME` (the
    record's string values). The producer's patterns and the worker's entity model walk the
    same fields, and name them alike in the findings."""
    found = [("text", item.text)] if isinstance(item.text, str) else []
    found += [(f"fields.{k}", v) for k, v in (item.fields or {}).items()]
    found += [(f"record.{k}", v) for k, v in (item.record or {}).items() if isinstance(v, str)]
    return found


def with_texts(item: Item, texts: dict[str, str]) -> Item:
    """`item` with the texts named as item_texts names them replaced."""
    changes: dict[str, Any] = {}
    for field, value in texts.items():
        if field == "text":
            changes["text"] = value
            continue
        part, _, name = field.partition(".")
        holder = changes.setdefault(part, dict(getattr(item, part) or {}))
        holder[name] = value
    return item.model_copy(update=changes) if changes else item
