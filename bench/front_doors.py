"""The front doors against the SDK, side by side on one warm embedded stack:

    .venv/bin/python bench/front_doors.py [--repeat 20] [--rows 2000]

(a) submit 10 texts: POST /v1/jobs over real HTTP (uvicorn in this process) against
    Client.submit_texts; median over --repeat submissions each, interleaved.
(b) one event, submit to result: POST /v1/events?wait=60s against Client.submit_texts of one
    text + Client.wait (polling every 20 ms, as the API does); median over --repeat, interleaved.
(c) --rows texts from a SQLite table: `enrich` (read, job, wait, upsert into a destination
    table) against Client.submit_texts + wait of the same texts; rows/s.
All with the `embed` task on MiniLM, the actor warm. Ratios are what to read; the last line is
one JSON object.
"""

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def serve(client: Any) -> tuple[str, Any]:
    import uvicorn

    from producers.api import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(client=client), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args(argv)

    import httpx
    from sqlalchemy import Column, Integer, MetaData, Table, Text

    from ops import stack
    from producers import Client
    from producers.enrich import EnrichSpec, SourceSpec, enrich
    from schemas.settings import Settings
    from storage.apikeys import ApiKeys
    from storage.engine import make_engine

    data_dir = Path(tempfile.mkdtemp(prefix="sluice-bench-doors-"))
    settings = Settings(data_dir=data_dir)
    stack.up(settings)
    server = None
    try:
        client = Client(settings)
        url, server = serve(client)
        key = ApiKeys(client.ledger.engine).create("bench")
        http = httpx.Client(
            base_url=url, timeout=120, headers={"Authorization": f"Bearer {key.key}"}
        )
        client.wait(client.submit_texts(["warm-up"], "embed"), timeout=600)  # actor loaded
        texts = [f"my parcel number {i} has not arrived" for i in range(10)]

        api_submit, sdk_submit, api_event, sdk_event = [], [], [], []
        for n in range(args.repeat):
            api_submit.append(
                timed(
                    lambda n=n: http.post(
                        "/v1/jobs", json={"task": "embed", "items": [f"{t} ({n})" for t in texts]}
                    ).raise_for_status()
                )
            )
            sdk_submit.append(
                timed(lambda n=n: client.submit_texts([f"{t} [{n}]" for t in texts], "embed"))
            )
        for n in range(args.repeat):
            api_event.append(
                timed(
                    lambda n=n: http.post(
                        "/v1/events",
                        params={"wait": "60s"},
                        json={"task": "embed", "key": f"e{n}", "text": f"event {n}"},
                    ).raise_for_status()
                )
            )
            sdk_event.append(
                timed(
                    lambda n=n: client.wait(
                        client.submit_texts({f"s{n}": f"event {n}"}, "embed"), timeout=60, poll=0.02
                    )
                )
            )
        log("latencies measured")

        warehouse = make_engine(f"sqlite:///{data_dir / 'warehouse.db'}")
        meta = MetaData()
        table = Table(
            "tickets", meta, Column("id", Integer, primary_key=True), Column("body", Text)
        )
        meta.create_all(warehouse)
        rows = [
            {"id": i, "body": f"ticket {i}: the courier left my box at the wrong door"}
            for i in range(args.rows)
        ]
        with warehouse.begin() as conn:
            conn.execute(table.insert(), rows)
        spec = EnrichSpec(
            source=SourceSpec(
                url=str(warehouse.url), table="tickets", key_column="id", text_column="body"
            ),
            dest_table="tickets_enriched",
            task="embed",
        )
        t0 = time.perf_counter()
        report = enrich(client, spec, timeout=1800)
        enrich_s = time.perf_counter() - t0
        assert report.rows_written == args.rows, report
        t0 = time.perf_counter()
        view = client.wait(
            client.submit_texts({str(r["id"]): r["body"] for r in rows}, "embed"),
            timeout=1800,
            poll=0.05,
        )
        sdk_s = time.perf_counter() - t0
        assert view.counts.ok == args.rows
    finally:
        if server is not None:
            server.should_exit = True
        stack.down(settings)

    med = {
        k: statistics.median(v) * 1000
        for k, v in (
            ("api_submit_ms", api_submit),
            ("sdk_submit_ms", sdk_submit),
            ("api_event_ms", api_event),
            ("sdk_event_ms", sdk_event),
        )
    }
    figures = {
        **{k: round(v, 1) for k, v in med.items()},
        "submit_ratio_api_over_sdk": round(med["api_submit_ms"] / med["sdk_submit_ms"], 3),
        "event_ratio_api_over_sdk": round(med["api_event_ms"] / med["sdk_event_ms"], 3),
        "enrich_rows_per_s": round(args.rows / enrich_s, 1),
        "sdk_rows_per_s": round(args.rows / sdk_s, 1),
        "enrich_ratio_over_sdk": round(sdk_s / enrich_s, 3),
    }
    print(
        f"\nsubmit 10 texts: API {med['api_submit_ms']:.1f} ms, SDK "
        f"{med['sdk_submit_ms']:.1f} ms (medians of {args.repeat})"
    )
    print(
        f"one event to its result: API ?wait {med['api_event_ms']:.1f} ms, SDK submit+wait "
        f"{med['sdk_event_ms']:.1f} ms"
    )
    print(
        f"{args.rows} rows: enrich {figures['enrich_rows_per_s']} rows/s (read, job, upsert), "
        f"SDK {figures['sdk_rows_per_s']} rows/s (job only)"
    )
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
