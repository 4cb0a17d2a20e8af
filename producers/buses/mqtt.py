"""MQTT 3.1.1 on Mosquitto (paho-mqtt): a topic on a persistent session at QoS 1 with manual
acks, so the broker keeps what arrives while the listener is away and resends what it did not
acknowledge (a broker holds a bounded queue per session: Mosquitto's max_queued_messages).
MQTT has no message id that survives a redelivery: the default key is the payload's digest.
paho runs its network loop in a thread; messages cross into the listener's asyncio loop."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from producers.buses.base import BusMessage, Outgoing
from schemas import pipelines as p
from schemas.errors import BusError
from schemas.pipelines import expand_env, masked_url

CONNECT_TIMEOUT = 5.0
PUBLISH_TIMEOUT = 10.0
LOST = object()  # put on the queue when the connection drops


def _client(url: str, client_id: str | None, persistent: bool, manual_ack: bool) -> mqtt.Client:
    return mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or "",
        clean_session=not persistent,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )


async def _connect(client: mqtt.Client, url: str, connected: asyncio.Event) -> None:
    parts = urlsplit(url)
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    try:
        await asyncio.to_thread(client.connect, parts.hostname or "127.0.0.1", parts.port or 1883)
        client.loop_start()
        await asyncio.wait_for(connected.wait(), CONNECT_TIMEOUT)
    except Exception as exc:
        client.loop_stop()
        raise BusError(f"MQTT at {masked_url(url)}: {type(exc).__name__}: {exc}") from exc


class MqttSource:
    def __init__(self, conf: p.MqttSource) -> None:
        self.conf = conf
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._client: mqtt.Client | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        connected = asyncio.Event()
        client = _client(self.conf.url, self.conf.client_id, persistent=True, manual_ack=True)

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                c.subscribe(self.conf.topic, qos=1)

        def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
            if not any(code.is_failure for code in codes):  # the broker now keeps what comes
                loop.call_soon_threadsafe(connected.set)

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, msg)

        def on_disconnect(*_args: Any) -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, LOST)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        self._client = client
        await _connect(client, expand_env(self.conf.url), connected)

    async def messages(self) -> AsyncIterator[BusMessage]:
        client = self._client
        assert client is not None
        while True:
            msg = await self._queue.get()
            if msg is LOST:
                raise BusError(f"MQTT at {masked_url(self.conf.url)}: the connection was lost")

            async def ack(mid: int = msg.mid, qos: int = msg.qos) -> None:
                client.ack(mid, qos)

            yield BusMessage(body=msg.payload, ack=ack, redelivered=bool(msg.dup))

    async def pending(self) -> int | None:
        return None  # MQTT does not tell a client what its session holds

    async def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()


class MqttSink:
    def __init__(self, conf: p.MqttSink) -> None:
        self.conf = conf
        self._client: mqtt.Client | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        connected = asyncio.Event()
        client = _client(self.conf.url, self.conf.client_id, persistent=False, manual_ack=False)

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                loop.call_soon_threadsafe(connected.set)

        client.on_connect = on_connect
        self._client = client
        await _connect(client, expand_env(self.conf.url), connected)

    async def publish(self, messages: list[Outgoing]) -> None:
        client = self._client
        assert client is not None

        def send() -> None:  # the body carries the message id: MQTT 3.1.1 has no field for it
            infos = [client.publish(self.conf.topic, m.body, qos=1) for m in messages]
            for info in infos:
                info.wait_for_publish(PUBLISH_TIMEOUT)
                if not info.is_published():
                    raise BusError(f"MQTT publish to {self.conf.topic!r}: not acknowledged")

        try:
            await asyncio.to_thread(send)
        except BusError:
            raise
        except Exception as exc:
            raise BusError(f"MQTT publish to {self.conf.topic!r}: {exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
