"""What `answer-question` and `extract-entities` accept at submit, before any worker: the
question and context built from each row's fields, rows without them `invalid`, inputs no row
has refused with the fields there are, and bad parameters refused by name."""

import pytest

from producers.readers import rows_to_items
from schemas.catalog import load_catalog
from schemas.errors import SluiceError
from schemas.reading_params import AnswerQuestionParams
from schemas.settings import Settings


def items(rows: list[dict], columns: list[str]) -> list:
    return rows_to_items(
        columns, iter(rows), text_column="text", key_column="id", max_chars=10_000,
        keep_fields=True, needs_text=False,
    )  # fmt: skip


def prepared(params: dict, rows: list[dict]) -> dict:
    columns = sorted({c for r in rows for c in r})
    return {it.key: it for it in AnswerQuestionParams.prepare_items(params, items(rows, columns))}


def test_question_and_context_come_from_the_rows_columns_without_a_text_column():
    got = prepared(
        {},
        [
            {"id": "a", "question": "Who?", "context": "Ann did."},
            {"id": "b", "question": "  ", "context": "x"},
            {"id": "c", "context": "no question here"},
            {"id": "d", "question": "What?", "context": ""},
        ],
    )
    assert (got["a"].text, got["a"].fields) == ("Ann did.", {"question": "Who?"})
    assert got["b"].invalid == "the question is empty"
    assert got["c"].invalid.startswith("no value for {question} (the row's fields: context, id")
    assert got["d"].invalid == "the context is empty"


def test_one_question_for_every_row_and_a_context_joined_from_two_columns():
    rows = [{"id": "1", "title": "Memo", "body": "Ann signed.", "n": 3}]
    got = prepared({"question": "Who signed?", "context": "{title}\n{body} ({n})"}, rows)
    assert got["1"].text == "Memo\nAnn signed. (3)"  # numbers read as written
    assert got["1"].fields == {"question": "Who signed?"}


def test_a_field_no_row_has_makes_every_row_invalid_naming_the_fields_there_are():
    got = prepared({"context": "{document}"}, [{"id": "1", "question": "q", "body": "b"}])
    assert got["1"].invalid == (
        "no value for {document} (the row's fields: body, id, question; the question and "
        "context templates name others)"
    )


def test_without_a_context_field_the_text_column_is_the_context():
    rows = [{"id": "1", "question": "Who?", "text": "Ann did."}]
    got = prepared({}, rows)
    assert (got["1"].text, got["1"].fields) == ("Ann did.", {"question": "Who?"})
    both = prepared({}, [{"id": "2", "question": "Q", "text": "t", "context": "c"}])
    assert both["2"].text == "c"  # a context field wins over the text


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"question": "{0}"}, "question"),
        ({"context": "{a.b}"}, "context"),
        ({"context": "   "}, "empty"),
        ({"stride": -1}, "stride"),
        ({"max_answer_tokens": 0}, "max_answer_tokens"),
        ({"min_score": 2}, "min_score"),
        ({"aggregation": "first"}, "aggregation"),  # an entities parameter
    ],
)
def test_bad_answer_question_parameters_are_refused_by_name(params: dict, word: str):
    spec = load_catalog().get("answer-question")
    with pytest.raises(SluiceError) as refused:
        spec.check_params(params, Settings())
    assert word in str(refused.value)


def test_entity_parameters_take_the_pipelines_aggregations_only():
    spec = load_catalog().get("extract-entities")
    assert spec.check_params({}, Settings()) == {"aggregation": "simple", "stride": 32,
                                                 "min_score": 0.0}  # fmt: skip
    for good in ("simple", "first", "average", "max", "none"):
        assert spec.check_params({"aggregation": good}, Settings())["aggregation"] == good
    with pytest.raises(SluiceError) as refused:
        spec.check_params({"aggregation": "longest"}, Settings())
    assert "aggregation" in str(refused.value)
