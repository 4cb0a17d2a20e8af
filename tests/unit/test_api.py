"""The REST API in-process (FastAPI TestClient) on SQLite and PostgreSQL: keys, tenancy,
idempotency, inputs, results, retry, caps, OpenAPI, metrics. Messages are recorded instead of
sent: the broker is beside the point here (tests/integration/test_api.py runs it for real)."""

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from producers import Client, RecordingDispatcher
from producers.api import create_app
from schemas.jobs import Outcome
from schemas.settings import Settings
from schemas.states import ItemStatus
from schemas.tenants import Role
from storage.apikeys import ApiKeys
from storage.ledger import Ledger


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")  # the MiniLM digest is computed once


class Api:
    def __init__(self, http: TestClient, client: Client, dispatcher: RecordingDispatcher) -> None:
        self.http, self.client, self.dispatcher = http, client, dispatcher
        keys = ApiKeys(client.ledger.engine)
        self.a = keys.create("acme")
        self.b = keys.create("globex")
        self.keys = keys

    @property
    def sent(self) -> list[str]:
        """Every chunk id sent so far (chunk ids are all a message carries)."""
        return self.dispatcher.chunk_ids

    def auth(self, who: str = "a") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, who).key}"}

    def submit(self, items: list[Any], who: str = "a", **extra: Any) -> dict[str, Any]:
        r = self.http.post(
            "/v1/jobs", json={"task": "embed", "items": items, **extra}, headers=self.auth(who)
        )
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def finish(self, job_id: str, errors: tuple[str, ...] = ()) -> None:
        ledger: Ledger = self.client.ledger
        for chunk in ledger.chunk_ids(job_id):
            claim = ledger.claim(chunk, "w", 30)
            assert claim.items is not None
            ledger.complete(
                chunk,
                "w",
                [
                    Outcome(key=i.key, status=ItemStatus.ERROR, error="boom")
                    if i.key in errors
                    else Outcome(key=i.key, status=ItemStatus.INVALID, error=i.invalid)
                    if i.invalid
                    else Outcome(
                        key=i.key, status=ItemStatus.OK, output={"embedding": [0.5, 0.5], "dim": 2}
                    )
                    for i in claim.items
                ],
            )


def make_api(
    tmp_path: Path,
    database_url: str,
    model_cache: Path,
    **settings: Any,
) -> Iterator[Api]:
    # the SQL source "wh" is a database the test makes at tmp_path / "wh.db"
    settings.setdefault("api_sql_sources", {"wh": f"sqlite:///{tmp_path / 'wh.db'}"})
    if "tenant_grants" not in settings:  # both tenants read what the server can, by default
        wide = {"sql_sources": {"wh": ["*"]}, "input_roots": [str(tmp_path)], "model_dirs": ["/"]}
        settings["tenant_grants"] = {"acme": wide, "globex": wide}
    s = Settings(
        data_dir=model_cache,
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",
        chunk_size=2,
        **settings,
    )
    dispatcher = RecordingDispatcher()
    client = Client(s, dispatcher)
    with TestClient(create_app(client=client)) as http:
        yield Api(http, client, dispatcher)


@pytest.fixture
def api(tmp_path: Path, database_url: str, model_cache: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, database_url, model_cache)


def test_requests_need_a_live_key(api: Api):
    assert api.http.get("/v1/jobs").status_code == 401
    r = api.http.get("/v1/jobs", headers={"Authorization": "Bearer sk_nope"})
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    assert api.http.get("/v1/jobs", headers={"X-API-Key": api.a.key}).status_code == 200
    api.keys.revoke(api.a.info.id)
    assert api.http.get("/v1/jobs", headers=api.auth("a")).status_code == 401
    assert api.http.get("/healthz").status_code == 200


def test_keys_are_stored_hashed(api: Api):
    with api.client.ledger.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(text("SELECT key_hash, secret FROM api_keys"))]
    flat = json.dumps(stored)
    assert api.a.key not in flat and api.b.key not in flat
    assert len(stored) == 2 and all(len(h) == 64 for h, _ in stored)


