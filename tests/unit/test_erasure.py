"""Erasure and retention (issue 22): after a purge, an age purge or a retention expiry, no
table holds a row of the job, its stored exports are gone, and the audit names the job but
holds no key. Jobs run through the worker's own chunk step (test_lineage.settle); the ledger
is real (SQLite, and PostgreSQL when configured); exports go to moto's S3 server."""

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, update

from producers import Client, RecordingDispatcher
from producers.api import create_app
from schemas.errors import PurgeRefusedError, SluiceError
from schemas.settings import Settings
from schemas.tenants import TenantGrant
from storage import tables as t
from storage.apikeys import ApiKeys
from storage.clock import host_now
from storage.erasure import (
    BY_JOB_ID,
    CASCADED,
    NOT_JOB_DATA,
    OWN_RETENTION,
    UNLINKED,
    Erasure,
)
from storage.openai_files import OpenAIFiles
from tests.conftest import Bucket
from tests.unit.test_lineage import settle

PLANTED = "Zyxwvut-planted-7731"  # a value that must leave no trace


@pytest.fixture
def client(database_url: str, tmp_path: Path, bucket: Bucket) -> Client:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",  # never reached: the dispatcher sends nothing
        storage_options=bucket.options,
        tenant_grants={"acme": TenantGrant(retention_days=7)},
    )
    made = Client(settings, RecordingDispatcher())
    made.receive_batch = 2  # a job of more rows is written while receiving (job_keys)
    return made


def finished_job(client: Client, tenant: str = "default", **options: Any) -> str:
    texts = {"k1": f"note {PLANTED}", "k2": "second row", "k3": "third row"}
    job = client.submit_texts(texts, "embed", tenant=tenant, **options)
    settle(client, job)
    assert client.status(job).status == "succeeded"
    return job


def rows_of(client: Client, job_id: str) -> dict[str, int]:
    """Rows that name `job_id`, per table that has a job_id column (and the job row); not
    the audit, which names the jobs it removed."""
    counts = {}
    with client.ledger.engine.connect() as conn:
        for name, table in t.Base.metadata.tables.items():
            if name == "erasure_audit":
                continue
            column = table.c.get("job_id") if name != "jobs" else table.c.id
            if column is not None:
                counts[name] = conn.scalar(select(func.count()).where(column == job_id)) or 0
    return counts


def with_every_kind_of_row(client: Client, job: str, bucket: Bucket) -> str:
    """An export to the bucket, a callback record and an enrich retry beside the job's own."""
    uri = f"{bucket.uri}/exports/{job}.jsonl"
    client.export(job, "jsonl", uri)
    now = host_now()
    with client.ledger.engine.begin() as conn:
        conn.execute(
            insert(t.CallbackDelivery).values(
                job_id=job, url="https://example.invalid/h", state="delivered",
                attempts=1, next_attempt_at=now, created_at=now,
            )
        )  # fmt: skip
        conn.execute(
            insert(t.EnrichRetry).values(
                source="sqlite:///w.db", table_name="tickets", task="embed",
                model_version="v", item_key=PLANTED, attempts=1, job_id=job, updated_at=now,
            )
        )  # fmt: skip
    return uri


def test_every_table_of_the_ledger_is_classified_for_erasure():
    classified = {"jobs", *CASCADED, *BY_JOB_ID, *UNLINKED, *NOT_JOB_DATA, *OWN_RETENTION}
    assert set(t.Base.metadata.tables) == classified  # a new table must say where it stands


