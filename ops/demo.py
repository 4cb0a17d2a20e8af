"""`sluice demo`: the main job on the embedded stack, start to finish."""

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ops import stack
from ops.progress import err, summary, wait_with_bar
from schemas.settings import Settings

SAMPLES = Path(__file__).parent / "samples" / "messages.jsonl"
TOPICS = {
    "billing": "a question or complaint about a bill, a charge, a payment or a refund",
    "shipping": "a question about a delivery, a parcel, shipping or tracking",
    "technical": "a device or app that is broken, crashes or does not work",
    "account": "logging in, a password, a profile or an account setting",
    "praise": "thanks and praise for good service",
}


def run_demo(settings: Settings, task: str, explain: str) -> int:
    from producers import Client

    started_here = stack.running(settings) is None  # then stop whatever up() starts
    t0 = time.perf_counter()
    err.print("[bold]starting the embedded stack[/] (Redis, Ray, a Celery worker)...")
    stack.up(settings)
    err.print(f"stack ready in {time.perf_counter() - t0:.1f}s")
    try:
        client = Client(settings)
        rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
        texts = {r["id"]: r["text"] for r in rows}
        options: dict[str, Any] = {"labels": list(TOPICS), "label_descriptions": TOPICS} \
            if task == "zero-shot-text" else {}
        job_id = client.submit_file(SAMPLES, task, key_column="id",
                                    explain=explain if task != "embed" else "none", **options)
        err.print(f"submitted {len(rows)} messages from {SAMPLES.name} as job {job_id} "
                  f"(task {task}, explain {explain})")
        view = wait_with_bar(client, job_id, timeout=900)
        results = list(client.results(job_id))
        shown = [r for r in results if r.get("explanation")][:4] or results[:4]
        summary(view, shown, texts)
        explained = sum(1 for r in results if r.get("explanation"))
        err.print(f"explanations: {explained} of {len(results)} items (policy {explain}), "
                  "Captum LayerIntegratedGradients on the word embeddings")
        if task == "zero-shot-text":
            _agreement(rows, results)
        err.print(f"results: sluice results {job_id} --format jsonl")
        return 0 if view.status == "succeeded" else 1
    finally:
        if started_here:
            err.print("stopping the embedded stack")
            stack.down(settings)


def _agreement(rows: list[dict[str, str]], results: list[dict[str, object]]) -> None:
    """How often the zero-shot label matches the topic the sample was written for."""
    truth = {r["id"]: (r["topic"], r["lang"]) for r in rows}
    hits: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for r in results:
        out = r.get("output")
        if not isinstance(out, dict):
            continue
        topic, lang = truth[str(r["key"])]
        seen[lang] += 1
        hits[lang] += out.get("label") == topic
    parts = [f"{lang}: {hits[lang]}/{seen[lang]}" for lang in sorted(seen)]
    err.print("zero-shot agreement with the topics the samples were written for: "
              + ", ".join(parts))
