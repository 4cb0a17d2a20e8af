"""A job's results as the SDK, exports and write-backs read them: rows of selected columns
(tuples, not ORM objects: a million rows cost a third of the time), in today's shape."""

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Text, and_, case, cast, func, literal, select, type_coerce
from sqlalchemy.orm import Session

from storage import json_codec
from storage import tables as t

EMBEDDING = "embedding"
EMBEDDING_FIRST = '{"embedding":['  # how json_codec writes an output whose first key it is

RESULT_FIELDS = (
    "item_key", "status", "output", "error", "cached", "redactions", "input_digest", "chunk_id",
)  # fmt: skip
EXPLANATION_FIELDS = (
    "method", "target", "tokens", "attributions", "convergence_delta", "status", "error",
    "detail",
)  # fmt: skip
# labelled: `status` and `error` are names of both tables
EXPLANATION_COLUMNS = tuple(
    getattr(t.Explanation, name).label(f"explanation_{name}") for name in EXPLANATION_FIELDS
)


class _Prefixed:
    """An explanation's fields read from a row of RESULT_FIELDS and EXPLANATION_COLUMNS."""

    def __init__(self, row: Any) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, f"explanation_{name}")


_ROWS_OWN = object()  # result_row's `output` when not given: the result's own


def selected_result_row(row: Any, output: Any = _ROWS_OWN) -> dict[str, Any]:
    """result_row of a row of RESULT_FIELDS and EXPLANATION_COLUMNS (`output`: in place of
    the row's, which is then never read: it may be the JSON text)."""
    expl = _Prefixed(row) if row.explanation_method is not None else None
    return result_row(row, expl, output)


def result_row(result: Any, expl: Any | None, output: Any = _ROWS_OWN) -> dict[str, Any]:
    """A result as the SDK and exports give it, from a Result and its Explanation, or objects
    with their fields; `output` in place of the result's, if given."""
    row: dict[str, Any] = {
        "key": result.item_key,
        "status": result.status,
        "output": current_output(result.output if output is _ROWS_OWN else output),
        "error": result.error,
    }
    if result.cached:  # RowMark.CACHED: only on the rows it is true of, as `explanation`
        row["cached"] = True
    if getattr(result, "redactions", None):  # what PII redaction found (schemas/redaction.py)
        row["redactions"] = result.redactions
    if getattr(result, "input_digest", None):  # the keyed digest of its input (lineage.py)
        row["input_digest"] = result.input_digest
    if expl is not None:
        row["explanation"] = {
            "method": expl.method,
            "target": expl.target,
            "tokens": expl.tokens,
            "attributions": expl.attributions,
            "convergence_delta": expl.convergence_delta,
            "status": expl.status,
            "error": expl.error,
            "detail": expl.detail,
        }
    return row


def current_output(output: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored output in today's shape: classifiers stored before the catalog kept their
    top labels under `probabilities`; they read (and export) as `scores`, the one key every
    classifier now uses (schemas.task_spec.OutputShape)."""
    if output and "probabilities" in output and "scores" not in output and "label" in output:
        return {("scores" if k == "probabilities" else k): v for k, v in output.items()}
    return output


def iter_result_rows(
    s: Session,
    job_id: str,
    batch: int,
    embedding_as_text: bool = False,
    seqs: tuple[int, int] | None = None,
    lineage: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """A job's results in input order, `batch` rows fetched at a time. `embedding_as_text`:
    an output's `embedding` comes apart from the rest as `embedding_json`, its JSON text as
    the database holds it, not parsed (a write-back copies it: a 384-float list parsed and
    encoded again cost most of a cached row's write-back). `seqs`: only the rows of input
    positions first..before-1. `lineage`: each row's `lineage` by its chunk id
    (storage/lineage.py; one object for a chunk's rows), on rows as the SDK reads them."""
    dialect = s.bind.dialect.name  # type: ignore[union-attr]
    output: Any = t.Result.output
    extra: list[Any] = []
    if embedding_as_text and dialect == "postgresql":  # split by the server, in jsonb
        output = case(  # `-` refuses a scalar (an error row's output is JSON null)
            (func.jsonb_typeof(output) == "object", output.op("-", return_type=t.JSONType)(
                literal(EMBEDDING, Text))),
            else_=output,
        )  # fmt: skip
        arrow = t.Result.output.op("->", return_type=t.JSONType)(literal(EMBEDDING, Text))
        extra = [cast(arrow, Text).label("embedding_json")]
    elif embedding_as_text:  # SQLite holds JSON as text: split here (split_embedding)
        output = type_coerce(output, Text)
    columns = [getattr(t.Result, name) for name in RESULT_FIELDS if name != "output"]
    query = (
        select(*columns, output.label("output"), *extra, *EXPLANATION_COLUMNS)
        .outerjoin(
            t.Explanation,
            and_(
                t.Explanation.job_id == t.Result.job_id,
                t.Explanation.item_key == t.Result.item_key,
            ),
        )
        .where(t.Result.job_id == job_id)
        .order_by(t.Result.seq)
        .execution_options(yield_per=batch)
    )
    if seqs is not None:
        query = query.where(t.Result.seq >= seqs[0], t.Result.seq < seqs[1])
    for row in s.execute(query):
        if lineage is not None:
            yield {**selected_result_row(row), "lineage": lineage.get(row.chunk_id)}
        elif not embedding_as_text:
            yield selected_result_row(row)
        elif dialect == "postgresql":
            yield {**selected_result_row(row), "embedding_json": row.embedding_json or "null"}
        else:
            rest, embedding = split_embedding(row.output)
            found = selected_result_row(row, rest)
            yield {**found, "embedding_json": embedding}


def split_embedding(text: str | None) -> tuple[dict[str, Any] | None, str]:
    """An output's JSON text as (the output less its `embedding`, the embedding's JSON text).
    The ledger writes an embedding first, compact (`{"embedding":[...]...`): a flat array of
    numbers is cut out of the text without parsing it; any other shape is parsed."""
    if text is None:
        return None, "null"
    if text.startswith(EMBEDDING_FIRST) and (end := text.find("]", len(EMBEDDING_FIRST))) > 0:
        array, tail = text[len(EMBEDDING_FIRST) - 1 : end + 1], text[end + 1 :]
        flat = '"' not in array and "[" not in array[1:] and "{" not in array
        if flat and tail == "}":
            return {}, array
        if flat and tail.startswith(","):
            return json_codec.loads("{" + tail[1:]), array
    output = json_codec.loads(text)
    if not isinstance(output, dict) or EMBEDDING not in output:
        return output, "null"
    embedding = output.pop(EMBEDDING)
    return output, json_codec.dumps(embedding)


def results_after(job_id: str, after: int, status: str | None = None) -> Any:
    """A job's (Result, Explanation) pairs with seq > after, in input order (keyset
    pagination); only those of `status` when given. The caller adds the limit."""
    query = (
        select(t.Result, t.Explanation)
        .outerjoin(
            t.Explanation,
            and_(
                t.Explanation.job_id == t.Result.job_id,
                t.Explanation.item_key == t.Result.item_key,
            ),
        )
        .where(t.Result.job_id == job_id, t.Result.seq > after)
        .order_by(t.Result.seq)
    )
    return query if status is None else query.where(t.Result.status == status)
