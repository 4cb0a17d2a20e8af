"""Quality and speed of the PII engine (storage.pii) on the labelled synthetic set of
bench/pii_samples.py: recall and precision per pattern type and language, the invalid
look-alikes and non-PII numbers it wrongly finds, and texts per second of find_patterns and of
redact. Exit code 1 if the recall of any CHECKSUM_TYPES type is under 0.95.

    .venv/bin/python bench/pii_quality.py [--per-language 450] [--seed 0] [--no-model]

A finding counts only if its type, start and end all equal a planted value's. With the demo
entity tagger built (.sluice/models/tiny-entities: ops/demo_entity_models.py), PERSON, PLACE
and ORG are scored too, on three sets per language: the tagger generator's own held-out
sentences; our messages with names from the generator's lists; the same messages with names
it never saw. The tables print as markdown; the last line is one JSON object."""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pii_samples import NAME_SLOTS, Sample, samples  # noqa: E402

from storage.pii import CHECKSUM_TYPES, PATTERN_TYPES, find_patterns, redact  # noqa: E402

TAGGER = ROOT / ".sluice" / "models" / "tiny-entities"
MIN_CHECKSUM_RECALL = 0.95


def scores(gold: list[set], found: list[set], types: tuple[str, ...]) -> dict[str, dict]:
    out = {}
    for kind in types:
        tp = n_gold = n_found = 0
        for g, f in zip(gold, found, strict=True):
            gs, fs = {s for s in g if s[2] == kind}, {s for s in f if s[2] == kind}
            tp, n_gold, n_found = tp + len(gs & fs), n_gold + len(gs), n_found + len(fs)
        out[kind] = {
            "recall": tp / n_gold if n_gold else None,
            "precision": tp / n_found if n_found else None,
            "support": n_gold,
        }
    return out


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def table(by_lang: dict[str, dict[str, dict]], types: tuple[str, ...]) -> str:
    langs = list(by_lang)
    head = "| type | " + " | ".join(f"{lg} recall | {lg} precision | {lg} n" for lg in langs)
    lines = [head + " |", "|---" * (1 + 3 * len(langs)) + "|"]
    for kind in types:
        cells = []
        for lg in langs:
            s = by_lang[lg][kind]
            cells += [fmt(s["recall"]), fmt(s["precision"]), str(s["support"])]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pattern_quality(data: list[Sample]) -> tuple[dict, dict, dict]:
    t = time.perf_counter()
    found = [find_patterns(s.text) for s in data]
    find_rate = len(data) / (time.perf_counter() - t)
    by_lang, decoys = {}, {}
    for lang in ("en", "zh"):
        idx = [i for i, s in enumerate(data) if s.lang == lang]
        gold = [set(data[i].gold) for i in idx]
        got = [{(sp.start, sp.end, sp.type) for sp in found[i]} for i in idx]
        by_lang[lang] = scores(gold, got, PATTERN_TYPES)
        hit: Counter[str] = Counter()
        total: Counter[str] = Counter()
        for i in idx:
            for start, end, slot in data[i].decoys:
                total[slot] += 1
                hit[slot] += any(sp.start < end and start < sp.end for sp in found[i])
        decoys[lang] = {slot: (hit[slot], total[slot]) for slot in sorted(total)}
    rates = {"find_patterns": find_rate}
    for mode in ("mask", "hash"):
        t = time.perf_counter()
        for s, spans in zip(data, found, strict=True):
            new, _ = redact(s.text, spans, mode, secret=b"bench")
        rates[f"redact {mode}"] = len(data) / (time.perf_counter() - t)
    return by_lang, decoys, rates


def tagger_quality(seed: int, per_language: int) -> dict[str, dict] | None:
    if not (TAGGER / "model.safetensors").exists():
        return None
    from ops.demo_entity_models import STRIDE, token_classifier
    from workers.training.scratch_entities import entity_sentences, pipeline_spans

    tagger = token_classifier(TAGGER)
    n = min(per_language, 150)
    out: dict[str, dict] = {}
    for lang in ("en", "zh"):
        own = entity_sentences(n, seed + 777, lang, split="heldout")
        sets: dict[str, tuple[list[str], list[set]]] = {
            "generator's held-out sentences": ([s.text for s in own], [set(s.spans) for s in own])
        }
        for names in ("lists", "unseen"):
            ours = [s for s in samples(n, seed + 1, names) if s.lang == lang and s.names]
            label = "our messages, " + ("list names" if names == "lists" else "unseen names")
            sets[label] = ([s.text for s in ours], [set(s.names) for s in ours])
        for label, (texts, gold) in sets.items():
            t = time.perf_counter()
            raw = tagger(texts, batch_size=16, stride=STRIDE)
            rate = len(texts) / (time.perf_counter() - t)
            got = [pipeline_spans(r) for r in raw]
            out[f"{lang}: {label}"] = {
                **scores(gold, got, NAME_SLOTS),
                "texts": len(texts),
                "texts/s": rate,
            }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-language", type=int, default=450)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-model", action="store_true", help="skip the entity tagger")
    args = ap.parse_args()

    data = samples(args.per_language, args.seed)
    t = time.perf_counter()
    find_patterns("warm-up: build the analyzer a@example.com")
    redact("a@example.com", find_patterns("a@example.com"), "mask")
    build = time.perf_counter() - t
    by_lang, decoys, rates = pattern_quality(data)

    print(f"## Pattern PII: {len(data)} messages ({args.per_language} en, zh), seed {args.seed}")
    print(f"\n(analyzer and anonymizer built in {build:.1f} s, once per process)\n")
    print(table(by_lang, PATTERN_TYPES))
    print("\n| wrongly found (look-alikes, non-PII) | en | zh |\n|---|---|---|")
    for slot in sorted({*decoys["en"], *decoys["zh"]}):
        cells = [
            f"{decoys[lg][slot][0]} of {decoys[lg][slot][1]}" if slot in decoys[lg] else "—"
            for lg in ("en", "zh")
        ]
        print(f"| {slot} | " + " | ".join(cells) + " |")
    print("\n| speed | texts/s |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} |")

    model = None if args.no_model else tagger_quality(args.seed, args.per_language)
    if model:
        print("\n## Entity tagger (tiny-entities): PERSON, PLACE, ORG\n")
        cols = " | ".join(f"{k} recall | {k} precision" for k in NAME_SLOTS)
        print(f"| set | {cols} | texts | texts/s |")
        print("|---" * (3 + 2 * len(NAME_SLOTS)) + "|")
        for label, s in model.items():
            cells = [f"{fmt(s[k]['recall'])} | {fmt(s[k]['precision'])}" for k in NAME_SLOTS]
            print(f"| {label} | " + " | ".join(cells) + f" | {s['texts']} | {s['texts/s']:.0f} |")
    elif not args.no_model:
        print(f"\n(no entity tagger at {TAGGER}: PERSON/PLACE/ORG not measured)")

    low = [
        f"{lang} {kind} {s[kind]['recall']:.3f}"
        for lang, s in by_lang.items()
        for kind in CHECKSUM_TYPES
        if s[kind]["recall"] is not None and s[kind]["recall"] < MIN_CHECKSUM_RECALL
    ]
    if low:
        print(f"\nFAIL: checksum-type recall under {MIN_CHECKSUM_RECALL}: {', '.join(low)}")
    summary: dict[str, Any] = {
        "patterns": by_lang,
        "wrongly_found": decoys,
        "texts_per_s": rates,
        "build_s": build,
        "tagger": model,
        "low_checksum_recall": low,
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
