"""`extract-entities` and `answer-question` through the whole path (Redis, Celery, Ray, the
ledger) from every front door. Results read back from the ledger after a real job (items of
mixed length in one chunk, long ones read in windows) equal the reference run on each item
alone: transformers' token-classification pipeline, and for answers the question-answering
reader of workers/extractive_qa.py (transformers 5 has no question-answering pipeline)."""

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from producers import Client
from schemas.tenants import TenantGrant
from storage.apikeys import ApiKeys
from storage.engine import make_engine
from tests.integration.conftest import rows_of, sluice, wait_until, warehouse_url
from workers.handlers.entities import MAX_EXPLAINED
from workers.training.scratch_entities import entity_passages
from workers.training.scratch_qa import qa_triples

pytestmark = pytest.mark.integration

STRIDE = 32
SCORE_TOLERANCE = 1e-4


def pipeline_entities(model_dir: Path, texts: list[str], aggregation: str) -> list[list[dict]]:
    """The token-classification pipeline on each text alone, spans as characters."""
    from transformers import pipeline

    tagger = pipeline(
        "token-classification",
        model=str(model_dir),
        aggregation_strategy=aggregation,
        stride=STRIDE,
        device="cpu",
    )
    out = []
    for t in texts:
        found = tagger(t)
        out.append(
            [
                {
                    "label": f.get("entity_group", f.get("entity")),
                    "start": f["start"],
                    "end": f["end"],
                    "score": float(f["score"]),
                }
                for f in found
            ]
        )
    return out


