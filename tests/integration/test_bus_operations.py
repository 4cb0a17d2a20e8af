"""How `sluice listen` behaves around its buses (issue 24): MQTT in and out with a webhook and
an SQL table as further sinks; a RabbitMQ connection cut under it (through a proxy of the
test's own) and restored; back-pressure while no worker runs; a graceful stop that publishes
what it took in; and `sluice listen --status`."""

import json
import signal
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, text

from producers import Client
from storage.callback_ledger import verify
from tests.bus_clients import (
    RABBIT_URL,
    mqtt_client,
    needs_mqtt,
    needs_rabbitmq,
    rabbit_count,
    rabbit_delete,
    rabbit_drain,
    rabbit_publish,
)
from tests.integration.conftest import sluice, wait_until
from tests.integration.test_bus_pipelines import figures
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration
SECRET = "whsec-test-secret"


def texts(n: int, prefix: str = "e") -> list[tuple[str, bytes]]:
    return [
        (f"{prefix}-{i}", orjson.dumps({"id": f"{prefix}-{i}", "text": f"refund please {i}"}))
        for i in range(n)
    ]


def toml(name: str, model: Path, source: str, sinks: list[str], dead: str, **batching: Any) -> str:
    opts = {"max_events": 50, "max_wait_ms": 20, **batching}
    return f"""
[[pipelines]]
name = "{name}"
task = "classify-text"
model = "{model}"
map = {{ key = "id", text = "text" }}
batching = {{ {", ".join(f"{k} = {v}" for k, v in opts.items())} }}
source = {source}
sinks = [{", ".join(sinks)}]
dead_letter = {dead}
"""


