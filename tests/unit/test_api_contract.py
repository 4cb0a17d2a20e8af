"""The REST API against its own OpenAPI document (Schemathesis, all its checks): no input gives
a server error, every status it answers is documented, a request the schema admits is accepted
and one it refuses is refused. In-process (ASGI) on a SQLite ledger, derandomized: every run
sends the same requests. No message reaches a broker, and nothing resolves or connects to a
callback URL (the test fails if anything opens a connection)."""

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from producers import Client, RecordingDispatcher
from producers.api import create_app
from schemas.catalog import load_catalog
from schemas.errors import QuotaExceededError
from schemas.generation_params import TEMPLATE, pointed, references
from schemas.settings import Settings
from storage.apikeys import ApiKeys

EXAMPLES = 100  # per operation, for schema-valid and for schema-violating requests each


def _no_network(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("the contract test opened a network connection")


def _public_address(host: str, port: Any, *_args: Any, **_kwargs: Any) -> list[Any]:
    """Every host name resolves to one public address (a callback check may resolve one)."""
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port or 443))]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Client]]:
    """The app on a fresh ledger, one tenant's key, and the Client under it."""
    data = tmp_path_factory.mktemp("contract")
    tagger = untrained_tagger(data / "tagger")  # so `redact` with names is served
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", _public_address)
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket, "create_connection", _no_network)
        client = Client(
            Settings(
                data_dir=data,
                database_url=f"sqlite:///{data / 'ledger.db'}",
                broker_url="redis://127.0.0.1:1/0",
                api_max_wait=0.05,  # no worker runs: every event waits out its ?wait=
                pii_model=str(tagger),
            ),
            RecordingDispatcher(),  # recorded, never sent
        )
        key = ApiKeys(client.ledger.engine).create("acme").key
        yield create_app(client=client), key, client


def untrained_tagger(out: Path) -> Path:
    """An extract-entities model directory (no worker loads it here: only its files count)."""
    from workers.training.scratch_entities import make_entity_tokenizer, tiny_token_classifier
    from workers.training.scratch_text import save_tokenizer

    tokenizer = make_entity_tokenizer(0)
    tiny_token_classifier(tokenizer).save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


def _schema(served: tuple[Any, str, Client], mode: str) -> Any:
    app, key, _ = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.auth()(_bearer(key))
    # with_security_parameters=False: the test's key is the only one sent (Schemathesis
    # still sends none, and a wrong one, to check that every /v1 route refuses those)
    schema.config.generation.update(
        modes=[mode], max_examples=EXAMPLES, deterministic=True, with_security_parameters=False
    )
    return schema


@pytest.fixture(scope="module")
def valid_requests(served: tuple[Any, str, Client]) -> Any:
    return _schema(served, "positive")


@pytest.fixture(scope="module")
def invalid_requests(served: tuple[Any, str, Client]) -> Any:
    return _schema(served, "negative")


