"""Per-row lineage (issue 22): a job submitted through the SDK, its chunks settled by the
worker's own chunk step (the model actor replaced by a stand-in, as in test_result_cache),
and what each row then says made it: through the SDK, the CLI, REST and every export format.
The ledger is real (SQLite, and PostgreSQL when configured)."""

import csv
import hashlib
import hmac
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from producers import Client, RecordingDispatcher
from producers.api import create_app
from schemas.errors import SluiceError
from schemas.jobs import Outcome
from schemas.settings import Settings
from storage import tables as t
from storage.apikeys import ApiKeys
from storage.ledger import JobView
from storage.tenant_secrets import tenant_secret
from tests.lineage_checks import assert_full_lineage
from tests.unit.test_result_cache import CountingModel
from workers.chunk_task import chunk_made_by, compute_outcomes
from workers.ray_calls import ActorCalls

EMAIL = "grace.hopper@example.com"
LABELS = ["billing", "shipping"]


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Client:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",  # never reached: the dispatcher sends nothing
    )
    return Client(settings, RecordingDispatcher())


class Explaining(CountingModel):
    """The stand-in, explaining by the method the job recorded, as a handler does."""

    def run_on_actor(self, job: JobView, *args: Any) -> list[Outcome]:
        method = (job.params.get("explainer") or {}).get("method", "none")
        return [
            o.model_copy(
                update={"explanation": o.explanation.model_copy(update={"method": method})}
            )
            if o.explanation
            else o
            for o in super().run_on_actor(job, *args)
        ]


def settle(client: Client, job_id: str, chunks_at_most: int | None = None) -> None:
    """Every chunk of the job (or the first few) through the worker's chunk step and
    completion."""
    worker = Explaining(client.ledger, client.settings)
    with client.ledger.engine.connect() as conn:
        chunks = conn.execute(
            select(t.Chunk.id).where(t.Chunk.job_id == job_id).order_by(t.Chunk.seq)
        ).scalars()
        chunks = list(chunks)[:chunks_at_most]
    for chunk in chunks:
        claim = client.ledger.claim(chunk, "w", 30)
        assert claim.job is not None
        calls = ActorCalls(float("inf"))
        outcomes, cache, items = compute_outcomes(worker, claim, chunk, calls)
        made_by = chunk_made_by(worker, claim.job, calls)
        assert client.ledger.complete(chunk, "w", outcomes, None, cache, items, made_by)


def explained_job(client: Client, tenant: str = "default") -> str:
    texts = {"plain": "where is my parcel", "mail": f"write to {EMAIL}", "a/b c": "slash key"}
    job = client.submit_texts(
        texts,
        "zero-shot-text",
        labels=LABELS,
        explain="all",
        explain_steps=6,
        redact="mask",
        redact_types="EMAIL",
        tenant=tenant,
    )
    settle(client, job)
    return job


def test_every_row_says_what_made_it(client: Client):
    job = explained_job(client)
    lineage = client.lineage(job, "mail")
    assert_full_lineage(lineage, explained=True, redacted=True)
    assert lineage["explainer"] == {"method": "layer_integrated_gradients", "steps": 6}
    assert lineage["redaction"]["mode"] == "mask"
    assert lineage["redactions_found"] == [{"field": "text", "type": "EMAIL", "by": "pattern"}]
    assert lineage["task"] == "zero-shot-text" and lineage["status"] == "ok"
    view = client.status(job)
    assert lineage["model"]["version"] == view.model_version
    # the weights' digest is the SHA-256 of the model's safetensors files, as the registry's
    model_dir = Path(client.resolve_model(None, "zero-shot-text").path)
    digest = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        digest.update(f.read_bytes())
    assert lineage["model"]["weights_sha256"] == digest.hexdigest()
    plain = client.lineage(job, "plain")
    assert plain["redactions_found"] == [] and plain["input_digest"] != lineage["input_digest"]


def test_the_input_digest_is_keyed_by_the_tenant_and_names_no_value(client: Client):
    acme, globex = explained_job(client, "acme"), explained_job(client, "globex")
    again = explained_job(client, "acme")
    digest = {job: client.lineage(job, "plain")["input_digest"] for job in (acme, globex, again)}
    assert digest[acme] == digest[again]  # the same input within a tenant
    assert digest[acme] != digest[globex]  # another tenant's secret
    plain_hash = hashlib.sha256(b"where is my parcel").hexdigest()
    assert plain_hash not in digest.values()  # not a plain hash anyone could recompute
    stored = json.dumps([client.lineage(acme, key) for key in ("plain", "mail", "a/b c")])
    assert EMAIL not in stored and "parcel" not in stored


