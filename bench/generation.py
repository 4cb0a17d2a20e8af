"""Generation throughput, the bare `model.generate` loop against Sluice end to end, and what
explanations cost on top of generation, on the two demo spelling models.

    .venv/bin/python bench/generation.py [--prompts 300] [--batch-size 32] [--explained 64]
                                         [--repeats 2] [--threads N] [--models-dir DIR]
                                         [--data-dir DIR] [--no-sluice]

Everything runs in ONE invocation, on the same machine, one after the other, on the same
prompts ("Spell: 4 0 7", 1 to 12 digits, greedy, at most 16 new tokens), so the ratios see
roughly the same noise. Each timed measurement runs --repeats times and the fastest counts
(every run's seconds are printed): on a shared machine a run that another process slowed
says nothing about either side. Torch runs one thread here and in the model actor unless
--threads says otherwise: the demo models' 64-wide matrices gain nothing from more, and
threads beyond the free cores spin against other processes (measured on 2 cores shared with
other work: 2 threads made one small matmul ~2000x slower, 23 ms against 10 us, and this
benchmark erratic and 3x longer). The demo models are tiny, so generation itself is cheap and
the figures show Sluice's fixed costs per chunk and per job more than a real model would.

(a) Bare: the loop a user writes with transformers: the prompts in input order, in batches of
    --batch-size, each batch tokenised with padding (on the right for the sequence-to-sequence
    model, on the left for the decoder-only one, inside its chat template) and passed to
    model.generate (greedy); completion tokens are those before the end of sequence. A warm-up
    batch runs first. Sluice: the embedded stack (Redis, Ray head, Celery worker) on a fresh
    data dir; warm-up jobs per model (with and without explanations, a chunk for each Celery
    child) load its actor; then submit_texts(prompts) -> wait -> finished; completion tokens
    and texts are read back from the ledger (untimed) and checked against the rule, and the
    chunk rows say where the time went. Reported: completion tokens/s, and Sluice / bare.
(b) Explanation cost, in the handler as the actor runs it: predict in batches of the actor's
    max_batch_size, then explain the outputs in groups of explain_batch_size (feature
    ablation over the prompt's tokens). Reported: seconds for generation alone, for the
    explanations, and (generation + explanations) / generation; also Captum's
    LLMAttribution (one prompt at a time, decoder-only model only) on the first
    CAPTUM_ITEMS outputs, against this explainer's time on the same. With Sluice, (a) also
    runs a job with explain="all".

The last line of output is one JSON object with the figures.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {"seq2seq": "tiny-spell-seq2seq", "causal": "tiny-spell-causal"}
PROMPT = "Spell: {text}"
MAX_NEW = 16
CAPTUM_ITEMS = 32  # Captum's LLMAttribution runs one prompt and one ablation per pass: slow


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- (a) the bare loop ---------------------------------------------------------------------------


def bare_loop(path: Path, texts: list[str], batch: int, repeats: int) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    encoder_decoder = bool(AutoConfig.from_pretrained(path).is_encoder_decoder)
    auto = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
    tok = AutoTokenizer.from_pretrained(path)
    model = auto.from_pretrained(path, use_safetensors=True).eval()
    tok.padding_side = "right" if encoder_decoder else "left"
    prompts = [PROMPT.format(text=t) for t in texts]
    if tok.chat_template:
        prompts = [
            str(
                tok.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
                )
            )
            for p in prompts
        ]
    eos = tok.eos_token_id

    def run(part: list[str]) -> list[list[int]]:
        enc = tok(part, padding=True, return_tensors="pt", add_special_tokens=not tok.chat_template)
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tok.pad_token_id
            )
        new = out[:, 1:] if encoder_decoder else out[:, enc["input_ids"].shape[1] :]
        rows = []
        for row in new.tolist():
            rows.append(row[: row.index(eos)] if eos in row else row)
        return rows

    run(prompts[:batch])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generated: list[list[int]] = []
        for start in range(0, len(prompts), batch):
            generated += run(prompts[start : start + batch])
        times.append(time.perf_counter() - t0)
    seconds = min(times)
    tokens = sum(len(g) for g in generated)
    texts_out = [tok.decode(g, skip_special_tokens=True) for g in generated]
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "texts": texts_out, "times": times}  # fmt: skip


# -- (a) Sluice end to end -----------------------------------------------------------------------


def sluice_job(client: Any, texts: list[str], path: Path, explain: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    job_id = client.submit_texts(
        texts, "generate", model=str(path), prompt=PROMPT, max_new_tokens=MAX_NEW, explain=explain
    )
    view = client.wait(job_id, timeout=900, poll=0.05)
    seconds = time.perf_counter() - t0
    rows = list(client.results(job_id))  # untimed: what was persisted
    outputs = [r.get("output") or {} for r in rows]
    explained = sum(1 for r in rows if (r.get("explanation") or {}).get("status") == "ok")
    tokens = sum(int(o.get("completion_tokens", 0)) for o in outputs)
    return {
        "job_id": job_id, "status": str(view.status), "seconds": seconds, "tokens": tokens,
        "chunks": chunk_timeline(client, job_id),
        "tokens_per_s": tokens / seconds, "texts": [str(o.get("text")) for o in outputs],
        "ok": view.counts.ok, "explained": explained,
    }  # fmt: skip


def chunk_size(settings: Any) -> int:
    from schemas.catalog import load_catalog

    return int(settings.chunk_size or load_catalog().get("generate").chunk_size)


def chunk_timeline(client: Any, job_id: str) -> dict[str, float]:
    """Where a job's time went, from its chunk rows: seconds from the job's creation to the
    first claim, the chunks' median claim-to-finish, and creation to the last finish."""
    from statistics import median

    from sqlalchemy import text

    query = text(
        "SELECT c.claimed_at, c.finished_at, j.created_at FROM chunks c "
        "JOIN jobs j ON j.id = c.job_id WHERE c.job_id = :job"
    )
    with client.ledger.engine.connect() as db:
        rows = [
            tuple(v if isinstance(v, datetime) else datetime.fromisoformat(str(v)) for v in r)
            for r in db.execute(query, {"job": job_id})
        ]
    if not rows or any(v is None for r in rows for v in r):
        return {}
    created = rows[0][2].replace(tzinfo=None)
    claims = [r[0].replace(tzinfo=None) for r in rows]
    ends = [r[1].replace(tzinfo=None) for r in rows]
    each = [(e - c).total_seconds() for c, e in zip(claims, ends, strict=True)]
    return {
        "n": len(rows),
        "to_first_claim_s": (min(claims) - created).total_seconds(),
        "median_chunk_s": median(each),
        "to_last_finish_s": (max(ends) - created).total_seconds(),
    }


