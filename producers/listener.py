"""`sluice listen`: one event pipeline run against its bus (issue 24).

Three tasks per pipeline, in one asyncio loop:
- consume: messages from the source into a bounded queue; pauses while `max_in_flight` events
  are taken and not yet published (back-pressure), and reconnects with backoff when the bus
  goes away;
- record: events arriving together (at most `max_events`, or what came within `max_wait_ms`;
  longer while `max_open_chunks` of the pipeline's chunks are still being worked on, so that
  a busy system gets fewer, fuller chunks) become one chunk of the pipeline's standing job,
  recorded with their keys in the inbox in one transaction (storage/standing_jobs.py), sent to
  the workers, and only then acknowledged; a redelivered event is acknowledged without work; a
  message that cannot be read or mapped goes to the dead-letter sink with the reason, then is
  acknowledged;
- publish: results recorded and not yet published go to every sink, with a stable message id
  derived from the event's key, then are marked published.

A task that fails on something other than a lost bus or database (a bug) stops the listener
with the error (`failed`), rather than leave a pipeline silently stalled. Stopping (SIGTERM,
Ctrl-C): consumption stops, the batch in hand is recorded and acknowledged, and results still
in flight are published (up to `drain_s`) before the connections close.
"""

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from producers.adapters import adapter_for
from producers.buses.base import BusMessage, Outgoing, Sink, Source
from producers.buses.factory import sink_for, source_for
from producers.client import Client
from producers.event_mapping import EventRow, Rejected, dead_letter_body, default_key, map_event
from producers.listener_support import ListenerStats, in_thread, log, retrying
from schemas import pipelines as p
from schemas.errors import BusError, SluiceError
from schemas.jobs import Item
from storage.standing_jobs import Appended, OpenJob, StandingJobs, count_dead_letters, made_as
from storage.tenant_secrets import tenant_secret

PUBLISH_POLL = 0.05  # seconds between looks for finished results when none were found
GATHER_POLL = 0.005  # while chunks are open: how often to look whether one has finished


