"""`sluice enrich` as a user runs it, on PostgreSQL and SQLite: a table enriched twice, the
second run touching only new and changed rows, never a duplicate row; hostile names refused;
a run killed with SIGKILL resumed by the next; a row that ended `error` retried by the next
run; UUID and NUMERIC keys written back equal to the source's."""

import datetime as dt
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from storage.engine import make_engine
from tests.conftest import kill_group
from tests.integration.conftest import SLUICE, wait_until

pytestmark = pytest.mark.integration
TEXTS = [
    "My parcel has not arrived yet.",
    "I was charged twice for my order.",
    "The courier left the box at the wrong address.",
    "Please refund the extra payment.",
]


def sluice(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SLUICE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def warehouse(database_url: str, tmp_path: Path) -> str:
    """The source database: the test PostgreSQL database, or a SQLite file of its own."""
    return (
        database_url
        if database_url.startswith("postgresql")
        else f"sqlite:///{tmp_path / 'warehouse.db'}"
    )


def test_enrich_twice_touches_only_new_rows(env: dict[str, str], warehouse: str, start_worker):
    engine = make_engine(warehouse)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tickets_enriched"))
        conn.execute(text("DROP TABLE IF EXISTS tickets"))
        conn.execute(
            text(
                "CREATE TABLE tickets (id INTEGER PRIMARY KEY, body TEXT, "
                "updated_at TIMESTAMP WITH TIME ZONE)"
            )
        )
        conn.execute(
            text("INSERT INTO tickets VALUES (:id, :body, :ts)"),
            [
                {"id": i, "body": TEXTS[i % 4], "ts": t0 + dt.timedelta(minutes=i)}
                for i in range(40)
            ],
        )
    start_worker()
    args = [
        "enrich",
        "--source",
        warehouse,
        "--table",
        "tickets",
        "--key-column",
        "id",
        "--text-column",
        "body",
        "--task",
        "zero-shot-text",
        "--labels",
        "shipping,billing",
        "--explain",
        "sample:0.2",
        "--dest-table",
        "tickets_enriched",
        "--since-column",
        "updated_at",
        "--json",
    ]
    first = sluice(env, *args)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout.splitlines()[-1])
    assert (report["rows_read"], report["rows_written"], report["status"]) == (40, 40, "succeeded")
    print(
        f"\nenrich run 1 ({warehouse.split(':')[0]}): 40 rows in {report['seconds']}s "
        f"= {40 / report['seconds']:.1f} rows/s"
    )

    with engine.begin() as conn:  # two new rows and one changed row
        conn.execute(
            text("INSERT INTO tickets VALUES (:id, :body, :ts)"),
            [{"id": 100 + i, "body": TEXTS[i], "ts": t0 + dt.timedelta(days=1)} for i in range(2)],
        )
        conn.execute(
            text("UPDATE tickets SET body = :b, updated_at = :ts WHERE id = 3"),
            {"b": "The parcel is lost in transit.", "ts": t0 + dt.timedelta(days=2)},
        )
    second = sluice(env, *args)
    assert second.returncode == 0, second.stderr
    report2 = json.loads(second.stdout.splitlines()[-1])
    assert (report2["rows_read"], report2["rows_written"]) == (3, 3)
    third = sluice(env, *args)
    assert third.returncode == 0, third.stderr
    assert third.stdout.splitlines()[-1].count('"nothing-to-do"') == 1

    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(text("SELECT * FROM tickets_enriched"))}
        n = conn.execute(text("SELECT count(*), count(DISTINCT id) FROM tickets_enriched")).one()
    assert tuple(n) == (42, 42)  # upserted on the key: no duplicates
    assert {rows[i].job_id for i in (100, 101, 3)} == {report2["job_id"]}
    assert {rows[i].job_id for i in range(40) if i != 3} == {report["job_id"]}
    assert rows[3].label == "shipping" and rows[101].label == "billing"
    assert all(
        r.status == "ok" and r.model_version and r.processed_at and 0 < r.score <= 1
        for r in rows.values()
    )
    assert any(r.explanation_summary for r in rows.values())
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE tickets_enriched"))
        conn.execute(text("DROP TABLE tickets"))
    engine.dispose()


def test_hostile_names_are_refused_and_nothing_runs(env: dict[str, str], warehouse: str):
    run = sluice(
        env,
        "enrich",
        "--source",
        warehouse,
        "--table",
        "tickets; DROP TABLE x",
        "--key-column",
        "id",
        "--task",
        "embed",
        "--dest-table",
        "out",
    )
    assert run.returncode == 2
    assert "'tickets; DROP TABLE x' is not a plain SQL identifier" in run.stderr
    assert "nothing was executed" in run.stderr
    run = sluice(
        env,
        "enrich",
        "--source",
        warehouse,
        "--table",
        "tickets",
        "--key-column",
        "id",
        "--task",
        "embed",
        "--dest-table",
        "out",
        "--where",
        'x" = 1',
    )
    assert run.returncode == 2 and "not a plain SQL identifier" in run.stderr