def reference_answers(model_dir: Path, pairs: list[tuple[str, str]]) -> list[Any]:
    """The reader on each (question, context) alone, no-answers allowed."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from workers.extractive_qa import answer_questions

    model = AutoModelForQuestionAnswering.from_pretrained(model_dir, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    window = min(model.config.max_position_embeddings, 512)
    return [
        answer_questions(
            model, tokenizer, [q], [c], max_seq_len=window, doc_stride=STRIDE,
            max_answer_len=15, handle_impossible_answer=True,
        )[0]
        for q, c in pairs
    ]  # fmt: skip


def same_entities(got: list[dict], expected: list[dict], text_: str) -> None:
    assert [(e["label"], e["start"], e["end"]) for e in got] == [
        (e["label"], e["start"], e["end"]) for e in expected
    ], text_
    for g, e in zip(got, expected, strict=True):
        assert abs(g["score"] - e["score"]) <= SCORE_TOLERANCE
        assert g["text"] == text_[g["start"] : g["end"]]


def same_answer(got: dict, ref: Any) -> None:
    if ref.answer == "":
        assert got["answer"] is None and got["start"] is None, got
    else:
        assert (got["answer"], got["start"], got["end"]) == (ref.answer, ref.start, ref.end)
    assert abs(got["score"] - ref.score) <= SCORE_TOLERANCE
    assert abs(got["null_score"] - ref.null_score) <= SCORE_TOLERANCE


def html_report(env: dict[str, str], job_id: str, out: Path) -> str:
    done = sluice(env, "results", job_id, "--format", "html", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out.read_text(encoding="utf-8")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_entities_from_every_door_equal_the_pipeline_item_by_item(
    client: Client,
    env: dict[str, str],
    start_worker,
    demo_models: Path,
    tmp_path: Path,
    api_url: str,
    database_url: str,
):
    model = demo_models / "tiny-entities"
    # 1 to 12 sentences each, English and Chinese: one chunk of short texts and texts past
    # the model's 128-token window (up to 285 tokens: three windows)
    passages = entity_passages(30, seed=11, lang="mixed", most=12)
    data = tmp_path / "passages.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{n}", "body": p.text}) + "\n"
                            for n, p in enumerate(passages)))  # fmt: skip
    start_worker()
    job_id = client.submit_file(
        data, "extract-entities", model=str(model), key_column="id", text_column="body"
    )
    view = client.wait(job_id, timeout=300)
    assert (view.status, view.counts.ok) == ("succeeded", 30)
    got = rows_of(client, job_id)
    texts = [p.text for p in passages]
    expected = pipeline_entities(model, texts, "simple")
    found = gold = 0
    for n, p in enumerate(passages):
        entities = got[f"p{n}"]["output"]["entities"]
        same_entities(entities, expected[n], p.text)
        gold += len(p.spans)
        found += len({(e["start"], e["end"], e["label"]) for e in entities} & set(p.spans))
    assert found >= 0.95 * gold  # and what they find is what the sentences hold

    # another aggregation, and explanations, over the SDK's submit_items
    firsts = client.submit_file(
        data, "extract-entities", model=str(model), key_column="id", text_column="body",
        aggregation="first", explain="all",
    )  # fmt: skip
    assert client.wait(firsts, timeout=300).status == "succeeded"
    expected_first = pipeline_entities(model, texts, "first")
    rows = rows_of(client, firsts)
    for n, p in enumerate(passages):
        row = rows[f"p{n}"]
        same_entities(row["output"]["entities"], expected_first[n], p.text)
        detail = row["explanation"]["detail"]
        found = row["output"]["entities"]
        assert len(detail["entities"]) == min(len(found), MAX_EXPLAINED)
        assert (len(found) > MAX_EXPLAINED) == ("note" in detail)
    page = html_report(env, firsts, tmp_path / "entities.html")
    assert passages[0].entities()[0][0] in page and "PERSON" in page

    # REST (JSON), an event, the CLI: the same model, the same spans
    client.settings.tenant_grants = {"acme": TenantGrant(model_dirs=[str(demo_models)])}
    acme = ApiKeys(client.ledger.engine).create("acme")
    http = httpx.Client(
        base_url=api_url, timeout=120, headers={"Authorization": f"Bearer {acme.key}"}
    )
    body = {"task": "extract-entities", "model": str(model),
            "items": [{"key": "a", "text": texts[0]}, {"key": "b", "text": "   "}]}  # fmt: skip
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    rest_job = r.json()["job_id"]
    wait_until(lambda: client.status(rest_job).status.finished, 180, "the REST job")
    res = {x["key"]: x for x in http.get(f"/v1/jobs/{rest_job}/results").json()["items"]}
    same_entities(res["a"]["output"]["entities"], expected[0], texts[0])
    assert res["b"]["status"] == "invalid"
    r = http.post("/v1/jobs", json={**body, "aggregation": "longest"})
    assert r.status_code == 422 and "aggregation" in r.text
    r = http.post(
        "/v1/events",
        json={"task": "extract-entities", "model": str(model), "key": "ev", "text": texts[1]},
        params={"wait": "120s"},
    )
    assert r.status_code in (200, 202), r.text
    event_job = r.json()["job_id"]
    wait_until(lambda: client.status(event_job).status.finished, 120, "the event's job")
    (ev,) = client.results(event_job)
    same_entities(ev["output"]["entities"], expected[1], texts[1])
    done = sluice(
        env, "submit", str(data), "--task", "extract-entities", "--model", str(model),
        "--key-column", "id", "--text-column", "body", "--min-score", "0.99",
        "--wait", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cli_job = json.loads(done.stdout.splitlines()[-1])["job_id"]
    for key, row in rows_of(client, cli_job).items():
        n = int(key[1:])
        assert row["output"]["entities"] == [
            e for e in got[key]["output"]["entities"] if e["score"] >= 0.99
        ], n

    # enrich: a table of texts, entities written back
    check_enrich_entities(env, warehouse_url(database_url, tmp_path), model, texts[:8])


def check_enrich_entities(env: dict[str, str], warehouse: str, model: Path, texts: list[str]):
    engine = make_engine(warehouse)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS ent_found"))
            conn.execute(text("DROP TABLE IF EXISTS ent_notes"))
            conn.execute(text("CREATE TABLE ent_notes (id INTEGER PRIMARY KEY, note TEXT)"))
            conn.execute(
                text("INSERT INTO ent_notes VALUES (:id, :note)"),
                [{"id": i, "note": t} for i, t in enumerate(texts)],
            )
        done = sluice(
            env, "enrich", "--source", warehouse, "--table", "ent_notes", "--key-column", "id",
            "--text-column", "note", "--task", "extract-entities", "--model", str(model),
            "--dest-table", "ent_found", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with engine.connect() as conn:
            found = conn.execute(text("SELECT id, output FROM ent_found ORDER BY id")).all()
        assert len(found) == len(texts)
        for i, output in found:
            output = json.loads(output) if isinstance(output, str) else output
            assert all(texts[i][e["start"] : e["end"]] == e["text"] for e in output["entities"])
            assert output["entities"], texts[i]  # every synthetic sentence names someone
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS ent_found"))
            conn.execute(text("DROP TABLE IF EXISTS ent_notes"))
        engine.dispose()


def test_answers_from_every_door_equal_the_reader_item_by_item(
    client: Client,
    env: dict[str, str],
    start_worker,
    demo_models: Path,
    tmp_path: Path,
    api_url: str,
    database_url: str,
):
    model = demo_models / "tiny-qa"
    triples = qa_triples(30, seed=5, long_share=0.4)  # short and windowed contexts, no-answers
    data = tmp_path / "qa.jsonl"
    rows = [{"id": f"q{n}", "question": t.question, "context": t.context}
            for n, t in enumerate(triples)]  # fmt: skip
    rows.append({"id": "no-question", "context": triples[0].context})
    rows.append({"id": "blank", "question": "  ", "context": triples[0].context})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start_worker()
    job_id = client.submit_file(data, "answer-question", model=str(model), key_column="id")
    view = client.wait(job_id, timeout=300)
    assert (view.status, view.counts.ok, view.counts.invalid) == ("partially_failed", 30, 2)
    got = rows_of(client, job_id)
    assert "{question}" in got["no-question"]["error"]
    assert "question is empty" in got["blank"]["error"]
    refs = reference_answers(model, [(t.question, t.context) for t in triples])
    assert any(t.answer == "" for t in triples) and any(len(t.context) > 600 for t in triples)
    right = 0
    for n, t in enumerate(triples):
        out = got[f"q{n}"]["output"]
        same_answer(out, refs[n])
        right += (out["answer"] or "") == t.answer and (out["start"] in (None, t.answer_start))
    assert right >= 0.9 * len(triples)  # the toy reader answers what the contexts hold

    # the CLI: one question asked of every row, the context from another column, explained
    (tmp_path / "docs.csv").write_text(
        "doc,body\nd1,The capital of Veltria is Orbon. Mira Kaldsen works at Tessaly Labs.\n"
        "d2,Ilse Varda lives in Pemberly.\n",
        encoding="utf-8",
    )
    done = sluice(
        env, "submit", str(tmp_path / "docs.csv"), "--task", "answer-question",
        "--model", str(model), "--key-column", "doc", "--question",
        "Where does Mira Kaldsen work?", "--context", "{body}", "--explain", "all",
        "--wait", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cli_job = json.loads(done.stdout.splitlines()[-1])["job_id"]
    answers = rows_of(client, cli_job)
    assert answers["d1"]["output"]["answer"] == "Tessaly Labs"
    assert answers["d2"]["output"]["answer"] is None  # that context does not say
    assert answers["d1"]["explanation"]["status"] == "ok"
    page = html_report(env, cli_job, tmp_path / "answers.html")
    assert "Tessaly Labs" in page and "Where does Mira Kaldsen work?" in page
    unnamed = sluice(  # no question column and no --question: every row says what it has
        env, "submit", str(tmp_path / "docs.csv"), "--task", "answer-question",
        "--model", str(model), "--key-column", "doc", "--wait", "--json",
    )  # fmt: skip
    assert unnamed.returncode == 1, unnamed.stderr
    unnamed_job = json.loads(unnamed.stdout.splitlines()[-1])["job_id"]
    for row in client.results(unnamed_job):
        assert row["status"] == "invalid" and "{question}" in row["error"]
        assert "body, doc" in row["error"]

    # REST: JSON items with fields, an upload, an event
    client.settings.tenant_grants = {"acme": TenantGrant(model_dirs=[str(demo_models)])}
    acme = ApiKeys(client.ledger.engine).create("acme")
    http = httpx.Client(
        base_url=api_url, timeout=120, headers={"Authorization": f"Bearer {acme.key}"}
    )
    items = [{"key": f"q{n}", "fields": {"question": t.question, "context": t.context}}
             for n, t in enumerate(triples[:6])]  # fmt: skip
    r = http.post("/v1/jobs", json={"task": "answer-question", "model": str(model), "items": items})
    assert r.status_code == 201, r.text
    rest_job = r.json()["job_id"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "q", "c"])
    writer.writerows([f"q{n}", t.question, t.context] for n, t in enumerate(triples[6:12], 6))
    r = http.post(
        "/v1/jobs",
        files={"file": ("qa.csv", buffer.getvalue())},
        data={"task": "answer-question", "model": str(model), "key_column": "id",
              "question": "{q}", "context": "{c}"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    upload_job = r.json()["job_id"]
    r = http.post(
        "/v1/events",
        json={"task": "answer-question", "model": str(model), "key": "q12",
              "fields": {"question": triples[12].question, "context": triples[12].context}},
        params={"wait": "120s"},
    )  # fmt: skip
    assert r.status_code in (200, 202), r.text
    event_job = r.json()["job_id"]
    for job in (rest_job, upload_job, event_job):
        wait_until(lambda job=job: client.status(job).status.finished, 180, "the API's jobs")
        for key, row in rows_of(client, job).items():
            assert row["output"] == got[key]["output"], key
    # the text as the context, and an item without a question: an `invalid` row
    texts = [
        {"key": "t", "text": triples[13].context, "fields": {"question": triples[13].question}},
        {"key": "no-question", "text": triples[13].context},
    ]
    r = http.post("/v1/jobs", json={"task": "answer-question", "model": str(model), "items": texts})
    assert r.status_code == 201, r.text
    texts_job = r.json()["job_id"]
    wait_until(lambda: client.status(texts_job).status.finished, 180, "the text job")
    as_text = rows_of(client, texts_job)
    assert as_text["t"]["output"] == got["q13"]["output"]
    assert as_text["no-question"]["status"] == "invalid"
    assert "{question}" in as_text["no-question"]["error"]

    # enrich: a table of questions over documents, answers written back
    check_enrich_answers(env, warehouse_url(database_url, tmp_path), model, triples[:8])


def check_enrich_answers(env: dict[str, str], warehouse: str, model: Path, triples: list[Any]):
    engine = make_engine(warehouse)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS qa_answers"))
            conn.execute(text("DROP TABLE IF EXISTS qa_docs"))
            conn.execute(text("CREATE TABLE qa_docs (id INTEGER PRIMARY KEY, ask TEXT, doc TEXT)"))
            conn.execute(
                text("INSERT INTO qa_docs VALUES (:id, :ask, :doc)"),
                [{"id": i, "ask": t.question, "doc": t.context} for i, t in enumerate(triples)],
            )
        done = sluice(
            env, "enrich", "--source", warehouse, "--table", "qa_docs", "--key-column", "id",
            "--task", "answer-question", "--model", str(model), "--question", "{ask}",
            "--context", "{doc}", "--dest-table", "qa_answers", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with engine.connect() as conn:
            found = conn.execute(text("SELECT id, output FROM qa_answers ORDER BY id")).all()
        assert len(found) == len(triples)
        right = 0
        for i, output in found:
            output = json.loads(output) if isinstance(output, str) else output
            right += (output["answer"] or "") == triples[i].answer
        assert right >= len(triples) - 1
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS qa_answers"))
            conn.execute(text("DROP TABLE IF EXISTS qa_docs"))
        engine.dispose()
