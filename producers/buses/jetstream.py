"""NATS JetStream (nats-py): a durable pull consumer (its position and unacknowledged
messages survive the listener) with explicit acks, and results published with the
`Nats-Msg-Id` header, which the stream uses to drop a repeated publish within its duplicate
window: each result is on the subject once."""

import asyncio
from collections.abc import AsyncIterator

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from producers.buses.base import BusMessage, Outgoing
from schemas import pipelines as p
from schemas.errors import BusError
from schemas.pipelines import expand_env, masked_url

CONNECT_TIMEOUT = 5.0
FETCH_WAIT = 1.0  # seconds a pull waits for messages before asking again
DUPLICATE_WINDOW = 24 * 3600.0  # seconds a created stream remembers published ids
MSG_ID = "Nats-Msg-Id"


async def _connect(url: str) -> NatsClient:
    try:  # reconnects are the listener's (with backoff), so that it sees every loss
        return await nats.connect(
            servers=[url], connect_timeout=CONNECT_TIMEOUT, allow_reconnect=False
        )
    except Exception as exc:
        raise BusError(f"NATS at {masked_url(url)}: {type(exc).__name__}: {exc}") from exc


async def ensure_stream(js: JetStreamContext, name: str, subject: str) -> None:
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(name=name, subjects=[subject], duplicate_window=DUPLICATE_WINDOW)
        )
        return
    if subject not in (info.config.subjects or []):
        raise BusError(f"NATS stream {name!r} does not hold subject {subject!r}")


class NatsSource:
    def __init__(self, conf: p.NatsSource, batch: int) -> None:
        self.conf = conf
        self.batch = batch
        self._nc: NatsClient | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    async def connect(self) -> None:
        self._nc = await _connect(expand_env(self.conf.url))
        js = self._nc.jetstream()
        try:
            if self.conf.declare:
                await ensure_stream(js, self.conf.stream, self.conf.subject)
            self._sub = await js.pull_subscribe(
                self.conf.subject, durable=self.conf.durable, stream=self.conf.stream
            )
        except Exception as exc:
            await self.close()
            if isinstance(exc, BusError):
                raise
            raise BusError(f"NATS stream {self.conf.stream!r}: {exc}") from exc

    async def messages(self) -> AsyncIterator[BusMessage]:
        assert self._sub is not None and self._nc is not None
        while True:
            if not self._nc.is_connected:
                raise BusError(f"NATS at {masked_url(self.conf.url)}: the connection was lost")
            try:
                batch = await self._sub.fetch(self.batch, timeout=FETCH_WAIT)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:
                raise BusError(f"NATS fetch from {self.conf.subject!r}: {exc}") from exc
            for msg in batch:
                meta = msg.metadata
                headers = dict(msg.headers or {})
                yield BusMessage(
                    body=msg.data,
                    ack=msg.ack,
                    # the publisher's id, else the stream's sequence number with the time it
                    # was stored (a stream deleted and made again counts from 1 again)
                    message_id=headers.get(MSG_ID)
                    or f"{meta.stream}:{meta.sequence.stream}:{meta.timestamp.timestamp():.6f}",
                    redelivered=meta.num_delivered > 1,
                    headers=headers,
                )

    async def pending(self) -> int | None:
        assert self._sub is not None
        info = await self._sub.consumer_info()
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


class NatsSink:
    def __init__(self, conf: p.NatsSink) -> None:
        self.conf = conf
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self.duplicates = 0  # publishes the stream recognised as repeats (and dropped)

    async def connect(self) -> None:
        self._nc = await _connect(expand_env(self.conf.url))
        self._js = self._nc.jetstream()
        if self.conf.stream:
            await ensure_stream(self._js, self.conf.stream, self.conf.subject)

    async def publish(self, messages: list[Outgoing]) -> None:
        assert self._js is not None
        try:
            acks = await asyncio.gather(
                *(
                    self._js.publish(self.conf.subject, m.body, headers={MSG_ID: m.message_id})
                    for m in messages
                )
            )
        except Exception as exc:
            raise BusError(f"NATS publish to {self.conf.subject!r}: {exc}") from exc
        self.duplicates += sum(bool(ack.duplicate) for ack in acks)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
