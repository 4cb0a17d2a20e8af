"""What lineage and erasure cost (issue 22), side by side in one run, on SQLite and (unless
--no-pg) PostgreSQL:

    .venv/bin/python bench/erasure.py [--rows 200000] [--jobs 50] [--pg URL | --no-pg]

(a) exporting a job's results as JSONL and CSV without lineage (the rows as the SDK reads
    them) and with it (as `sluice results` writes them: `input_digest` and `lineage` per
    row), alternated over --rounds: rows/s of each and their ratio;
(b) `sluice purge` of that job (--rows results and their chunks): seconds and rows/s;
(c) `sluice forget --key` of one key held by --jobs finished jobs of 100 rows each: seconds.
The job is submitted as `sluice submit` does and its results written straight into the
ledger, as workers would have (bench/million_rows.py). The last line is one JSON object.
"""

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import million_rows as rows_bench  # noqa: E402  (bench/ is not a package)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def queued_job(client: Any, folder: Path, rows: int) -> str:
    inputs = rows_bench.write_inputs(folder, rows)
    try:
        return str(client.submit_file(inputs["jsonl"], rows_bench.TASK, key_column="id"))
    finally:
        for path in inputs.values():
            path.unlink(missing_ok=True)


def export_rates(client: Any, job_id: str, rounds: int) -> dict[str, float]:
    from storage import export

    seconds = {"jsonl": 0.0, "jsonl+lineage": 0.0, "csv": 0.0, "csv+lineage": 0.0}
    n = 0
    for _ in range(rounds):
        for fmt in ("jsonl", "csv"):
            for lineage in (False, True):
                name = f"{fmt}+lineage" if lineage else fmt
                started = time.perf_counter()
                rows = client.ledger.iter_results(job_id, lineage=lineage)
                with open(os.devnull, "w", encoding="utf-8") as out:
                    n = (export.write_jsonl if fmt == "jsonl" else export.write_csv)(rows, out)
                seconds[name] += time.perf_counter() - started
    return {name: n * rounds / s for name, s in seconds.items()}


def forget_seconds(client: Any, folder: Path, jobs: int) -> float:
    from tests.unit.test_lineage import settle  # the worker's chunk step, the model stood in

    for j in range(jobs):
        texts = {f"r{j}-{n}": f"row {n} of job {j}" for n in range(99)} | {"cust-4711": "x"}
        settle(client, client.submit_texts(texts, "embed"))
    started = time.perf_counter()
    erased = client.forget("cust-4711")
    seconds = time.perf_counter() - started
    assert len(erased.jobs) == jobs and erased.rows == jobs, erased.as_dict()
    return seconds


def run(db: str, ledger_url: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="sluice-bench-erasure-"))
    client = rows_bench.bench_client(ledger_url, folder / "data")
    client.resolve_model(None, rows_bench.TASK)
    job_id = queued_job(client, folder, args.rows)
    rows_bench.fill_results(ledger_url, job_id)
    log(f"{db}: {args.rows} results written")
    rates = export_rates(client, job_id, args.rounds)
    log(f"{db}: export rows/s {json.dumps({k: round(v) for k, v in rates.items()})}")
    started = time.perf_counter()
    erased = client.purge(job_id, by="bench")
    purge_s = time.perf_counter() - started
    assert erased.rows == args.rows, erased.as_dict()
    log(f"{db}: purge of {args.rows} rows in {purge_s:.2f}s")
    forget_s = forget_seconds(client, folder, args.jobs)
    log(f"{db}: forget across {args.jobs} jobs in {forget_s:.2f}s")
    return {
        "export_rows_per_s": {k: round(v) for k, v in rates.items()},
        "lineage_export_ratio": {
            fmt: round(rates[f"{fmt}+lineage"] / rates[fmt], 3) for fmt in ("jsonl", "csv")
        },
        "purge_s": round(purge_s, 2),
        "purge_rows_per_s": round(args.rows / purge_s),
        "forget_s": round(forget_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pg", default=os.environ.get("SLUICE_BENCH_PG", rows_bench.PG_DEFAULT))
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {"cores": os.cpu_count(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as scratch:
        summary["sqlite"] = run("sqlite", f"sqlite:///{scratch}/ledger.db", args)
    if not args.no_pg:
        url, drop = rows_bench.pg_database(args.pg)
        try:
            summary["postgresql"] = run("postgresql", url, args)
        finally:
            drop()
    summary["load_after"] = os.getloadavg()
    out = io.StringIO()
    for db in ("sqlite", "postgresql"):
        if db in summary:
            s = summary[db]
            out.write(
                f"{db:<11} export rows/s {s['export_rows_per_s']}; with lineage "
                f"{s['lineage_export_ratio']}x; purge {args.rows} rows {s['purge_s']}s "
                f"({s['purge_rows_per_s']} rows/s); forget over {args.jobs} jobs "
                f"{s['forget_s']}s\n"
            )
    print(out.getvalue(), end="")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
