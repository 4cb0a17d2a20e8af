"""Event pipelines on message buses (issue 24): what `sluice listen FILE` reads.

A pipeline consumes one source (a RabbitMQ queue, a NATS JetStream subject through a durable
consumer, an MQTT topic), maps each message to one item of a task, and publishes each item's
result to its sinks; a message that cannot be read or mapped goes to the dead-letter sink with
the reason. Its events are items of a standing job of the pipeline's tenant, rolled over by
count or age (storage/standing_jobs.py). Shapes only: reading the file, with the line of each
mistake, is producers/pipeline_file.py.
"""

import os
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
FIELD_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
MESSAGE_ID = "message_id"  # the default key: the bus's own id of the message
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SCHEMES = {
    "rabbitmq": ("amqp", "amqps"),
    "nats": ("nats", "tls"),
    "mqtt": ("mqtt",),
    "webhook": ("http", "https"),
}


def expand_env(text: str) -> str:
    """`${NAME}` replaced by the environment's NAME (a password stays out of the file); an
    unset one raises ValueError naming it."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"the environment variable {name} is not set")
        return os.environ[name]

    return ENV_REF.sub(value, text)


def masked_url(url: str) -> str:
    """The URL for messages and logs: scheme, host, port and path only (credentials, a
    token in place of a user, and the query are left out)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<a URL>"
    netloc, slash, path = rest.partition("/")
    host = netloc.rpartition("@")[2]
    return f"{scheme}://{'***@' if '@' in netloc else ''}{host}{slash}{path.split('?')[0]}"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(Strict):
    """Something at a URL; `${NAME}` in it is read from the environment when it connects."""

    @field_validator("url", check_fields=False)
    @classmethod
    def _url(cls, value: str, info: Any) -> str:
        kind = cls.model_fields["kind"].annotation.__args__[0]  # type: ignore[union-attr]
        expand_env(value)  # every variable it names is set
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in SCHEMES[kind]:
            shown = " or ".join(f"{s}://" for s in SCHEMES[kind])
            raise ValueError(f"a {kind} URL starts with {shown}")
        return value


class RabbitSource(Endpoint):
    """A queue on RabbitMQ (AMQP 0-9-1): consumed with manual acks and a prefetch window."""

    kind: Literal["rabbitmq"]
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    queue: str = Field(min_length=1)
    declare: bool = Field(True, description="declare the queue (durable) if it is missing")


class NatsSource(Endpoint):
    """A JetStream stream's subject, read by a durable pull consumer (explicit acks)."""

    kind: Literal["nats"]
    url: str = "nats://127.0.0.1:4222"
    stream: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    durable: str = Field(min_length=1, description="the consumer's name: its position survives")
    declare: bool = Field(True, description="create the stream if it is missing")


class MqttSource(Endpoint):
    """An MQTT topic (filter) on a persistent session at QoS 1: the broker keeps what arrives
    while the listener is away, and resends what was not acknowledged."""

    kind: Literal["mqtt"]
    url: str = "mqtt://127.0.0.1:1883"
    topic: str = Field(min_length=1)
    client_id: str = Field(min_length=1, description="the persistent session's id")


Source = Annotated[RabbitSource | NatsSource | MqttSource, Field(discriminator="kind")]


class RabbitSink(Endpoint):
    kind: Literal["rabbitmq"]
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = ""  # the default exchange: routing_key names a queue
    routing_key: str = Field(min_length=1)
    declare_queue: bool = Field(
        True, description="on the default exchange, declare the queue routing_key names"
    )


class NatsSink(Endpoint):
    """Published to JetStream with Nats-Msg-Id: the stream drops a repeat within its
    duplicate window, so each result is on the subject once."""

    kind: Literal["nats"]
    url: str = "nats://127.0.0.1:4222"
    subject: str = Field(min_length=1)
    stream: str | None = Field(None, description="create this stream over subject if missing")


class MqttSink(Endpoint):
    kind: Literal["mqtt"]
    url: str = "mqtt://127.0.0.1:1883"
    topic: str = Field(min_length=1)
    client_id: str | None = None


class WebhookSink(Endpoint):
    """Each result POSTed as JSON, through the egress guard of callbacks (no private address
    unless SLUICE_CALLBACK_ALLOW_PRIVATE; every address checked; no redirects), with
    `webhook-id` set to the result's message id and, with `secret`, Standard Webhooks
    signature headers."""

    kind: Literal["webhook"]
    url: str = Field(min_length=1)
    secret: str | None = Field(None, description="the signing secret, e.g. ${RESULTS_SECRET}")
    concurrency: int = Field(8, ge=1, le=64, description="POSTs at once")


class SqlSink(Strict):
    """Results upserted by event key into a table (created if missing), as `sluice enrich`
    writes its destination: a repeated publish rewrites the same row."""

    kind: Literal["sql"]
    url: str = Field(min_length=1, description="a SQLAlchemy URL, e.g. postgresql://${PGUSER}@...")
    table: str = Field(min_length=1)
    key_column: str = "event_key"

    @field_validator("url")
    @classmethod
    def _env(cls, value: str) -> str:
        expand_env(value)
        return value


Sink = Annotated[
    RabbitSink | NatsSink | MqttSink | WebhookSink | SqlSink, Field(discriminator="kind")
]


class Mapping(Strict):
    """Where an item's fields are in a JSON message: dotted paths (`ticket.body`, `items.0.id`).
    Exactly one of text, media, record (the task's modality decides which it needs)."""

    key: str = Field(MESSAGE_ID, description="the event's key; default: the bus's message id")
    text: str | None = None
    media: str | None = None
    record: str | None = None

    @field_validator("key", "text", "media", "record")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not FIELD_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not a dotted field path such as `ticket.body`")
        return value

    @model_validator(mode="after")
    def _one_field(self) -> "Mapping":
        given = [f for f in ("text", "media", "record") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of text, media or record (the path of the item's input)"
            )
        return self

    @property
    def field(self) -> str:
        return next(f for f in ("text", "media", "record") if getattr(self, f) is not None)


class Batching(Strict):
    max_events: int = Field(64, ge=1, le=10_000, description="events in one chunk at most")
    max_wait_ms: float = Field(50.0, ge=0, le=60_000, description="a chunk waits this at most")
    max_in_flight: int = Field(
        1000, ge=1, description="consumption pauses above this many events not yet published"
    )
    max_message_bytes: int = Field(1 << 20, ge=1, description="a larger message is dead-lettered")
    max_open_chunks: int = Field(
        2,
        ge=1,
        le=1000,
        description="while this many of the pipeline's chunks are being worked on, arriving "
        "events gather into the next one (up to max_events): fewer, fuller chunks under load",
    )


class Rollover(Strict):
    """A pipeline's standing job is closed, and a new one opened, at whichever comes first."""

    max_items: int = Field(100_000, ge=1)
    max_age_s: float = Field(3600.0, gt=0)


class Pipeline(Strict):
    name: str
    tenant: str = "default"
    task: str = Field(min_length=1)
    model: str | None = None
    explain: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)
    source: Source
    map: Mapping
    sinks: list[Sink] = Field(min_length=1)
    dead_letter: Sink
    batching: Batching = Batching()
    rollover: Rollover = Rollover()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(
                "a pipeline name is lower-case letters, digits, '.', '_' or '-' (at most 64)"
            )
        return value


class PipelinesFile(Strict):
    pipelines: list[Pipeline] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "PipelinesFile":
        names = [p.name for p in self.pipelines]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"pipeline names must be unique: {', '.join(repeated)} repeated")
        return self
