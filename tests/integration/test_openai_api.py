"""The OpenAI-compatible API driven by the official `openai` package (a client nobody on the
team wrote), pointed at `sluice api`: batches of chat completions and embeddings from upload
to parsed output, per-line errors, cancel, expiry with partial results, and the synchronous
calls. The chat model spells digits, so every answer is checked exactly."""

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from producers import Client
from schemas.tenants import TenantGrant
from storage import tables as t
from storage.apikeys import ApiKeys
from storage.clock import host_now
from tests.conftest import kill_group
from tests.integration.conftest import sluice, wait_until
from workers.training.scratch_generators import random_digit_texts, spell_digits

pytestmark = pytest.mark.integration
openai = pytest.importorskip("openai")
EMBED_MODEL = "all-MiniLM-L6-v2"


def chat_line(custom_id: str, model: str, digits: str, **params: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": f"Spell: {digits}"}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {**body, **params}}  # fmt: skip


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


def connect(client: Client, api_url: str, demo_models: Path) -> Any:
    client.settings.tenant_grants = {"acme": TenantGrant(model_dirs=[str(demo_models)])}
    key = ApiKeys(client.ledger.engine).create("acme")
    return openai.OpenAI(base_url=f"{api_url}/openai/v1", api_key=key.key, max_retries=0)


def run_batch(oai: Any, lines: list[Any], endpoint: str) -> Any:
    uploaded = oai.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.bytes == len(jsonl(lines)) and uploaded.purpose == "batch"
    assert oai.files.content(uploaded.id).content == jsonl(lines)  # kept as uploaded
    return oai.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,
        completion_window="24h",
        metadata={"team": "finance"},
    )


def finished(oai: Any, batch_id: str, timeout: float = 240) -> Any:
    return wait_until(
        lambda: (
            (b := oai.batches.retrieve(batch_id)).status in ("completed", "expired", "cancelled")
            and b
        ),
        timeout,
        f"batch {batch_id} to end",
    )


