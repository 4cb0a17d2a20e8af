"""A job's whole path over real Redis, Celery, Ray and SQL: what a user submits and gets back."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis

from producers import Client
from schemas.errors import DuplicateKeysError, ModelError
from schemas.settings import Settings
from tests.conftest import SAMPLES
from tests.integration.conftest import wait_until
from tests.lineage_checks import assert_full_lineage

pytestmark = pytest.mark.integration


def sample_rows(n: int) -> list[dict[str, str]]:
    base = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    return [
        {"id": f"doc-{i}", "text": f"{base[i % len(base)]['text']} (ref {i})"} for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_embed_job_matches_reference_and_exports(client: Client, start_worker, tmp_path: Path):
    from sentence_transformers import SentenceTransformer

    rows = sample_rows(300)
    client.settings.chunk_size = 128
    job_id = client.submit_file(write_jsonl(tmp_path / "in.jsonl", rows), "embed", key_column="id")
    start_worker()
    view = client.wait(job_id, timeout=300)
    assert view.status == "succeeded"
    assert (view.counts.total, view.counts.ok, view.chunks_done) == (300, 300, 3)

    results = list(client.results(job_id))
    assert [r["key"] for r in results] == [r["id"] for r in rows]  # input order kept
    ours = np.array([r["output"]["embedding"] for r in results])
    path = client.ledger.job(job_id).params["model_path"]
    reference = SentenceTransformer(path, device="cpu").encode(
        [r["text"] for r in rows], normalize_embeddings=True, batch_size=7
    )
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1)
    assert cosine.min() >= 0.9999

    assert client.export(job_id, "csv", tmp_path / "out.csv") == 300
    assert client.export(job_id, "parquet", tmp_path / "out.parquet") == 300
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 300 and table.column("status").to_pylist() == ["ok"] * 300


def test_ledger_first_then_one_message_per_chunk(
    client: Client, settings: Settings, tmp_path: Path
):
    client.settings.chunk_size = 50
    job_id = client.submit_file(
        write_jsonl(tmp_path / "in.jsonl", sample_rows(120)), "embed", key_column="id"
    )
    chunk_ids = client.ledger.chunk_ids(job_id)
    assert len(chunk_ids) == 3 and client.status(job_id).status == "queued"
    broker = redis.Redis.from_url(settings.broker_url or "")
    keys = [k.decode() for k in broker.keys("sluice.text*")]
    assert keys, "messages go to the sluice.text queue"
    messages = [json.loads(m) for k in keys for m in broker.lrange(k, 0, -1)]
    bodies = [json.loads(__import__("base64").b64decode(m["body"])) for m in messages]
    assert sorted(b[0][0] for b in bodies) == sorted(chunk_ids)
    assert all(b[0] == [b[0][0]] and b[1] == {} for b in bodies)  # the chunk id, nothing else
    assert {m["headers"]["task"] for m in messages} == {"sluice.process_chunk"}
    assert {m["content-type"] for m in messages} == {"application/json"}


def test_zero_shot_labels_and_explanations(client: Client, start_worker):
    texts = {
        "a": "My parcel has not arrived and tracking has not moved for a week.",
        "b": "I was charged twice on my card for the same invoice.",
        "c": "我的包裹还没有到。",
    }
    job_id = client.submit_texts(
        texts, "zero-shot-text", labels=["shipping", "billing"], explain="all", explain_steps=4
    )
    start_worker()
    assert client.wait(job_id, timeout=300).status == "succeeded"
    lineage = client.lineage(job_id, "c")
    assert_full_lineage(lineage, explained=True)
    # the job's own steps, not the workers' SLUICE_EXPLAIN_STEPS (8 in these tests)
    assert lineage["explainer"] == {"method": "layer_integrated_gradients", "steps": 4}
    rows = {r["key"]: r for r in client.results(job_id)}
    assert rows["a"]["output"]["label"] == "shipping"
    assert rows["b"]["output"]["label"] == "billing"
    for row in rows.values():
        scores = row["output"]["scores"]
        assert set(scores) == {"shipping", "billing"} and abs(sum(scores.values()) - 1) < 1e-4
        expl = row["explanation"]
        assert expl["status"] == "ok" and expl["method"] == "layer_integrated_gradients"
        assert expl["target"] == row["output"]["label"]
        assert len(expl["tokens"]) == len(expl["attributions"]) > 0
        assert expl["convergence_delta"] is not None
    assert "tracking" in rows["a"]["explanation"]["tokens"]  # word pieces merged to words
    assert "".join(rows["c"]["explanation"]["tokens"]) == "我的包裹还没有到。"


def test_classify_text_with_a_trained_model(client: Client, start_worker, tiny_classifier):
    texts = {"p": "thank you so much, wonderful help", "n": "my invoice charge is wrong"}
    job_id = client.submit_texts(
        texts, "classify-text", model=str(tiny_classifier), explain="low-confidence:1.0"
    )
    start_worker()
    assert client.wait(job_id, timeout=300).status == "succeeded"
    rows = {r["key"]: r for r in client.results(job_id)}
    assert rows["p"]["output"]["label"] == "praise" and rows["n"]["output"]["label"] == "billing"
    for row in rows.values():
        probs = row["output"]["scores"]  # two labels: both listed (top 5)
        assert abs(sum(probs.values()) - 1) < 1e-4
        assert row["explanation"]["tokens"] and row["explanation"]["status"] == "ok"


def test_bad_items_get_clear_errors_and_the_rest_succeeds(
    client: Client, start_worker, tmp_path: Path
):
    lines = [
        json.dumps({"id": "good", "text": "Where is my order?"}),
        json.dumps({"id": "empty", "text": "   "}),
        json.dumps({"id": "long", "text": "x" * 2001}),
        json.dumps({"id": "number", "text": 42}),
        json.dumps({"text": "no key here"}),
        "{not json",
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    job_id = client.submit_file(path, "embed", key_column="id")
    start_worker()
    view = client.wait(job_id, timeout=300)
    assert view.status == "partially_failed"
    assert (view.counts.ok, view.counts.invalid, view.counts.error) == (1, 5, 0)
    errors = {r["key"]: r["error"] for r in client.results(job_id)}
    assert errors["good"] is None
    assert errors["empty"] == "empty text"
    assert "2001 characters, over the cap of 2000" in errors["long"]
    assert "holds int, expected a string" in errors["number"]
    assert "missing key column 'id'" in errors["row:5"]
    assert "line 6 is not valid JSON" in errors["line:6"]


def test_submit_rejects_bad_files_and_models(client: Client, tmp_path: Path):
    dupes = write_jsonl(
        tmp_path / "d.jsonl",
        [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}, {"id": "b", "text": "z"}],
    )
    with pytest.raises(DuplicateKeysError, match="'a'"):
        client.submit_file(dupes, "embed", key_column="id")
    (tmp_path / "pickle").mkdir()
    (tmp_path / "pickle" / "config.json").write_text("{}")
    (tmp_path / "pickle" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="pytorch_model.bin: pickle-based, refused"):
        client.submit_texts(["hi"], "embed", model=str(tmp_path / "pickle"))
    with pytest.raises(ModelError, match="does not exist"):
        client.submit_texts(["hi"], "embed", model=str(tmp_path / "missing"))
    assert client.ledger.jobs() == []  # nothing was half-submitted


def test_cancel_stops_a_job_and_keeps_what_is_done(client: Client, start_worker, tmp_path: Path):
    client.settings.chunk_size = 50
    job_id = client.submit_file(
        write_jsonl(tmp_path / "in.jsonl", sample_rows(1000)), "embed", key_column="id"
    )
    start_worker()
    wait_until(lambda: client.status(job_id).counts.processed > 0, 120, "a first chunk")
    assert client.cancel(job_id).status == "cancelled"
    done = len(list(client.results(job_id)))
    final = client.wait(job_id, timeout=60)
    assert final.status == "cancelled" and 0 < final.counts.processed < 1000
    # Chunks still in flight when it was cancelled write nothing afterwards.
    assert len(list(client.results(job_id))) == done == final.counts.processed


def test_a_higher_priority_job_overtakes_a_waiting_one(client: Client, start_worker):
    client.settings.chunk_size = 10
    low = client.submit_texts([f"routine message {i}" for i in range(60)], "embed", priority=1)
    high = client.submit_texts(["urgent: the payment page is down"], "embed", priority=9)
    start_worker(SLUICE_WORKER_CONCURRENCY="1")  # one chunk at a time, in priority order
    high_done = client.wait(high, timeout=300)
    low_done = client.wait(low, timeout=300)
    assert high_done.status == low_done.status == "succeeded"
    assert high_done.finished_at and low_done.finished_at
    assert high_done.finished_at < low_done.finished_at


def test_a_jobs_long_text_policy_reaches_every_row(client: Client, start_worker):
    """--long-text travels with the job to the worker; every row says what was read."""
    long = "my box is late. " * 120  # 480 words in 1,920 characters (the tests' cap: 2,000)
    texts = {"long": long, "short": "Where is my parcel?"}
    windowed = client.submit_texts(texts, "embed", long_text="windows", stride=16)
    truncated = client.submit_texts(texts, "zero-shot-text", labels=["billing", "shipping"])
    start_worker()
    for job_id in (windowed, truncated):
        assert client.wait(job_id, timeout=300).status == "succeeded"
    rows = {r["key"]: r["output"] for r in client.results(windowed)}
    assert rows["long"]["windows"] > 2 and rows["long"]["truncated"] is False
    assert rows["long"]["tokens_used"] == rows["long"]["tokens_total"] > 256
    assert rows["short"]["windows"] == 1 and len(rows["short"]["embedding"]) == 384
    rows = {r["key"]: r["output"] for r in client.results(truncated)}
    assert rows["long"]["truncated"] is True and rows["long"]["tokens_used"] == 256
    assert "windows" not in rows["long"] and rows["short"]["truncated"] is False