def test_a_missing_row_or_job_is_named(client: Client):
    job = explained_job(client)
    with pytest.raises(SluiceError, match="has no result for key 'nope'"):
        client.lineage(job, "nope")
    with pytest.raises(SluiceError, match="no job"):
        client.lineage("0" * 32, "plain")


def test_rest_gives_a_tenants_own_rows_lineage_and_404_otherwise(client: Client):
    job = explained_job(client, "acme")
    acme = TestClient(
        create_app(client=client),
        headers={"X-API-Key": ApiKeys(client.ledger.engine).create("acme").key},
    )
    r = acme.get(f"/v1/jobs/{job}/results/a/b c/lineage")  # a key holding a slash
    assert r.status_code == 200, r.text
    assert r.json() == client.lineage(job, "a/b c")
    assert acme.get(f"/v1/jobs/{job}/results/nope/lineage").status_code == 404
    other = TestClient(
        create_app(client=client),
        headers={"X-API-Key": ApiKeys(client.ledger.engine).create("globex").key},
    )
    assert other.get(f"/v1/jobs/{job}/results/plain/lineage").status_code == 404
    streamed = acme.get(f"/v1/jobs/{job}/results?format=jsonl").text.splitlines()
    assert all(json.loads(line)["lineage"]["model"]["weights_sha256"] for line in streamed)


def test_the_cli_prints_it(client: Client, monkeypatch: pytest.MonkeyPatch):
    job = explained_job(client)
    monkeypatch.setenv("SLUICE_DATA_DIR", str(client.settings.data_dir))
    monkeypatch.setenv("SLUICE_DATABASE_URL", client.endpoints.database_url)
    from ops.cli import main

    out = CliRunner().invoke(main, ["lineage", job, "mail"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == client.lineage(job, "mail")
    missing = CliRunner().invoke(main, ["lineage", job, "nope"])
    assert missing.exit_code != 0 and "has no result for key 'nope'" in missing.output


def exported(client: Client, job: str, fmt: str, tmp_path: Path) -> list[dict[str, Any]]:
    if fmt == "parquet":
        client.export(job, fmt, tmp_path / "out.parquet")
        return pq.read_table(tmp_path / "out.parquet").to_pylist()
    buf = io.StringIO()
    client.export(job, fmt, buf)
    if fmt == "jsonl":
        return [json.loads(line) for line in buf.getvalue().splitlines()]
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_exports_carry_each_rows_lineage(client: Client, fmt: str, tmp_path: Path):
    job = explained_job(client)
    for row in exported(client, job, fmt, tmp_path):
        shown = row["lineage"] if fmt == "jsonl" else json.loads(row["lineage"])
        full = client.lineage(job, row["key"])
        assert row["input_digest"] == full["input_digest"]
        assert shown["made_by"] == full["made_by"] and shown["model"] == full["model"]
        assert shown["explainer"] == full["explainer"] and shown["redaction"] == full["redaction"]


def test_the_digest_is_the_keyed_hmac_of_the_input_as_documented(client: Client):
    job = explained_job(client)
    secret = tenant_secret(client.ledger.engine, "default")
    item = {"text": "where is my parcel"}  # the input, without its key
    body = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hmac.new(secret, b"input\n" + body.encode(), hashlib.sha256).hexdigest()
    assert client.lineage(job, "plain")["input_digest"] == expected


def test_a_dead_lettered_row_still_has_its_input_digest(client: Client):
    first = explained_job(client)  # the tenant's secret exists once a worker ran its rows
    job = client.submit_texts({"x": "never ran"}, "embed")
    (chunk,) = client.ledger.chunk_ids(job)
    assert client.ledger.dead_letter(chunk, None, "the worker died each time")
    lineage = client.lineage(job, "x")
    assert lineage["status"] == "error" and len(lineage["input_digest"]) == 64
    assert lineage["input_digest"] != client.lineage(first, "plain")["input_digest"]
