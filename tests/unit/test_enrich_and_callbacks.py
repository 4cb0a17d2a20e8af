"""Identifier validation and the warehouse write-back (SQLite here; PostgreSQL end to end in
tests/integration/test_enrich.py), watermarks, and callback signing, retries and records."""

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import httpx
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
from schemas.jobs import Item, JobSpec, Outcome
from schemas.settings import Settings
from schemas.states import ItemStatus
from storage.apikeys import ApiKeys
from storage.callback_ledger import SIGNATURE_HEADER, Callbacks, sign, verify
from storage.ledger import Ledger
from storage.watermarks import Watermarks, decode, encode
from workers.callback_delivery import deliver_due

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
    body = b'{"job_id":"j"}'
    header = sign("whsec_x", body)
    assert header.startswith("sha256=") and verify("whsec_x", body, header)
    assert not verify("whsec_y", body, header) and not verify("whsec_x", body + b" ", header)
    assert not verify("whsec_x", body, None)


def test_callbacks_are_signed_retried_with_backoff_and_recorded(ledger: Ledger):
    key = ApiKeys(ledger.engine).create("acme")
    spec = JobSpec(
        task="embed",
        model="m",
        model_version="v1",
        params={},
        tenant="acme",
        api_key_id=key.info.id,
        callback_url="http://receiver.test/hook",
    )
    job_id, (chunk,) = ledger.create_job(spec, [Item(key="k", text="t")], 10)
    settings = Settings(callback_backoff=0, callback_max_attempts=3)
    answers = iter([500, 200])
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(answers))

    http = httpx.Client(transport=httpx.MockTransport(handler))
    assert deliver_due(ledger, settings, http=http) == {}  # not finished: nothing owed
    ledger.claim(chunk, "w", 30)
    ledger.complete(chunk, "w", [Outcome(key="k", status=ItemStatus.OK, output={"dim": 1})])
    assert deliver_due(ledger, settings, http=http) == {"pending": 1}
    assert Callbacks(ledger.engine).get(job_id)["last_status_code"] == 500  # type: ignore[index]
    assert deliver_due(ledger, settings, http=http) == {"delivered": 1}
    assert deliver_due(ledger, settings, http=http) == {}  # delivered once, never again
    record = Callbacks(ledger.engine).get(job_id)
    assert record and record["state"] == "delivered" and record["attempts"] == 2
    for request in seen:
        assert verify(key.secret, request.content, request.headers[SIGNATURE_HEADER])
        payload = json.loads(request.content)
        assert payload["job_id"] == job_id and payload["status"] == "succeeded"
    assert [json.loads(r.content)["attempt"] for r in seen] == [1, 2]


def test_callbacks_give_up_after_max_attempts(ledger: Ledger):
    spec = JobSpec(
        task="embed",
        model="m",
        model_version="v1",
        params={},
        callback_url="http://127.0.0.1:1/unreachable",
    )
    job_id, (chunk,) = ledger.create_job(spec, [Item(key="k", text="t")], 10)
    ledger.claim(chunk, "w", 30)
    ledger.complete(chunk, "w", [Outcome(key="k", status=ItemStatus.OK, output={})])
    settings = Settings(callback_backoff=0, callback_max_attempts=2, callback_timeout=2)
    assert deliver_due(ledger, settings) == {"pending": 1}
    assert deliver_due(ledger, settings) == {"failed": 1}
    assert deliver_due(ledger, settings) == {}
    record = Callbacks(ledger.engine).get(job_id)
    assert record and record["state"] == "failed" and "ConnectError" in record["last_error"]