def test_a_purge_leaves_no_row_of_the_job_anywhere_and_removes_its_export(
    client: Client, bucket: Bucket
):
    job, kept = finished_job(client), finished_job(client)
    uri = with_every_kind_of_row(client, job, bucket)
    before = rows_of(client, job)
    assert before["results"] == 3 and before["chunks"] and before["job_keys"] == 3
    assert before["result_cache"] == 3 and before["exports"] == 1
    assert before["callback_deliveries"] == 1 and before["enrich_retries"] == 1
    assert client.store.exists(uri)
    erased = client.purge(job, by="test")
    assert erased.as_dict() == {
        "jobs": [job], "rows": 3, "exports_removed": 1, "exports_kept": [], "files_removed": 0
    }  # fmt: skip
    assert not any(rows_of(client, job).values()), rows_of(client, job)
    assert not client.store.exists(uri)
    assert rows_of(client, kept)["results"] == 3  # another job is untouched
    with client.ledger.engine.connect() as conn:
        audit = conn.execute(select(t.ErasureAudit)).mappings().one()
    assert (audit["kind"], audit["job_id"], audit["rows"], audit["exports"], audit["by"]) == (
        "purge", job, 3, 1, "test",
    )  # fmt: skip
    assert PLANTED not in json.dumps(dict(audit), default=str)
    with pytest.raises(SluiceError, match="no job"):
        client.purge(job)


def test_on_sqlite_the_value_survives_in_neither_file(client: Client, database_url: str):
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL keeps dead tuples until VACUUM (README: Retention)")
    job = finished_job(client)
    client.purge(job)
    path = Path(database_url.removeprefix("sqlite:///"))
    for f in (path, path.with_name(path.name + "-wal")):
        if f.exists():
            assert PLANTED.encode() not in f.read_bytes(), f


def test_a_running_job_is_refused_and_nothing_goes(client: Client):
    job = client.submit_texts(["still running"], "embed")
    with pytest.raises(
        PurgeRefusedError, match=f"still queued: cancel it first .sluice cancel {job}"
    ):
        client.purge(job)
    assert rows_of(client, job)["chunks"] == 1
    client.cancel(job)
    assert client.purge(job).jobs == [job]


def test_an_export_replaced_since_is_not_ours_to_remove(client: Client, bucket: Bucket):
    job = finished_job(client)
    uri = f"{bucket.uri}/exports/shared.jsonl"
    client.export(job, "jsonl", uri)
    name = uri.removeprefix(f"{bucket.uri}/")
    bucket.client().put_object(Bucket=bucket.name, Key=name, Body=b"someone else's file")
    erased = client.purge(job)
    assert erased.exports_kept == [uri] and erased.exports == 0
    assert client.store.exists(uri)


def age(client: Client, job: str, days: float) -> None:
    with client.ledger.engine.begin() as conn:
        when = host_now() - timedelta(days=days)
        conn.execute(update(t.Job).where(t.Job.id == job).values(created_at=when))