def test_enrich_a_table_of_records(
    env: dict[str, str], warehouse: str, start_worker, demo_models: Path
):
    """Records come from the model's feature columns (names with spaces, quoted, never
    formatted into SQL); the labels land beside each patient's key."""
    from sklearn.datasets import load_breast_cancer
    from sqlalchemy import Column, Float, Integer, MetaData, Table

    from ops.demo_models import split_indices

    data = load_breast_cancer()
    _, held = split_indices(data.target, 0)
    names = [str(n) for n in data.feature_names]
    engine = make_engine(warehouse)
    meta = MetaData()
    patients = Table(
        "patients",
        meta,
        Column("id", Integer, primary_key=True),
        *(Column(n, Float) for n in names),
    )
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS patients_scored"))
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            patients.insert(),
            [
                {"id": int(i), **dict(zip(names, map(float, data.data[i]), strict=True))}
                for i in held[:30]
            ],
        )
    start_worker()
    run = sluice(
        env,
        "enrich",
        "--source",
        warehouse,
        "--table",
        "patients",
        "--key-column",
        "id",
        "--task",
        "classify-records",
        "--model",
        str(demo_models / "breast-cancer-classifier"),
        "--explain",
        "all",
        "--dest-table",
        "patients_scored",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["rows_written"] == 30
    with engine.connect() as conn:
        scored = {r.id: r for r in conn.execute(text("SELECT * FROM patients_scored"))}
    import torch

    from workers.training.records_mlp import load_records_model, normalise

    model, config, features = load_records_model(demo_models / "breast-cancer-classifier")
    with torch.no_grad():
        logits = model(torch.from_numpy(normalise(data.data[held[:30]], features)))
    expected = {
        int(i): config["labels"][int(j)] for i, j in zip(held[:30], logits.argmax(-1), strict=True)
    }
    assert {k: r.label for k, r in scored.items()} == expected  # the model's own answers
    truth = {int(i): str(data.target_names[data.target[i]]) for i in held[:30]}
    assert sum(scored[k].label == v for k, v in truth.items()) >= 27
    assert all(r.explanation_summary for r in scored.values())  # top features, with sign
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE patients_scored"))
    meta.drop_all(engine)
    engine.dispose()


FLAKY_TASKS = """
from pydantic import Field

from schemas.catalog import (
    Modality, ModelFiles, ModelKind, ModelNeeds, OutputShape, TaskParams, TaskSpec,
)


class FlakyParams(TaskParams):
    fail_while: str = Field("", description="texts with FAIL fail while this file exists")


SLUICE_TASKS = [
    TaskSpec(
        "flaky-words", Modality.TEXT, "flaky_handler:FlakyHandler",
        "counts words; a text with FAIL fails while --fail-while's file exists",
        OutputShape.FIELDS, params=FlakyParams,
        model=ModelNeeds(kind=ModelKind.NONE, files=ModelFiles.NONE, description="no model"),
        chunk_size=1,
    )
]
"""
FLAKY_HANDLER = """
from pathlib import Path

from workers.handlers.base import Handler


class FlakyHandler(Handler):
    def setup(self, model_path, device):
        self.device = device

    def preprocess(self, item, params):
        return item.text, params.get("fail_while") or ""

    def predict(self, batch):
        out = []
        for text, flag in batch:
            if "FAIL" in text and flag and Path(flag).exists():
                raise RuntimeError("the model's backend is down")
            out.append({"words": len(text.split())})
        return out
"""


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A task from outside Sluice (as tests/plugins is) that fails on demand, with no model:
    the environment that registers it."""
    where = tmp_path_factory.mktemp("flaky")
    (where / "flaky_tasks.py").write_text(FLAKY_TASKS)
    (where / "flaky_handler.py").write_text(FLAKY_HANDLER)
    return {"PYTHONPATH": str(where), "SLUICE_TASK_MODULES": "flaky_tasks"}


def enrich_args(warehouse: str, table: str, *extra: str) -> list[str]:
    return [
        "enrich", "--source", warehouse, "--table", table, "--key-column", "id",
        "--text-column", "body", "--task", "flaky-words", "--dest-table", f"{table}_out",
        "--since-column", "updated_at", "--json", *extra,
    ]  # fmt: skip


def report_of(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(run.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_a_killed_enrich_is_resumed_by_the_next_run(
    env: dict[str, str],
    warehouse: str,
    database_url: str,
    start_worker: Callable[..., Any],
    flaky: dict[str, str],
):
    """SIGKILL while the job runs; the next `sluice enrich` waits for that same job and
    writes each row back once. The keys are NUMERIC: written back equal to the source's."""
    engine = make_engine(warehouse)
    pg = engine.dialect.name == "postgresql"
    keys = [Decimal(f"{n}.10") if pg else n + 0.1 for n in range(12)]
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS orders_out"))
        conn.execute(text("DROP TABLE IF EXISTS orders"))
        conn.execute(text("CREATE TABLE orders (id NUMERIC(12, 2), body TEXT, updated_at INT)"))
        conn.execute(
            text("INSERT INTO orders VALUES (:id, :body, :n)"),
            [{"id": k, "body": f"order number {n}", "n": n} for n, k in enumerate(keys)],
        )
    ledger = make_engine(database_url)
    first = subprocess.Popen(
        [SLUICE, *enrich_args(warehouse, "orders")],
        env={**os.environ, **env, **flaky},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:  # no worker yet: the run waits for its job, recorded and queued
        job_id = wait_until(
            lambda: _recorded_job(ledger), timeout=120, what="the enrich run to queue its job"
        )
    finally:
        kill_group(first, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM orders_out")).scalar() == 0
    start_worker(**flaky)
    second = sluice({**env, **flaky}, *enrich_args(warehouse, "orders"))
    assert second.returncode == 0, second.stderr
    report = report_of(second)
    assert report["resumed"] is True and report["job_id"] == job_id
    assert (report["rows_read"], report["rows_written"], report["status"]) == (12, 12, "succeeded")
    with ledger.connect() as conn:  # the rows ran once, in the one job
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM results")).scalar() == 12
    third = sluice({**env, **flaky}, *enrich_args(warehouse, "orders"))
    assert report_of(third)["status"] == "nothing-to-do"
    with engine.connect() as conn:
        got = conn.execute(text("SELECT id FROM orders_out ORDER BY id")).scalars().all()
        same = conn.execute(
            text("SELECT count(*) FROM orders o JOIN orders_out d ON d.id = o.id")
        ).scalar()
    assert got == sorted(keys) and same == 12  # each key once, equal to the source's
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE orders_out"))
        conn.execute(text("DROP TABLE orders"))
    engine.dispose()
    ledger.dispose()


def _recorded_job(ledger: Any) -> str | None:
    with ledger.connect() as conn:
        if not ledger.dialect.has_table(conn, "enrich_runs"):
            return None
        return conn.execute(  # type: ignore[no-any-return]
            text("SELECT job_id FROM enrich_runs WHERE state = 'running'")
        ).scalar()


def test_a_row_that_ended_error_is_retried_by_the_next_run(
    env: dict[str, str],
    warehouse: str,
    start_worker: Callable[..., Any],
    flaky: dict[str, str],
    tmp_path: Path,
):
    """The watermark moves past a row whose result was `error`; the next run reads it again
    by its key (a UUID) and writes its new result onto the same destination row."""
    engine = make_engine(warehouse)
    pg = engine.dialect.name == "postgresql"
    keys = [uuid.UUID(int=n + 1) for n in range(6)]
    values = keys if pg else [str(k) for k in keys]
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS notes_out"))
        conn.execute(text("DROP TABLE IF EXISTS notes"))
        conn.execute(text("CREATE TABLE notes (id UUID, body TEXT, updated_at INT)"))
        conn.execute(
            text("INSERT INTO notes VALUES (:id, :body, :n)"),
            [
                {"id": v, "body": "please FAIL here" if n == 2 else f"note {n}", "n": n}
                for n, v in enumerate(values)
            ],
        )
    flag = tmp_path / "backend-down"
    flag.touch()
    start_worker(**flaky)
    args = enrich_args(warehouse, "notes", "--fail-while", str(flag))
    first = sluice({**env, **flaky}, *args)
    assert first.returncode == 1, first.stderr  # not every row ok
    one = report_of(first)
    assert (one["rows_read"], one["status"], one["watermark_after"]) == (6, "partially_failed", 5)
    with engine.connect() as conn:
        failed = conn.execute(
            text("SELECT status, error FROM notes_out WHERE id = :id"), {"id": values[2]}
        ).one()
    assert failed.status == "error" and "the model's backend is down" in failed.error

    flag.unlink()  # the backend is back
    second = sluice({**env, **flaky}, *args)
    assert second.returncode == 0, second.stderr
    two = report_of(second)
    assert (two["rows_read"], two["rows_retried"], two["status"]) == (1, 1, "succeeded")
    third = sluice({**env, **flaky}, *args)
    assert (report_of(third)["status"], report_of(third)["rows_given_up"]) == ("nothing-to-do", 0)
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(text("SELECT * FROM notes_out"))}
        same = conn.execute(
            text("SELECT count(*) FROM notes n JOIN notes_out d ON d.id = n.id")
        ).scalar()
    assert set(rows) == set(values) and same == 6  # the UUIDs, each once
    assert all(r.status == "ok" for r in rows.values())
    assert rows[values[2]].job_id == two["job_id"] and rows[values[2]].error is None
    assert {rows[v].job_id for v in values if v != values[2]} == {one["job_id"]}
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE notes_out"))
        conn.execute(text("DROP TABLE notes"))
    engine.dispose()
