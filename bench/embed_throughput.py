"""Embedding throughput: the bare model loop against Sluice end to end, side by side.

    .venv/bin/python bench/embed_throughput.py [--docs 2000] [--batch-sizes 16,32,64,128]
                                               [--data-dir DIR]

Both measurements run in ONE invocation, on the same machine, one after the other (bare first,
then Sluice), over the same N documents. That is on purpose: throughput on a shared machine
drifts with whatever else is running (other tests, other users, thermal and frequency changes),
so two figures taken in separate runs, minutes or hours apart, are not comparable. Taken
back to back they see roughly the same noise, and their ratio is what the benchmark reports.
Treat single figures as noisy; repeat the run when a difference matters.

(a) Bare: workers.handlers.text.EmbedHandler loaded in this process on the CPU, with torch
    using os.cpu_count() threads (as the model actor does by default). For each batch size the
    N documents are preprocessed (tokenised) and predicted batch by batch; the timed section
    covers both, since the Sluice actor does both too. The best batch size is the baseline.
    A warm-up pass runs first.

(b) Sluice: the embedded stack (redis, a Ray head and a Celery worker, as subprocesses) on a
    fresh data dir. A small warm-up job runs first, so the Ray actor has loaded the model and
    the Celery children have joined Ray; then the timed section is submit_texts(N docs) ->
    client.wait(job) -> finished. Results are in the ledger when the job finishes; they are
    read back and checked (N ok rows of the model's dimension) outside the timed section.

The last line of output is one JSON object with the figures.
"""

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "ops" / "samples" / "messages.jsonl"
MODEL = "all-MiniLM-L6-v2"
TASK = "embed"


