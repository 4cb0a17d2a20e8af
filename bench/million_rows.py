"""A million rows, flat memory (issue 16, target 4), side by side in one run:

    .venv/bin/python bench/million_rows.py [--rows 100000,1000000] [--large jsonl,parquet]
        [--only jsonl,csv,parquet,sql] [--pg URL | --no-pg] [--parts submit,export,latency]

(a) `sluice submit` of JSONL, CSV and Parquet files and `sluice enrich` of an SQL table on
    the SQLite ledger and (unless --no-pg; default the local server, in a database of its
    own, dropped after) on PostgreSQL: the submitting process's peak RSS and rows/s = rows /
    wall time from the call to the last chunk committed (the job queued; chunk messages are
    recorded, not sent: that is the broker's time), and its ratio to the 100,000 rows/s
    target. Every format at the smaller counts; at the largest only the --large formats (a
    run stays within a few minutes on a shared machine), whose RSS at the smallest and the
    largest count is printed side by side (flat memory: it must not grow with the rows).
    Each measurement runs in a fresh process of its own, so its peak RSS is its own.
    Targets: peak RSS under 256 MB at every count, >= 100,000 rows/s.
(b) --parts export: exporting the job's results as JSONL (results written straight into
    the ledger, as workers would have): the exporting process's peak RSS (flat) and rows/s.
(c) --parts latency: GET /v1/jobs/{id}/results?cursor=900000 and GET /v1/jobs for a tenant
    with 10,000 jobs (among 20,000), over the REST app in-process: median milliseconds of 20
    calls each. Target: under 100 ms.
The `embed` task (its default model is resolved, never loaded). The machine's load average is
printed beside the figures; the last line is one JSON object.
"""

import argparse
import json
import os
import resource
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

TASK = "embed"
FORMATS = ("jsonl", "csv", "parquet", "sql")
TARGET_ROWS_PER_S = 100_000
TARGET_RSS_MB = 256
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
OWNER = "bench"  # the tenant the exported job is moved to, for the REST figures


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux carries
    ru_maxrss over an exec, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB


# -- inputs -----------------------------------------------------------------------------------


def text_of(k: int) -> str:
    return f"message {k}: the order shipped on time and the customer was pleased with it"


