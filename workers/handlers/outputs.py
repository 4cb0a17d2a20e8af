"""Output shapes handlers share, as the catalog's OutputShape documents them."""

from typing import Any

from schemas.task_spec import TOP_K


def top_labels(probs: list[float], labels: list[str]) -> dict[str, Any]:
    """A classifier's output: the best label, its score, and under `scores` the TOP_K most
    likely labels with their probabilities, the most likely first."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    return {
        "label": labels[order[0]],
        "score": round(probs[order[0]], 6),
        "scores": {labels[i]: round(probs[i], 6) for i in order[:TOP_K]},
    }
