"""Explained throughput of text: a direct Captum call against Sluice's explain path, side by
side, and the faster option for large jobs (fewer integration steps) with its faithfulness.

    .venv/bin/python bench/explain_text.py [--texts 24] [--steps 24] [--fast-steps 8]
                                           [--threads N] [--models-dir DIR]

Task zero-shot-text with all-MiniLM-L6-v2 (shipped as a package) and the demo's five topics
(ops/demo.py, label descriptions as prompts), over the first --texts sample messages
(ops/samples/messages.jsonl: English and Chinese, 10 to 30 tokens), `--explain all`.

(a) Direct: what a user writes with Captum: tokenise a batch of SLUICE_EXPLAIN_BATCH_SIZE
    texts (8) padded together, predict (one no-grad forward), then ONE
    LayerIntegratedGradients.attribute call on the embedding layer for the whole batch
    (no internal_batch_size: every step in one pass), --steps steps, the same baseline as
    Sluice (special tokens kept, the rest padding), convergence delta returned.
(b) Sluice: the model actor's work without Ray (workers.runtime.model_core.ModelCore, with
    the options the actor gets from Settings): preprocess, predict through the dynamic
    batcher, explain every item in groups of explain_batch_size through the handler, outputs
    checked storable. The same model object as (a).
(c) Sluice with a job's --explain-steps at --fast-steps (the documented faster option).

The three run interleaved, one batch of texts at a time ((a), (b), (c) on batch 1, then
(b), (c), (a) on batch 2, ...), so drift in the machine's load hits all three alike; seconds
are summed over the batches, after a warm-up of each path on two texts. Ratios: Sluice /
direct in items per second.

Faithfulness (deletion test, as bench/modalities.py does for images): per text, the words
with the top 20% attributions (at least one) are deleted from the text and the drop in the
predicted label's probability is averaged (higher = the attributions found what the
prediction rests on); the same for as many random words (seeded) for reference. Done for
(b) at --steps and (c) at --fast-steps; also their agreement (cosine of the word
attributions) and mean |convergence delta|.

The last line of output is one JSON object with the figures.
"""

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "ops" / "samples" / "messages.jsonl"
MODEL = "all-MiniLM-L6-v2"
TASK = "zero-shot-text"
DELETED_SHARE = 0.2
SEED = 16


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sample_texts(n: int) -> list[str]:
    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line]
    return [str(r["text"]) for r in rows[:n]]


def direct_captum(handler: Any, texts: list[str], labels: list[str], steps: int) -> list[Any]:
    """(a): one batch, as a user writes it. Returns the per-token attributions."""
    import torch
    from captum.attr import LayerIntegratedGradients

    tok = handler.tokenizer
    enc = tok(texts, padding=True, truncation=True, max_length=handler.max_length,
              return_tensors="pt")  # fmt: skip
    ids, mask = enc["input_ids"], enc["attention_mask"]
    prompts = tuple(labels)

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return handler.probabilities(
            handler.sentence_embeddings(input_ids, attention_mask), prompts
        )

    with torch.no_grad():
        targets = forward(ids, mask).argmax(dim=-1)
    special = torch.tensor(
        [tok.get_special_tokens_mask(r, already_has_special_tokens=True) for r in ids.tolist()],
        dtype=torch.bool,
    )
    baseline = torch.where(special, ids, torch.full_like(ids, tok.pad_token_id))
    lig = LayerIntegratedGradients(forward, handler.embedding_layer())
    attributions, _delta = lig.attribute(
        inputs=ids,
        baselines=baseline,
        additional_forward_args=(mask,),
        target=targets,
        n_steps=steps,
        return_convergence_delta=True,
    )
    return list(attributions.sum(dim=-1).detach())


def word_spans(text: str, words: list[str]) -> list[tuple[int, int]]:
    """Where each explained word lies in the text (the words are slices of it, in order)."""
    spans, at = [], 0
    for w in words:
        start = text.find(w, at)
        if start < 0:
            raise RuntimeError(f"word {w!r} not found in {text!r}")
        spans.append((start, start + len(w)))
        at = start + len(w)
    return spans


