"""Event pipelines on message buses (issue 24): what `sluice listen FILE` reads.

A pipeline consumes one source (a RabbitMQ queue, a NATS JetStream subject through a durable
consumer, an MQTT topic), maps each message to one item of a task, and publishes each item's
result to its sinks; a message that cannot be read or mapped goes to the dead-letter sink with
the reason. Its events are items of a standing job of the pipeline's tenant, rolled over by
count or age (storage/standing_jobs.py). Shapes only: reading the file, with the line of each
mistake, is producers/pipeline_file.py.
"""

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
FIELD_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
MESSAGE_ID = "message_id"  # the default key: the bus's own id of the message


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RabbitSource(Strict):
    """A queue on RabbitMQ (AMQP 0-9-1): consumed with manual acks and a prefetch window."""

    kind: Literal["rabbitmq"]
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    queue: str = Field(min_length=1)
    declare: bool = Field(True, description="declare the queue (durable) if it is missing")


class NatsSource(Strict):
    """A JetStream stream's subject, read by a durable pull consumer (explicit acks)."""

    kind: Literal["nats"]
    url: str = "nats://127.0.0.1:4222"
    stream: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    durable: str = Field(min_length=1, description="the consumer's name: its position survives")
    declare: bool = Field(True, description="create the stream if it is missing")


class MqttSource(Strict):
    """An MQTT topic (filter) on a persistent session at QoS 1: the broker keeps what arrives
    while the listener is away, and resends what was not acknowledged."""

    kind: Literal["mqtt"]
    url: str = "mqtt://127.0.0.1:1883"
    topic: str = Field(min_length=1)
    client_id: str = Field(min_length=1, description="the persistent session's id")


Source = Annotated[RabbitSource | NatsSource | MqttSource, Field(discriminator="kind")]


class RabbitSink(Strict):
    kind: Literal["rabbitmq"]
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = ""  # the default exchange: routing_key names a queue
    routing_key: str = Field(min_length=1)
    declare_queue: bool = Field(
        True, description="on the default exchange, declare the queue routing_key names"
    )


class NatsSink(Strict):
    """Published to JetStream with Nats-Msg-Id: the stream drops a repeat within its
    duplicate window, so each result is on the subject once."""

    kind: Literal["nats"]
    url: str = "nats://127.0.0.1:4222"
    subject: str = Field(min_length=1)
    stream: str | None = Field(None, description="create this stream over subject if missing")


class MqttSink(Strict):
    kind: Literal["mqtt"]
    url: str = "mqtt://127.0.0.1:1883"
    topic: str = Field(min_length=1)
    client_id: str | None = None


Sink = Annotated[RabbitSink | NatsSink | MqttSink, Field(discriminator="kind")]


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
