"""Test-side bus clients (not Sluice's): publish events and read what Sluice published, on the
machine's RabbitMQ, NATS JetStream and Mosquitto. Tests skip when a broker is not running,
and fail where SLUICE_BUSES_REQUIRED=1 (.ci/run, whose machine runs all three)."""

import asyncio
import contextlib
import os
import socket
from typing import Any

import aio_pika
import nats
import orjson
import paho.mqtt.client as mqtt
import pytest
from nats.js.api import StreamConfig

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
NATS_URL = "nats://127.0.0.1:4222"
MQTT_PORT = 1883
REQUIRED = os.environ.get("SLUICE_BUSES_REQUIRED") == "1"


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def needs_bus(port: int, name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not REQUIRED and not answers(port),
        reason=f"{name} is not running on 127.0.0.1:{port} (.ci/run runs these tests)",
    )


needs_rabbitmq = needs_bus(5672, "RabbitMQ")
needs_nats = needs_bus(4222, "NATS")
needs_mqtt = needs_bus(MQTT_PORT, "Mosquitto")


# -- RabbitMQ -------------------------------------------------------------------------------


async def _rabbit_publish(queue: str, bodies: list[tuple[str | None, bytes]]) -> None:
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        channel = await conn.channel()
        await channel.declare_queue(queue, durable=True)
        for message_id, body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body, message_id=message_id), routing_key=queue
            )


def rabbit_publish(queue: str, bodies: list[tuple[str | None, bytes]]) -> None:
    asyncio.run(_rabbit_publish(queue, bodies))


async def _rabbit_drain(queue: str) -> list[tuple[str | None, dict[str, Any]]]:
    conn = await aio_pika.connect(RABBIT_URL)
    out = []
    async with conn:
        channel = await conn.channel()
        q = await channel.declare_queue(queue, durable=True)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            out.append((message.message_id, orjson.loads(message.body)))
    return out


def rabbit_drain(queue: str) -> list[tuple[str | None, dict[str, Any]]]:
    """Every message on the queue (taken off it): (message_id, JSON body)."""
    return asyncio.run(_rabbit_drain(queue))


async def _rabbit_count(queue: str) -> int:
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        channel = await conn.channel()
        q = await channel.declare_queue(queue, durable=True)
        return q.declaration_result.message_count or 0


def rabbit_count(queue: str) -> int:
    return asyncio.run(_rabbit_count(queue))


async def _rabbit_delete(queues: list[str]) -> None:
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        channel = await conn.channel()
        for queue in queues:
            await channel.queue_delete(queue)


def rabbit_delete(queues: list[str]) -> None:
    asyncio.run(_rabbit_delete(queues))


# -- NATS JetStream -------------------------------------------------------------------------


async def _nats_publish(stream: str, subject: str, bodies: list[tuple[str | None, bytes]]) -> None:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
    for message_id, body in bodies:
        await js.publish(subject, body, headers={"Nats-Msg-Id": message_id} if message_id else None)
    await nc.close()


def nats_publish(stream: str, subject: str, bodies: list[tuple[str | None, bytes]]) -> None:
    asyncio.run(_nats_publish(stream, subject, bodies))


async def _nats_read(stream: str, subject: str) -> list[tuple[str | None, dict[str, Any]]]:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out: list[tuple[str | None, dict[str, Any]]] = []
    sub = await js.pull_subscribe(subject, stream=stream)
    while len(out) < info.state.messages:
        for msg in await sub.fetch(500, timeout=5):
            out.append(((msg.headers or {}).get("Nats-Msg-Id"), orjson.loads(msg.data)))
            await msg.ack()
    await nc.close()
    return out


def nats_read(stream: str, subject: str) -> list[tuple[str | None, dict[str, Any]]]:
    """Every message the stream holds on the subject: (Nats-Msg-Id, JSON body)."""
    return asyncio.run(_nats_read(stream, subject))


async def _nats_count(stream: str) -> int:
    nc = await nats.connect(NATS_URL)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()


def nats_count(stream: str) -> int:
    return asyncio.run(_nats_count(stream))


async def _nats_delete(streams: list[str]) -> None:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    for stream in streams:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
    await nc.close()


def nats_delete(streams: list[str]) -> None:
    asyncio.run(_nats_delete(streams))


# -- MQTT -----------------------------------------------------------------------------------


def mqtt_client(client_id: str = "") -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect("127.0.0.1", MQTT_PORT)
    client.loop_start()
    return client