def without(text: str, spans: list[tuple[int, int]], drop: set[int]) -> str:
    out, at = [], 0
    for n, (start, end) in enumerate(spans):
        if n in drop:
            out.append(text[at:start])
            at = end
    out.append(text[at:])
    return " ".join("".join(out).split()) or "."


def deletion_test(
    handler: Any, texts: list[str], outcomes: list[Any], labels: list[str], prompts: tuple[str, ...]
) -> dict[str, float]:
    """Mean drop in the predicted label's probability when the top-attributed words are
    deleted, and when as many random words are."""
    import torch

    from schemas.jobs import Item

    rng = random.Random(SEED)

    def probability(batch: list[str], targets: list[int]) -> list[float]:
        feats = [handler.preprocess(Item(key=str(n), text=t), {"labels": labels})
                 for n, t in enumerate(batch)]  # fmt: skip
        with torch.no_grad():
            probs = handler.probabilities(
                handler.sentence_embeddings(*handler.pad([f.windows[0] for f in feats])), prompts
            )
        return [float(probs[n, t]) for n, t in enumerate(targets)]

    top, rand, targets = [], [], []
    for text, o in zip(texts, outcomes, strict=True):
        e = o.explanation
        spans = word_spans(text, e.tokens)
        k = max(1, round(DELETED_SHARE * len(spans)))
        order = sorted(range(len(spans)), key=lambda n: e.attributions[n], reverse=True)
        top.append(without(text, spans, set(order[:k])))
        rand.append(without(text, spans, set(rng.sample(range(len(spans)), k))))
        targets.append(labels.index(o.output["label"]))
    base = probability(texts, targets)
    drop_top = [b - p for b, p in zip(base, probability(top, targets), strict=True)]
    drop_rand = [b - p for b, p in zip(base, probability(rand, targets), strict=True)]
    return {
        "deletion_drop": sum(drop_top) / len(texts),
        "random_drop": sum(drop_rand) / len(texts),
    }


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return dot / norm if norm else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--texts", type=int, default=24)
    p.add_argument("--steps", type=int, default=0, help="default: the task's explainer steps")
    p.add_argument("--fast-steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--models-dir", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    from ops.demo import TOPICS
    from producers.model_refs import resolve
    from schemas.catalog import load_catalog
    from schemas.explainer_settings import job_explainer
    from schemas.jobs import ExplainPolicy, Item
    from schemas.media_refs import MediaLimits
    from schemas.settings import Settings
    from schemas.states import ExplanationStatus
    from workers.handlers.text import ZeroShotHandler
    from workers.runtime.model_core import ModelCore
    from workers.runtime.options import actor_options

    torch.set_num_threads(args.threads)
    spec = load_catalog().get(TASK)
    settings = Settings()
    options = actor_options(settings, spec)
    steps = args.steps or (spec.explainer.steps if spec.explainer else 24)
    # each path's job records its own steps (schemas/explainer_settings.py), as a submit does
    explainers = {
        "sluice": job_explainer(spec, settings, "all", steps),
        "fast": job_explainer(spec, settings, "all", args.fast_steps),
    }
    batch = options.explain_batch_size
    models = args.models_dir or Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    ref = resolve(MODEL, spec, models)
    handler = ZeroShotHandler()
    handler.setup(str(ref.path), "cpu")
    cores = {name: ModelCore(handler, "cpu", options) for name in explainers}

    labels = list(TOPICS)
    prompts = tuple(TOPICS[x] for x in labels)  # the label descriptions, as the demo sends
    params = spec.check_params({"labels": labels, "label_descriptions": TOPICS}, settings)
    policy = ExplainPolicy.parse("all")
    texts = sample_texts(args.texts)
    items = [Item(key=f"t{n}", text=t) for n, t in enumerate(texts)]
    log(f"{len(texts)} texts, {steps} steps (fast: {args.fast_steps}), explain batch {batch}, "
        f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")  # fmt: skip

    def sluice(name: str, part: list[Item]) -> list[Any]:
        job_params = {**params, "explainer": explainers[name]}
        return asyncio.run(cores[name].process("bench", part, job_params, policy, MediaLimits()))

    # warm-up, each path on its own thread as it will run (kernels, allocator, label vectors)
    direct_captum(handler, texts[:2], list(prompts), steps)
    for name in cores:
        sluice(name, items[:2])

    seconds = {"direct": 0.0, "sluice": 0.0, "fast": 0.0}
    outcomes: dict[str, list[Any]] = {"sluice": [], "fast": []}
    runs = list(seconds)
    for n, at in enumerate(range(0, len(texts), batch)):
        for name in runs[n % 3 :] + runs[: n % 3]:  # who goes first rotates
            t0 = time.perf_counter()
            if name == "direct":
                direct_captum(handler, texts[at : at + batch], list(prompts), steps)
            else:
                outcomes[name] += sluice(name, items[at : at + batch])
            seconds[name] += time.perf_counter() - t0
        log(f"batch at {at}: " + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()))
    for core in cores.values():
        core.close()
    for name, got in outcomes.items():
        bad = [
            o for o in got if o.explanation is None or o.explanation.status != ExplanationStatus.OK
        ]
        if bad:
            raise RuntimeError(f"{name}: {len(bad)} items without an explanation: {bad[0]}")

    rate = {k: len(texts) / v for k, v in seconds.items()}
    faith = {
        name: deletion_test(handler, texts, outcomes[name], labels, prompts)
        for name in ("sluice", "fast")
    }
    agreement = sum(
        cosine(a.explanation.attributions, b.explanation.attributions)
        for a, b in zip(outcomes["sluice"], outcomes["fast"], strict=True)
    ) / len(texts)
    delta = {
        name: sum(abs(o.explanation.convergence_delta) for o in got) / len(got)
        for name, got in outcomes.items()
    }
    figures = {
        "bench": "explain_text",
        "task": TASK,
        "model": MODEL,
        "texts": len(texts),
        "steps": steps,
        "fast_steps": args.fast_steps,
        "explain_batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "load_after": round(os.getloadavg()[0], 2),
        "items_per_s": {k: round(v, 3) for k, v in rate.items()},
        "sluice_vs_direct": round(rate["sluice"] / rate["direct"], 3),
        "fast_vs_direct": round(rate["fast"] / rate["direct"], 3),
        "fast_vs_sluice": round(rate["fast"] / rate["sluice"], 3),
        "deletion_drop": {k: round(v["deletion_drop"], 3) for k, v in faith.items()},
        "random_drop": round(faith["sluice"]["random_drop"], 3),
        "fast_cosine_to_full": round(agreement, 3),
        "mean_abs_delta": {k: round(v, 4) for k, v in delta.items()},
    }
    print(f"\nexplain text ({TASK}, {MODEL}), {len(texts)} texts, batch {batch}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}:")  # fmt: skip
    print(f"{'run':<28} {'seconds':>8} {'items/s':>8} {'vs direct':>9}  deletion drop")
    rows = [("direct Captum", "direct", steps), ("Sluice", "sluice", steps),
            ("Sluice fast", "fast", args.fast_steps)]  # fmt: skip
    for label, key, n in rows:
        drop = f"{faith[key]['deletion_drop']:.3f}" if key in faith else ""
        print(f"{label + f' ({n} steps)':<28} {seconds[key]:>8.2f} {rate[key]:>8.2f} "
              f"{rate[key] / rate['direct']:>8.3f}x  {drop}")  # fmt: skip
    print(
        f"random words deleted: drop {faith['sluice']['random_drop']:.3f}; "
        f"{args.fast_steps}-step vs {steps}-step attributions: cosine {agreement:.3f}"
    )
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
