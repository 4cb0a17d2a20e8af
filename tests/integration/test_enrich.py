"""`sluice enrich` as a user runs it, on PostgreSQL and SQLite: a table enriched twice, the
second run touching only new and changed rows, never a duplicate row; hostile names refused."""

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.engine import make_engine
from tests.integration.conftest import SLUICE

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

    from workers.training.demo_models import split_indices

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