def chunk_size(settings: Any) -> int:
    from schemas.catalog import load_catalog

    return int(settings.chunk_size or load_catalog().get(TASK).chunk_size)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def make_docs(n: int) -> list[str]:
    """N unique texts: the sample messages, cycled, each with a short suffix."""
    rows = [
        json.loads(line)
        for line in SAMPLES.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    base = [str(r["text"]) for r in rows if r.get("text")]
    return [f"{base[i % len(base)]} (ref {i})" for i in range(n)]


# -- (a) the bare model loop -------------------------------------------------------------------


def run_bare(docs: list[str], batch_sizes: list[int], cache_dir: Path) -> dict[str, Any]:
    import torch

    from schemas.jobs import Item
    from workers.handlers.text import EmbedHandler

    torch.set_num_threads(os.cpu_count() or 1)
    from producers import model_refs
    from schemas.catalog import load_catalog

    ref = model_refs.resolve(MODEL, load_catalog().get(TASK), cache_dir)
    handler = EmbedHandler()
    started = time.perf_counter()
    handler.setup(str(ref.path), "cpu")
    load_s = time.perf_counter() - started
    log(
        f"bare: model loaded in {load_s:.1f}s from {ref.path} "
        f"(torch threads {torch.get_num_threads()})"
    )
    items = [Item(key=str(i), text=t) for i, t in enumerate(docs, 1)]

    def one_pass(batch: int, subset: list[Item]) -> tuple[float, float, int]:
        pre_s = pred_s = 0.0
        outputs = 0
        for start in range(0, len(subset), batch):
            t0 = time.perf_counter()
            feats = [handler.preprocess(it, {}) for it in subset[start : start + batch]]
            t1 = time.perf_counter()
            outputs += len(handler.predict(feats))
            pre_s += t1 - t0
            pred_s += time.perf_counter() - t1
        return pre_s, pred_s, outputs

    # Warm-up: every batch size once on the first documents (allocator, kernels, caches).
    warm = items[: max(batch_sizes)]
    t0 = time.perf_counter()
    for b in batch_sizes:
        one_pass(b, warm)
    log(f"bare: warm-up done in {time.perf_counter() - t0:.1f}s")

    by_batch: dict[int, dict[str, float]] = {}
    for b in batch_sizes:
        t0 = time.perf_counter()
        pre_s, pred_s, outputs = one_pass(b, items)
        wall = time.perf_counter() - t0
        if outputs != len(items):
            raise RuntimeError(f"bare batch {b}: {outputs} outputs for {len(items)} items")
        by_batch[b] = {
            "seconds": wall,
            "items_per_s": len(items) / wall,
            "preprocess_s": pre_s,
            "predict_s": pred_s,
        }
        log(f"bare: batch {b:>4}: {len(items) / wall:8.1f} items/s ({wall:.2f}s)")
    best = max(by_batch, key=lambda b: by_batch[b]["items_per_s"])
    dim = int(handler.predict([handler.preprocess(items[0], {})])[0]["dim"])
    return {
        "by_batch": by_batch,
        "best_batch": best,
        "load_s": load_s,
        "dim": dim,
        "torch_threads": torch.get_num_threads(),
    }


# -- (b) Sluice end to end ---------------------------------------------------------------------


def run_sluice(docs: list[str], settings: Any, expect_dim: int) -> dict[str, Any]:
    from ops import stack
    from producers import Client

    if stack.running(settings):
        raise SystemExit(
            f"a stack is already running in {settings.data_dir}; stop it or pick "
            "another --data-dir (the benchmark needs a fresh worker)"
        )
    t0 = time.perf_counter()
    stack.up(settings)
    try:
        up_s = time.perf_counter() - t0
        log(f"sluice: stack up in {up_s:.1f}s (data dir {settings.data_dir})")
        client = Client(settings)

        # Warm-up: as many chunks as Celery children (the last one a single item), so the Ray
        # actor has loaded the model and (most likely) each child has joined Ray before the clock
        # starts.
        n_warm = chunk_size(settings) * (settings.worker_concurrency - 1) + 1
        warm_docs = [f"warm-up: {t}" for t in make_docs(n_warm)]
        t0 = time.perf_counter()
        warm_id = client.submit_texts(warm_docs, TASK)
        warm_view = client.wait(warm_id, timeout=600)
        warm_s = time.perf_counter() - t0
        log(f"sluice: warm-up job of {n_warm} items {warm_view.status} in {warm_s:.1f}s")
        if warm_view.counts.ok != n_warm:
            raise RuntimeError(
                f"warm-up job {warm_id} {warm_view.status}: {warm_view.counts.model_dump()}"
            )

        t0 = time.perf_counter()
        job_id = client.submit_texts(docs, TASK)
        submit_s = time.perf_counter() - t0
        view = client.wait(job_id, timeout=1800, poll=0.05)
        total_s = time.perf_counter() - t0
        log(f"sluice: job {job_id} {view.status} in {total_s:.2f}s (submit {submit_s:.2f}s)")

        # Outside the timed section: the persisted results.
        rows = list(client.results(job_id))
        ok = sum(
            1
            for r in rows
            if r["status"] == "ok" and (r.get("output") or {}).get("dim") == expect_dim
        )
        return {
            "job_id": job_id,
            "status": str(view.status),
            "seconds": total_s,
            "submit_s": submit_s,
            "items_per_s": len(docs) / total_s,
            "rows": len(rows),
            "ok_rows": ok,
            "counts": view.counts.model_dump(),
            "stack_up_s": up_s,
            "warmup_s": warm_s,
            "warmup_items": n_warm,
        }
    finally:
        log("sluice: stopping the stack")
        stack.down(settings)


def worker_log_tail(data_dir: Path, lines: int = 60) -> str:
    path = data_dir / "logs" / "worker.log"
    if not path.exists():
        return f"(no {path})"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


# -- report ------------------------------------------------------------------------------------


def print_report(n: int, bare: dict[str, Any], sluice: dict[str, Any], settings: Any) -> None:
    print()
    print(
        f"embed throughput, {n} documents, {os.cpu_count()} CPUs, model {MODEL} "
        f"(dim {bare['dim']}), torch threads {bare['torch_threads']}"
    )
    print()
    print(f"{'measurement':<34} {'seconds':>9} {'items/s':>10}  notes")
    print("-" * 78)
    for b, r in bare["by_batch"].items():
        mark = "  <- best" if b == bare["best_batch"] else ""
        print(
            f"{f'bare, batch {b}':<34} {r['seconds']:>9.2f} {r['items_per_s']:>10.1f}  "
            f"tokenise {r['preprocess_s']:.2f}s, predict {r['predict_s']:.2f}s{mark}"
        )
    print(
        f"{'sluice end to end':<34} {sluice['seconds']:>9.2f} "
        f"{sluice['items_per_s']:>10.1f}  submit {sluice['submit_s']:.2f}s, "
        f"status {sluice['status']}"
    )
    print("-" * 78)
    best = bare["by_batch"][bare["best_batch"]]["items_per_s"]
    print(f"sluice / best bare = {sluice['items_per_s'] / best:.3f}")
    print(
        f"sluice settings: chunk_size {chunk_size(settings)}, max_batch_size "
        f"{settings.max_batch_size}, max_batch_wait_ms {settings.max_batch_wait_ms}, "
        f"worker_concurrency {settings.worker_concurrency}, replicas {settings.replicas}"
    )
    print(
        f"sluice results: {sluice['rows']} rows, {sluice['ok_rows']} ok with dim "
        f"{bare['dim']} (expected {n}); counts {sluice['counts']}"
    )
    print(
        f"sluice overheads (untimed): stack up {sluice['stack_up_s']:.1f}s, warm-up job of "
        f"{sluice['warmup_items']} items {sluice['warmup_s']:.1f}s; bare model load "
        f"{bare['load_s']:.1f}s"
    )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--docs", type=int, default=2000, help="documents to embed")
    parser.add_argument(
        "--batch-sizes",
        default="16,32,64,128",
        help="bare-loop batch sizes to try, comma-separated",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Sluice data dir (default: a fresh temporary directory)",
    )
    args = parser.parse_args(argv)
    if args.docs < 1:
        parser.error("--docs must be at least 1")
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes must be integers, got {args.batch_sizes!r}")
    if not batch_sizes or min(batch_sizes) < 1:
        parser.error("--batch-sizes needs at least one positive size")

    from schemas.settings import Settings

    temp = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="sluice-bench-")) if temp else args.data_dir
    data_dir = data_dir.resolve()
    settings = Settings(data_dir=data_dir)
    docs = make_docs(args.docs)
    log(f"{len(docs)} documents from {SAMPLES.name}; data dir {data_dir}")

    bare = run_bare(docs, batch_sizes, data_dir)
    gc.collect()  # the bare model is dropped before the stack starts
    try:
        sluice = run_sluice(docs, settings, bare["dim"])
    except Exception as exc:
        log(f"sluice end to end FAILED: {type(exc).__name__}: {exc}")
        log(f"tail of {data_dir / 'logs' / 'worker.log'}:\n{worker_log_tail(data_dir)}")
        log(f"data dir kept for inspection: {data_dir}")
        return 1

    print_report(len(docs), bare, sluice, settings)
    best = bare["best_batch"]
    bare_ips = bare["by_batch"][best]["items_per_s"]
    print(
        json.dumps(
            {
                "docs": len(docs),
                "bare_best_batch": best,
                "bare_items_per_s": round(bare_ips, 2),
                "sluice_items_per_s": round(sluice["items_per_s"], 2),
                "ratio": round(sluice["items_per_s"] / bare_ips, 4),
                "bare_by_batch": {
                    str(b): round(r["items_per_s"], 2) for b, r in bare["by_batch"].items()
                },
            }
        ),
        flush=True,
    )
    ok = sluice["ok_rows"] == len(docs) and sluice["status"] == "succeeded"
    if not ok:
        log(
            f"sluice results check FAILED: {sluice['ok_rows']} ok rows for {len(docs)} docs, "
            f"status {sluice['status']}; data dir kept: {data_dir}"
        )
        log(f"tail of worker.log:\n{worker_log_tail(data_dir)}")
    elif temp:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