def best_job(
    client: Any, texts: list[str], path: Path, explain: str, repeats: int
) -> dict[str, Any]:
    """The fastest of `repeats` identical jobs, with every job's seconds."""
    runs = [sluice_job(client, texts, path, explain) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "times": [r["seconds"] for r in runs],
            "status": "succeeded" if all(r["status"] == "succeeded" for r in runs)
            else ", ".join(r["status"] for r in runs)}  # fmt: skip


def run_sluice(
    texts: list[str], models: dict[str, Path], settings: Any, repeats: int
) -> dict[str, dict[str, Any]]:
    from ops import stack
    from producers import Client

    t0 = time.perf_counter()
    stack.up(settings)
    log(f"sluice: stack up in {time.perf_counter() - t0:.1f}s (data dir {settings.data_dir})")
    try:
        client = Client(settings)
        out: dict[str, dict[str, Any]] = {}
        # Warm-up: the actor loads the model, and every Celery child joins Ray and runs a
        # chunk of each kind (a chunk each, the last one a single item) before any clock.
        n_warm = chunk_size(settings) * (settings.worker_concurrency - 1) + 1
        for kind, path in models.items():
            for explain in ("none", "all"):
                warm = sluice_job(client, texts[:n_warm], path, explain)
                log(f"sluice: warm-up {kind} explain={explain} {warm['status']} "
                    f"in {warm['seconds']:.1f}s")  # fmt: skip
        for kind, path in models.items():
            for explain, name in (("none", kind), ("all", f"{kind}+explain")):
                out[name] = r = best_job(client, texts, path, explain, repeats)
                log(f"sluice: {kind} explain={explain} {r['status']}, seconds "
                    f"{', '.join(f'{t:.2f}' for t in r['times'])}")  # fmt: skip
        return out
    finally:
        stack.down(settings)