def _bearer(key: str) -> type:
    class Bearer:
        def get(self, _case: Any, _context: Any) -> str:
            return key

        def set(self, case: Any, data: str, _context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return Bearer


def _documented_cross_field_rules(case: Any) -> None:
    """What a JSON Schema cannot state and the descriptions do (the server answers 422):
    keys are unique within a job, explain_steps only with an explain policy, label
    descriptions are only for given labels, an
    upload's file holds the columns its form names, a prompt template reads only fields the
    items have, and a json_schema is a JSON Schema. Schema-valid requests follow them."""
    body = case.body
    if case.meta is None or not case.meta.generation.mode.is_positive or not isinstance(body, dict):
        return
    items = body.get("items")
    if isinstance(items, list):
        seen: set[str] = set()
        for n, item in enumerate(items):
            if isinstance(item, dict) and "key" in item:
                while _as_key(item["key"]) in seen:
                    item["key"] = f"{item['key']}-{n}"[-512:]
                seen.add(_as_key(item["key"]))
    if body.get("explain", "none") == "none":
        body.pop("explain_steps", None)
    descriptions, labels = body.get("label_descriptions"), body.get("labels")
    if isinstance(descriptions, dict) and isinstance(labels, list):
        body["label_descriptions"] = {k: v for k, v in descriptions.items() if k in labels}
    fields = _template_fields(body)
    if fields and isinstance(items, list):  # a prompt names only fields every item has
        for n, item in enumerate(items):
            item = {"text": item} if isinstance(item, str) else item
            if isinstance(item, dict):
                item["fields"] = {**(item.get("fields") or {}), **fields}
                items[n] = item
    elif fields and case.path == "/v1/events":
        body["fields"] = {**(body.get("fields") or {}), **fields}
    if isinstance(body.get("json_schema"), dict) and not _is_json_schema(body["json_schema"]):
        body["json_schema"] = {}  # "a JSON Schema": what the description says it must be
    if case.media_type == "multipart/form-data":
        row = {
            **fields,
            body.get("text_column", "text"): "a text",
            body.get("media_column", "path"): "data:image/png;base64,iVBORw0KGgo=",
        }
        if "key_column" in body:
            row[body["key_column"]] = "k1"
        body["file"] = json.dumps(row).encode() + b"\n"


def _upload_admitted(case: Any) -> bool:
    """Whether a multipart form is valid against its task's `<Task>Upload` schema. The
    generator, given the oneOf of every task's form, sometimes yields a form that mixes two
    tasks' fields (schemathesis' known false positives with oneOf and additionalProperties
    false): such a form is schema-violating, and is not sent as a valid one."""
    body = case.body
    if case.media_type != "multipart/form-data" or not isinstance(body, dict):
        return True
    schemas = case.operation.schema.raw_schema["components"]["schemas"]
    named = [s for s in schemas.values() if s.get("properties", {}).get("task", {}).get(
        "const") == body.get("task") and s.get("title", "").endswith("Upload")]  # fmt: skip
    if len(named) != 1:
        return True
    form = {k: ("a file" if isinstance(v, bytes) else v) for k, v in body.items()}
    validator = jsonschema.Draft202012Validator({**named[0], "$defs": schemas})
    return validator.is_valid(form)


def _template_fields(body: dict[str, Any]) -> dict[str, str]:
    """The fields a body's templates read (generate's prompt, answer-question's question and
    context), besides the text of a task that has one, each given a value."""
    task = body.get("task")
    catalog = load_catalog()
    if not isinstance(task, str) or task not in catalog:
        return {}
    params = catalog.get(task).params
    names = params.row_fields(
        {k: v for k, v in body.items() if isinstance(v, str) and re.match(TEMPLATE, v)}
    )
    return {name: "a value" for name in names}


def _is_json_schema(schema: dict[str, Any]) -> bool:
    """A JSON Schema a database can store (no NUL, the rule for every text) whose
    references point within it."""
    if "\\u0000" in json.dumps(schema):
        return False
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError:
        return False
    return all(r.startswith("#") and pointed(schema, r) is not None for r in references(schema))


def _as_key(value: Any) -> str:
    """A key as the server compares keys: 1, 1.0 and "1" are one key."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # Schemathesis 4.32 names each operation's subtest through the pytest item's `_nodeid`,
    # an attribute pytest 9.2 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@schemathesis.pytest.from_fixture("valid_requests").parametrize()
@FUZZ
def test_every_request_the_schema_admits_is_accepted_as_documented(case: Any) -> None:
    _documented_cross_field_rules(case)  # here, not as a hook: every phase's cases pass here
    if not _upload_admitted(case):
        hypothesis.reject()  # a form the schema does not admit: not this test's to send
    case.call_and_validate()


# Routes that take no input but the key: no schema-violating request to send them.
NO_INPUT = ["/metrics", "/healthz", "/v1/models", "/v1/registry"]


@schemathesis.pytest.from_fixture("invalid_requests").exclude(path=NO_INPUT).parametrize()
@FUZZ
def test_every_request_the_schema_refuses_is_refused_as_documented(case: Any) -> None:
    case.call_and_validate()


def test_a_tenant_over_its_quota_gets_429_with_retry_after(
    served: tuple[Any, str, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, key, client = served

    def over_quota(*_args: Any, **_kwargs: Any) -> str:
        raise QuotaExceededError("acme has 10 jobs in flight, its limit", retry_after_seconds=30)

    monkeypatch.setattr(client, "submit_items", over_quota)
    http = TestClient(app)
    r = http.post(
        "/v1/jobs",
        json={"task": "embed", "items": ["hello"]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "30"
    assert r.json() == {"detail": "acme has 10 jobs in flight, its limit"}
    documented = app.openapi()["paths"]
    for path in ("/v1/jobs", "/v1/events", "/v1/jobs/{job_id}/retry"):
        assert "Retry-After" in documented[path]["post"]["responses"]["429"]["headers"]
