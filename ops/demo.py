"""`sluice demo`: the main job on the embedded stack, start to finish: documents, images,
audio, records, generated text and entity spans at once, each with explanations where the task
makes them, then a summary and HTML reports."""

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ops import stack
from ops.demo_data import make_samples, samples_dir, truth
from ops.demo_entities import entity_truth, submit_entities, summarise_entities
from ops.demo_generation import generation_truth, submit_generation
from ops.demo_training import train_demo_models
from ops.progress import describe_explanation, err, wait_all_with_bars
from schemas.settings import Settings

SAMPLES = Path(__file__).parent / "samples" / "messages.jsonl"
TOPICS = {
    "billing": "a question or complaint about a bill, a charge, a payment or a refund",
    "shipping": "a question about a delivery, a parcel, shipping or tracking",
    "technical": "a device or app that is broken, crashes or does not work",
    "account": "logging in, a password, a profile or an account setting",
    "praise": "thanks and praise for good service",
}
MODALITIES = ("documents", "images", "audio", "records", "generation", "entities")
NOT_MEDIA = ("documents", "generation", "entities")
TASKS = {
    "documents": "zero-shot-text",
    "images": "classify-image",
    "audio": "classify-audio",
    "records": "classify-records",
    "generation": "generate",
    "entities": "extract-entities",
}


def run_demo(settings: Settings, only: tuple[str, ...], explain: str) -> int:
    from producers import Client

    media = [m for m in only if m not in NOT_MEDIA]
    if media:
        make_samples(settings)
        roots = [r for r in settings.input_roots.split(os.pathsep) if r]
        settings.input_roots = os.pathsep.join([*roots, str(samples_dir(settings))])
    started_here = stack.running(settings) is None  # then stop whatever up() starts
    t0 = time.perf_counter()
    err.print("[bold]starting the embedded stack[/] (Redis, Ray, a Celery worker)...")
    stack.up(settings)
    err.print(f"stack ready in {time.perf_counter() - t0:.1f}s")
    try:
        client = Client(settings)
        refs: dict[str, str] = {}
        if media:
            err.print("[bold]demo models[/]: sluice train -> registry -> production")
            refs = train_demo_models(client, settings, samples_dir(settings), media)
        jobs = {m: _submit(client, settings, m, explain, refs) for m in only}
        views = wait_all_with_bars(client, jobs, timeout=1200)
        report_dir = settings.data_dir.resolve() / "reports"
        report_dir.mkdir(parents=True, exist_ok=True)
        known = truth(settings) if media else {}
        if "generation" in only:
            known["generation"] = generation_truth(settings)
        for modality, job_id in jobs.items():
            view = views[modality].as_dict()
            _summarise(client, settings, modality, job_id, view, known, report_dir)
        return 0 if all(v.status == "succeeded" for v in views.values()) else 1
    finally:
        if started_here:
            err.print("stopping the embedded stack")
            stack.down(settings)


def _submit(
    client: Any, settings: Settings, modality: str, explain: str, refs: dict[str, str]
) -> str:
    task = TASKS[modality]
    if modality == "generation":
        return submit_generation(client, settings)
    if modality == "entities":
        return submit_entities(client, settings)
    if modality == "documents":
        return str(
            client.submit_file(
                SAMPLES,
                task,
                key_column="id",
                explain=explain,
                labels=list(TOPICS),
                label_descriptions=TOPICS,
            )
        )
    samples = make_samples(settings)
    model = refs[modality]
    key = "id" if modality == "records" else None
    return str(
        client.submit_file(samples[modality], task, model=model, key_column=key, explain="all")
    )


def _summarise(
    client: Any,
    settings: Settings,
    modality: str,
    job_id: str,
    view: dict[str, Any],
    known: dict[str, dict[str, str]],
    report_dir: Path,
) -> None:
    from ops.report import write_html

    results = list(client.results(job_id))
    rate = view["processed"] / view["elapsed_s"] if view["elapsed_s"] else 0.0
    explained = [r for r in results if (r.get("explanation") or {}).get("status") == "ok"]
    err.print(
        f"\n[bold]{modality}[/] ({view['task']}): {view['status']}, "
        f"{view['ok']} ok / {view['invalid']} invalid / {view['error']} error of "
        f"{view['total']}, {rate:.1f} items/s, {len(explained)} explained"
    )
    if modality == "documents":
        texts = {r["id"]: r["text"] for r in map(json.loads, SAMPLES.read_text().splitlines())}
        topics = {r["id"]: r["topic"] for r in map(json.loads, SAMPLES.read_text().splitlines())}
        _agreement(results, topics, "the topic each message was written for")
    elif modality == "generation":
        texts = {}
        _agreement(results, known.get(modality, {}), "the digits spelled out", "text")
        tokens = view.get("tokens") or {}
        made = tokens.get("completion", 0)
        per_s = made / view["elapsed_s"] if view["elapsed_s"] else 0.0
        err.print(f"  tokens: {tokens.get('prompt', 0)} read, {made} generated ({per_s:.0f}/s)")
    elif modality == "entities":
        texts = {}
        summarise_entities(results, entity_truth(settings))
        explained = []  # summarise_entities shows one explained entity
    else:
        texts = {}
        _agreement(results, known.get(modality, {}), "the true label")
    if explained:
        row = min(explained, key=lambda r: r["output"].get("score", 1.0))  # the least sure
        out = row["output"]
        err.print(
            f"  e.g. {row['key']}: {out['label']} ({out['score']:.2f})"
            + (f'  "{texts[row["key"]][:60]}"' if row["key"] in texts else "")
        )
        err.print(f"    {describe_explanation(row['explanation'])}")
    report = report_dir / f"{modality}.html"
    write_html(client, job_id, report, limit=200)
    err.print(f"  report: {report}   results: sluice results {job_id} --format jsonl")


def _agreement(
    results: list[dict[str, Any]], expected: dict[str, str], what: str, field: str = "label"
) -> None:
    if not expected:
        return
    hits, seen = Counter[bool](), 0
    for r in results:
        out = r.get("output")
        if isinstance(out, dict) and r["key"] in expected:
            seen += 1
            hits[out.get(field) == expected[r["key"]]] += 1
    err.print(f"  agreement with {what}: {hits[True]}/{seen}")