def test_purge_older_than_takes_finished_jobs_of_that_age_only(
    client: Client, monkeypatch: pytest.MonkeyPatch
):
    old, recent, old_running = finished_job(client), finished_job(client), None
    old_running = client.submit_texts(["queued"], "embed")
    age(client, old, 40)
    age(client, old_running, 40)
    files = OpenAIFiles(client.ledger.engine, client.store)
    old_file, new_file = (files.save("default", "batch", "in.jsonl", [b"{}\n"], 10, None).id
                          for _ in range(2))  # fmt: skip
    with client.ledger.engine.begin() as conn:
        conn.execute(
            update(t.OpenAIFile)
            .where(t.OpenAIFile.id == old_file)
            .values(created_at=host_now() - timedelta(days=40))
        )
    monkeypatch.setenv("SLUICE_DATA_DIR", str(client.settings.data_dir))
    monkeypatch.setenv("SLUICE_DATABASE_URL", client.endpoints.database_url)
    from ops.cli import main

    out = CliRunner().invoke(main, ["purge", "--older-than", "30d", "--yes"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["jobs"] == [old]
    assert json.loads(out.output)["files_removed"] == 1  # uploaded for OpenAI batches
    assert files.get(None, new_file).id == new_file
    assert rows_of(client, recent)["jobs"] == 1 and rows_of(client, old_running)["jobs"] == 1
    bad = CliRunner().invoke(main, ["purge", "--older-than", "a month", "--yes"])
    assert bad.exit_code != 0 and "is not a duration: use a number and a unit" in bad.output


def test_rest_delete_purges_a_tenants_own_finished_job(client: Client):
    keys = ApiKeys(client.ledger.engine)
    acme = TestClient(create_app(client=client), headers={"X-API-Key": keys.create("acme").key})
    globex = TestClient(create_app(client=client), headers={"X-API-Key": keys.create("globex").key})
    running = client.submit_texts(["x"], "embed", tenant="acme")
    r = acme.delete(f"/v1/jobs/{running}")
    assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
    job = finished_job(client, tenant="acme")
    assert globex.delete(f"/v1/jobs/{job}").status_code == 404  # another tenant's
    r = acme.delete(f"/v1/jobs/{job}")
    assert r.status_code == 200 and r.json()["jobs"] == [job]
    assert acme.get(f"/v1/jobs/{job}").status_code == 404
    with client.ledger.engine.connect() as conn:
        by = conn.scalar(select(t.ErasureAudit.by).where(t.ErasureAudit.job_id == job))
    assert by is not None and by.startswith("api-key:")


def test_retention_within_the_tenants_limit_and_its_expiry(client: Client):
    with pytest.raises(SluiceError, match="longer than this tenant's limit of 7 days"):
        client.submit_texts(["x"], "embed", tenant="acme", retention="30d")
    job = finished_job(client, tenant="acme", retention="2d")
    default = finished_job(client, tenant="acme")  # the tenant's limit
    forever = finished_job(client)  # the operator's tenant: no limit, kept until purged
    views = {j: client.status(j) for j in (job, default, forever)}
    assert views[job].retention_s == 2 * 86_400 and views[default].retention_s == 7 * 86_400
    assert views[forever].expires_at is None
    finished = views[job].finished_at
    assert finished is not None and views[job].expires_at == finished + timedelta(days=2)
    assert views[job].as_dict()["expires_at"] == views[job].expires_at.isoformat()
    erasure = Erasure(client.ledger.engine, client.store.stamp_if_present, client.store.remove)
    assert erasure.expire().jobs == []  # nothing has expired yet
    with client.ledger.engine.begin() as conn:  # two days on
        past = host_now() - timedelta(seconds=1)
        conn.execute(update(t.Job).where(t.Job.id == job).values(expires_at=past))
    assert erasure.expire().jobs == [job]
    assert not any(rows_of(client, job).values())
    assert rows_of(client, default)["results"] == 3
    with client.ledger.engine.connect() as conn:
        assert conn.scalar(select(t.ErasureAudit.kind).where(t.ErasureAudit.job_id == job)) == (
            "retention"
        )


def test_the_beat_runs_retention_apart_from_the_sweep():
    from schemas.queues import RETENTION, SWEEP
    from schemas.stack import Endpoints
    from workers.celery_app import create_app as celery_app

    app = celery_app(
        Settings(retention_interval=30),
        Endpoints(broker_url="redis://127.0.0.1:1/0", database_url="sqlite://", ray_address=None),
    )
    schedule = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert schedule[RETENTION] == 30 and SWEEP in schedule
    assert RETENTION in app.tasks


def key_rows(client: Client, keys: set[str]) -> int:
    """Rows anywhere that hold one of `keys` as a row key or inside a chunk's items."""
    found = 0
    with client.ledger.engine.connect() as conn:
        for table in (t.Result, t.Explanation, t.JobKey, t.EnrichRetry):
            found += conn.scalar(select(func.count()).where(table.item_key.in_(keys))) or 0
        for items in conn.scalars(select(t.Chunk.items)):
            found += sum(item.get("key") in keys for item in items or [])
    return found


def test_forget_removes_a_key_from_every_job_of_its_tenant_only(
    client: Client, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
):
    customer = "cust-4711"
    rows = {customer: f"{PLANTED} wants a refund", "other": "keep me"}
    jobs = [client.submit_texts(rows, "embed") for _ in range(2)]
    hashed = client.submit_texts(
        {"grace.hopper@example.com": "hashed key row", "other": "keep"},
        "embed",
        redact="hash",
        redact_types="EMAIL",
    )
    theirs = client.submit_texts(rows, "embed", tenant="acme")  # another tenant's, same key
    for job in (*jobs, hashed, theirs):
        settle(client, job)
    uri = f"{bucket.uri}/exports/with-customer.csv"
    client.export(jobs[0], "csv", uri)
    monkeypatch.setenv("SLUICE_STORAGE_OPTIONS", bucket.options_json)
    monkeypatch.setenv("SLUICE_DATA_DIR", str(client.settings.data_dir))
    monkeypatch.setenv("SLUICE_DATABASE_URL", client.endpoints.database_url)
    from ops.cli import main

    out = CliRunner().invoke(main, ["forget", "--key", customer])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert sorted(report["jobs"]) == sorted(jobs) and report["rows"] == 2
    assert report["exports_removed"] == 1 and not client.store.exists(uri)
    mine = {job: {r["key"] for r in client.results(job)} for job in jobs}
    assert all(keys == {"other"} for keys in mine.values())
    assert {r["key"] for r in client.results(theirs)} == {customer, "other"}  # acme's stay
    view = client.status(jobs[0])
    assert (view.counts.total, view.counts.ok) == (1, 1)
    # a key stored hashed (--redact hash) is found by the key the source has
    stored = client.stored_key("grace.hopper@example.com")
    assert client.forget("grace.hopper@example.com").rows == 1
    assert key_rows(client, {stored, "grace.hopper@example.com"}) == 0
    with client.ledger.engine.connect() as conn:
        audits = conn.execute(select(t.ErasureAudit).order_by(t.ErasureAudit.id)).mappings().all()
    # one row per job, written with its rows' removal: no job loses rows off the record
    assert [(a["kind"], a["job_id"], a["rows"]) for a in audits] == [
        ("forget", job, 1) for job in sorted(jobs)
    ] + [("forget", hashed, 1)]
    assert (
        all(a["key_digest"] for a in audits) and audits[0]["key_digest"] != audits[2]["key_digest"]
    )
    held = json.dumps([dict(a) for a in audits], default=str)
    assert customer not in held and "grace.hopper" not in held and stored not in held


def test_forget_is_refused_while_a_job_that_made_the_keys_row_still_runs(client: Client):
    client.settings.chunk_size = 1
    job = client.submit_texts({"cust-3": "done early", "b": "queued", "c": "queued"}, "embed")
    settle(client, job, chunks_at_most=1)  # the key's row is made; the job runs on
    with pytest.raises(PurgeRefusedError, match=f"job {job} holds this key and is still running"):
        client.forget("cust-3")
    assert [r["key"] for r in client.results(job)] == ["cust-3"]
    view = client.status(job)
    assert (view.status, view.counts.total) == ("running", 3)


def test_forget_leaves_other_tenants_rows_and_retries(client: Client):
    mine, theirs = finished_job(client), finished_job(client, tenant="acme")
    now = host_now()
    with client.ledger.engine.begin() as conn:
        for job in (mine, theirs):
            conn.execute(
                insert(t.EnrichRetry).values(
                    source=f"sqlite:///{job}.db", table_name="t", task="embed",
                    model_version="v", item_key="k1", attempts=1, job_id=job, updated_at=now,
                )
            )  # fmt: skip
    assert client.forget("k1").jobs == [mine]
    assert {r["key"] for r in client.results(theirs)} == {"k1", "k2", "k3"}
    assert (
        rows_of(client, theirs)["enrich_retries"] == 1
        and rows_of(client, mine)["enrich_retries"] == 0
    )
    assert rows_of(client, theirs)["result_cache"] == 3


def test_a_retention_limit_beyond_a_century_is_refused_at_configuration():
    with pytest.raises(ValueError, match="less than or equal to 36500"):
        Settings(retention_days=10_000_000)
    with pytest.raises(ValueError, match="less than or equal to 36500"):
        TenantGrant(retention_days=1e9)


def test_forget_is_refused_while_a_job_holding_the_key_runs(client: Client):
    job = client.submit_texts({"cust-9": "queued row"}, "embed")
    with pytest.raises(PurgeRefusedError, match=f"job {job} holds this key and is still running"):
        client.forget("cust-9")
    assert key_rows(client, {"cust-9"}) == 1
    client.cancel(job)
    assert client.forget("cust-9").jobs == [job]  # its cancelled chunk held the item
    assert key_rows(client, {"cust-9"}) == 0
