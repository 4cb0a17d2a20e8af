"""The OpenAI-compatible Files and Batches routes in-process, driven by the official `openai`
client over FastAPI's TestClient (no worker: outcomes are written as a worker would): what
one tenant uploads or runs another cannot see, caps refuse at once and keep nothing, files
may live in an object store, pages follow `after`, and a finished batch's files split its
requests into answers and errors."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.jobs import Outcome
from schemas.states import ItemStatus
from tests.conftest import Bucket
from tests.unit.test_api import Api, make_api

openai = pytest.importorskip("openai")
MODEL = "all-MiniLM-L6-v2"


def embed_line(custom_id: str, text: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": text}}  # fmt: skip


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def sdk(api: Api, who: str = "a") -> Any:
    return openai.OpenAI(
        base_url="http://testserver/openai/v1",
        api_key=getattr(api, who).key,
        http_client=api.http,
        max_retries=0,
    )


def start(oai: Any, lines: list[dict[str, Any]]) -> Any:
    uploaded = oai.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return oai.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )


def work(api: Api, job_id: str) -> None:
    """What a worker writes: a vector for each text, `boom` for the text "fail"."""
    ledger = api.client.ledger
    for chunk in ledger.chunk_ids(job_id):
        claim = ledger.claim(chunk, "w", 30)
        assert claim.items is not None
        ledger.complete(chunk, "w", [
            Outcome(key=i.key, status=ItemStatus.INVALID, error=i.invalid) if i.invalid
            else Outcome(key=i.key, status=ItemStatus.ERROR, error="boom") if i.text == "fail"
            else Outcome(key=i.key, status=ItemStatus.OK,
                         output={"embedding": [0.6, 0.8], "dim": 2, "tokens_used": 3})
            for i in claim.items
        ])  # fmt: skip


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def api(tmp_path: Path, database_url: str, model_cache: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, database_url, model_cache)


def test_a_tenant_sees_only_its_own_files_and_batches(api: Api):
    acme, globex = sdk(api, "a"), sdk(api, "b")
    batch = start(acme, [embed_line("x", "hello")])
    work(api, batch.model_extra["sluice_job_id"])
    done = acme.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id
    for attempt in (
        lambda: globex.files.retrieve(batch.input_file_id),
        lambda: globex.files.content(batch.input_file_id),
        lambda: globex.files.content(done.output_file_id),
        lambda: globex.files.delete(batch.input_file_id),
        lambda: globex.batches.retrieve(batch.id),
        lambda: globex.batches.cancel(batch.id),
        lambda: globex.batches.create(input_file_id=batch.input_file_id,
                                      endpoint="/v1/embeddings", completion_window="24h"),
    ):  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert globex.batches.list().data == [] and globex.files.list().data == []
    assert [b.id for b in acme.batches.list().data] == [batch.id]
    assert acme.files.content(batch.input_file_id).content == jsonl([embed_line("x", "hello")])


def test_a_finished_batch_splits_its_requests_into_answers_and_errors(api: Api):
    oai = sdk(api)
    lines = [embed_line("a", "one"), embed_line("b", ["two", "fail"]),
             embed_line("c", ["three", "four"]), embed_line("d", "")]  # fmt: skip
    batch = start(oai, lines)
    assert batch.status == "in_progress" and batch.request_counts.total == 4
    assert batch.output_file_id is None
    with pytest.raises(openai.NotFoundError, match="when its batch ends"):
        oai.files.content(f"file-out-{batch.id}")
    work(api, batch.model_extra["sluice_job_id"])
    done = oai.batches.retrieve(batch.id)
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    answers = {json.loads(x)["custom_id"]: json.loads(x)
               for x in oai.files.content(done.output_file_id).text.splitlines()}  # fmt: skip
    assert sorted(answers) == ["a", "c"]
    body = answers["c"]["response"]["body"]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    errors = {json.loads(x)["custom_id"]: json.loads(x)
              for x in oai.files.content(done.error_file_id).text.splitlines()}  # fmt: skip
    assert errors["b"]["response"]["status_code"] == 500  # failed in the worker
    assert errors["b"]["response"]["body"]["error"]["message"] == "boom"
    assert errors["d"]["response"]["status_code"] == 400  # refused: an empty text
    size = oai.files.retrieve(done.output_file_id).bytes
    assert size == len(oai.files.content(done.output_file_id).content)
    with pytest.raises(openai.ConflictError, match="already ended"):
        oai.batches.cancel(batch.id)
    again = api.http.post(f"/openai/v1/batches/{batch.id}/cancel", headers=api.auth("a"))
    assert again.headers["x-should-retry"] == "false"  # the client would ask twice more


def test_a_cancelled_batch_says_which_requests_it_dropped(api: Api):
    oai = sdk(api)
    batch = start(oai, [embed_line("a", "one"), embed_line("b", ["two", "three"])])
    job_id = batch.model_extra["sluice_job_id"]
    ledger = api.client.ledger
    first = ledger.chunk_ids(job_id)[0]  # chunks of 2: request a and b's first input
    claim = ledger.claim(first, "w", 30)
    assert claim.items is not None
    done = [Outcome(key=i.key, status=ItemStatus.OK,
                    output={"embedding": [1.0], "dim": 1, "tokens_used": 1})
            for i in claim.items]  # fmt: skip
    ledger.complete(first, "w", done)
    cancelled = oai.batches.cancel(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelling_at
    assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (1, 1)
    assert oai.batches.cancel(batch.id).status == "cancelled"  # asked again: the same answer
    (line,) = oai.files.content(cancelled.error_file_id).text.splitlines()
    assert json.loads(line)["custom_id"] == "b"  # half done: its answer is not written
    assert json.loads(line)["error"]["code"] == "batch_cancelled"


def test_errors_come_in_openais_shape(api: Api):
    stranger = openai.OpenAI(base_url="http://testserver/openai/v1", api_key="sk-nope",
                             http_client=api.http, max_retries=0)  # fmt: skip
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.batches.list()
    assert refused.value.body["type"] == "authentication_error"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk(api).batches.list(limit=1000)
    assert bad.value.body["param"] == "limit"
    wrong = api.http.put("/openai/v1/batches", headers=api.auth("a"))
    assert wrong.status_code == 405 and wrong.json()["error"]["message"] == "Method Not Allowed"
    assert api.http.get("/v1/jobs").json()["detail"]  # Sluice's own routes keep their shape
    assert api.http.put("/v1/jobs", headers=api.auth("a")).json() == {
        "detail": "Method Not Allowed"
    }


def test_pages_of_batches_follow_after(api: Api):
    oai = sdk(api)
    made = [start(oai, [embed_line("x", f"text {n}")]).id for n in range(5)]
    first = oai.batches.list(limit=2)
    assert first.has_more and len(first.data) == 2
    seen = [b.id for b in oai.batches.list(limit=2)]  # the client follows `after`
    assert sorted(seen) == sorted(made) and len(set(seen)) == 5
    files = [f.id for f in oai.files.list(limit=2)]  # ends, though every page is full
    assert len(files) == len(set(files)) == 5
    oldest = [f.id for f in oai.files.list(order="asc", purpose="batch")]
    assert oldest == files[::-1]


@pytest.mark.parametrize("window", ["1h", "48h"])
def test_refusals_name_the_field(api: Api, window: str):
    oai = sdk(api)
    uploaded = oai.files.create(file=("in.jsonl", jsonl([embed_line("x", "a")])), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:
        oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                           completion_window=window)  # type: ignore[arg-type]  # fmt: skip
    assert refused.value.body["param"] == "completion_window"
    with pytest.raises(openai.BadRequestError) as refused:
        oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions",
                           completion_window="24h")  # fmt: skip
    assert refused.value.body["param"] == "endpoint"
    with pytest.raises(openai.BadRequestError, match="purpose"):
        oai.files.create(file=("in.jsonl", b"{}\n"), purpose="fine-tune")
    empty = oai.files.create(file=("in.jsonl", b"\n{oops\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="no line .* is a usable request"):
        oai.batches.create(input_file_id=empty.id, endpoint="/v1/embeddings",
                           completion_window="24h")  # fmt: skip
    assert api.client.ledger.jobs() == []  # nothing was started


def test_caps_refuse_at_once_and_keep_nothing(tmp_path: Path, database_url: str, model_cache: Path):
    caps = {"openai_max_file_bytes": 400, "openai_max_requests": 2}
    for api in make_api(tmp_path, database_url, model_cache, **caps):
        oai = sdk(api)
        with pytest.raises(openai.APIStatusError) as refused:
            oai.files.create(file=("big.jsonl", b"x" * 401), purpose="batch")
        assert refused.value.status_code == 413 and oai.files.list().data == []
        assert "SLUICE_OPENAI_MAX_FILE_BYTES" in refused.value.body["message"]
        huge = api.http.post(  # refused from its Content-Length alone, in OpenAI's shape
            "/openai/v1/files", content=b"x" * (400 + 2**16 + 1), headers=api.auth("a")
        )
        assert huge.status_code == 413
        assert "SLUICE_OPENAI_MAX_FILE_BYTES" in huge.json()["error"]["message"]
        three = jsonl([embed_line(f"r{n}", "a") for n in range(3)])
        uploaded = oai.files.create(file=("in.jsonl", three), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="SLUICE_OPENAI_MAX_REQUESTS"):
            oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                               completion_window="24h")  # fmt: skip
        assert api.client.ledger.jobs() == [] and oai.batches.list().data == []


def test_files_may_live_in_an_object_store(
    tmp_path: Path, database_url: str, model_cache: Path, bucket: Bucket
):
    where = {"openai_files_uri": f"{bucket.uri}/openai/", "storage_options": bucket.options}
    for api in make_api(tmp_path, database_url, model_cache, **where):
        oai = sdk(api)
        content = jsonl([embed_line("x", "a")]) * 1
        uploaded = oai.files.create(file=("in.jsonl", content), purpose="batch")
        keys = [o["Key"] for o in bucket.client().list_objects_v2(Bucket=bucket.name)["Contents"]]
        assert keys == [f"openai/acme/{uploaded.id}.jsonl"]
        assert oai.files.content(uploaded.id).content == content
        batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                                   completion_window="24h")  # fmt: skip
        assert batch.request_counts.total == 1
        assert oai.files.delete(uploaded.id).deleted
        assert "Contents" not in bucket.client().list_objects_v2(Bucket=bucket.name)
