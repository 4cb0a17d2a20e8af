"""The demo's entities job: English and Chinese notes naming people, places, organisations,
e-mail addresses and phone numbers, tagged by the toy token classifier `sluice models build`
makes; the spans written into each note are known, so the summary scores what was found."""

import json
from pathlib import Path
from typing import Any

from ops.demo_data import build_models, models_dir, samples_dir
from ops.progress import err
from schemas.settings import Settings

MODEL = "tiny-entities"
ROWS = 120
Span = tuple[int, int, str]


def entity_samples(settings: Settings) -> Path:
    """Notes of one to four sentences, half English, half Chinese, written once."""
    from workers.training.scratch_entities import entity_passages

    path = samples_dir(settings) / "notes.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {"id": f"n{n:03d}", "note": p.text, "spans": [list(s) for s in p.spans]}
            for n, p in enumerate(entity_passages(ROWS, seed=2, lang="mixed", most=4))
        ]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def submit_entities(client: Any, settings: Settings) -> str:
    build_models(settings, [MODEL])
    return str(
        client.submit_file(
            entity_samples(settings),
            "extract-entities",
            model=str(models_dir(settings) / MODEL),
            key_column="id",
            text_column="note",
            explain="all",  # every entity explained: the tagger is small
        )
    )


def entity_truth(settings: Settings) -> dict[str, set[Span]]:
    rows = map(json.loads, entity_samples(settings).read_text(encoding="utf-8").splitlines())
    return {r["id"]: {(s[0], s[1], s[2]) for s in r["spans"]} for r in rows}


def summarise_entities(results: list[dict[str, Any]], truth: dict[str, set[Span]]) -> None:
    """Entity-level precision, recall and F1 against the spans written into the notes (a
    found entity counts only with the same start, end and type), and one explained entity."""
    found = gold = hits = 0
    for r in results:
        if r["key"] not in truth or not isinstance(r.get("output"), dict):
            continue
        spans = {(e["start"], e["end"], e["label"]) for e in r["output"]["entities"]}
        found, gold = found + len(spans), gold + len(truth[r["key"]])
        hits += len(spans & truth[r["key"]])
    precision, recall = hits / max(found, 1), hits / max(gold, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    err.print(
        f"  entities: {found} found, {gold} written in; precision {precision:.3f}, "
        f"recall {recall:.3f}, F1 {f1:.3f}"
    )
    for r in results:
        detail = (r.get("explanation") or {}).get("detail") or {}
        if detail.get("entities"):
            e = detail["entities"][0]
            pairs = sorted(
                zip(e["tokens"], e["attributions"], strict=False), key=lambda p: -abs(p[1])
            )
            err.print(
                f"  e.g. {r['key']}: {e['text']!r} is {e['label']}; words that mattered most: "
                + ", ".join(f"{t} ({a:+.3f})" for t, a in pairs[:3])
            )
            return
