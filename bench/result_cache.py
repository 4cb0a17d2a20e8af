"""The result cache (issue 16, target 5): a re-run against its first run, on one warm
embedded stack (Redis, SQLite, Ray, one Celery worker):

    .venv/bin/python bench/result_cache.py [--rows 20000] [--enrich-rows 20000]

(a) a job of --rows distinct short texts (`embed`, all-MiniLM-L6-v2, submitted as a JSONL
    file), submit to last result; then the same file again: every row answered from the
    cache, none by the model.
(b) `sluice enrich --full` of an SQLite table of --enrich-rows other texts into a destination
    table (read, job, wait, upsert); then the same command over the unchanged table.
The first runs pay for the model and for storing what the cache keeps; the re-runs read,
record, look up and write back. The model actor is warmed up first with texts of neither. The
target is a ratio of at least 20 for both. The last line is one JSON object.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET = 20.0
PHRASES = [
    "my parcel has not arrived yet",
    "the invoice shows a charge I do not recognise",
    "thank you, the support team was wonderful",
    "how do I change the delivery address",
    "我的包裹还没有到",
    "请问如何申请退款",
]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def texts(n: int, tag: str) -> list[str]:
    """n distinct short texts (no two rows the same: the first run gets no cache hits)."""
    return [f"{PHRASES[i % len(PHRASES)]} ({tag} {i})" for i in range(n)]


def run_job(client: Any, path: Path) -> tuple[float, Any]:
    t0 = time.perf_counter()
    job_id = client.submit_file(path, "embed", key_column="id")
    view = client.wait(job_id, timeout=3600, poll=0.05)
    return time.perf_counter() - t0, view


def run_enrich(client: Any, spec: Any) -> tuple[float, Any]:
    from producers.enrich import enrich

    t0 = time.perf_counter()
    report = enrich(client, spec, full=True, timeout=3600)
    return time.perf_counter() - t0, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--enrich-rows", type=int, default=20_000)
    args = parser.parse_args(argv)

    from sqlalchemy import Column, Integer, MetaData, Table, Text

    from ops import stack
    from producers import Client
    from producers.enrich import EnrichSpec, SourceSpec
    from schemas.settings import Settings
    from storage.engine import make_engine

    data_dir = Path(tempfile.mkdtemp(prefix="sluice-bench-cache-"))
    settings = Settings(data_dir=data_dir)
    stack.up(settings)
    try:
        client = Client(settings)
        client.wait(client.submit_texts(["warm-up"], "embed"), timeout=600)  # actor loaded

        path = data_dir / "messages.jsonl"
        rows = [{"id": f"m{i}", "text": t} for i, t in enumerate(texts(args.rows, "job"))]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        first_s, first = run_job(client, path)
        log(f"job, first run: {first_s:.2f}s, {first.counts.ok} ok")
        again_s, again = run_job(client, path)
        log(f"job, re-run: {again_s:.2f}s, {again.counts.cached} cached")
        assert first.counts.ok == args.rows and first.counts.cached == 0, first
        assert again.counts.cached == args.rows, again
        same = all(
            a["output"] == b["output"]
            for a, b in zip(client.results(first.id), client.results(again.id), strict=True)
        )
        assert same, "a cached row's output differs from the row it copies"

        warehouse = make_engine(f"sqlite:///{data_dir / 'warehouse.db'}")
        meta = MetaData()
        table = Table(
            "tickets", meta, Column("id", Integer, primary_key=True), Column("body", Text)
        )
        meta.create_all(warehouse)
        with warehouse.begin() as conn:
            conn.execute(
                table.insert(),
                [{"id": i, "body": t} for i, t in enumerate(texts(args.enrich_rows, "ticket"))],
            )
        spec = EnrichSpec(
            source=SourceSpec(
                url=str(warehouse.url), table="tickets", key_column="id", text_column="body"
            ),
            dest_table="tickets_enriched",
            task="embed",
        )
        enrich_first_s, report = run_enrich(client, spec)
        log(f"enrich --full, first run: {enrich_first_s:.2f}s, {report.rows_written} written")
        enrich_again_s, report_again = run_enrich(client, spec)
        cached = client.status(report_again.job_id).counts.cached
        log(f"enrich --full, re-run: {enrich_again_s:.2f}s, {cached} cached")
        assert report.rows_written == report_again.rows_written == args.enrich_rows
        assert cached == args.enrich_rows
    finally:
        stack.down(settings)

    figures = {
        "rows": args.rows,
        "job_first_s": round(first_s, 2),
        "job_rerun_s": round(again_s, 2),
        "job_rerun_speedup": round(first_s / again_s, 1),
        "enrich_rows": args.enrich_rows,
        "enrich_first_s": round(enrich_first_s, 2),
        "enrich_rerun_s": round(enrich_again_s, 2),
        "enrich_rerun_speedup": round(enrich_first_s / enrich_again_s, 1),
        "target": TARGET,
    }
    print(
        f"\nre-running an unchanged {args.rows}-row job: {figures['job_rerun_speedup']}x faster "
        f"({first_s:.1f}s -> {again_s:.2f}s); `enrich --full` over an unchanged "
        f"{args.enrich_rows}-row table: {figures['enrich_rerun_speedup']}x "
        f"({enrich_first_s:.1f}s -> {enrich_again_s:.2f}s); target >= {TARGET:g}x"
    )
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