def test_a_tenant_sees_only_its_own_jobs_results_and_models(api: Api):
    job = api.submit(["hello", "world", "again"])
    job_id = job["job_id"]
    assert job["status"] == "queued" and job["counts"]["total"] == 3
    assert len(api.sent) == 2  # chunk size 2: two messages, chunk ids only
    api.finish(job_id, errors=("3",))
    for method, path in [("get", ""), ("get", "/results"), ("post", "/cancel"), ("post", "/retry")]:
        r = api.http.request(method.upper(), f"/v1/jobs/{job_id}{path}", headers=api.auth("b"))
        assert r.status_code == 404, (path, r.text)
        assert r.json() == {"detail": f"no job with id {job_id!r}"}
    assert api.http.get("/v1/jobs", headers=api.auth("b")).json() == {"jobs": []}
    assert api.http.get("/v1/models", headers=api.auth("b")).json() == []
    mine = api.http.get(f"/v1/jobs/{job_id}", headers=api.auth("a")).json()
    assert mine["status"] == "partially_failed" and mine["counts"]["error"] == 1
    (model,) = api.http.get("/v1/models", headers=api.auth("a")).json()
    assert model["task"] == "embed" and model["jobs"] == 1


def test_the_registry_lists_a_tenants_versions_with_their_dp_budget(api: Api):
    dp = {"epsilon": 7.99, "delta": 1e-5, "noise_multiplier": 0.9, "max_grad_norm": 1.0}
    api.client.registry.register(
        "bc",
        "classify-records",
        uri="/m/bc/1",
        sha256="ab" * 32,
        metrics={"heldout_accuracy": 0.95},
        dp=dp,
        tenant="acme",
    )
    assert api.http.get("/v1/registry", headers=api.auth("b")).json() == []
    (version,) = api.http.get("/v1/registry", headers=api.auth("a")).json()
    assert version["ref"] == "bc@1" and version["stage"] == "staging"
    assert version["dp"]["epsilon"] == 7.99 and "uri" not in version
    assert version["below_baseline"] is None  # a version without a baseline: no warning


def test_the_registry_shows_each_versions_baseline_and_warns_when_the_model_is_worse(api: Api):
    baseline = {"method": "LogisticRegression on standardised features",
                "metric": "heldout_accuracy", "value": 0.98}  # fmt: skip
    for accuracy in (0.96, 0.99):
        api.client.registry.register(
            "bc",
            "classify-records",
            uri="/m/bc",
            sha256="ab" * 32,
            metrics={"heldout_accuracy": accuracy, "baseline": baseline},
            tenant="acme",
        )
    worse, better = api.http.get("/v1/registry", headers=api.auth("a")).json()
    assert worse["metrics"]["baseline"] == better["metrics"]["baseline"] == baseline
    assert worse["below_baseline"] == (
        "bc@1 is worse than its baseline: held-out accuracy 0.9600 vs 0.9800 for "
        "LogisticRegression on standardised features on the same split"
    )
    assert better["below_baseline"] is None


def test_a_tenant_cannot_run_jobs_on_another_tenants_registered_model(api: Api, tmp_path: Path):
    from workers.training.records_mlp import RecordsMLP, save_records_model

    features = [{"name": "x", "type": "number", "min": 0.0, "max": 10.0, "mean": 5.0, "std": 1.0}]
    model_dir = tmp_path / "bc-1"
    save_records_model(
        model_dir,
        RecordsMLP(1, [4], 2),
        {"task": "classify-records", "hidden_sizes": [4], "labels": ["no", "yes"]},
        features,
    )
    ref = api.client.resolve_model(str(model_dir), "classify-records")
    from producers.model_refs import weights_sha256

    api.client.registry.register(
        "bc",
        "classify-records",
        uri=str(model_dir),
        sha256=weights_sha256(ref.path, tmp_path),
        metrics={},
        tenant="acme",
    )
    body = {"task": "classify-records", "model": "bc@1", "items": [{"record": {"x": 1.0}}]}
    mine = api.http.post("/v1/jobs", json=body, headers=api.auth("a"))
    assert mine.status_code == 201, mine.text
    assert mine.json()["model"] == "bc@1"
    theirs = api.http.post("/v1/jobs", json=body, headers=api.auth("b"))
    assert theirs.status_code in (400, 404, 422)
    assert "no model named 'bc'" in theirs.text


