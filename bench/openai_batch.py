"""The OpenAI-compatible API against Sluice's own front doors, side by side on one warm
embedded stack, with the official `openai` client:

    .venv/bin/python bench/openai_batch.py [--requests 500] [--calls 200] [--concurrency 16]
                                           [--repeats 2] [--models-dir DIR]

(a) Batch: the same --requests prompts ("Spell: 4 0 7", greedy, at most 16 new tokens) on the
    demo's decoder-only speller, as a Sluice job (Client.submit_texts with the prompt
    template, then wait) and as an OpenAI batch (files.create, batches.create, poll every
    0.2 s until completed, files.content of the output). Also --requests texts for `embed` on
    MiniLM both ways. Each runs --repeats times and the fastest counts. Reported: seconds and
    requests/s each, and batch / job (the cost of the OpenAI surface: upload, parsing the
    lines, writing the output file from the rows).
(b) Synchronous calls: --calls chat completions at --concurrency through
    POST /openai/v1/chat/completions, against the same prompts through POST /v1/events?wait
    (both one-request jobs on the same queues). Reported: calls/s and p50/p99 latency.

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
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
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
    digits = random_digit_texts(args.requests, seed=11)
    prompts = [f"Spell: {d}" for d in digits]
    texts = [f"my order {n} arrived broken, I want a refund" for n in range(args.requests)]
    chat = [{"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": causal, "max_tokens": MAX_NEW,
                      "messages": [{"role": "user", "content": p}]}}
            for n, p in enumerate(prompts)]  # fmt: skip
    embed = [{"custom_id": f"e{n}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": embedder, "input": t}} for n, t in enumerate(texts)]  # fmt: skip
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
        job_chat = lambda: as_job(client, "generate", digits, causal, prompt="Spell: {text}",  # noqa: E731
                                  max_new_tokens=MAX_NEW, tenant="bench")  # fmt: skip
        job_embed = lambda: as_job(client, "embed", texts, embedder, tenant="bench")  # noqa: E731
        log("warm-up: each model's actor, each worker process")
        job_chat()
        job_embed()
        as_batch(oai, chat[:64], "/v1/chat/completions")
        for name, fn in [
            ("chat_job", job_chat),
            ("chat_batch", lambda: as_batch(oai, chat, "/v1/chat/completions")),
            ("embed_job", job_embed),
            ("embed_batch", lambda: as_batch(oai, embed, "/v1/embeddings")),
        ]:
            log(name)
            seconds = best(fn, args.repeats)
            report[name] = {"seconds": round(seconds, 2),
                            "requests_per_s": round(args.requests / seconds, 1)}  # fmt: skip
        for kind in ("chat", "embed"):
            report[f"{kind}_batch_over_job"] = round(
                report[f"{kind}_batch"]["seconds"] / report[f"{kind}_job"]["seconds"], 2
            )

        def sync_chat(i: int) -> None:
            reply = oai.chat.completions.create(
                model=causal, max_tokens=MAX_NEW,
                messages=[{"role": "user", "content": prompts[i % len(prompts)]}],
            )  # fmt: skip
            assert reply.choices[0].message.content

        def event(i: int) -> None:
            body = {"task": "generate", "model": causal, "key": f"ev{i}", "prompt": "Spell: {text}",
                    "text": digits[i % len(digits)], "max_new_tokens": MAX_NEW}  # fmt: skip
            r = http.post("/v1/events", params={"wait": "60s"}, json=body)
            assert r.status_code == 200, r.text

        calls(sync_chat, 32, args.concurrency)  # warm
        calls(event, 32, args.concurrency)
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