# -- (b) explanation cost ------------------------------------------------------------------------


def explanation_cost(path: Path, texts: list[str], settings: Any, repeats: int) -> dict[str, Any]:
    from schemas.catalog import load_catalog
    from schemas.jobs import Item
    from schemas.states import ExplanationStatus
    from workers.handlers import handler_for

    h: Any = handler_for(load_catalog().get("generate"))
    h.setup(str(path), "cpu")
    params = {"prompt": PROMPT, "max_new_tokens": MAX_NEW}
    batch, group = settings.max_batch_size, settings.explain_batch_size

    def generate() -> tuple[list[Any], list[Any]]:
        feats = [h.preprocess(Item(key=str(n), text=t), params) for n, t in enumerate(texts)]
        outs: list[Any] = []
        for s in range(0, len(feats), batch):
            outs += h.predict(feats[s : s + batch])
        return feats, outs

    def explain(feats: list[Any], outs: list[Any]) -> list[Any]:
        done: list[Any] = []
        for s in range(0, len(feats), group):
            done += h.explain(feats[s : s + group], outs[s : s + group], 1, group)
        return done

    feats, outs = generate()  # warm-up, both
    explain(feats[:group], outs[:group])
    gen_times, expl_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        feats, outs = generate()
        gen_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        explanations = explain(feats, outs)
        expl_times.append(time.perf_counter() - t0)
    gen_s, expl_s = min(gen_times), min(expl_times)
    ok = sum(1 for e in explanations if e.status == ExplanationStatus.OK and e.attributions)
    result = {"items": len(texts), "generate_s": gen_s, "explain_s": expl_s, "explained": ok,
              "ratio": (gen_s + expl_s) / gen_s}  # fmt: skip
    if not h.encoder_decoder:
        n = min(CAPTUM_ITEMS, len(feats))
        t0 = time.perf_counter()
        explain(feats[:n], outs[:n])
        result["ours_on_captum_items_s"] = time.perf_counter() - t0
        result["captum_s"] = captum_llm_attribution(h, feats[:n], outs[:n])
        result["captum_items"] = n
    return result


def captum_llm_attribution(h: Any, feats: list[Any], outs: list[Any]) -> float:
    """Captum's own LLMAttribution (padding baseline, one prompt per call) on the same outputs."""
    from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput

    special = set(h.tokenizer.all_special_ids) | set(h.encode("")[1])  # scaffolding
    llm = LLMAttribution(FeatureAblation(h.model), h.tokenizer)
    t0 = time.perf_counter()
    for f, o in zip(feats, outs, strict=True):
        inp = TextTokenInput(f.text, h.tokenizer, baselines=h.pad_id, skip_tokens=sorted(special))
        llm.attribute(inp, target=o["text"], forward_in_tokens=False)
    return time.perf_counter() - t0


def chunk_note(c: dict[str, float]) -> str:
    if not c:
        return "no chunk times"
    return (
        f"{c['n']:.0f} chunks, first claimed at {c['to_first_claim_s']:.2f}s, "
        f"median {c['median_chunk_s']:.2f}s each, last done at {c['to_last_finish_s']:.2f}s"
    )