def write_inputs(folder: Path, rows: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    files = {f: folder / f"in-{rows}.{f}" for f in ("jsonl", "csv", "parquet")}
    step = 100_000
    with files["jsonl"].open("w", encoding="utf-8") as fh:
        for start in range(0, rows, step):
            fh.writelines(
                json.dumps({"id": f"r{k}", "text": text_of(k)}) + "\n"
                for k in range(start, min(rows, start + step))
            )
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with (
        pq.ParquetWriter(files["parquet"], schema) as pw,
        pacsv.CSVWriter(files["csv"], schema) as cw,
    ):
        for start in range(0, rows, step):
            ks = range(start, min(rows, start + step))
            batch = pa.table({"id": [f"r{k}" for k in ks], "text": [text_of(k) for k in ks]})
            pw.write_table(batch)
            cw.write_table(batch)
    return files


def write_table(url: str, table: str, rows: int) -> None:
    """The source table of `sluice enrich`: (id integer key, text)."""
    from sqlalchemy import Column, Integer, MetaData, Table, Text, insert

    from storage.engine import make_engine

    engine = make_engine(url)
    meta = MetaData()
    src = Table(table, meta, Column("id", Integer, primary_key=True), Column("text", Text))
    meta.drop_all(engine, tables=[src])
    meta.create_all(engine, tables=[src])
    step = 50_000
    for start in range(0, rows, step):
        with engine.begin() as conn:
            ks = range(start, min(rows, start + step))
            conn.execute(insert(src), [{"id": k, "text": text_of(k)} for k in ks])
    engine.dispose()


# -- one measurement, in a process of its own --------------------------------------------------


class Submitted(Exception):
    """Raised by the bench client's wait: the job is queued, which is what is measured."""


def bench_client(ledger_url: str, data_dir: Path) -> Any:
    from producers import Client, RecordingDispatcher
    from schemas.settings import Settings

    class SubmitOnly(Client):
        def wait(self, job_id: str, *args: Any, **kwargs: Any) -> Any:
            raise Submitted(job_id)

    settings = Settings(
        data_dir=data_dir,
        database_url=ledger_url,
        broker_url="redis://127.0.0.1:1/0",  # never reached: messages are recorded
        tenant_max_in_flight=100_000_000,
    )
    return SubmitOnly(settings, RecordingDispatcher())


def child_submit(fmt: str, source: str, ledger_url: str, data_dir: str, rows: int) -> dict:
    client = bench_client(ledger_url, Path(data_dir))
    client.resolve_model(None, TASK)  # warm: what a submit resolves is not the rows' cost
    started = time.perf_counter()
    if fmt == "sql":
        from producers.enrich import EnrichSpec, SourceSpec, enrich

        url, table = source.split("#")
        spec = EnrichSpec(
            source=SourceSpec(url=url, table=table, key_column="id", text_column="text"),
            dest_table=f"enriched_{uuid.uuid4().hex[:8]}",
            task=TASK,
        )
        try:
            enrich(client, spec)
            raise RuntimeError("enrich returned without submitting")
        except Submitted as done:
            job_id = str(done)
    else:
        job_id = client.submit_file(Path(source), TASK, key_column="id")
    seconds = time.perf_counter() - started
    view = client.status(job_id)
    assert view.counts.total == rows and view.status == "queued", view.as_dict()
    return {"job_id": job_id, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def child_export(ledger_url: str, data_dir: str, job_id: str) -> dict:
    client = bench_client(ledger_url, Path(data_dir))
    started = time.perf_counter()
    with open(os.devnull, "w", encoding="utf-8") as out:
        n = client.export(job_id, "jsonl", out)
    return {"rows": n, "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def in_child(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- results and latencies ---------------------------------------------------------------------


def fill_results(ledger_url: str, job_id: str) -> None:
    """Every item of the job `ok`, its chunks done, as workers would have left them."""
    from sqlalchemy import insert, select, update

    from storage import tables as t
    from storage.clock import host_now
    from storage.engine import make_engine

    engine = make_engine(ledger_url)
    now = host_now()
    with engine.execution_options(readonly=True).connect() as conn:  # SQLite: no write lock
        chunks = conn.execute(
            select(t.Chunk.id, t.Chunk.first_item, t.Chunk.items)
            .where(t.Chunk.job_id == job_id)
            .order_by(t.Chunk.seq)
            .execution_options(stream_results=True, yield_per=50)
        )
        rows: list[dict[str, Any]] = []
        with engine.connect() as writer:
            for chunk_id, first, items in chunks:
                rows += [
                    {
                        "job_id": job_id,
                        "item_key": item["key"],
                        "chunk_id": chunk_id,
                        "seq": first + n,
                        "status": "ok",
                        "output": {"label": "positive", "score": 0.93},
                        "created_at": now,
                    }
                    for n, item in enumerate(items)
                ]
                if len(rows) >= 20_000:
                    writer.execute(insert(t.Result), rows)
                    writer.commit()
                    rows = []
            if rows:
                writer.execute(insert(t.Result), rows)
            writer.execute(update(t.Chunk).where(t.Chunk.job_id == job_id).values(state="done"))
            writer.execute(
                update(t.Job)
                .where(t.Job.id == job_id)
                .values(
                    status="succeeded",
                    ok=t.Job.total,
                    chunks_done=t.Job.chunks_total,
                    tenant=OWNER,  # an API key's tenant ("default" takes none)
                )
            )
            writer.commit()
    engine.dispose()


def many_jobs(ledger_url: str, tenant: str, n: int) -> None:
    """`n` finished jobs of `tenant` and `n` of another, straight into the ledger."""
    from datetime import timedelta

    from sqlalchemy import insert

    from storage import tables as t
    from storage.clock import host_now
    from storage.engine import make_engine

    engine = make_engine(ledger_url)
    now = host_now()
    with engine.begin() as conn:
        for owner in (tenant, f"{tenant}-other"):
            conn.execute(
                insert(t.Job),
                [
                    {
                        "id": uuid.uuid4().hex,
                        "task": TASK,
                        "model": "m",
                        "model_version": "1",
                        "params": {},
                        "explain_policy": "none",
                        "priority": 5,
                        "status": "succeeded",
                        "total": 1,
                        "ok": 1,
                        "invalid": 0,
                        "error": 0,
                        "chunks_total": 1,
                        "chunks_done": 1,
                        "created_at": now - timedelta(seconds=k),
                        "tenant": owner,
                        "lane": 0,
                    }
                    for k in range(n)
                ],
            )
    engine.dispose()


def latencies(ledger_url: str, data_dir: Path, job_id: str, rows: int) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from producers.api import create_app
    from storage.apikeys import ApiKeys

    client = bench_client(ledger_url, data_dir)
    many_jobs(ledger_url, "busy", 10_000)
    own = ApiKeys(client.ledger.engine).create(OWNER).key
    busy = ApiKeys(client.ledger.engine).create("busy").key
    cursor = min(900_000, rows - 200)

    def median_ms(path: str, key: str) -> float:
        times = []
        with TestClient(create_app(client=client)) as http:
            headers = {"Authorization": f"Bearer {key}"}
            for _ in range(21):
                t0 = time.perf_counter()
                answer = http.get(path, headers=headers)
                times.append((time.perf_counter() - t0) * 1000)
                assert answer.status_code == 200, answer.text
        return round(statistics.median(times[1:]), 1)

    page = median_ms(f"/v1/jobs/{job_id}/results?cursor={cursor}&limit=100", own)
    jobs = median_ms("/v1/jobs", busy)
    return {"results_page_ms": page, "results_page_cursor": cursor, "jobs_list_ms": jobs}


# -- the run -----------------------------------------------------------------------------------


def pg_database(admin_url: str) -> tuple[str, Any]:
    """A database of the run's own on the server (sluice_bench_rows_*), dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from storage.engine import normalise_url

    admin = make_url(normalise_url(admin_url))
    name = f"sluice_bench_rows_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


def submitted(summary: dict[str, Any], db: str, fmt: str, n: int, got: dict) -> None:
    rate = round(n / got["seconds"])
    summary[f"{db}.{fmt}.{n}"] = {
        "rows_per_s": rate,
        "target_ratio": round(rate / TARGET_ROWS_PER_S, 2),
        "peak_rss_mb": round(got["peak_rss_mb"]),
        "seconds": round(got["seconds"], 2),
    }
    log(
        f"{db} {fmt} {n:,}: {rate:,} rows/s ({rate / TARGET_ROWS_PER_S:.2f} of the target), "
        f"peak RSS {got['peak_rss_mb']:.0f} MB, load {os.getloadavg()[0]:.1f}"
    )


def verdict(summary: dict[str, Any], counts: list[int]) -> dict[str, Any]:
    """The figures against the targets: the slowest rows/s and its ratio, the largest peak
    RSS, and each format's RSS at the smallest and the largest count side by side."""
    runs = {k: v for k, v in summary.items() if k.count(".") == 2 and "rows_per_s" in v}
    runs = {k: v for k, v in runs.items() if ".export." not in k}
    slowest = min(runs, key=lambda k: runs[k]["rows_per_s"])
    largest = max(runs, key=lambda k: runs[k]["peak_rss_mb"])
    rss_by_count = {}
    for key in runs:
        db, fmt, n = key.split(".")
        if int(n) == max(counts) and len(counts) > 1:
            small = runs.get(f"{db}.{fmt}.{min(counts)}")
            if small:
                rss_by_count[f"{db}.{fmt}"] = [small["peak_rss_mb"], runs[key]["peak_rss_mb"]]
    return {
        "slowest": slowest,
        "slowest_rows_per_s": runs[slowest]["rows_per_s"],
        "slowest_target_ratio": runs[slowest]["target_ratio"],
        "rows_per_s_met": runs[slowest]["rows_per_s"] >= TARGET_ROWS_PER_S,
        "largest_rss": largest,
        "largest_rss_mb": runs[largest]["peak_rss_mb"],
        "rss_met": runs[largest]["peak_rss_mb"] < TARGET_RSS_MB,
        "rss_mb_smallest_vs_largest_count": rss_by_count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument(
        "--large", default="jsonl,parquet", help="formats also measured at the largest count"
    )
    parser.add_argument("--pg", default=os.environ.get("SLUICE_BENCH_PG", PG_DEFAULT))
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--only", default=",".join(FORMATS))
    parser.add_argument("--parts", default="submit", help="submit, and export, latency")
    parser.add_argument("--child", default=None)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = json.loads(args.child)
        if kind == "submit":
            fmt, source, url, data_dir, rows = rest
            out = child_submit(fmt, source, url, data_dir, int(rows))
        else:
            url, data_dir, job_id = rest
            out = child_export(url, data_dir, job_id)
        print(json.dumps(out))
        return 0
    counts = sorted(int(r) for r in args.rows.split(","))
    formats = [f for f in args.only.split(",") if f]
    large = {f for f in args.large.split(",") if f}
    parts = set(args.parts.split(","))
    summary: dict[str, Any] = {
        "cores": os.cpu_count(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "large_formats": sorted(large & set(formats)),
    }
    with tempfile.TemporaryDirectory(prefix="sluice-million-") as tmp:
        work = Path(tmp)
        ledgers = {"sqlite": (f"sqlite:///{work / 'ledger.db'}", lambda: None)}
        if not args.no_pg:
            ledgers["postgresql"] = pg_database(args.pg)
        try:
            for n in counts:
                now = [f for f in formats if n < max(counts) or len(counts) == 1 or f in large]
                log(f"writing {n:,} rows for {', '.join(now)}")
                files = write_inputs(work, n)
                for db, (url, _) in ledgers.items():
                    table_url = url if db == "postgresql" else f"sqlite:///{work / 'source.db'}"
                    if "sql" in now:
                        write_table(table_url, f"source_{n}", n)
                    for fmt in now:
                        source = f"{table_url}#source_{n}" if fmt == "sql" else str(files[fmt])
                        got = in_child("submit", fmt, source, url, str(work / "data"), str(n))
                        submitted(summary, db, fmt, n, got)
                    job_id = got["job_id"]
                    if "export" in parts:
                        fill_results(url, job_id)
                        exported = in_child("export", url, str(work / "data"), job_id)
                        summary[f"{db}.export.{n}"] = {
                            "rows_per_s": round(n / exported["seconds"]),
                            "peak_rss_mb": round(exported["peak_rss_mb"]),
                        }
                        log(f"{db} export {n:,}: {exported['peak_rss_mb']:.0f} MB")
                        if "latency" in parts and n == max(counts):
                            summary[f"{db}.latency"] = latencies(url, work / "data", job_id, n)
                            log(f"{db} latencies: {summary[f'{db}.latency']}")
        finally:
            for _, drop in ledgers.values():
                drop()
    summary["load_after"] = [round(x, 2) for x in os.getloadavg()]
    summary["verdict"] = verdict(summary, counts)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
