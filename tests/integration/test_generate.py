"""`generate` through the whole path (Redis, Celery, Ray, the ledger) from every front door:
the toy models spell digits, so each row's text is checked exactly, and against
`model.generate` run on each prompt alone."""

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from producers import Client
from schemas.tenants import Role, TenantGrant
from storage.apikeys import ApiKeys
from storage.engine import make_engine
from tests.integration.conftest import rows_of, sluice, wait_until, warehouse_url
from workers.training.scratch_generators import random_digit_texts, spell_digits

pytestmark = pytest.mark.integration

SPELL = "Spell: {text}"


def unbatched(model_dir: Path, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
    """What `model.generate` gives for each prompt alone, greedy, as a user would call it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    seq2seq = AutoConfig.from_pretrained(model_dir).is_encoder_decoder
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = auto.from_pretrained(model_dir, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for prompt in prompts:
        if tok.chat_template:
            chat = [{"role": "user", "content": prompt}]
            prompt = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            enc = tok(prompt, add_special_tokens=False, return_tensors="pt")
        else:
            enc = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            seq = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        start = 0 if seq2seq else enc["input_ids"].shape[1]
        out.append(tok.decode(seq[0, start:], skip_special_tokens=True))
    return out


def check_enrich(env: dict[str, str], warehouse: str, model: str) -> None:
    """A table whose prompt reads two columns, enriched and written back; the tables are
    dropped after (the PostgreSQL test database is shared with the migration checks)."""
    engine = make_engine(warehouse)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS gen_spelled"))
            conn.execute(text("DROP TABLE IF EXISTS gen_digits"))
            conn.execute(
                text("CREATE TABLE gen_digits (id INTEGER PRIMARY KEY, d TEXT, tail TEXT)")
            )
            conn.execute(
                text("INSERT INTO gen_digits VALUES (:id, :d, :tail)"),
                [{"id": i, "d": d, "tail": str(i % 10)}
                 for i, d in enumerate(random_digit_texts(12, seed=3, max_digits=10))],
            )  # fmt: skip
        enriched = sluice(
            env, "enrich", "--source", warehouse, "--table", "gen_digits", "--key-column", "id",
            "--text-column", "d", "--task", "generate", "--model", model,
            "--prompt", "Spell: {text} {tail}", "--dest-table", "gen_spelled", "--json",
        )  # fmt: skip
        assert enriched.returncode == 0, enriched.stderr
        with engine.connect() as conn:
            pairs = conn.execute(
                text("SELECT d, tail, s.output FROM gen_digits g JOIN gen_spelled s ON s.id = g.id")
            ).all()
        assert len(pairs) == 12
        for d, tail, output in pairs:  # the template read a second column of the table
            output = json.loads(output) if isinstance(output, str) else output
            assert output["text"] == spell_digits(f"{d} {tail}")
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS gen_spelled"))
            conn.execute(text("DROP TABLE IF EXISTS gen_digits"))
        engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # every door: both
@pytest.mark.parametrize("model_name", ["tiny-spell-causal", "tiny-spell-seq2seq"])
def test_mixed_lengths_in_one_chunk_match_the_transformation_and_unbatched_generate(
    client: Client, start_worker, demo_models: Path, tmp_path: Path, model_name: str
):
    model = demo_models / model_name
    digits = random_digit_texts(40, seed=7)  # 1 to 12 digits, shuffled: one chunk of 40
    rows = [{"id": f"r{n}", "digits": d} for n, d in enumerate(digits)]
    rows.append({"id": "blank", "digits": "   "})
    data = tmp_path / "digits.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start_worker()
    job_id = client.submit_file(
        data, "generate", model=str(model), key_column="id", text_column="digits",
        prompt=SPELL, max_new_tokens=24,
    )  # fmt: skip
    view = client.wait(job_id, timeout=300)
    assert (view.status, view.counts.ok, view.counts.invalid) == ("partially_failed", 40, 1)
    got = rows_of(client, job_id)
    expected = unbatched(model, [SPELL.format(text=d) for d in digits])
    for n, d in enumerate(digits):
        out = got[f"r{n}"]["output"]
        assert out["text"] == spell_digits(d) == expected[n], (d, out)
        assert out["finish_reason"] == "stop" and out["flags"] == []
        assert out["completion_tokens"] == len(d.split())  # one word per digit
    assert view.tokens is not None
    assert view.tokens.completion == sum(len(d.split()) for d in digits)
    assert view.tokens.prompt == sum(got[f"r{n}"]["output"]["prompt_tokens"] for n in range(40))


def test_every_front_door_and_the_row_facts(
    client: Client,
    settings,
    env: dict[str, str],
    start_worker,
    demo_models: Path,
    tmp_path: Path,
    api_url: str,
    database_url: str,
):
    causal = str(demo_models / "tiny-spell-causal")
    seq2seq = str(demo_models / "tiny-spell-seq2seq")
    start_worker()
    # the API's tenant may name the models under the demo models' folder
    client.settings.tenant_grants = {"acme": TenantGrant(model_dirs=[str(demo_models)])}
    keys = ApiKeys(client.ledger.engine)
    acme = keys.create("acme")
    ops = keys.create("ops", "scraper", Role.OPERATOR)
    http = httpx.Client(
        base_url=api_url, timeout=120, headers={"Authorization": f"Bearer {acme.key}"}
    )

    # REST: a template over two fields, a short token budget, a stop string, an absent field
    items = [
        {"key": "a", "text": "3 1 4", "fields": {"tail": "1 5"}},
        {"key": "b", "text": "2 7", "fields": {"tail": "1 8 2 8"}},
        {"key": "c", "text": "9"},  # no `tail`: this row is invalid, the others go on
    ]
    body = {"task": "generate", "model": causal, "prompt": "Spell: {text} {tail}",
            "max_new_tokens": 3, "items": items}  # fmt: skip
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    rest_job = r.json()["job_id"]
    wait_until(lambda: client.status(rest_job).status.finished, 180, "the REST job")
    job = http.get(f"/v1/jobs/{rest_job}").json()
    assert job["status"] == "partially_failed" and job["tokens"]["completion"] == 6, job
    res = {x["key"]: x for x in http.get(f"/v1/jobs/{job['job_id']}/results").json()["items"]}
    assert res["a"]["output"]["text"] == "three one four"  # cut at 3 of "... one five"
    assert res["a"]["output"]["finish_reason"] == "length"
    assert res["a"]["output"]["flags"] == ["max_new_tokens"]
    assert res["c"]["status"] == "invalid" and "{tail}" in res["c"]["error"]
    # an absent field everywhere, an unsupported parameter, a broken schema: refused at once
    for bad, word in [
        ({**body, "prompt": "Spell: {digits}"}, "{digits}"),
        ({**body, "num_beams": 4}, "num_beams"),
        ({**body, "json_schema": {"type": "no-such-type"}}, "json_schema"),
    ]:
        r = http.post("/v1/jobs", json=bad)
        assert r.status_code in (400, 422) and word in r.text, r.text

    # stop strings, over an event (one item, a callback-less 202 then the result)
    r = http.post(
        "/v1/events",
        json={"task": "generate", "model": seq2seq, "key": "ev1", "text": "5 0 5",
              "prompt": SPELL, "stop": [" zero"]},
        params={"wait": 120},
    )  # fmt: skip
    assert r.status_code in (200, 201, 202), r.text
    event_job = r.json()["job_id"]
    wait_until(lambda: client.status(event_job).status.finished, 120, "the event's job")
    (ev,) = client.results(event_job)
    assert ev["output"]["text"] == "five" and ev["output"]["finish_reason"] == "stop_string"

    # the CLI, with the template and the JSON Schema from files: "five" is not JSON
    (tmp_path / "prompt.txt").write_text(SPELL, encoding="utf-8")
    (tmp_path / "schema.json").write_text(json.dumps({"type": "object"}))
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "5"}) + "\n")
    done = sluice(
        env, "submit", str(tmp_path / "in.jsonl"), "--task", "generate", "--model", causal,
        "--prompt-file", str(tmp_path / "prompt.txt"), "--json-schema",
        str(tmp_path / "schema.json"), "--wait", "--json",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    cli_job = json.loads(done.stdout.splitlines()[-1])["job_id"]
    (row,) = client.results(cli_job)
    assert row["status"] == "invalid" and "not JSON" in row["error"]
    broken = sluice(
        env, "submit", str(tmp_path / "in.jsonl"), "--task", "generate", "--model", causal,
        "--prompt", "Spell: {nope}",
    )  # fmt: skip
    assert broken.returncode == 2 and "{nope}" in broken.stderr

    # enrich: a table of digits written back with their spelling
    check_enrich(env, warehouse_url(database_url, tmp_path), seq2seq)

    # tokens in /metrics (operator only)
    page = httpx.get(
        f"{api_url}/metrics", headers={"Authorization": f"Bearer {ops.key}"}, timeout=30
    ).text
    assert 'sluice_tokens_total{kind="completion",task="generate"}' in page