class PipelineRunner:
    def __init__(
        self,
        pipeline: p.Pipeline,
        client: Client,
        drain_s: float = 30.0,
        make_sink: Callable[[p.Sink], Sink] = sink_for,
    ) -> None:
        self.pipeline = pipeline
        self.name = pipeline.name
        self.client = client
        self.drain_s = drain_s
        self.standing = StandingJobs(client.ledger.engine, client.ledger.fair_share)
        self.stats = ListenerStats()
        self.failed: BaseException | None = None
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
        js = self._job_spec
        self._made_as = made_as(js.task, js.model, js.model_version, js.params, js.explain)
        self._job: OpenJob | None = None
        self._room = asyncio.Condition()
        self._taken = 0  # consumed, not yet recorded or dead-lettered: in flight too
        self._open_chunks: list[set[str]] = []  # keys of chunks whose results are not all out
        self._recorded_at: dict[str, float] = {}
        self._source: Source | None = None
        self.sinks = [make_sink(conf) for conf in pipeline.sinks]
        self.dead_letter = make_sink(pipeline.dead_letter)

    # -- the whole run --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        for sink in [*self.sinks, self.dead_letter]:
            await retrying(f"{self.name}: sink", sink.connect, stop)
        await retrying(f"{self.name}: ledger", lambda: in_thread("the ledger", self._job_now), stop)
        self.stats.in_flight = await retrying(
            f"{self.name}: ledger",
            lambda: in_thread("the ledger", self.standing.unpublished, self.name),
            stop,
        )
        incoming: asyncio.Queue[BusMessage] = asyncio.Queue(self.pipeline.batching.max_events * 2)
        consumer = self._guarded(self._consume(incoming, stop), stop)
        recorder = self._guarded(self._record_loop(incoming, stop), stop)
        publisher = self._guarded(self._publish_loop(), stop)
        try:
            await stop.wait()
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await asyncio.gather(recorder, return_exceptions=True)  # ends with the batch in hand
            if self._source is not None:  # after the last acks
                with contextlib.suppress(Exception):
                    await self._source.close()
            if self.failed is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained(), self.drain_s)
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
            for sink in [*self.sinks, self.dead_letter]:
                with contextlib.suppress(Exception):
                    await sink.close()

    def _guarded(self, work: Coroutine[Any, Any, None], stop: asyncio.Event) -> asyncio.Task[None]:
        """A task whose unexpected end stops the listener, with the error, never silently."""

        def ended(task: asyncio.Task[None]) -> None:
            if task.cancelled() or task.exception() is None:
                return
            self.failed = task.exception()
            log.error("%s: stopped by an error", self.name, exc_info=self.failed)
            stop.set()

        task = asyncio.create_task(work)
        task.add_done_callback(ended)
        return task

    async def _drained(self) -> None:
        while self.stats.in_flight > 0:
            await asyncio.sleep(PUBLISH_POLL)

    # -- consume ----------------------------------------------------------------------------

    async def _consume(self, incoming: asyncio.Queue[BusMessage], stop: asyncio.Event) -> None:
        limit = self.pipeline.batching.max_in_flight
        connected_before = False
        while not stop.is_set():
            source = self._source = source_for(self.pipeline.source, self.pipeline.batching)
            try:
                await retrying(f"{self.name}: source", source.connect, stop, source.close)
                log.info("%s: consuming from %s", self.name, self.pipeline.source.kind)
                self.stats.reconnects += connected_before
                connected_before = True
                async for message in source.messages():
                    async with self._room:  # back-pressure: wait for results to go out
                        await self._room.wait_for(
                            lambda: self.stats.in_flight + self._taken < limit
                        )
                        self._taken += 1
                    self.stats.consumed += 1
                    await incoming.put(message)
            except BusError as exc:
                log.warning("%s: %s; reconnecting", self.name, exc)
                with contextlib.suppress(Exception):
                    await source.close()
                await asyncio.sleep(0.5)

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
            while len(batch) < batching.max_events and not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    if len(self._open_chunks) < batching.max_open_chunks:
                        break
                    left = GATHER_POLL  # the workers are busy: gather a fuller chunk meanwhile
                try:
                    batch.append(await asyncio.wait_for(incoming.get(), left))
                except TimeoutError:
                    continue
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
        unique = {row.key: row for row, _ in rows}  # an event twice in one batch: one item
        items, refused = self._items(list(unique.values()))
        rejected += [(m, refused[r.key]) for r, m in rows if r.key in refused]
        if rejected:
            await self._dead_letter(rejected, stop)
        if items:
            appended = await retrying(
                f"{self.name}: ledger", lambda: in_thread("the ledger", self._append, items), stop
            )
            await self._count(appended)
        for row, message in rows:
            if row.key not in refused:  # those were acknowledged with their dead letter
                await self._ack(message)

    def _items(self, rows: list[EventRow]) -> tuple[list[Item], dict[str, str]]:
        """Items of the task, as a submit makes them; the rows the task refuses, with the
        reason (they are dead-lettered)."""
        adapter = adapter_for(self.spec.modality)
        items: list[Item] = []
        refused: dict[str, str] = {}
        for row in rows:
            try:
                fields = {**adapter.body_fields(row.body, 1), "key": row.key}
                made = self.client.items_from_rows(
                    list(fields),
                    iter([fields]),
                    self.pipeline.task,
                    model=self.pipeline.model,
                    key_column="key",
                    source=f"pipeline:{self.name}",
                    tenant=self.pipeline.tenant,
                )
                items += self.spec.params.prepare_batch(self._job_spec.params, made)
            except (SluiceError, ValueError, TypeError) as exc:  # the event's content
                refused[row.key] = f"the task refused it: {exc}"
        return items, refused

    def _job_now(self) -> OpenJob:
        """The job to add events to: the open one, unless it is full, old, or made with other
        settings than the file's now; then a new one."""
        name, rollover = self.name, self.pipeline.rollover
        job = self._job or self.standing.current(name, self.pipeline.tenant)
        if (
            job is None
            or job.made_as != self._made_as
            or job.total >= rollover.max_items
            or time.time() - job.opened_at.timestamp() >= rollover.max_age_s
        ):
            job = self.standing.open(name, self._job_spec)
        self._job = job
        return job

    def _append(self, items: list[Item]) -> Appended:
        job = self._job_now()
        appended = self.standing.append(self.name, job.job_id, items)
        if appended.closed:  # cancelled, or closed by another listener: a new one
            self._job = None
            job = self.standing.open(self.name, self._job_spec)
            appended = self.standing.append(self.name, job.job_id, items)
            if appended.closed:  # nothing was recorded: nothing may be acknowledged
                raise BusError(f"the new job {job.job_id} was closed before it took events")
        self._job = OpenJob(
            job.job_id, job.opened_at, job.total + len(appended.recorded), job.lane, job.made_as
        )
        if appended.chunk_id is not None:
            try:  # a send that fails is the sweeper's to repeat: the chunk is recorded
                self.client.dispatcher.send_job_chunks(
                    [appended.chunk_id], self.spec.queue, job.lane, self._job_spec.priority
                )
            except Exception:
                log.exception("%s: chunk %s not sent; the sweeper sends it", self.name,
                              appended.chunk_id)  # fmt: skip
        return appended

    async def _count(self, appended: Appended) -> None:
        now = time.monotonic()
        for key in appended.recorded:
            self._recorded_at[key] = now
        if appended.recorded:
            self._open_chunks.append(set(appended.recorded))
        self.stats.recorded += len(appended.recorded)
        self.stats.repeated += len(appended.repeated)
        async with self._room:
            self.stats.in_flight += len(appended.recorded)

    async def _ack(self, message: BusMessage) -> None:
        try:
            await message.ack()
        except Exception as exc:  # the connection went: the bus redelivers, the inbox knows it
            log.warning("%s: an ack was lost (%s); the message comes again", self.name, exc)

    async def _dead_letter(
        self, rejected: list[tuple[BusMessage, str]], stop: asyncio.Event
    ) -> None:
        body = dead_letter_body
        out = [
            Outgoing(self._message_id("dead:" + default_key(m)), body(self.pipeline, m, why))
            for m, why in rejected
        ]
        await self._publish_to(self.dead_letter, out, stop)
        await retrying(
            f"{self.name}: ledger",
            lambda: in_thread(
                "the ledger", count_dead_letters, self.client.ledger.engine, self.name, len(out)
            ),
            stop,
        )
        self.stats.dead_lettered += len(rejected)
        for message, reason in rejected:
            log.warning("%s: dead-lettered: %s", self.name, reason)
            await self._ack(message)

    # -- publish ----------------------------------------------------------------------------

    def _message_id(self, key: str) -> str:
        """Stable for a key, keyed by the tenant's secret."""
        text = f"{self.name}\x00{key}".encode()
        return hmac.new(self._secret, text, hashlib.sha256).hexdigest()[:32]

    async def _publish_to(
        self, sink: Sink, out: list[Outgoing], stop: asyncio.Event | None = None
    ) -> None:
        """Until the sink accepted them all; after a failure the sink connects again."""

        async def reconnect() -> None:
            with contextlib.suppress(Exception):
                await sink.close()
            await sink.connect()

        async def publish() -> None:
            await sink.publish(out)

        await retrying(f"{self.name}: sink", publish, stop, reconnect)

    async def _publish_loop(self) -> None:
        last_age_check = time.monotonic()
        while True:
            rows = await retrying(
                f"{self.name}: ledger",
                lambda: in_thread("the ledger", self.standing.ready, self.name),
            )
            if not rows:
                if time.monotonic() - last_age_check > 1.0:  # a quiet pipeline rolls over too
                    last_age_check = time.monotonic()
                    await self._close_if_old()
                await asyncio.sleep(PUBLISH_POLL)
                continue
            out = [
                Outgoing(
                    mid := self._message_id(row["key"]),
                    orjson.dumps({"message_id": mid, "pipeline": self.name, **row}),
                )
                for row in rows
            ]
            for sink in self.sinks:
                await self._publish_to(sink, out)
            keys = [row["key"] for row in rows]
            await retrying(
                f"{self.name}: ledger",
                lambda keys=keys: in_thread(  # type: ignore[misc]
                    "the ledger", self.standing.mark_published, self.name, keys
                ),
            )
            self._published(keys)
            async with self._room:
                self.stats.in_flight = max(0, self.stats.in_flight - len(rows))
                self._room.notify_all()

    def _published(self, keys: list[str]) -> None:
        now = time.monotonic()
        done = set(keys)
        for key in keys:
            if (start := self._recorded_at.pop(key, None)) is not None:
                self.stats.latencies.append(now - start)
        for chunk in self._open_chunks:
            chunk -= done
        self._open_chunks = [chunk for chunk in self._open_chunks if chunk]
        self.stats.published += len(keys)

    async def _close_if_old(self) -> None:
        """Close an open job past its age while no events come (it ends; the next event
        opens a new one), so a pipeline gone quiet does not keep its job running for ever."""
        job = self._job
        if (
            job is None
            or time.time() - job.opened_at.timestamp() < self.pipeline.rollover.max_age_s
        ):
            return
        with contextlib.suppress(BusError):
            await in_thread("the ledger", self.standing.close, job.job_id)
            self._job = None