def test_an_idempotency_key_returns_the_same_job(api: Api):
    body = {"task": "embed", "items": [{"key": "k", "text": "hi"}]}
    h = {**api.auth("a"), "Idempotency-Key": "order-42"}
    first = api.http.post("/v1/jobs", json=body, headers=h)
    again = api.http.post("/v1/jobs", json=body, headers=h)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["job_id"] == again.json()["job_id"]
    assert again.headers["Idempotent-Replayed"] == "true" and len(api.sent) == 1
    other = api.http.post(
        "/v1/jobs", json=body, headers={**api.auth("b"), "Idempotency-Key": "order-42"}
    )
    assert other.status_code == 201 and other.json()["job_id"] != first.json()["job_id"]


def test_bad_submissions_say_what_is_wrong(api: Api):
    def post(body: dict[str, Any]) -> Any:
        return api.http.post("/v1/jobs", json=body, headers=api.auth())

    def problems(body: dict[str, Any]) -> list[tuple[str, ...]]:
        """A malformed body: 422, with where each problem is (after the task's name)."""
        r = post(body)
        assert r.status_code == 422, r.text
        return [tuple(str(part) for part in e["loc"][1:]) for e in r.json()["detail"]]

    r = post({"task": "embed"})
    assert r.status_code == 422 and "give exactly one of `items` (inline) or `source`" in r.text
    r = post({"task": "nope", "items": ["x"]})
    assert r.status_code == 400 and "unknown task 'nope'" in r.json()["detail"]
    assert ("labels",) in problems({"task": "zero-shot-text", "items": ["x"]})
    assert ("labels",) in problems({"task": "zero-shot-text", "items": ["x"], "labels": ["a"]})
    r = post({"task": "embed", "items": [{"key": "a", "text": "x"}, {"key": "a", "text": "y"}]})
    assert r.status_code == 422 and "duplicate keys" in r.text
    assert problems({"task": "embed", "items": [{"key": "a\x00", "text": "y"}]})  # no NUL
    assert problems({"task": "embed", "items": [{"key": "a", "text": "x"}, {"text": "y"}]})
    assert problems({"task": "embed", "items": [{"record": {"x": 1}}]})  # text tasks read text
    assert ("callback_url",) in problems(
        {"task": "embed", "items": ["x"], "callback_url": "file:///etc/passwd"}
    )
    assert ("explain",) in problems({"task": "embed", "items": ["x"], "explain": "all"})
    for priority in (12, "5", True):
        assert ("priority",) in problems({"task": "embed", "items": ["x"], "priority": priority})
    r = post({"task": "embed", "items": ["x"], "callback_url": "http://127.0.0.1/hook"})
    assert r.status_code == 400 and "public addresses only" in r.json()["detail"]
    r = post({"task": "classify-text", "model": "/no/such/model", "items": ["x"]})
    assert r.status_code == 404 and "does not exist" in r.json()["detail"]
    r = api.http.post(
        "/v1/jobs", content=b"x", headers={**api.auth(), "Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    assert api.sent == []


def test_multipart_upload_and_sql_source(api: Api, tmp_path: Path):
    csv = "id,body\nr1,first row\nr2,second row\n"
    r = api.http.post(
        "/v1/jobs",
        headers=api.auth(),
        files={"file": ("in.csv", csv)},
        data={"task": "embed", "key_column": "id", "text_column": "body"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["counts"]["total"] == 2

    warehouse = tmp_path / "wh.db"
    engine = create_engine(f"sqlite:///{warehouse}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE tickets (id INTEGER PRIMARY KEY, body TEXT, lang TEXT)"))
        conn.execute(
            text("INSERT INTO tickets VALUES (1, 'hi', 'en'), (2, 'hallo', 'de'), (3, 'hey', 'en')")
        )
    source = {
        "name": "wh",
        "table": "tickets",
        "key_column": "id",
        "text_column": "body",
        "where": {"lang": "en"},
    }
    r = api.http.post("/v1/jobs", json={"task": "embed", "source": source}, headers=api.auth())
    assert r.status_code == 201, r.text
    assert r.json()["counts"]["total"] == 2
    hostile = {**source, "table": "tickets; DROP TABLE tickets"}
    r = api.http.post("/v1/jobs", json={"task": "embed", "source": hostile}, headers=api.auth())
    assert r.status_code == 400 and "not a plain SQL identifier" in r.json()["detail"]
    r = api.http.post(
        "/v1/jobs", json={"task": "embed", "source": {**source, "name": "x"}}, headers=api.auth()
    )
    assert r.status_code == 400
    assert "in a SQL source 'x' open to you; yours: wh" in r.json()["detail"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tickets")).scalar() == 3


def test_results_page_and_stream_in_every_format(api: Api):
    job_id = api.submit([{"key": f"k{i}", "text": f"text {i}"} for i in range(5)])["job_id"]
    api.finish(job_id)
    keys, cursor = [], -1
    while cursor is not None:
        page = api.http.get(
            f"/v1/jobs/{job_id}/results", params={"limit": 2, "cursor": cursor}, headers=api.auth()
        ).json()
        keys += [row["key"] for row in page["items"]]
        cursor = page["next_cursor"]
    assert keys == [f"k{i}" for i in range(5)]
    r = api.http.get(
        f"/v1/jobs/{job_id}/results", headers={**api.auth(), "Accept": "application/x-ndjson"}
    )
    assert r.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [row["key"] for row in rows] == keys and rows[0]["output"]["dim"] == 2
    r = api.http.get(f"/v1/jobs/{job_id}/results?format=csv", headers=api.auth())
    header = "key,status,output,error,explanation,model,model_version,cached,redactions"
    header += ",input_digest,lineage"  # what made each row (storage/lineage.py)
    assert r.text.splitlines()[0] == header
    assert len(r.text.splitlines()) == 6
    r = api.http.get(f"/v1/jobs/{job_id}/results?format=parquet", headers=api.auth())
    table = pq.read_table(io.BytesIO(r.content))
    assert table.column("key").to_pylist() == keys


def test_retry_reruns_only_the_items_that_ended_error(api: Api):
    job_id = api.submit(
        [{"key": k, "text": f"t {k}"} for k in "abcd"] + [{"key": "e", "text": "  "}]
    )["job_id"]
    r = api.http.post(f"/v1/jobs/{job_id}/retry", headers=api.auth())
    assert r.status_code == 409 and "still queued" in r.json()["detail"]
    api.finish(job_id, errors=("b", "d"))
    r = api.http.post(f"/v1/jobs/{job_id}/retry", headers=api.auth())
    assert r.status_code == 201, r.text
    retry = r.json()
    assert retry["parent_job_id"] == job_id and retry["counts"]["total"] == 2
    items = [
        i.key
        for c in api.client.ledger.chunk_ids(retry["job_id"])
        for i in api.client.ledger.claim(c, "w", 30).items or []
    ]
    assert items == ["b", "d"]  # not the ok ones, not the invalid one


def test_cancel(api: Api):
    job_id = api.submit(["a", "b"])["job_id"]
    r = api.http.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


def test_request_size_cap(tmp_path: Path, database_url: str, model_cache: Path):
    big = {"task": "embed", "items": ["x" * 100] * 30}
    for api in make_api(
        tmp_path, database_url, model_cache, api_max_body_bytes=2000, api_max_items=3
    ):
        r = api.http.post("/v1/jobs", json=big, headers=api.auth())
        assert r.status_code == 413 and "SLUICE_API_MAX_BODY_BYTES" in r.json()["detail"]

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
            yield json.dumps(big).encode()

        r = api.http.post(
            "/v1/jobs",
            content=chunked(),
            headers={**api.auth(), "Content-Type": "application/json"},
        )
        assert r.status_code == 413
        r = api.http.post(
            "/v1/jobs", json={"task": "embed", "items": ["a"] * 4}, headers=api.auth()
        )
        assert r.status_code == 413 and "SLUICE_API_MAX_ITEMS" in r.json()["detail"]
        assert api.sent == []


def test_an_event_not_done_within_wait_gets_202(api: Api):
    r = api.http.post(
        "/v1/events?wait=50ms", json={"task": "embed", "text": "hello"}, headers=api.auth()
    )
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert r.headers["Location"] == f"/v1/jobs/{r.json()['job_id']}"
    r = api.http.post(
        "/v1/events?wait=soon", json={"task": "embed", "text": "x"}, headers=api.auth()
    )
    assert r.status_code == 422


def test_a_wait_over_the_cap_is_cut_to_it(tmp_path: Path, database_url: str, model_cache: Path):
    import time

    for api in make_api(tmp_path, database_url, model_cache, api_max_wait=0.1):
        started = time.perf_counter()
        r = api.http.post(
            "/v1/events?wait=5m", json={"task": "embed", "text": "x"}, headers=api.auth()
        )
        assert r.status_code == 202 and time.perf_counter() - started < 5


def test_the_openapi_document_validates(api: Api):
    from openapi_spec_validator import validate

    doc = api.http.get("/openapi.json").json()
    validate(doc)
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    shapes = doc["components"]["schemas"]
    assert len(shapes["JobRequest"]["oneOf"]) == len(api.client.catalog.names())  # one a task
    zero_shot = shapes["ZeroShotTextJob"]
    assert {"task", "labels"} <= set(zero_shot["required"])
    assert zero_shot["oneOf"] == [{"required": ["items"]}, {"required": ["source"]}]
    assert zero_shot["properties"]["labels"]["minItems"] == 2
    assert "labels" not in shapes["EmbedJob"]["properties"]
    submit = doc["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"200", "201", "400", "401", "404", "413", "415", "422", "429", "503"} <= set(submit)
    assert "Retry-After" in submit["429"]["headers"]
    assert {
        "/v1/jobs/{job_id}/results",
        "/v1/events",
        "/v1/jobs/{job_id}/retry",
        "/metrics",
    } <= set(doc["paths"])


def test_metrics_come_from_the_ledger(api: Api):
    job_id = api.submit(["a", "b", "c"])["job_id"]
    api.finish(job_id, errors=("3",))
    assert api.http.get("/metrics", headers=api.auth("a")).status_code == 403  # operators only
    ops = api.keys.create("ops", "scraper", Role.OPERATOR)
    text_ = api.http.get("/metrics", headers={"Authorization": f"Bearer {ops.key}"}).text
    assert 'sluice_items_total{status="ok",task="embed"} 2.0' in text_
    assert 'sluice_items_total{status="error",task="embed"} 1.0' in text_
    assert 'sluice_jobs{status="partially_failed"} 1.0' in text_
    assert "sluice_batch_size_count 2.0" in text_
    assert "sluice_inference_seconds_bucket" in text_ and "sluice_queue_wait_seconds_sum" in text_
    assert "sluice_broker_up 0.0" in text_  # nothing listens on port 1


def test_metrics_show_each_event_pipeline(api: Api):
    from schemas.jobs import Item, JobSpec
    from storage.standing_jobs import StandingJobs, count_dead_letters

    jobs = StandingJobs(api.client.ledger.engine)
    spec = JobSpec(task="embed", model="m", model_version="v1", source="pipeline:tickets")
    job = jobs.open("tickets", spec)
    appended = jobs.append("tickets", job.job_id, [Item(key=k, text=k) for k in "abc"])
    claim = api.client.ledger.claim(appended.chunk_id or "", "w", 30)
    assert claim.items is not None
    api.client.ledger.complete(
        appended.chunk_id or "",
        "w",
        [Outcome(key=k, status=ItemStatus.OK, output={"dim": 1}) for k in "ab"]
        + [Outcome(key="c", status=ItemStatus.OK, output={"dim": 1})],
    )
    jobs.mark_published("tickets", ["a", "b"])
    count_dead_letters(api.client.ledger.engine, "tickets", 2)
    ops = api.keys.create("ops", "scraper", Role.OPERATOR)
    text_ = api.http.get("/metrics", headers={"Authorization": f"Bearer {ops.key}"}).text
    assert 'sluice_pipeline_events_total{outcome="recorded",pipeline="tickets"} 3.0' in text_
    assert 'sluice_pipeline_events_total{outcome="published",pipeline="tickets"} 2.0' in text_
    assert 'sluice_pipeline_events_total{outcome="dead_lettered",pipeline="tickets"} 2.0' in text_
    assert 'sluice_pipeline_in_flight{pipeline="tickets"} 1.0' in text_
    lag = re.search(r'sluice_pipeline_lag_seconds\{pipeline="tickets"\} ([0-9.]+)', text_)
    assert lag and float(lag.group(1)) >= 0.0


def test_inline_records_and_media_items(api: Api, demo_models: Path, tmp_path: Path):
    """Every modality comes in through the same route: records are checked against the
    model's schema, media references against the server's input roots."""
    from schemas.records import check_record

    model = str(demo_models / "breast-cancer-classifier")
    features = json.loads((demo_models / "breast-cancer-classifier" / "features.json").read_text())[
        "features"
    ]
    good = {f["name"]: f["mean"] for f in features}
    assert check_record(good, features)[1] is None
    r = api.http.post(
        "/v1/jobs",
        headers=api.auth(),
        json={
            "task": "classify-records",
            "model": model,
            "items": [
                {"key": "ok", "record": good},
                {"key": "nan", "record": {**good, "mean radius": "nan"}},
            ],
        },
    )
    assert r.status_code == 201, r.text
    items = {
        i.key: i
        for c in api.client.ledger.chunk_ids(r.json()["job_id"])
        for i in api.client.ledger.claim(c, "w", 30).items or []
    }
    assert items["ok"].record == good
    assert items["nan"].invalid == "column 'mean radius' is NaN"

    api.client.settings.input_roots = str(tmp_path)
    r = api.http.post(
        "/v1/jobs",
        headers=api.auth(),
        json={
            "task": "classify-image",
            "model": str(demo_models / "digits-classifier"),
            "items": [
                {"key": "outside", "media": "/etc/hostname"},
                {"key": "inline", "media": "data:image/png;base64,iVBORw0KGgo="},
            ],
        },
    )
    assert r.status_code == 201, r.text
    items = {
        i.key: i
        for c in api.client.ledger.chunk_ids(r.json()["job_id"])
        for i in api.client.ledger.claim(c, "w", 30).items or []
    }
    assert "outside the input roots" in (items["outside"].invalid or "")
    assert items["inline"].data == "iVBORw0KGgo="
    r = api.http.post(
        "/v1/jobs",
        headers=api.auth(),
        json={"task": "classify-records", "model": model, "items": [{"key": "x", "text": "hi"}]},
    )
    assert r.status_code == 422  # a records item has a `record`, not a `text`
    assert any(e["loc"][-1] == "text" for e in r.json()["detail"])


def test_a_sql_source_reads_records_by_the_models_features(
    api: Api, demo_models: Path, tmp_path: Path
):
    """A records job from a named SQL source selects the model's feature columns (quoted,
    spaces and all) and checks each row against its schema, as `sluice enrich` does."""
    model = demo_models / "breast-cancer-classifier"
    features = json.loads((model / "features.json").read_text())["features"]
    warehouse = tmp_path / "wh.db"
    engine = create_engine(f"sqlite:///{warehouse}")
    columns = ", ".join(f'"{f["name"]}" REAL' for f in features)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE patients (id INTEGER PRIMARY KEY, {columns})"))
        for n, value in ((1, "mean"), (2, "max"), (3, None)):
            row = {f["name"]: f[value] * (1 if value == "mean" else 3) if value else None
                   for f in features}  # fmt: skip
            names = ", ".join(f'"{k}"' for k in row)
            marks = ", ".join(f":p{i}" for i in range(len(row)))
            conn.execute(
                text(f"INSERT INTO patients (id, {names}) VALUES ({n}, {marks})"),
                {f"p{i}": v for i, v in enumerate(row.values())},
            )
    source = {"name": "wh", "table": "patients", "key_column": "id"}
    r = api.http.post(
        "/v1/jobs",
        json={"task": "classify-records", "model": str(model), "source": source},
        headers=api.auth(),
    )
    assert r.status_code == 201, r.text
    items = {
        i.key: i
        for c in api.client.ledger.chunk_ids(r.json()["job_id"])
        for i in api.client.ledger.claim(c, "w", 30).items or []
    }
    assert items["1"].record == {f["name"]: f["mean"] for f in features}
    assert "is outside the allowed range" in (items["2"].invalid or "")  # 3x the maximum
    assert (items["3"].invalid or "").startswith("missing column")


def test_a_text_no_database_can_store_ends_invalid_and_the_job_goes_on(api: Api):
    def post(body: dict[str, Any]) -> Any:
        return api.http.post("/v1/jobs", json=body, headers=api.auth())

    r = post(
        {"task": "embed", "items": [{"key": "n", "text": "a\x00b"}, {"key": "m", "text": "c"}]}
    )
    assert r.status_code == 201 and r.json()["counts"]["total"] == 2  # the NUL text ends invalid
    stored = [i for c in api.client.ledger.chunk_ids(r.json()["job_id"])
              for i in api.client.ledger.claim(c, "w", 30).items or []]  # fmt: skip
    assert [i.invalid for i in stored][0].startswith("the text holds a NUL character")


def test_an_input_over_the_item_cap_is_refused_before_it_is_built(
    tmp_path: Path, database_url: str, model_cache: Path
):
    """A small Parquet file can declare a million rows: refused from its metadata, in well
    under 2 s; CSV and SQL sources are counted while streaming and stop at cap + 1."""
    import time

    import pyarrow as pa

    parquet = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"text": pa.repeat("x", 1_000_000)}), parquet)
    assert parquet.stat().st_size < 100_000
    warehouse = tmp_path / "wh.db"
    engine = create_engine(f"sqlite:///{warehouse}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
        conn.execute(text("INSERT INTO t (body) VALUES " + ",".join(["('x')"] * 50)))
    for api in make_api(tmp_path, database_url, model_cache, api_max_items=10):
        started = time.perf_counter()
        r = api.http.post(
            "/v1/jobs",
            files={"file": ("bomb.parquet", parquet.read_bytes())},
            data={"task": "embed"},
            headers=api.auth(),
        )
        assert time.perf_counter() - started < 2
        assert r.status_code == 413
        assert r.json()["detail"] == (
            "bomb.parquet: more than 10 items, over the cap of 10 (SLUICE_API_MAX_ITEMS); "
            "split the input into several jobs"
        )
        jsonl = "".join(f'{{"text": "t{n}"}}\n' for n in range(11))
        r = api.http.post(
            "/v1/jobs",
            files={"file": ("in.jsonl", jsonl)},
            data={"task": "embed"},
            headers=api.auth(),
        )
        assert r.status_code == 413 and "in.jsonl: more than 10 items" in r.json()["detail"]
        csv = "text\n" + "x\n" * 11
        r = api.http.post(
            "/v1/jobs", files={"file": ("in.csv", csv)}, data={"task": "embed"}, headers=api.auth()
        )
        assert r.status_code == 413 and "in.csv: more than 10 items" in r.json()["detail"]
        source = {"name": "wh", "table": "t", "key_column": "id", "text_column": "body"}
        r = api.http.post("/v1/jobs", json={"task": "embed", "source": source}, headers=api.auth())
        assert r.status_code == 413 and "table t: more than 10 items" in r.json()["detail"]
        assert api.sent == []
