"""`sluice listen`: one event pipeline run against its bus (issue 24).

Three tasks per pipeline, in one asyncio loop:
- consume: messages from the source into a bounded queue; pauses while `max_in_flight` events
  are recorded and not yet published (back-pressure), and reconnects with backoff when the bus
  goes away;
- record: events arriving together (at most `max_events`, or what came within `max_wait_ms`)
  become one chunk of the pipeline's standing job, recorded with their keys in the inbox in
  one transaction (storage/standing_jobs.py), sent to the workers, and only then acknowledged;
  a redelivered event is acknowledged without work; a message that cannot be read or mapped
  goes to the dead-letter sink with the reason, then is acknowledged;
- publish: results recorded and not yet published go to every sink, with a stable message id
  derived from the event's key, then are marked published.

Stopping (SIGTERM, Ctrl-C): consumption stops, the batch in hand is recorded, and results
still in flight are published (up to `drain_s`) before the connections close.
"""

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from producers.adapters import adapter_for
from producers.buses.base import BusMessage, Outgoing, Sink, Source
from producers.buses.jetstream import NatsSink, NatsSource
from producers.buses.mqtt import MqttSink, MqttSource
from producers.buses.rabbitmq import RabbitSink, RabbitSource
from producers.buses.sql_table import SqlSink
from producers.client import Client
from producers.event_mapping import (
    EventRow,
    Rejected,
    dead_letter_body,
    default_key,
    map_event,
)
from schemas import pipelines as p
from schemas.errors import BusError, SluiceError
from schemas.jobs import Item
from storage.standing_jobs import OpenJob, StandingJobs, count_dead_letters
from storage.tenant_secrets import tenant_secret

log = logging.getLogger("sluice.listen")
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before each reconnect; the last repeats
PUBLISH_POLL = 0.05  # seconds between looks for finished results when none were found


def source_for(conf: p.Source, batching: p.Batching) -> Source:
    window = min(batching.max_in_flight, max(batching.max_events * 2, 64))
    if isinstance(conf, p.RabbitSource):
        return RabbitSource(conf, prefetch=window)
    if isinstance(conf, p.NatsSource):
        return NatsSource(conf, batch=batching.max_events)
    return MqttSource(conf)


def sink_for(conf: p.Sink) -> Sink:
    """A bus or table sink; a webhook is sent by the workers' egress guard, so `sluice listen`
    (ops/, the composition root) makes those (PipelineRunner's `make_sink`)."""
    if isinstance(conf, p.RabbitSink):
        return RabbitSink(conf)
    if isinstance(conf, p.NatsSink):
        return NatsSink(conf)
    if isinstance(conf, p.MqttSink):
        return MqttSink(conf)
    if isinstance(conf, p.SqlSink):
        return SqlSink(conf)
    raise SluiceError(f"a {conf.kind} sink is made by `sluice listen`, not here")


