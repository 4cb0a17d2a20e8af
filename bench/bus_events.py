"""Events on buses against POST /v1/events, side by side on one warm embedded stack:

    .venv/bin/python bench/bus_events.py [--seconds 60] [--rate 50] [--burst 2000]

For each way in (RabbitMQ through `sluice listen`, NATS JetStream through `sluice listen`,
POST /v1/events?wait=60s over real HTTP to uvicorn in this process):
(a) steady: --rate events per second for --seconds;
(b) burst: --burst events at once (HTTP: 200 requests in flight at a time).
Each event is one short text for the `embed` task on MiniLM (the actor warm). Reported per
way and phase: events/s (events ÷ first publish to last result) and the latency from publish
to result (p50, p99; a bus's is publish to the result's arrival on the output queue or
subject, the API's is the request's round trip). Needs RabbitMQ on 127.0.0.1:5672 and NATS on
127.0.0.1:4222. The last line is one JSON object.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SLUICE = str(Path(sys.executable).parent / "sluice")
RABBIT = "amqp://guest:guest@127.0.0.1:5672/"
NATS = "nats://127.0.0.1:4222"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def event(n: int, tag: str) -> bytes:
    import orjson

    text = f"my order {n} arrived broken, I want a refund"
    return orjson.dumps({"id": f"{tag}-{n}", "text": text, "sent": time.time()})


def figures(sent: dict[str, float], got: dict[str, float]) -> dict[str, Any]:
    lat = sorted(got[k] - sent[k] for k in got if k in sent)
    span = max(got.values()) - min(sent.values()) if got else float("nan")
    return {
        "events": len(got),
        "of": len(sent),
        "events_per_s": round(len(got) / span, 1) if got else 0.0,
        "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
    }


async def paced(n: int, rate: float, send: Any) -> None:
    """Call send(i) n times, `rate` per second (all at once when rate is 0)."""
    start = time.perf_counter()
    for i in range(n):
        if rate:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        await send(i)


# -- buses --------------------------------------------------------------------------------


async def rabbit_phase(name: str, n: int, rate: float) -> dict[str, Any]:
    import aio_pika
    import orjson

    conn = await aio_pika.connect(RABBIT)
    channel = await conn.channel()
    out = await channel.declare_queue(f"{name}.out", durable=True)
    await channel.declare_queue(f"{name}.in", durable=True)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    done = asyncio.Event()

    async def on_result(message: Any) -> None:
        got.setdefault(orjson.loads(message.body)["key"], time.time())
        if len(got) >= len(sent) == n:
            done.set()

    await out.consume(on_result, no_ack=True)
    tag = uuid.uuid4().hex[:6]

    async def send(i: int) -> None:
        body = event(i, tag)
        sent[f"{tag}-{i}"] = time.time()
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=f"{name}.in")

    await paced(n, rate, send)
    await asyncio.wait_for(done.wait(), 600)
    await conn.close()
    return figures(sent, got)


async def nats_phase(name: str, n: int, rate: float) -> dict[str, Any]:
    import nats
    import orjson

    nc = await nats.connect(NATS)
    js = nc.jetstream()
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    done = asyncio.Event()

    async def on_result(msg: Any) -> None:
        got.setdefault(orjson.loads(msg.data)["key"], time.time())
        await msg.ack()
        if len(got) >= len(sent) == n:
            done.set()

    sub = await js.subscribe(
        f"{name}.out", cb=on_result, deliver_policy=nats.js.api.DeliverPolicy.NEW
    )
    tag = uuid.uuid4().hex[:6]

    async def send(i: int) -> None:
        body = event(i, tag)
        sent[f"{tag}-{i}"] = time.time()
        await js.publish(f"{name}.in", body)

    await paced(n, rate, send)
    await asyncio.wait_for(done.wait(), 600)
    await sub.unsubscribe()
    await nc.close()
    return figures(sent, got)


def pipelines_file(path: Path, name: str) -> None:
    up = name.upper()
    ways = {
        "rmq": (
            f'{{ kind = "rabbitmq", queue = "{name}-rmq.in" }}',
            f'{{ kind = "rabbitmq", routing_key = "{name}-rmq.out" }}',
            f'{{ kind = "rabbitmq", routing_key = "{name}-rmq.dead" }}',
        ),
        "nats": (
            f'{{ kind = "nats", stream = "{up}_IN", subject = "{name}-nats.in", '
            'durable = "bench" }',
            f'{{ kind = "nats", subject = "{name}-nats.out", stream = "{up}_OUT" }}',
            f'{{ kind = "nats", subject = "{name}-nats.dead", stream = "{up}_DEAD" }}',
        ),
    }
    path.write_text(
        "".join(
            f"""
