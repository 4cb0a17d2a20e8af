"""What a bus gives a pipeline and takes from it, whichever bus it is.

A Source yields BusMessages; the listener acknowledges each one (`ack`) only after its event
is recorded in the ledger, or dead-lettered. A Sink publishes Outgoing messages, each with a
stable id (derived from the event's key), and returns once the bus has accepted them: a crash
before the ledger records that can publish one again, with the same id.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class BusMessage:
    body: bytes
    ack: Callable[[], Awaitable[None]]
    message_id: str | None = None  # the bus's own id, when it has one that survives redelivery
    redelivered: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outgoing:
    message_id: str
    body: bytes


class Source(Protocol):
    """A queue, subject or topic events come from (RabbitMQ, NATS JetStream, MQTT; Kafka could
    be one: its offset commit is the ack)."""

    async def connect(self) -> None:
        """Connect, declaring what the pipeline declares; raises BusError when it cannot."""
        ...

    def messages(self) -> AsyncIterator[BusMessage]:
        """Messages as they arrive; ends (or raises BusError) when the connection is lost."""
        ...

    async def pending(self) -> int | None:
        """Messages waiting on the bus for this source (its backlog), if the bus says."""
        ...

    async def close(self) -> None: ...


class Sink(Protocol):
    async def connect(self) -> None: ...

    async def publish(self, messages: list[Outgoing]) -> None:
        """Return once the bus accepted every message (raises BusError otherwise)."""
        ...

    async def close(self) -> None: ...