class Receiver:
    """A webhook receiver on loopback that keeps every POST it is sent."""

    def __init__(self) -> None:
        got: list[tuple[dict[str, str], bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.got = got
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/results"


@needs_mqtt
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_mqtt_events_reach_mqtt_a_signed_webhook_and_a_table(
    client: Client,
    tiny_classifier: Path,
    tmp_path: Path,
    start_worker: Any,
    listener: Any,
    env: dict[str, str],
) -> None:
    name = f"mqtt-{uuid.uuid4().hex[:8]}"
    topics = {"in": f"{name}/in", "out": f"{name}/out", "dead": f"{name}/dead"}
    received: dict[str, list[bytes]] = {"out": [], "dead": []}
    reader = mqtt_client()
    reader.on_message = lambda _c, _u, m: received[m.topic.rsplit("/", 1)[1]].append(m.payload)
    reader.subscribe([(topics["out"], 1), (topics["dead"], 1)])
    hook = Receiver()
    table_url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    pipelines = tmp_path / "pipelines.toml"
    pipelines.write_text(
        toml(
            name,
            tiny_classifier,
            f'{{ kind = "mqtt", topic = "{topics["in"]}", client_id = "{name}" }}',
            [
                f'{{ kind = "mqtt", topic = "{topics["out"]}" }}',
                f'{{ kind = "webhook", url = "{hook.url}", secret = "${{HOOK_SECRET}}" }}',
                f'{{ kind = "sql", url = "{table_url}", table = "ticket_labels" }}',
            ],
            f'{{ kind = "mqtt", topic = "{topics["dead"]}" }}',
        )
    )
    start_worker()
    listener(pipelines, HOOK_SECRET=SECRET)
    log = tmp_path / "listen-0.log"
    # its persistent session exists once it has subscribed: from then on the broker keeps
    # what is published for it
    wait_until(lambda: "consuming from mqtt" in log.read_text(), 60, "the subscription")
    publisher = mqtt_client()
    for _, body in texts(200):
        publisher.publish(topics["in"], body, qos=1).wait_for_publish(5)
    publisher.publish(topics["in"], b"not json", qos=1).wait_for_publish(5)
    wait_until(lambda: figures(client, name)["published"] >= 200, 120, "200 results published")
    wait_until(lambda: len(received["out"]) >= 200 and received["dead"], 30, "MQTT output")
    out = [orjson.loads(b) for b in received["out"]]
    assert {r["key"] for r in out} == {f"e-{i}" for i in range(200)}
    assert len({r["message_id"] for r in out}) == 200
    assert "not JSON" in orjson.loads(received["dead"][0])["reason"]
    # the webhook: one signed POST per result, its webhook-id the result's message id
    wait_until(lambda: len(hook.got) >= 200, 30, "200 webhook POSTs")
    ids = Counter(h["webhook-id"] for h, _ in hook.got)
    assert len(ids) == 200
    assert all(verify(SECRET, body, headers) for headers, body in hook.got)
    # the table: one row per event, labelled
    with create_engine(table_url).connect() as conn:
        rows = conn.execute(text("SELECT event_key, label, status FROM ticket_labels")).all()
    assert len(rows) == 200 and all(r.label and r.status == "ok" for r in rows)
    reader.loop_stop()


@needs_rabbitmq
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_cut_connection_is_reconnected_and_nothing_is_lost_or_repeated(
    client: Client, tiny_classifier: Path, tmp_path: Path, start_worker: Any, listener: Any
) -> None:
    name = f"cut-{uuid.uuid4().hex[:8]}"
    queues = [f"{name}.in", f"{name}.out", f"{name}.dead"]
    proxy = TcpProxy(5672)
    through = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    flags = [  # one pipeline by flags, not a file
        "--name", name, "--task", "classify-text", "--model", str(tiny_classifier),
        "--key", "id", "--text", "text", "--max-events", "50", "--max-wait-ms", "20",
        "--source", f"{through}?queue={queues[0]}",
        "--sink", f"{RABBIT_URL}?routing_key={queues[1]}",
        "--dead-letter", f"{RABBIT_URL}?routing_key={queues[2]}",
    ]  # fmt: skip
    try:
        rabbit_publish(queues[0], texts(600))  # type: ignore[arg-type]
        start_worker()
        listener(flags)
        wait_until(lambda: figures(client, name)["recorded"] >= 100, 120, "100 recorded")
        proxy.cut()  # RabbitMQ is gone for the listener: unacked messages go back to the queue
        time.sleep(2)
        proxy.restore()
        wait_until(lambda: figures(client, name)["published"] >= 600, 180, "all published")
        assert proxy.accepted >= 2  # it connected again
        results = rabbit_drain(queues[1])
        assert Counter(body["key"] for _, body in results).keys() == {f"e-{i}" for i in range(600)}
        assert figures(client, name)["recorded"] == 600  # a redelivered event is not run again
        assert rabbit_count(queues[0]) == 0
    finally:
        proxy.close()
        rabbit_delete(queues)


@needs_rabbitmq
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_back_pressure_then_a_graceful_stop_and_the_status(
    client: Client,
    tiny_classifier: Path,
    tmp_path: Path,
    start_worker: Any,
    listener: Any,
    env: dict[str, str],
) -> None:
    name = f"bp-{uuid.uuid4().hex[:8]}"
    queues = [f"{name}.in", f"{name}.out", f"{name}.dead"]
    pipelines = tmp_path / "pipelines.toml"
    pipelines.write_text(
        toml(
            name,
            tiny_classifier,
            f'{{ kind = "rabbitmq", queue = "{queues[0]}" }}',
            [f'{{ kind = "rabbitmq", routing_key = "{queues[1]}" }}'],
            f'{{ kind = "rabbitmq", routing_key = "{queues[2]}" }}',
            max_in_flight=100,
        )
    )
    try:
        rabbit_publish(queues[0], texts(1000))  # type: ignore[arg-type]
        proc = listener(pipelines)  # no worker yet: nothing can be published
        wait_until(lambda: figures(client, name)["recorded"] >= 100, 60, "100 recorded")
        time.sleep(1.5)  # had it not paused, it would take all 1,000 in well under this
        held = figures(client, name)["recorded"]
        assert held == 100  # the limit counts what was taken from the bus and not yet recorded
        assert rabbit_count(queues[0]) >= 1000 - held - 200  # the rest waits on the bus
        status = json.loads(sluice(env, "listen", str(pipelines), "--status").stdout)[0]
        assert status["in_flight"] == held and status["waiting_on_bus"] > 0
        start_worker()
        wait_until(lambda: figures(client, name)["published"] >= 500, 120, "500 published")
        proc.send_signal(signal.SIGINT)  # a graceful stop: what it took in is published first
        assert proc.wait(timeout=60) == 0
        after = figures(client, name)
        assert after["in_flight"] == 0 and after["recorded"] == after["published"]
        assert len(rabbit_drain(queues[1])) == after["published"]
        left = 1000 - after["recorded"]  # the rest is still there, unacknowledged ones too
        wait_until(lambda: rabbit_count(queues[0]) == left, 10, f"{left} left on the queue")
    finally:
        rabbit_delete(queues)