def lines_of(oai: Any, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    text = oai.files.content(file_id).text
    return {(x := json.loads(line))["custom_id"] or x["id"]: x for line in text.splitlines()}


def test_a_chat_batch_from_upload_to_parsed_output_with_per_line_errors(
    client: Client, start_worker, demo_models: Path, api_url: str
):
    from openai.types.chat import ChatCompletion

    causal = str(demo_models / "tiny-spell-causal")
    oai = connect(client, api_url, demo_models)
    start_worker()
    digits = random_digit_texts(6, seed=25)
    good = [chat_line(f"req-{n}", causal, d, max_tokens=24) for n, d in enumerate(digits)]
    good[1]["body"]["messages"].insert(0, {"role": "system", "content": "You spell."})
    good[2]["body"].update(temperature=0.7, seed=7, max_completion_tokens=24)
    good[3]["body"]["stop"] = [" "]  # the first word only
    good[4]["body"]["max_tokens"] = 1  # cut short: finish_reason length
    bad = [
        b"{not json",
        chat_line("req-0", causal, "1 2"),  # a repeated custom_id
        chat_line("two-choices", causal, "1 2", n=2),
        chat_line("with-tools", causal, "1 2", tools=[{"type": "function"}]),
        {**chat_line("wrong-url", causal, "1"), "url": "/v1/embeddings"},
        chat_line("other-model", str(demo_models / "tiny-spell-seq2seq"), "1"),
    ]
    batch = run_batch(oai, [*good, *bad], "/v1/chat/completions")
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"team": "finance"}
    assert batch.expires_at - batch.created_at == 86_400  # the completion window: a deadline
    done = finished(oai, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed) == (12, 6)
    assert done.request_counts.failed == 6

    out = lines_of(oai, done.output_file_id)
    assert sorted(out) == [f"req-{n}" for n in range(6)]
    answers = {cid: ChatCompletion.model_validate(x["response"]["body"]) for cid, x in out.items()}
    for n in (0, 1, 2):  # greedy, with a system turn, sampled (the toy model is sure of itself)
        assert answers[f"req-{n}"].choices[0].message.content == spell_digits(digits[n])
        assert answers[f"req-{n}"].choices[0].finish_reason == "stop"
    assert answers["req-3"].choices[0].message.content == spell_digits(digits[3]).split()[0]
    assert answers["req-4"].choices[0].finish_reason == "length"
    assert answers["req-4"].usage.completion_tokens == 1
    usage = answers["req-0"].usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens >= len(digits[0].split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    errors = lines_of(oai, done.error_file_id)
    assert len(errors) == 6
    messages = {cid: x["response"]["body"]["error"]["message"] for cid, x in errors.items()}
    assert all(x["response"]["status_code"] == 400 for x in errors.values())
    assert any("line 7 is not JSON" in m for m in messages.values())  # its place in the file
    assert "repeated" in messages["req-0"] and "line 1" in messages["req-0"]
    assert errors["req-0"]["id"] != out["req-0"]["id"]  # a repeat is a request of its own
    assert "n must be 1" in messages["two-choices"]
    assert "tools" in messages["with-tools"]
    assert "endpoint" in messages["wrong-url"]
    assert "one model per batch" in messages["other-model"]

    listed = oai.batches.list(limit=10)
    assert [b.id for b in listed.data] == [batch.id]
    assert oai.files.retrieve(done.output_file_id).purpose == "batch_output"

    # the synchronous call, through the same queues
    reply = oai.chat.completions.create(
        model=causal, messages=[{"role": "user", "content": "Spell: 5 0 5"}], max_tokens=24
    )
    assert reply.choices[0].message.content == "five zero five"
    assert reply.usage.completion_tokens >= 3
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        oai.chat.completions.create(
            model=causal, messages=[{"role": "user", "content": "Spell: 1"}], logprobs=True
        )


def test_an_embeddings_batch_and_the_synchronous_call_agree(
    client: Client, start_worker, demo_models: Path, api_url: str
):
    from openai.types import CreateEmbeddingResponse

    oai = connect(client, api_url, demo_models)
    start_worker()
    texts = ["a refund for order 1234", "the parcel never arrived", "great service, thanks"]
    lines = [
        {"custom_id": "one", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": EMBED_MODEL, "input": texts[0]}},
        {"custom_id": "many", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": EMBED_MODEL, "input": texts, "encoding_format": "base64"}},
        {"custom_id": "short", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": EMBED_MODEL, "input": "x", "dimensions": 64}},
        {"custom_id": "empty", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": EMBED_MODEL, "input": ["fine", "  "]}},
    ]  # fmt: skip
    done = finished(oai, run_batch(oai, lines, "/v1/embeddings").id)
    assert done.status == "completed"
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (4, 2, 2)
    out = lines_of(oai, done.output_file_id)
    one = CreateEmbeddingResponse.model_validate(out["one"]["response"]["body"])
    many = out["many"]["response"]["body"]["data"]
    assert [d["index"] for d in many] == [0, 1, 2]
    encoded = many[0]["embedding"]
    assert isinstance(encoded, str)  # base64, as asked: little-endian float32
    decoded = list(
        struct.unpack(f"<{len(base64.b64decode(encoded)) // 4}f", base64.b64decode(encoded))
    )
    first = one.data[0].embedding
    assert len(first) == 384 and max(abs(a - b) for a, b in zip(first, decoded, strict=True)) < 1e-6
    assert one.usage.prompt_tokens > 0 and one.usage.total_tokens == one.usage.prompt_tokens
    errors = lines_of(oai, done.error_file_id)
    assert "dimensions" in errors["short"]["response"]["body"]["error"]["message"]
    assert "empty" in errors["empty"]["response"]["body"]["error"]["message"]

    # the official client asks for base64 and decodes it; floats when asked for them
    by_default = oai.embeddings.create(model=EMBED_MODEL, input=texts)
    as_floats = oai.embeddings.create(model=EMBED_MODEL, input=texts[0], encoding_format="float")
    assert [d.index for d in by_default.data] == [0, 1, 2]
    assert max(abs(a - b) for a, b in zip(by_default.data[0].embedding, first, strict=True)) < 1e-6
    assert max(abs(a - b) for a, b in zip(as_floats.data[0].embedding, first, strict=True)) < 1e-6
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="no-such-model", input="x")


def test_cancel_and_expiry_keep_what_finished(
    client: Client, env: dict[str, str], start_worker, demo_models: Path, api_url: str
):
    causal = str(demo_models / "tiny-spell-causal")
    client.settings.chunk_size = 1  # a request a chunk: a worker stopped leaves some undone
    client.settings.openai_completion_window_s = 600  # a server that answers within 10 min
    oai = connect(client, api_url, demo_models)
    digits = random_digit_texts(120, seed=3)
    lines = [chat_line(f"r{n}", causal, d, max_tokens=24) for n, d in enumerate(digits)]

    def partly_run(batch_id: str, at_least: int) -> None:
        worker = start_worker()
        wait_until(lambda: oai.batches.retrieve(batch_id).request_counts.completed >= at_least,
                   240, "some requests to finish")  # fmt: skip
        kill_group(worker)

    expiring = run_batch(oai, lines, "/v1/chat/completions")
    assert expiring.expires_at - expiring.created_at == 600
    partly_run(expiring.id, 3)

    # expiry: the window passes (brought forward here), and the sweeper ends the job
    job_id = oai.batches.retrieve(expiring.id).model_extra["sluice_job_id"]
    with client.ledger.engine.begin() as conn:
        conn.execute(update(t.Job).where(t.Job.id == job_id).values(deadline_at=host_now()))
    swept = sluice(env, "sweep")
    assert swept.returncode == 0 and json.loads(swept.stdout.splitlines()[-1])["expired"] == 1
    ended = oai.batches.retrieve(expiring.id)
    assert ended.status == "expired" and ended.expired_at
    counts = ended.request_counts
    assert counts.completed >= 3 and counts.completed + counts.failed == 120
    answers = lines_of(oai, ended.output_file_id)
    assert len(answers) == counts.completed
    for cid, x in answers.items():
        spelled = x["response"]["body"]["choices"][0]["message"]["content"]
        assert spelled == spell_digits(digits[int(cid[1:])])
    late = lines_of(oai, ended.error_file_id)
    assert len(late) == counts.failed
    assert {x["error"]["code"] for x in late.values()} == {"batch_expired"}
    job = client.status(job_id)
    assert job.status.value == "expired" and job.counts.error == counts.failed

    # cancel: what finished stays, the rest is dropped (the expired job's leftover messages
    # are passed over by the next worker)
    cancelled = run_batch(oai, lines, "/v1/chat/completions")
    partly_run(cancelled.id, 2)
    now = oai.batches.cancel(cancelled.id)
    assert now.status == "cancelled" and now.cancelled_at and now.cancelling_at
    kept = now.request_counts.completed
    assert 2 <= kept < 120
    assert len(lines_of(oai, now.output_file_id)) == kept
    dropped = lines_of(oai, now.error_file_id)
    assert len(dropped) == 120 - kept
    assert {x["error"]["code"] for x in dropped.values()} == {"batch_cancelled"}