# -- report --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="the bare loop's batch")
    parser.add_argument("--explained", type=int, default=64, help="prompts for (b)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="the models' directory (default: the demo cache, built or refreshed first)",
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--no-sluice", action="store_true", help="(a) bare and (b) only")
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
    from workers.training.scratch_generators import random_digit_texts, spell_digits

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
    texts = random_digit_texts(args.prompts, seed=11)
    truth = [spell_digits(t) for t in texts]

    bare = {}
    for kind, path in models.items():
        bare[kind] = bare_loop(path, texts, args.batch_size, args.repeats)
        right = sum(a == b for a, b in zip(bare[kind]["texts"], truth, strict=True))
        log(f"bare {kind}: {bare[kind]['tokens_per_s']:.0f} tokens/s, {right}/{len(texts)} right")
    sluice = {} if args.no_sluice else run_sluice(texts, models, settings, args.repeats)
    cost = {kind: explanation_cost(path, texts[: args.explained], settings, args.repeats)
            for kind, path in models.items()}  # fmt: skip

    print(f"\ngeneration, {len(texts)} prompts of 1-12 digits, greedy, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}\n")  # fmt: skip
    print(f"{'model':<9} {'run':<30} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'ratio':>7}")
    figures: dict[str, Any] = {"prompts": len(texts)}
    for kind in models:
        b = bare[kind]
        print(f"{kind:<9} {f'bare generate, batch {args.batch_size}':<30} {b['seconds']:>8.2f} "
              f"{b['tokens']:>7} {b['tokens_per_s']:>9.0f} {1:>7.3f}")  # fmt: skip
        fig = {"bare_tokens_per_s": round(b["tokens_per_s"], 1)}
        for name, label in (
            (kind, "sluice end to end"),
            (f"{kind}+explain", "sluice, explain=all"),
        ):
            if name not in sluice:
                continue
            s = sluice[name]
            right = sum(a == t for a, t in zip(s["texts"], truth, strict=False))
            ratio = s["tokens_per_s"] / b["tokens_per_s"]
            print(f"{'':<9} {label:<30} {s['seconds']:>8.2f} {s['tokens']:>7} "
                  f"{s['tokens_per_s']:>9.0f} {ratio:>7.3f}  {s['status']}, {right} right, "
                  f"{s['explained']} explained; {chunk_note(s['chunks'])}")  # fmt: skip
            key = "sluice" if name == kind else "sluice_explain"
            fig[f"{key}_tokens_per_s"] = round(s["tokens_per_s"], 1)
            fig[f"{key}_ratio"] = round(ratio, 4)
        figures[kind] = fig
    print(
        f"\nexplanation cost (handler, {args.explained} prompts, predict batches of "
        f"{settings.max_batch_size}, explained {settings.explain_batch_size} at a time):"
    )
    for kind, c in cost.items():
        line = (f"  {kind:<9} generate {c['generate_s']:.3f}s, + explain {c['explain_s']:.3f}s "
                f"({c['explained']} explained): {c['ratio']:.2f}x generation alone")  # fmt: skip
        if "captum_s" in c:
            line += (
                f"\n  {'':<9} on the first {c['captum_items']:.0f}: Captum LLMAttribution "
                f"{c['captum_s']:.3f}s, this explainer {c['ours_on_captum_items_s']:.3f}s "
                f"({c['captum_s'] / c['ours_on_captum_items_s']:.1f}x)"
            )
        print(line)
        figures[kind]["explain"] = {k: round(v, 4) for k, v in c.items()}
    print(json.dumps(figures), flush=True)
    failed = [k for k, s in sluice.items() if s["status"] != "succeeded"]
    if failed:
        log(f"sluice jobs not succeeded: {failed}; data dir kept: {data_dir}")
    elif temp:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
