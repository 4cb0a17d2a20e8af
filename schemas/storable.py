"""What a database can store, checked before it is asked to. PostgreSQL refuses NUL characters
in text and JSON, lone surrogates cannot be encoded as UTF-8, JSON has no NaN or infinity, and
a key is at most as wide as its column. A row that breaks one of these would fail the whole
transaction it is written in, and with it the chunk and, retried forever, the job: so items
are checked at submit, and outcomes again before they are written."""

import json
import math
from typing import Any

from schemas.errors import InputFileError
from schemas.jobs import Explanation, Item, Outcome
from schemas.states import ExplanationStatus, ItemStatus

MAX_KEY_CHARS = 512  # the width of results.item_key
MAX_METHOD_CHARS = 64  # the width of explanations.method
MAX_SHOWN = 5


def unstorable_text(value: str) -> str | None:
    """Why a database cannot store this text, or None."""
    if "\x00" in value:
        return "holds a NUL character (\\x00), which databases cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "holds characters that are not valid Unicode (lone surrogates)"
    return None


def shown_text(value: str, width: int = 60) -> str:
    """A value for a message: quoted, NUL and undecodable bytes escaped, long ones cut."""
    return repr(value[:width] + ("..." if len(value) > width else ""))


def escaped_text(value: str, undecodable: str = "backslashreplace") -> str:
    """Text from outside (a file name, a source description) made storable and still telling:
    NUL becomes `\\x00`, undecodable characters backslash escapes (or `?` with "replace")."""
    return value.replace("\x00", "\\x00").encode("utf-8", undecodable).decode("utf-8")


def clean_text(value: str) -> str:
    """A message with what no database stores replaced (never user data)."""
    return escaped_text(value, "replace")


def key_problem(key: str) -> str | None:
    if len(key) > MAX_KEY_CHARS:
        return f"is {len(key)} characters long; keys are limited to {MAX_KEY_CHARS}"
    return unstorable_text(key)


def storable_items(items: list[Item], first: int = 1) -> list[Item]:
    """The items, each one a database can store: a bad key refuses the input (a key is how a
    row is named, so it cannot be recorded as `invalid`); bad content makes that item
    `invalid`, with the reason and without the content. `first`: the number of the first
    item in the whole input (a batch of a larger one)."""
    bad_keys = [(n, item.key, problem) for n, item in enumerate(items, first)
                if (problem := key_problem(item.key))]  # fmt: skip
    if bad_keys:
        shown = "; ".join(f"item {n}: the key {shown_text(key)} {problem}"
                          for n, key, problem in bad_keys[:MAX_SHOWN])  # fmt: skip
        more = f" (and {len(bad_keys) - MAX_SHOWN} more)" if len(bad_keys) > MAX_SHOWN else ""
        raise InputFileError(f"keys that cannot be stored: {shown}{more}; fix or drop them")
    return [_storable_item(item) for item in items]


def _storable_item(item: Item) -> Item:
    if item.invalid is not None:
        problem = unstorable_text(item.invalid)
        return Item(key=item.key, invalid=clean_text(item.invalid)) if problem else item
    for field in ("text", "path", "data"):
        value = getattr(item, field)
        if value is not None and (problem := json_problem(value)):
            return Item(key=item.key, invalid=f"the {field} {problem}")
    if item.record is not None and (problem := json_problem(item.record)):
        return Item(key=item.key, invalid=f"the record {problem}")
    if item.fields is not None and (problem := json_problem(item.fields)):
        return Item(key=item.key, invalid=f"a field {problem}")
    for field in ("messages", "options"):  # a chat's turns, a row's own parameters
        value = getattr(item, field)
        if value is not None and (problem := json_problem(value)):
            return Item(key=item.key, invalid=f"the {field} {problem}")
    return item


def json_problem(value: Any) -> str | None:
    """Why a JSON column cannot hold this value (NaN, infinity, NUL...), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"holds {value}, which JSON cannot represent"
    if isinstance(value, str):
        return unstorable_text(value)
    if isinstance(value, dict):
        for k, v in value.items():
            if problem := (unstorable_text(str(k)) or json_problem(v)):
                return problem
    if isinstance(value, list | tuple):
        if _all_finite_numbers(value):
            return None
        for v in value:
            if problem := json_problem(v):
                return problem
    return None


def _all_finite_numbers(values: list[Any] | tuple[Any, ...]) -> bool:
    """Whether `values` are all finite numbers, at the cost of one sum (an embedding of 384
    floats: ~3 us against ~50 us item by item; a chunk's outputs are checked in the actor and
    again by the ledger). False, and the caller walks the list, when they are not all
    numbers (a string or a list fails the sum) or any is NaN or infinite (the sum is not
    finite; so is a sum that overflowed, which the walk then finds fine)."""
    try:
        return math.isfinite(sum(values))
    except (TypeError, OverflowError):  # not numbers, or an int too large for a float
        return False


def storable_outcome(outcome: Outcome) -> Outcome:
    """An outcome every database can write: an output it cannot hold makes the item `error`
    (the model gave NaN, say), an explanation it cannot hold becomes a failed explanation (the
    prediction stands), and messages are cleaned."""
    error = clean_text(outcome.error) if outcome.error else outcome.error
    if outcome.output is not None and (problem := json_problem(outcome.output)):
        return Outcome(key=outcome.key, status=ItemStatus.ERROR,
                       error=f"the model's output {problem}")  # fmt: skip
    explanation = outcome.explanation
    if explanation is not None:
        raw = explanation.model_dump(mode="python")
        if len(explanation.method) > MAX_METHOD_CHARS:
            explanation = Explanation(method=explanation.method[:MAX_METHOD_CHARS],
                                      status=ExplanationStatus.FAILED,
                                      error="the explanation's method name is over "
                                            f"{MAX_METHOD_CHARS} characters")  # fmt: skip
        elif problem := json_problem(raw):
            explanation = Explanation(method=explanation.method, target=None,
                                      status=ExplanationStatus.FAILED,
                                      error=f"the explanation {problem}")  # fmt: skip
    return outcome.model_copy(update={"error": error, "explanation": explanation})


def strict_json(value: Any) -> str:
    """JSON as every reader accepts it: NaN and infinity (in rows stored before these checks)
    are written as null."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