@dataclass
class ListenerStats:
    consumed: int = 0
    recorded: int = 0
    repeated: int = 0  # redeliveries recognised by the inbox
    published: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    reconnects: int = 0
    latencies: list[float] = field(default_factory=list)  # recorded -> published, seconds

    def summary(self) -> dict[str, object]:
        """The counts, and recorded -> published in ms (p50, p99) over this run's events."""
        lat = sorted(self.latencies)
        shown = {k: v for k, v in self.__dict__.items() if k != "latencies"}
        if lat:
            shown["publish_p50_ms"] = round(1000 * lat[len(lat) // 2], 1)
            shown["publish_p99_ms"] = round(1000 * lat[min(len(lat) - 1, len(lat) * 99 // 100)], 1)
        return shown


async def retrying(what: str, step: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run `step` until it returns, waiting out BusErrors with backoff (or until `stop`)."""
    for attempt in range(10**9):
        try:
            await step()
            return
        except BusError as exc:
            wait = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            log.warning("%s: %s; again in %.1f s", what, exc, wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        if stop.is_set():
            raise asyncio.CancelledError


class PipelineRunner:
    def __init__(
        self,
        pipeline: p.Pipeline,
        client: Client,
        drain_s: float = 30.0,
        make_sink: Callable[[p.Sink], Sink] = sink_for,
    ) -> None:
        self.pipeline = pipeline
        self.client = client
        self.drain_s = drain_s
        self.standing = StandingJobs(client.ledger.engine, client.ledger.fair_share)
        self.stats = ListenerStats()
        self.spec = client.catalog.get(pipeline.task)
        self._secret = tenant_secret(client.ledger.engine, pipeline.tenant)
        self._job_spec = client.standing_job_spec(
            pipeline.task,
            model=pipeline.model,
            explain=pipeline.explain,
            tenant=pipeline.tenant,
            source=f"pipeline:{pipeline.name}",
            **pipeline.params,
        )
        self._job: OpenJob | None = None
        self._room = asyncio.Condition()
        self._taken = 0  # consumed, not yet recorded or dead-lettered: in flight too
        self._recorded_at: dict[str, float] = {}
        self.sinks = [make_sink(conf) for conf in pipeline.sinks]
        self.dead_letter = make_sink(pipeline.dead_letter)

    # -- the whole run --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        for sink in [*self.sinks, self.dead_letter]:
            await retrying(f"{self.pipeline.name}: sink", sink.connect, stop)
        self.stats.in_flight = await asyncio.to_thread(
            self.standing.unpublished, self.pipeline.name
        )
        incoming: asyncio.Queue[BusMessage] = asyncio.Queue(self.pipeline.batching.max_events * 2)
        consumer = asyncio.create_task(self._consume(incoming, stop))
        recorder = asyncio.create_task(self._record_loop(incoming, stop))
        publisher = asyncio.create_task(self._publish_loop(stop))
        try:
            await stop.wait()
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await asyncio.gather(recorder, return_exceptions=True)  # ends with the batch in hand
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), self.drain_s)
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
            for sink in [*self.sinks, self.dead_letter]:
                with contextlib.suppress(Exception):
                    await sink.close()

    async def _drained(self) -> None:
        while self.stats.in_flight > 0:
            await asyncio.sleep(PUBLISH_POLL)

    # -- consume ----------------------------------------------------------------------------

    async def _consume(self, incoming: asyncio.Queue[BusMessage], stop: asyncio.Event) -> None:
        limit = self.pipeline.batching.max_in_flight
        first = True
        while not stop.is_set():
            source = source_for(self.pipeline.source, self.pipeline.batching)
            try:
                await retrying(f"{self.pipeline.name}: source", source.connect, stop)
                log.info("%s: consuming from %s", self.pipeline.name, self.pipeline.source.kind)
                if not first:
                    self.stats.reconnects += 1
                first = False
                async for message in source.messages():
                    async with self._room:  # back-pressure: wait for results to go out
                        await self._room.wait_for(
                            lambda: self.stats.in_flight + self._taken < limit
                        )
                        self._taken += 1
                    self.stats.consumed += 1
                    await incoming.put(message)
            except BusError as exc:
                log.warning("%s: %s; reconnecting", self.pipeline.name, exc)
                await asyncio.sleep(BACKOFF[0])
            finally:
                with contextlib.suppress(Exception):
                    await source.close()

    # -- record -----------------------------------------------------------------------------

    async def _record_loop(self, incoming: asyncio.Queue[BusMessage], stop: asyncio.Event) -> None:
        batching = self.pipeline.batching
        while not (stop.is_set() and incoming.empty()):
            try:
                first = await asyncio.wait_for(incoming.get(), 0.2)
            except TimeoutError:
                continue
            batch = [first]
            deadline = time.monotonic() + batching.max_wait_ms / 1000
            while len(batch) < batching.max_events:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(incoming.get(), left))
                except TimeoutError:
                    break
            try:
                await self._record(batch, stop)
            finally:
                async with self._room:
                    self._taken -= len(batch)
                    self._room.notify_all()

    async def _record(self, batch: list[BusMessage], stop: asyncio.Event) -> None:
        rows: list[tuple[EventRow, BusMessage]] = []
        rejected: list[tuple[BusMessage, str]] = []
        for message in batch:
            mapped = map_event(self.pipeline, message)
            if isinstance(mapped, Rejected):
                rejected.append((message, mapped.reason))
            else:
                rows.append((mapped, message))
        if rejected:
            await self._dead_letter(rejected, stop)
        unique = {row.key: row for row, _ in rows}  # an event twice in one batch: one item
        items, unreadable = self._items(list(unique.values()))
        if unreadable:
            await self._dead_letter(
                [(m, unreadable[r.key]) for r, m in rows if r.key in unreadable], stop
            )
        if items:
            await retrying(f"{self.pipeline.name}: ledger", lambda: self._append(items), stop)
        for _, message in rows:
            await self._ack(message)

    def _items(self, rows: list[EventRow]) -> tuple[list[Item], dict[str, str]]:
        """Items of the task, as a submit makes them; rows the task's reader refuses, with the
        reason (they are dead-lettered)."""
        adapter = adapter_for(self.spec.modality)
        items: list[Item] = []
        refused: dict[str, str] = {}
        for row in rows:
            try:
                fields = {**adapter.body_fields(row.body, 1), "key": row.key}
                items += self.client.items_from_rows(
                    list(fields),
                    iter([fields]),
                    self.pipeline.task,
                    model=self.pipeline.model,
                    key_column="key",
                    source=f"pipeline:{self.pipeline.name}",
                    tenant=self.pipeline.tenant,
                )
            except SluiceError as exc:
                refused[row.key] = str(exc)
        if items:
            items = self.spec.params.prepare_batch(self._job_spec.params, items)
        return items, refused

    async def _append(self, items: list[Item]) -> None:
        try:
            await asyncio.to_thread(self._append_sync, items)
        except SluiceError:
            raise
        except Exception as exc:  # the database away: retried with backoff, nothing acked
            raise BusError(f"the ledger: {type(exc).__name__}: {exc}") from exc

    def _append_sync(self, items: list[Item]) -> None:
        name, rollover = self.pipeline.name, self.pipeline.rollover
        job = self._job or self.standing.current(name)
        age = None if job is None else time.time() - job.opened_at.timestamp()
        if job is None or job.total >= rollover.max_items or (age or 0) >= rollover.max_age_s:
            job = self.standing.open(name, self._job_spec)
        appended = self.standing.append(name, job.job_id, items)
        if appended.closed:  # cancelled, or closed by another listener: a new one
            job = self.standing.open(name, self._job_spec)
            appended = self.standing.append(name, job.job_id, items)
        self._job = OpenJob(job.job_id, job.opened_at, job.total + len(appended.recorded), job.lane)
        now = time.monotonic()
        for key in appended.recorded:
            self._recorded_at[key] = now
        self.stats.recorded += len(appended.recorded)
        self.stats.repeated += len(appended.repeated)
        self.stats.in_flight += len(appended.recorded)
        if appended.chunk_id is not None:
            try:  # a send that fails is the sweeper's to repeat: the chunk is recorded
                self.client.dispatcher.send_job_chunks(
                    [appended.chunk_id], self.spec.queue, job.lane, self._job_spec.priority
                )
            except Exception:
                log.exception(
                    "%s: chunk %s not sent; the sweeper sends it", name, appended.chunk_id
                )

    async def _ack(self, message: BusMessage) -> None:
        try:
            await message.ack()
        except Exception as exc:  # the connection went: the bus redelivers, the inbox knows it
            log.warning(
                "%s: an ack was lost (%s); the message comes again", self.pipeline.name, exc
            )

    async def _dead_letter(
        self, rejected: list[tuple[BusMessage, str]], stop: asyncio.Event
    ) -> None:
        body = dead_letter_body
        out = [
            Outgoing(self._message_id("dead:" + default_key(m)), body(self.pipeline, m, why))
            for m, why in rejected
        ]

        async def publish() -> None:
            await self.dead_letter.publish(out)

        await retrying(f"{self.pipeline.name}: dead-letter sink", publish, stop)
        await asyncio.to_thread(
            count_dead_letters, self.client.ledger.engine, self.pipeline.name, len(rejected)
        )
        self.stats.dead_lettered += len(rejected)
        for message, reason in rejected:
            log.warning("%s: dead-lettered: %s", self.pipeline.name, reason)
            await self._ack(message)

    # -- publish ----------------------------------------------------------------------------

    def _message_id(self, key: str) -> str:
        """Stable for a key, and keyed (the tenant's secret): the id does not reveal the key."""
        text = f"{self.pipeline.name}\x00{key}".encode()
        return hmac.new(self._secret, text, hashlib.sha256).hexdigest()[:32]

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        while True:
            rows = await asyncio.to_thread(self.standing.ready, self.pipeline.name)
            if not rows:
                await asyncio.sleep(PUBLISH_POLL)
                continue
            out = [
                Outgoing(
                    mid := self._message_id(row["key"]),
                    orjson.dumps({"message_id": mid, "pipeline": self.pipeline.name, **row}),
                )
                for row in rows
            ]
            for n, sink in enumerate(self.sinks):

                async def publish(sink: Sink = sink, out: list[Outgoing] = out) -> None:
                    await sink.publish(out)

                await retrying(f"{self.pipeline.name}: sink {n}", publish, asyncio.Event())
            keys = [row["key"] for row in rows]
            await asyncio.to_thread(self.standing.mark_published, self.pipeline.name, keys)
            now = time.monotonic()
            for key in keys:
                if (start := self._recorded_at.pop(key, None)) is not None:
                    self.stats.latencies.append(now - start)
            self.stats.published += len(rows)
            async with self._room:
                self.stats.in_flight = max(0, self.stats.in_flight - len(rows))
                self._room.notify_all()
