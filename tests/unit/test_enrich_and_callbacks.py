"""Identifier validation and the warehouse write-back (SQLite here; PostgreSQL end to end in
tests/integration/test_enrich.py), watermarks and callback signatures (sending, retries and
records: tests/unit/test_callback_http.py)."""

import datetime as dt
import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, create_engine, select, text

from producers.enrich import EnrichSpec, enrich
from producers.warehouse_keys import StoredKey
from producers.warehouse_tables import (
    Condition,
    SourceSpec,
    dest_table,
    ensure_dest,
    read_rows,
    summarise,
    upsert,
)
from schemas.errors import SluiceError, UnsafeIdentifierError
from storage.callback_ledger import sign_legacy, signature_headers, verify
from storage.ledger import Ledger
from storage.watermarks import Watermarks, decode, encode

HOSTILE = [
    "users; DROP TABLE users",
    'a"b',
    "1abc",
    "x.y.z",
    "t--",
    "name with space",
    "tbl)",
    "",
    "a" * 64,
    "é",
]


@pytest.fixture
def warehouse(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    with create_engine(url).begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE msgs (id INTEGER PRIMARY KEY, body TEXT, "
                "kind TEXT, updated_at TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO msgs VALUES (1, 'a', 'x', '2026-01-01 00:00:00'), "
                "(2, 'b', 'y', '2026-01-02 00:00:00'), "
                "(3, 'c', 'x', '2026-01-03 00:00:00')"
            )
        )
    return url


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_before_anything_runs(name: str, tmp_path: Path):
    never = tmp_path / "never" / "created.db"
    for spec in (
        SourceSpec(f"sqlite:///{never}", name, "id"),
        SourceSpec(f"sqlite:///{never}", "t", name),
        SourceSpec(f"sqlite:///{never}", "t", "id", text_column=name),
        SourceSpec(f"sqlite:///{never}", "t", "id", since_column=name),
    ):
        with pytest.raises(UnsafeIdentifierError, match="nothing was executed"):
            enrich(None, EnrichSpec(source=spec, dest_table="out", task="embed"))
    with pytest.raises(UnsafeIdentifierError):
        enrich(
            None,
            EnrichSpec(
                source=SourceSpec(f"sqlite:///{never}", "t", "id"), dest_table=name, task="embed"
            ),
        )
    assert not never.parent.exists()  # no engine was even made


def test_where_values_are_bound_never_spliced(warehouse: str):
    engine = create_engine(warehouse)
    spec = SourceSpec(warehouse, "msgs", "id", "body", where=[Condition.parse("kind = x")])
    _, rows = read_rows(engine, spec)
    assert [r["key"] for r in rows] == ["1", "3"]  # item keys: text
    spec.where = [Condition.parse("kind='x' OR 1=1 --")]
    _, rows = read_rows(engine, spec)
    assert list(rows) == []  # the whole text is one bound value
    with pytest.raises(UnsafeIdentifierError):
        Condition.parse("kind;drop=1")
    with pytest.raises(SluiceError, match="not found in table 'msgs'; columns are: id, body"):
        read_rows(engine, SourceSpec(warehouse, "msgs", "id", "nope"))
    with pytest.raises(SluiceError, match="table 'missing' not found"):
        read_rows(engine, SourceSpec(warehouse, "missing", "id", "body"))


def test_since_column_reads_only_newer_rows(warehouse: str):
    engine = create_engine(warehouse)
    spec = SourceSpec(warehouse, "msgs", "id", "body", since_column="updated_at")
    _, rows = read_rows(engine, spec, after=dt.datetime(2026, 1, 1, 12))
    got = list(rows)
    assert [r["key"] for r in got] == ["2", "3"]
    assert got[-1]["since"] == "2026-01-03 00:00:00"  # as SQLite holds it: bound back as is


def test_watermarks_keep_their_type(ledger: Ledger):
    for value in (
        dt.datetime(2026, 1, 3, 4, 5, 6, tzinfo=dt.UTC),
        dt.date(2026, 1, 3),
        42,
        2.5,
        Decimal("1.25"),
        "v9",
    ):
        assert decode(json.loads(json.dumps(encode(value)))) == value
    marks = Watermarks(ledger.engine)
    key = ("sqlite:///wh.db", "msgs", "embed", "v1")
    assert marks.get(*key) is None
    marks.set(*key, "updated_at", 5, "job1")
    marks.set(*key, "updated_at", 7, "job2")
    assert marks.get(*key) == 7


def test_write_back_upserts_on_the_key(warehouse: str):
    engine = create_engine(warehouse)
    table = dest_table("enriched", "id", StoredKey(BigInteger()))
    ensure_dest(engine, table)
    ensure_dest(engine, table)  # exists: left alone
    row = {
        "id": 1,
        "label": "a",
        "score": 0.5,
        "embedding": None,
        "output": {"x": 1},
        "explanation_summary": None,
        "status": "ok",
        "error": None,
        "model_version": "v1",
        "job_id": "j1",
        "processed_at": dt.datetime.now(dt.UTC),
    }
    upsert(engine, table, "id", [row, {**row, "id": 2}])
    upsert(engine, table, "id", [{**row, "label": "b", "job_id": "j2"}])
    with engine.connect() as conn:
        got = conn.execute(
            select(table.c.id, table.c.label, table.c.job_id).order_by(table.c.id)
        ).all()
    assert [tuple(r) for r in got] == [(1, "b", "j2"), (2, "a", "j1")]
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE other (id INTEGER PRIMARY KEY)"))
    with pytest.raises(SluiceError, match="exists without the columns"):
        ensure_dest(engine, dest_table("other", "id", StoredKey(BigInteger())))


def test_explanation_summary_lists_the_strongest_words():
    expl = {
        "status": "ok",
        "tokens": ["my", "card", "was", "charged"],
        "attributions": [0.01, 0.5, -0.02, -0.7],
    }
    assert summarise(expl, top=2) == "charged(-0.700) card(+0.500)"
    assert summarise({"status": "failed"}) is None


def test_signatures():
    """Standard Webhooks: over "{id}.{timestamp}.{body}", recent timestamps only; the sending
    and the standardwebhooks library's side are in tests/unit/test_callback_http.py."""
    body, now = b'{"job_id":"j"}', int(time.time())
    headers = signature_headers("whsec_x", "msg_j", body, now)
    assert headers["webhook-signature"].startswith("v1,") and verify("whsec_x", body, headers)
    assert not verify("whsec_y", body, headers) and not verify("whsec_x", body + b" ", headers)
    assert not verify("whsec_x", body, {**headers, "webhook-id": "msg_k"})
    assert not verify("whsec_x", body, {})
    assert not verify("whsec_x", body, headers, now=now + 301)  # a replay, too late
    assert sign_legacy("whsec_x", body).startswith("sha256=")  # SLUICE_CALLBACK_LEGACY_SIGNATURE
