"""RabbitMQ over AMQP 0-9-1 (aio-pika): a queue consumed with manual acks and a prefetch
window (the broker sends no more than that many unacknowledged messages: back-pressure), and
results published with publisher confirms and `message_id` set to the result's stable id."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from producers.buses.base import BusMessage, Outgoing
from schemas import pipelines as p
from schemas.errors import BusError
from schemas.pipelines import expand_env, masked_url

CONNECT_TIMEOUT = 5.0


async def _connect(url: str) -> AbstractConnection:
    try:
        return await aio_pika.connect(url, timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # aiormq raises several types for a refused or lost connection
        raise BusError(f"RabbitMQ at {masked_url(url)}: {type(exc).__name__}: {exc}") from exc


class RabbitSource:
    def __init__(self, conf: p.RabbitSource, prefetch: int) -> None:
        self.conf = conf
        self.prefetch = prefetch
        self._conn: AbstractConnection | None = None
        self._queue: AbstractQueue | None = None

    async def connect(self) -> None:
        self._conn = await _connect(expand_env(self.conf.url))
        try:
            channel = await self._conn.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            self._queue = await channel.declare_queue(
                self.conf.queue, durable=True, passive=not self.conf.declare
            )
        except Exception as exc:
            await self.close()
            raise BusError(f"RabbitMQ queue {self.conf.queue!r}: {exc}") from exc

    async def messages(self) -> AsyncIterator[BusMessage]:
        assert self._queue is not None
        try:
            async with self._queue.iterator() as incoming:
                async for message in incoming:
                    yield BusMessage(
                        body=message.body,
                        ack=message.ack,
                        message_id=message.message_id,
                        redelivered=bool(message.redelivered),
                        headers={k: str(v) for k, v in (message.headers or {}).items()},
                    )
        except BusError:
            raise
        except Exception as exc:  # the connection or channel closed under the iterator
            raise BusError(f"RabbitMQ queue {self.conf.queue!r}: {exc}") from exc
        raise BusError(f"RabbitMQ queue {self.conf.queue!r}: the consumer was cancelled")

    async def pending(self) -> int | None:
        assert self._queue is not None
        return self._queue.declaration_result.message_count

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


class RabbitSink:
    def __init__(self, conf: p.RabbitSink) -> None:
        self.conf = conf
        self._conn: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None

    async def connect(self) -> None:
        self._conn = await _connect(expand_env(self.conf.url))
        # an unroutable message (no queue bound) is an error, not a silent confirm
        channel: AbstractChannel = await self._conn.channel(
            publisher_confirms=True, on_return_raises=True
        )
        if self.conf.exchange:
            self._exchange = await channel.get_exchange(self.conf.exchange)
        else:
            if self.conf.declare_queue:
                await channel.declare_queue(self.conf.routing_key, durable=True)
            self._exchange = channel.default_exchange

    async def publish(self, messages: list[Outgoing]) -> None:
        assert self._exchange is not None
        try:
            # sent in order, their confirms awaited together
            await asyncio.gather(
                *(
                    self._exchange.publish(_amqp(message), routing_key=self.conf.routing_key)
                    for message in messages
                )
            )
        except Exception as exc:
            raise BusError(f"RabbitMQ publish to {self.conf.routing_key!r}: {exc}") from exc

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def _amqp(message: Outgoing, **headers: Any) -> aio_pika.Message:
    return aio_pika.Message(
        message.body,
        message_id=message.message_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers or None,
    )
