"""Entity-level precision, recall and F1 as seqeval counts them (its default mode on BIO
tags): an entity is found only if its start, end and type all match a gold one; micro
averages over every entity, and the same per type. Computed on character spans, so gold
spans that no tokenisation lines up with count as missed, as they would in use."""

from collections.abc import Iterable, Sequence

from schemas.entity_spans import Span

OVERALL = "heldout"  # the overall scores' prefix: heldout_precision, heldout_recall, heldout_f1
PER_TYPE = "per_type"  # per_type.PERSON.f1, ... (kept off `sluice models list`'s summary)


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    """Precision, recall and F1 (0 where undefined, as seqeval gives with zero_division=0)."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def span_metrics(
    gold: Sequence[Iterable[Span]], predicted: Sequence[Iterable[Span]], kinds: Sequence[str]
) -> dict[str, float]:
    """Micro precision, recall and F1 over all entities (`heldout_*`), and per type of
    `kinds` plus any type only one side has (`per_type.TYPE.precision|recall|f1|support`,
    support the gold entities of the type)."""
    tp: dict[str, int] = {}
    n_gold: dict[str, int] = {}
    n_pred: dict[str, int] = {}
    for g, p in zip(gold, predicted, strict=True):
        gs, ps = set(g), set(p)
        for kind in {k for *_, k in gs | ps}:
            tp[kind] = tp.get(kind, 0) + sum(1 for s in gs & ps if s[2] == kind)
            n_gold[kind] = n_gold.get(kind, 0) + sum(1 for s in gs if s[2] == kind)
            n_pred[kind] = n_pred.get(kind, 0) + sum(1 for s in ps if s[2] == kind)
    out = {
        f"{OVERALL}_{k}": v
        for k, v in prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values())).items()
    }
    for kind in [*kinds, *sorted((set(n_gold) | set(n_pred)) - set(kinds))]:
        scores = prf(tp.get(kind, 0), n_pred.get(kind, 0), n_gold.get(kind, 0))
        scores["support"] = float(n_gold.get(kind, 0))
        out.update({f"{PER_TYPE}.{kind}.{k}": v for k, v in scores.items()})
    return out
