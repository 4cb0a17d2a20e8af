"""PII redaction at the front door (producers/redacting.py), seen in what the ledger stores:
the chunk rows a worker would claim. No worker runs: the pattern types are the producer's."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from producers import Client, RecordingDispatcher
from producers.api import create_app
from schemas.errors import SluiceError
from schemas.jobs import Item
from schemas.settings import Settings
from storage import tables as t
from storage.apikeys import ApiKeys

EMAIL, PHONE, CARD = "grace.hopper@example.com", "+44 20 7946 0958", "4111 1111 1111 1111"
CN_MOBILE, CN_ID = "13812345678", "11010519491231002X"
EN = f"Write to {EMAIL} or call {PHONE}; card {CARD}."
ZH = f"请拨打{CN_MOBILE}联系我，身份证号{CN_ID}，邮箱{EMAIL}谢谢。"
PLANTED = (EMAIL, PHONE, CARD, CN_MOBILE, CN_ID)
PATTERNS = "EMAIL,PHONE,CREDIT_CARD,CN_MOBILE,CN_RESIDENT_ID"


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Client:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",  # never reached: the dispatcher sends nothing
    )
    return Client(settings, RecordingDispatcher())


def stored(client: Client, job_id: str) -> list[Item]:
    """The job's items as its chunk rows hold them (what a worker claims)."""
    with client.ledger.engine.connect() as conn:
        chunks = conn.execute(
            select(t.Chunk.items).where(t.Chunk.job_id == job_id).order_by(t.Chunk.seq)
        ).scalars()
        return [Item.model_validate(raw) for items in chunks for raw in items]


def test_mask_replaces_every_pattern_value_in_english_and_chinese(client: Client):
    job = client.submit_texts({"en": EN, "zh": ZH}, "embed", redact="mask", redact_types=PATTERNS)
    items = {i.key: i for i in stored(client, job)}
    assert items["en"].text == "Write to <EMAIL> or call <PHONE>; card <CREDIT_CARD>."
    assert (
        items["zh"].text == "请拨打<CN_MOBILE>联系我，身份证号<CN_RESIDENT_ID>，邮箱<EMAIL>谢谢。"
    )
    raw = json.dumps([i.model_dump() for i in items.values()], ensure_ascii=False)
    assert not [v for v in PLANTED if v in raw]
    found = items["zh"].redactions or []
    assert [f["type"] for f in found] == ["CN_MOBILE", "CN_RESIDENT_ID", "EMAIL"]
    for f in found:  # each span is where its replacement stands in the stored text
        assert items["zh"].text[f["start"] : f["end"]] == f"<{f['type']}>"
    assert client.ledger.job(job).params["redaction"]["mode"] == "mask"


def test_detect_keeps_the_text_and_records_where_each_value_is(client: Client):
    job = client.submit_texts({"en": EN}, "embed", redact="detect", redact_types=PATTERNS)
    (item,) = stored(client, job)
    assert item.text == EN
    spans = {EN[f["start"] : f["end"]]: f["type"] for f in item.redactions or []}
    assert spans == {EMAIL: "EMAIL", PHONE: "PHONE", CARD: "CREDIT_CARD"}
    assert all(set(f) == {"field", "type", "start", "end", "by"} for f in item.redactions or [])


def test_hash_tokens_are_equal_within_a_tenant_and_differ_across_tenants(client: Client):
    texts = {"a": f"mail {EMAIL}", "b": f"again {EMAIL}", "c": "mail other@example.org"}
    tokens = {}
    for tenant in ("acme", "globex"):
        job = client.submit_texts(
            texts, "embed", redact="hash", redact_types="EMAIL", tenant=tenant
        )
        tokens[tenant] = {i.key: i.text.split(" ", 1)[1] for i in stored(client, job)}
    acme, globex = tokens["acme"], tokens["globex"]
    assert acme["a"] == acme["b"] != acme["c"]
    assert acme["a"].startswith("<EMAIL:") and EMAIL not in acme["a"]
    assert globex["a"] == globex["b"] and globex["a"] != acme["a"]


def test_a_key_that_is_pii_is_hashed_and_the_owner_can_join_back(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "\n".join(json.dumps({"customer": k, "text": "hello"}) for k in (EMAIL, "plain-7"))
    )
    job = client.submit_file(
        rows, "embed", key_column="customer", redact="mask", redact_types=PATTERNS
    )
    items = stored(client, job)
    keys = [i.key for i in items]
    assert keys[1] == "plain-7" and keys[0].startswith("<EMAIL:") and EMAIL not in keys[0]
    (finding,) = items[0].redactions or []
    assert finding["field"] == "key" and "sluice pii key" in finding["join"]
    assert client.stored_key(EMAIL) == keys[0]  # the SDK's way back
    for name, value in {
        "SLUICE_DATA_DIR": str(client.settings.data_dir),
        "SLUICE_DATABASE_URL": client.endpoints.database_url,
    }.items():
        monkeypatch.setenv(name, value)
    from ops.cli import main

    out = CliRunner().invoke(main, ["pii", "key", EMAIL])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["stored_as"] == keys[0]
    # erasing the tenant's secret: no token made before can be matched again
    out = CliRunner().invoke(main, ["pii", "forget-secret", "--tenant", "default", "--yes"])
    assert out.exit_code == 0, out.output
    assert client.stored_key(EMAIL) != keys[0]


def test_text_that_is_mostly_pii_and_overlapping_values(client: Client):
    mostly = f"{EMAIL} {CN_MOBILE} {CARD}"
    job = client.submit_texts({"m": mostly}, "embed", redact="mask", redact_types=PATTERNS)
    (item,) = stored(client, job)
    assert item.text == "<EMAIL> <CN_MOBILE> <CREDIT_CARD>"


def test_names_need_the_entity_model_and_the_message_says_how(client: Client):
    with pytest.raises(SluiceError, match="SLUICE_PII_MODEL"):
        client.submit_texts({"a": EN}, "embed", redact="mask")  # every type: names too
    with pytest.raises(SluiceError, match="unknown PII types"):
        client.submit_texts({"a": EN}, "embed", redact="mask", redact_types="EMAIL,SECRETS")
    with pytest.raises(SluiceError, match="bad redaction mode"):
        client.submit_texts({"a": EN}, "embed", redact="scramble")


def test_the_rest_api_takes_the_policy(client: Client):
    key = ApiKeys(client.ledger.engine).create("acme")
    http = TestClient(create_app(client=client), headers={"X-API-Key": key.key})
    body = {"task": "embed", "items": [{"key": "1", "text": ZH}], "redact": "mask",
            "redact_types": ["CN_MOBILE", "CN_RESIDENT_ID", "EMAIL"]}  # fmt: skip
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    (item,) = stored(client, r.json()["job_id"])
    assert item.text == "请拨打<CN_MOBILE>联系我，身份证号<CN_RESIDENT_ID>，邮箱<EMAIL>谢谢。"
    bad = http.post("/v1/jobs", json={**body, "redact": "scramble"})
    assert bad.status_code == 422


def test_a_parameter_or_a_source_that_holds_pii_is_not_stored_either(client: Client):
    job = client.submit_texts(
        {"a": "Our office is in Berlin."},
        "zero-shot-text",
        labels=[f"about {EMAIL}", "other"],
        redact="mask",
        redact_types=PATTERNS,
        source=f"mailbox of {EMAIL}",
    )
    view = client.ledger.job(job)
    (item,) = stored(client, job)
    recorded = json.dumps([view.params, view.source, item.model_dump()], ensure_ascii=False)
    assert EMAIL not in recorded and "<EMAIL>" in recorded