[[pipelines]]
name = "{name}-{way}"
task = "embed"
map = {{ key = "id", text = "text" }}
batching = {{ max_events = 64, max_wait_ms = 20 }}
source = {source}
sinks = [{sink}]
dead_letter = {dead}
"""
            for way, (source, sink, dead) in ways.items()
        )
    )


# -- POST /v1/events ----------------------------------------------------------------------


async def api_phase(url: str, key: str, n: int, rate: float) -> dict[str, Any]:
    import httpx

    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    gate = asyncio.Semaphore(200)
    tag = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
        limits=httpx.Limits(max_connections=200),
    ) as http:
        tasks = []

        async def one(i: int) -> None:
            async with gate:
                k = f"{tag}-{i}"
                sent[k] = time.time()
                body = {"task": "embed", "key": k, "text": f"my order {i} arrived broken"}
                answer = await http.post("/v1/events?wait=60s", json=body)
                if answer.status_code == 200:
                    got[k] = time.time()

        async def send(i: int) -> None:
            tasks.append(asyncio.create_task(one(i)))

        await paced(n, rate, send)
        await asyncio.gather(*tasks)
    return figures(sent, got)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--ways", default="rabbitmq,nats,api_events", help="which to run")
    args = parser.parse_args(argv)

    from bench.front_doors import serve
    from ops import stack
    from producers import Client
    from schemas.settings import Settings
    from storage.apikeys import ApiKeys

    data_dir = Path(tempfile.mkdtemp(prefix="sluice-bench-bus-"))
    settings = Settings(data_dir=data_dir)
    stack.up(settings)
    name = f"bench{uuid.uuid4().hex[:6]}"
    pipelines = data_dir / "pipelines.toml"
    pipelines_file(pipelines, name)
    env = {**os.environ, "SLUICE_DATA_DIR": str(data_dir)}
    listen = subprocess.Popen(
        [SLUICE, "listen", str(pipelines)],
        env=env,
        stdout=(data_dir / "listen.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    report: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "burst": args.burst}
    try:
        deadline = time.monotonic() + 120
        while (data_dir / "listen.log").read_text().count("consuming from") < 2:
            if listen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the listener did not start: see {data_dir / 'listen.log'}")
            time.sleep(0.2)
        client = Client(settings)
        url, server = serve(client)
        key = ApiKeys(client.ledger.engine).create("bench").key
        steady = int(args.rate * args.seconds)
        ways = {
            "rabbitmq": lambda n, r: rabbit_phase(f"{name}-rmq", n, r),
            "nats": lambda n, r: nats_phase(f"{name}-nats", n, r),
            "api_events": lambda n, r: api_phase(url, key, n, r),
        }
        ways = {w: ways[w] for w in args.ways.split(",")}
        for way, phase in ways.items():  # warm: the actor, each worker process, the job
            asyncio.run(phase(64, 0))
            asyncio.run(phase(int(args.rate * 3), args.rate))
            log(f"{way}: warm")
        for way, phase in ways.items():
            report[f"{way}_steady"] = asyncio.run(phase(steady, args.rate))
            log(f"{way} steady: {report[f'{way}_steady']}")
            report[f"{way}_burst"] = asyncio.run(phase(args.burst, 0))
            log(f"{way} burst: {report[f'{way}_burst']}")
        server.should_exit = True
    finally:
        listen.terminate()
        listen.wait(60)
        stack.down(settings)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
