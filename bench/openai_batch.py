"""The OpenAI-compatible API against Sluice's own front doors, side by side on one warm
embedded stack, with the official `openai` client:

    .venv/bin/python bench/openai_batch.py [--requests 500] [--calls 200] [--concurrency 16]
                                           [--repeats 2] [--models-dir DIR]

(a) Batch: --requests prompts ("Spell: 4 0 7", greedy, at most 16 new tokens) on the demo's
    decoder-only speller, as a Sluice job (Client.submit_texts with the prompt template,
    then wait) and as an OpenAI batch (files.create, batches.create, poll every 0.2 s until
    completed, files.content of the output). Also --requests texts for `embed` on MiniLM
    both ways. Each runs --repeats times, the fastest counting, every run on prompts of its
    own (the result cache answers none of them). Reported: seconds and requests/s each, and
    batch / job (the cost of the OpenAI surface: the upload, reading the lines, writing the
    output file from the rows).
(b) Synchronous calls: --calls chat completions at --concurrency, POSTed with httpx to
    /openai/v1/chat/completions, against the same prompts POSTed to /v1/events?wait (both
    one-request jobs on the same queues; the server runs in this process, so the client is
    the same plain one for both). Reported: calls/s and p50/p99 latency.

The last line of output is one JSON object with the figures.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MAX_NEW = 16


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def best(fn: Any, repeats: int) -> float:
    """The fastest of `repeats` runs of fn(run): each run's inputs its own."""
    times = []
    for run in range(repeats):
        t0 = time.perf_counter()
        fn(run)
        times.append(time.perf_counter() - t0)
    log(f"  seconds: {', '.join(f'{t:.2f}' for t in times)}")
    return min(times)


def as_job(client: Any, task: str, texts: list[str], model: str, **params: Any) -> None:
    job = client.submit_texts(texts, task, model=model, **params)
    view = client.wait(job, timeout=1800)
    assert view.counts.ok == len(texts), view


def as_batch(oai: Any, lines: list[dict[str, Any]], endpoint: str) -> None:
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    uploaded = oai.files.create(file=("requests.jsonl", data), purpose="batch")
    batch = oai.batches.create(
        input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h"
    )
    while (batch := oai.batches.retrieve(batch.id)).status not in ("completed", "expired"):
        time.sleep(0.2)
    out = oai.files.content(batch.output_file_id).text.splitlines()
    assert batch.request_counts.completed == len(lines) == len(out), batch


def calls(fn: Any, n: int, concurrency: int) -> dict[str, Any]:
    lat: list[float] = []

    def one(i: int) -> None:
        t0 = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    span = time.perf_counter() - t0
    lat.sort()
    return {
        "calls": n,
        "calls_per_s": round(n / span, 1),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p99_ms": round(1000 * lat[min(n - 1, int(n * 0.99))], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=ROOT / ".sluice" / "models")
    args = parser.parse_args(argv)

    import httpx
    import openai

    from bench.front_doors import serve
    from ops import stack
    from ops.demo_model_cache import build_all
    from producers import Client
    from schemas.settings import Settings
    from schemas.tenants import TenantGrant
    from storage.apikeys import ApiKeys
    from workers.training.scratch_generators import random_digit_texts

    build_all(args.models_dir)
    causal = str(args.models_dir / "tiny-spell-causal")
    embedder = "all-MiniLM-L6-v2"
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="sluice-bench-openai-")))
    settings.tenant_grants = {"bench": TenantGrant(model_dirs=[str(args.models_dir)])}
    n = args.requests

    def digits(run: int) -> list[str]:
        return random_digit_texts(n, seed=1000 + run)

    def texts(run: int) -> list[str]:
        return [f"my order {i} of run {run} arrived broken, I want a refund" for i in range(n)]

    def chat(run: int) -> list[dict[str, Any]]:
        return [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                 "body": {"model": causal, "max_tokens": MAX_NEW,
                          "messages": [{"role": "user", "content": f"Spell: {d}"}]}}
                for i, d in enumerate(digits(run))]  # fmt: skip

    def embed(run: int) -> list[dict[str, Any]]:
        return [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                 "body": {"model": embedder, "input": t}}
                for i, t in enumerate(texts(run))]  # fmt: skip

    report: dict[str, Any] = {"requests": args.requests, "calls": args.calls,
                              "concurrency": args.concurrency}  # fmt: skip
    stack.up(settings)
    try:
        client = Client(settings)
        url, server = serve(client)
        key = ApiKeys(client.ledger.engine).create("bench").key
        oai = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0,
                            timeout=600)  # fmt: skip
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600)

        def job_chat(run: int) -> None:
            as_job(client, "generate", digits(run), causal, prompt="Spell: {text}",
                   max_new_tokens=MAX_NEW, tenant="bench")  # fmt: skip

        def job_embed(run: int) -> None:
            as_job(client, "embed", texts(run), embedder, tenant="bench")

        log("warm-up: each model's actor, each worker process")
        job_chat(-1)
        job_embed(-1)
        as_batch(oai, chat(-2)[:64], "/v1/chat/completions")
        # the job and the batch of each kind take turns, on inputs neither has seen
        for name, fn in [
            ("chat_job", lambda run: job_chat(2 * run)),
            ("chat_batch", lambda run: as_batch(oai, chat(2 * run + 1), "/v1/chat/completions")),
            ("embed_job", lambda run: job_embed(2 * run)),
            ("embed_batch", lambda run: as_batch(oai, embed(2 * run + 1), "/v1/embeddings")),
        ]:
            log(name)
            seconds = best(fn, args.repeats)
            report[name] = {"seconds": round(seconds, 2), "requests_per_s": round(n / seconds, 1)}
        for kind in ("chat", "embed"):
            report[f"{kind}_batch_over_job"] = round(
                report[f"{kind}_batch"]["seconds"] / report[f"{kind}_job"]["seconds"], 2
            )

        prompts = digits(99)

        def sync_chat(i: int) -> None:
            turn = {"role": "user", "content": f"Spell: {prompts[i % n]}"}
            body = {"model": causal, "max_tokens": MAX_NEW, "messages": [turn]}
            r = http.post("/openai/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text

        def event(i: int) -> None:
            body = {"task": "generate", "model": causal, "key": f"ev{i}", "prompt": "Spell: {text}",
                    "text": prompts[i % n], "max_new_tokens": MAX_NEW}  # fmt: skip
            r = http.post("/v1/events", params={"wait": "60s"}, json=body)
            assert r.status_code == 200, r.text

        # warm, on prompts the timed calls do not send (the result cache answers none)
        calls(lambda i: sync_chat(i + 400), 32, args.concurrency)
        calls(lambda i: event(i + 400), 32, args.concurrency)
        for name, fn in (("sync_chat", sync_chat), ("events", event)):
            report[name] = calls(fn, args.calls, args.concurrency)
            log(f"{name}: {report[name]}")
        server.should_exit = True
    finally:
        stack.down(settings)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
