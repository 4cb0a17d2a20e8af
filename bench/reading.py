"""Reading throughput, the bare transformers loops against Sluice end to end, and what
explanations cost, for `extract-entities` and `answer-question` on the two demo models.

    .venv/bin/python bench/reading.py [--texts 600] [--pairs 400] [--batch-size 32]
                                      [--explained-texts 48] [--explained-pairs 200]
                                      [--repeats 2] [--threads N] [--models-dir DIR]
                                      [--data-dir DIR] [--no-sluice]

Everything runs in ONE invocation, on the same machine, one after the other, so the ratios
see roughly the same noise. Each timed measurement runs --repeats times and the fastest counts
(every run's seconds are printed). Torch runs one thread here and in the model actor unless
--threads says otherwise (see bench/generation.py for why). The demo models are tiny (2 layers,
128 positions), so the model itself is cheap and the figures show Sluice's fixed costs per
chunk and per job more than a real model would.

Data: `entity_passages(texts, 11, "mixed", most=8)` (English and Chinese, one to eight
sentences, many past the 128-token window) and `qa_triples(pairs, 11, long_share=0.3)` (a
quarter unanswerable, about 30% of contexts past the window).

(a) extract-entities. Bare: the loop a user writes, transformers'
    `pipeline("token-classification", model=dir, aggregation_strategy="simple", stride=32)`
    called on the list of texts with batch_size=--batch-size, and item by item (what the
    parity tests compare with). Sluice: the embedded stack (Redis, Ray head, Celery worker) on
    a fresh data dir; warm-up jobs load the actor and let every Celery child run a chunk; then
    submit_file(texts.jsonl) -> wait -> finished. Rows are read back untimed and checked
    equal to the item-by-item pipeline's spans (labels and offsets; scores within 1e-4).
(b) answer-question. Bare: workers/extractive_qa.answer_questions (transformers 4's
    question-answering pipeline) over the pairs in batches of --batch-size and one pair at a
    time; window = window_length (the model's positions, at most 512), doc_stride 32,
    max_answer_len 15, handle_impossible_answer. Sluice: submit_items (items with fields
    question and context) -> wait, checked equal to the one-at-a-time answers.

Reported: items/s, Sluice / bare (batched and one at a time), and the explanation cost: a job
with explain="all" against the same job without, on the first --explained-texts texts and
--explained-pairs pairs (an entity explanation is one LayerIntegratedGradients run per entity,
so a text of several sentences costs many).

The last line of output is one JSON object with the figures.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {"entities": "tiny-entities", "qa": "tiny-qa"}
TASKS = {"entities": "extract-entities", "qa": "answer-question"}
SEED = 11
STRIDE = 32
MAX_ANSWER = 15
TOL = 1e-4  # scores: the batched and the one-at-a-time paths pad differently

Spans = list[tuple[Any, ...]]  # per item: (label or answer, start, end, score) each


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[dict[str, Any], Any]:
    """The fastest of `repeats` calls (every call's seconds kept) and the last call's value."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return {"seconds": min(times), "times": times}, out


def agreeing(got: list[Spans], ref: list[Spans]) -> int:
    """Items whose spans equal the reference's: same labels and offsets, scores within TOL."""

    def same(a: Spans, b: Spans) -> bool:
        return len(a) == len(b) and all(
            x[:-1] == y[:-1] and abs(x[-1] - y[-1]) <= TOL for x, y in zip(a, b, strict=True)
        )

    return sum(same(g, r) for g, r in zip(got, ref, strict=True)) if len(got) == len(ref) else 0


# -- the bare loops ------------------------------------------------------------------------------


def bare_entities(path: Path, texts: list[str], batch: int, repeats: int) -> dict[str, Any]:
    from transformers import pipeline

    pipe = pipeline(
        "token-classification",
        model=str(path),
        aggregation_strategy="simple",
        stride=STRIDE,
        device="cpu",
    )

    def spans(found: list[list[dict[str, Any]]]) -> list[Spans]:
        return [
            [(e["entity_group"], int(e["start"]), int(e["end"]), float(e["score"])) for e in f]
            for f in found
        ]

    pipe(texts[:batch], batch_size=batch)  # warm-up
    batched, out_batched = timed(lambda: pipe(texts, batch_size=batch), repeats)
    each, out_each = timed(lambda: [pipe(t) for t in texts], repeats)
    return {"batched": batched, "each": each, "spans": spans(out_each),
            "batched_agree": agreeing(spans(out_batched), spans(out_each))}  # fmt: skip


def bare_answers(
    path: Path, pairs: list[tuple[str, str]], batch: int, repeats: int
) -> dict[str, Any]:
    from ops.demo_entity_models import qa_reader
    from workers.extractive_qa import answer_questions, window_length

    model, tok = qa_reader(path)
    window = window_length(tok, model)

    def run(size: int) -> list[Spans]:
        out = []
        for s in range(0, len(pairs), size):
            part = pairs[s : s + size]
            out += answer_questions(model, tok, [q for q, _ in part], [c for _, c in part],
                                    max_seq_len=window, doc_stride=STRIDE,
                                    max_answer_len=MAX_ANSWER,
                                    handle_impossible_answer=True)  # fmt: skip
        return [[(a.answer, a.start, a.end, a.score)] for a in out]

    run(batch)  # warm-up
    batched, out_batched = timed(lambda: run(batch), repeats)
    each, out_each = timed(lambda: run(1), repeats)
    return {"batched": batched, "each": each, "spans": out_each, "window": window,
            "batched_agree": agreeing(out_batched, out_each)}  # fmt: skip


# -- Sluice end to end ---------------------------------------------------------------------------


def output_spans(kind: str, output: dict[str, Any]) -> Spans:
    """A result row's output as the bare loop's spans (a null answer as answer_questions
    gives it: "" at 0..0)."""
    if kind == "entities":
        return [(e["label"], e["start"], e["end"], e["score"]) for e in output.get("entities", [])]
    o = output
    return [(o.get("answer") or "", o.get("start") or 0, o.get("end") or 0, o.get("score", -1))]


def sluice_job(client: Any, kind: str, submit: Callable[[], str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    job_id = submit()
    view = client.wait(job_id, timeout=1800, poll=0.05)
    seconds = time.perf_counter() - t0
    rows = list(client.results(job_id))  # untimed: what was persisted
    explained = sum(1 for r in rows if (r.get("explanation") or {}).get("status") == "ok")
    return {"job_id": job_id, "status": str(view.status), "seconds": seconds,
            "spans": [output_spans(kind, r.get("output") or {}) for r in rows],
            "explained": explained}  # fmt: skip


def best_job(client: Any, kind: str, submit: Callable[[], str], repeats: int) -> dict[str, Any]:
    """The fastest of `repeats` identical jobs, with every job's seconds."""
    runs = [sluice_job(client, kind, submit) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    statuses = ", ".join(sorted({r["status"] for r in runs}))
    return {**best, "times": [r["seconds"] for r in runs], "status": statuses}


def run_sluice(
    data: dict[str, list[Any]],
    models: dict[str, Path],
    explained: dict[str, int],
    settings: Any,
    repeats: int,
) -> dict[str, dict[str, Any]]:
    from ops import stack
    from producers import Client
    from schemas.catalog import load_catalog
    from schemas.jobs import Item

    def submitter(kind: str, n: int, explain: str) -> Callable[[], str]:
        """submit() of a job over the first n texts (from a JSONL file) or pairs (items)."""
        options: dict[str, Any] = {"model": str(models[kind]), "stride": STRIDE, "explain": explain}
        if kind == "entities":
            path = settings.data_dir / f"texts-{n}.jsonl"
            if not path.exists():
                path.write_text("".join(json.dumps({"text": t}) + "\n" for t in data[kind][:n]))
            return lambda: client.submit_file(path, TASKS[kind], aggregation="simple", **options)
        items = [Item(key=str(i), fields={"question": q, "context": c})
                 for i, (q, c) in enumerate(data[kind][:n])]  # fmt: skip
        return lambda: client.submit_items(
            items, TASKS[kind], max_answer_tokens=MAX_ANSWER, **options
        )

    t0 = time.perf_counter()
    stack.up(settings)
    log(f"sluice: stack up in {time.perf_counter() - t0:.1f}s (data dir {settings.data_dir})")
    try:
        client = Client(settings)
        # Warm-up: the actor loads the model and every Celery child runs a chunk (the last
        # one a single item) before any clock; a two-item explained job loads Captum.
        for kind in models:
            chunk = settings.chunk_size or load_catalog().get(TASKS[kind]).chunk_size
            for n, explain in ((chunk * (settings.worker_concurrency - 1) + 1, "none"),
                               (2, "all")):  # fmt: skip
                warm = sluice_job(client, kind, submitter(kind, n, explain))
                log(f"sluice: warm-up {kind} explain={explain} {warm['status']} "
                    f"in {warm['seconds']:.1f}s")  # fmt: skip
        out: dict[str, dict[str, Any]] = {}
        for kind in models:
            n = explained[kind]
            for name, count, explain in ((kind, len(data[kind]), "none"),
                                         (f"{kind}:plain", n, "none"),
                                         (f"{kind}:explain", n, "all")):  # fmt: skip
                out[name] = r = best_job(client, kind, submitter(kind, count, explain), repeats)
                log(f"sluice: {kind} {count} items explain={explain} {r['status']}, seconds "
                    f"{', '.join(f'{t:.2f}' for t in r['times'])}")  # fmt: skip
        return out
    finally:
        stack.down(settings)


# -- report --------------------------------------------------------------------------------------


def line(task: str, run: str, n: int, seconds: float, rates: dict[str, float], note: str) -> None:
    """One row of the table; `rates`: the bare loops' items/s, the ratios' denominators."""
    r = n / seconds
    ratios = f"{r / rates['batched']:>8.3f} {r / rates['each']:>6.3f}" if rates else " " * 15
    print(f"{task:<17} {run:<32} {n:>5} {seconds:>8.2f} {r:>8.1f} {ratios}  {note}")


def report(
    kind: str, n: int, b: dict[str, Any], sluice: dict[str, Any], batch: int
) -> dict[str, Any]:
    """Print a task's rows; return its figures."""
    task = TASKS[kind]
    rates = {way: n / b[way]["seconds"] for way in ("batched", "each")}
    fig: dict[str, Any] = {f"bare_{way}_items_per_s": round(r, 1) for way, r in rates.items()}
    agree = f"{b['batched_agree']}/{n} equal to one at a time"
    line(task, f"bare, batch {batch}", n, b["batched"]["seconds"], rates, agree)
    line("", "bare, one at a time", n, b["each"]["seconds"], rates, "")
    if kind not in sluice:
        return fig
    s, plain, expl = sluice[kind], sluice[f"{kind}:plain"], sluice[f"{kind}:explain"]
    right = agreeing(s["spans"], b["spans"])
    line("", "sluice end to end", n, s["seconds"], rates, f"{s['status']}, {right}/{n} equal")
    k, cost = len(plain["spans"]), expl["seconds"] / plain["seconds"]
    line("", "sluice, first items", k, plain["seconds"], {}, plain["status"])
    note = f"{expl['status']}, {expl['explained']} explained: {cost:.1f}x the plain job"
    line("", "sluice, first items, explain=all", k, expl["seconds"], {}, note)
    rate = n / s["seconds"]
    return fig | {
        "sluice_items_per_s": round(rate, 1),
        "sluice_vs_batched": round(rate / rates["batched"], 4),
        "sluice_vs_each": round(rate / rates["each"], 4),
        "sluice_equal_to_bare": right,
        "explain": {"items": k, "plain_s": round(plain["seconds"], 3),
                    "explained_s": round(expl["seconds"], 3), "explained": expl["explained"],
                    "ratio": round(cost, 2)},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--texts", type=int, default=600, help="texts for extract-entities")
    parser.add_argument("--pairs", type=int, default=400, help="pairs for answer-question")
    parser.add_argument("--batch-size", type=int, default=32, help="the bare loops' batch")
    parser.add_argument("--explained-texts", type=int, default=48, help="for the explain cost")
    parser.add_argument("--explained-pairs", type=int, default=200, help="for the explain cost")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="the models' directory (default: the demo cache, built or refreshed first)",
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--no-sluice", action="store_true", help="the bare loops only")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each timed measurement; the best counts"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads here and in the model actor (0: every core, the actor's default)",
    )
    args = parser.parse_args(argv)

    import torch

    from ops.demo_model_cache import build_all
    from schemas.settings import Settings
    from workers.training.scratch_entities import entity_passages
    from workers.training.scratch_qa import qa_triples

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    os.environ["SLUICE_TORCH_THREADS"] = str(threads)  # the same in the stack's model actor
    models_dir = args.models_dir or ROOT / ".sluice" / "models"
    if args.models_dir is None:
        build_all(models_dir, list(MODELS.values()))
    models = {kind: (models_dir / name).resolve() for kind, name in MODELS.items()}
    temp = args.data_dir is None
    data_dir = (Path(tempfile.mkdtemp(prefix="sluice-bench-")) if temp else args.data_dir).resolve()
    settings = Settings(data_dir=data_dir, torch_threads=threads)
    data: dict[str, list[Any]] = {
        "entities": [p.text for p in entity_passages(args.texts, SEED, "mixed", most=8)],
        "qa": [(t.question, t.context) for t in qa_triples(args.pairs, SEED, long_share=0.3)],
    }
    explained = {"entities": min(args.explained_texts, args.texts),
                 "qa": min(args.explained_pairs, args.pairs)}  # fmt: skip

    bare = {
        "entities": bare_entities(models["entities"], data["entities"], args.batch_size,
                                  args.repeats),
        "qa": bare_answers(models["qa"], data["qa"], args.batch_size, args.repeats),
    }  # fmt: skip
    for kind, b in bare.items():
        log(f"bare {kind}: batched seconds {', '.join(f'{t:.2f}' for t in b['batched']['times'])}"
            f"; one at a time {', '.join(f'{t:.2f}' for t in b['each']['times'])}")  # fmt: skip
    sluice = {} if args.no_sluice else run_sluice(data, models, explained, settings, args.repeats)

    print(f"\nreading, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"fastest of {args.repeats}\n")  # fmt: skip
    print(f"{'task':<17} {'run':<32} {'items':>5} {'seconds':>8} {'items/s':>8} "
          f"{'/batched':>8} {'/each':>6}  check")  # fmt: skip
    figures: dict[str, Any] = {"texts": args.texts, "pairs": args.pairs, "repeats": args.repeats}
    for kind, b in bare.items():
        figures[kind] = report(kind, len(data[kind]), b, sluice, args.batch_size)
    print(json.dumps(figures), flush=True)
    failed = [k for k, s in sluice.items() if s["status"] != "succeeded"]
    wrong = [k for k in bare if k in sluice and agreeing(sluice[k]["spans"], bare[k]["spans"])
             != len(data[k])]  # fmt: skip
    if failed or wrong:
        log(f"jobs not succeeded: {failed}; not equal to bare: {wrong}; data dir kept: {data_dir}")
    elif temp:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 1 if failed or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
