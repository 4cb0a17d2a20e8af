"""PII redaction at the front door: every door's items pass here (Client._submit) before
anything is written. Pattern types (storage/pii: Presidio's recognisers with their checksums)
are found and, under mask/hash, replaced here; names, places and organisations are left to
the worker's entity model (workers/pii_stage.py). schemas/redaction.py says what each mode
does."""

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import Engine

from schemas.errors import PiiModelMissingError, SluiceError
from schemas.jobs import Item
from schemas.redaction import (
    MODEL_TYPES,
    PiiModel,
    Redaction,
    RedactMode,
    item_texts,
    parse_mode,
    parse_types,
    with_texts,
)
from storage import pii
from storage.tenant_secrets import tenant_secret

# Said in each row a hashed key is found in: how its owner joins results back to its rows.
KEY_JOIN = "the key is stored hashed: `sluice pii key --tenant TENANT ORIGINAL` prints it"
NEEDS_MODEL = (
    "{types} are found by the entity model, which is not configured: set SLUICE_PII_MODEL "
    "to an extract-entities model (the demo's: `sluice models build tiny-entities`, then "
    "SLUICE_PII_MODEL=.sluice/models/tiny-entities), or name only pattern types with "
    "--redact-types ({patterns})"
)


def job_redaction(
    mode: str | None,
    types: str | list[str] | None,
    pii_model: Callable[[], PiiModel | None],
) -> Redaction | None:
    """The policy a job records, or None for `none`. `mode` None: `detect` when types are
    named (naming them asks for them to be looked for), else `none`. `pii_model`: the
    configured entity model, resolved (only called when model types are wanted)."""
    named = parse_types(types, (*pii.PATTERN_TYPES, *MODEL_TYPES))
    chosen = parse_mode(mode) if mode is not None else RedactMode.NONE
    if mode is None and named is not None:
        chosen = RedactMode.DETECT
    if chosen is RedactMode.NONE:
        if named is not None:
            raise SluiceError("--redact none acts on no type: drop --redact-types")
        return None
    wanted = named or [*pii.PATTERN_TYPES, *MODEL_TYPES]
    model = None
    if by_model := [t for t in wanted if t in MODEL_TYPES]:
        model = pii_model()
        if model is None:
            raise PiiModelMissingError(
                NEEDS_MODEL.format(types=", ".join(by_model), patterns=",".join(pii.PATTERN_TYPES))
            )
    return Redaction(mode=chosen, types=wanted, model=model)


class ItemRedactor:
    """One job's pattern redaction of its items: their text, their other text fields, their
    records' string values, an invalid item's message and their key."""

    def __init__(self, redaction: Redaction, secret: bytes, redact_keys: bool = True) -> None:
        self.mode = redaction.mode
        self.types = redaction.pattern_types
        self.secret = secret
        # `sluice enrich` writes results back by the source table's own keys: kept as they are
        self.redact_keys = redact_keys

    def params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The job's parameters with their texts redacted (mask, hash): a question, a prompt
        template, labels."""
        if not self.mode.replaces:
            return params

        def walk(value: Any, at: str) -> Any:
            if isinstance(value, str):
                return self.text(value, at, [])
            if isinstance(value, list):
                return [walk(v, at) for v in value]
            if isinstance(value, dict):
                return {k: walk(v, f"{at}.{k}") for k, v in value.items()}
            return value

        return {k: walk(v, f"params.{k}") for k, v in params.items()}

    def __call__(self, item: Item) -> Item:
        found: list[dict[str, Any]] = []
        texts = {field: self.text(value, field, found) for field, value in item_texts(item)}
        changes: dict[str, Any] = {}
        if item.invalid:
            changes["invalid"] = self.text(item.invalid, "invalid", found)
        if self.redact_keys:
            changes["key"] = self.key(item.key, found)
        if not found:
            return item
        if not self.mode.replaces:
            return item.model_copy(update={"redactions": found})
        return with_texts(item, texts).model_copy(update={**changes, "redactions": found})

    def text(self, value: str, field: str, found: list[dict[str, Any]]) -> str:
        spans = pii.find_patterns(value, self.types) if self.types else []
        if not spans:
            return value
        new, findings = pii.redact(value, spans, self.mode.value, self.secret)
        found.extend({**f, "field": field} for f in findings)
        return new

    def key(self, key: str, found: list[dict[str, Any]]) -> str:
        """A key that holds PII is hashed under mask as under hash: masks would collide."""
        spans = pii.find_patterns(key, self.types) if self.types else []
        if not spans:
            return key
        mode = RedactMode.HASH if self.mode.replaces else RedactMode.DETECT
        new, findings = pii.redact(key, spans, mode.value, self.secret)
        join = {"join": KEY_JOIN} if self.mode.replaces else {}
        found.extend({**f, "field": "key", **join} for f in findings)
        return new


def redacted_batches(batches: Iterable[list[Item]], redactor: ItemRedactor) -> Iterator[list[Item]]:
    return ([redactor(item) for item in batch] for batch in batches)


def stored_key(engine: Engine, key: str, tenant: str) -> str:
    """What `key` is stored as by a job of `tenant` under `--redact mask` or `hash` (`sluice
    pii key`): the key its results are found under, for joining them back to the source."""
    redaction = Redaction(mode=RedactMode.HASH, types=list(pii.PATTERN_TYPES))
    return ItemRedactor(redaction, tenant_secret(engine, tenant)).key(key, [])
