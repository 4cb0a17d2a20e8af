"""One pipeline from `sluice listen` flags instead of a file: each bus endpoint as one URL,
its scheme naming the kind and its query the fields, e.g.

    --source 'amqp://guest:guest@127.0.0.1:5672/?queue=tickets'
    --source 'nats://127.0.0.1:4222?stream=TICKETS&subject=tickets.new&durable=sluice'
    --source 'mqtt://127.0.0.1:1883?topic=plant/+/readings&client_id=sluice-1'
    --sink 'amqp://...?routing_key=tickets.out'   --sink 'nats://...?subject=tickets.out'
    --sink 'https://crm.example.com/hook'          --sink 'postgresql://wh/analytics?table=labels'

Checked by the same models as a file; each mistake is named by its flag."""

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import ValidationError

from schemas.errors import PipelineFileError
from schemas.pipelines import PipelinesFile

KINDS = {
    "amqp": "rabbitmq", "amqps": "rabbitmq", "nats": "nats", "tls": "nats", "mqtt": "mqtt",
    "http": "webhook", "https": "webhook",
}  # fmt: skip


def endpoint(url: str, flag: str) -> dict[str, Any]:
    """A source or sink declaration from its URL (an SQL sink: any database URL with ?table=)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    kind = KINDS.get(scheme)
    if kind == "webhook":
        return {"kind": kind, "url": url}
    parts = urlsplit(url)
    fields = dict(parse_qsl(parts.query, keep_blank_values=True))
    base = urlunsplit(parts._replace(query=""))
    if kind is None:
        if flag != "--source" and "table" in fields:
            return {"kind": "sql", "url": base, **fields}
        known = ", ".join(f"{s}://" for s in KINDS)
        raise PipelineFileError(
            f"{flag} {url.split('://')[0]}://...: not a bus URL ({known}; a sink may also be a "
            "database URL with ?table=NAME)"
        )
    return {"kind": kind, "url": base, **fields}


def pipeline_from_flags(
    *,
    name: str,
    task: str,
    source: str,
    sinks: list[str],
    dead_letter: str,
    mapping: dict[str, str | None],
    tenant: str | None = None,
    model: str | None = None,
    explain: str | None = None,
    params: str | None = None,
    batching: dict[str, Any] | None = None,
) -> PipelinesFile:
    declared: dict[str, Any] = {
        "name": name,
        "task": task,
        "source": endpoint(source, "--source"),
        "sinks": [endpoint(url, "--sink") for url in sinks],
        "dead_letter": endpoint(dead_letter, "--dead-letter"),
        "map": {k: v for k, v in mapping.items() if v is not None},
        "batching": {k: v for k, v in (batching or {}).items() if v is not None},
    }
    for key, value in (("tenant", tenant), ("model", model), ("explain", explain)):
        if value is not None:
            declared[key] = value
    if params:
        try:
            declared["params"] = json.loads(params)
        except json.JSONDecodeError as exc:
            raise PipelineFileError(f"--params is not JSON: {exc}") from None
    try:
        return PipelinesFile.model_validate({"pipelines": [declared]})
    except ValidationError as exc:
        raise PipelineFileError("\n".join(_shown(e) for e in exc.errors())) from None


FLAG_OF = {"source": "--source", "sinks": "--sink", "dead_letter": "--dead-letter",
           "map": "--key/--text/--media/--record", "params": "--params"}  # fmt: skip


def _shown(error: Any) -> str:
    loc = [part for part in error["loc"][2:] if part not in KINDS.values() and part != "sql"]
    flag = FLAG_OF.get(str(loc[0]), f"--{str(loc[0]).replace('_', '-')}") if loc else "flags"
    rest = ".".join(str(part) for part in loc[1:])
    return f"{flag}{' ' + rest if rest else ''}: {error['msg'].removeprefix('Value error, ')}"
