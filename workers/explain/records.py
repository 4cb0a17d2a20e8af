"""Record attributions per feature: Integrated Gradients from the training means (zero in the
normalised space the model reads), listing the features that pushed the prediction most."""

from collections.abc import Callable
from typing import Any

import torch

from schemas.jobs import Explanation
from workers.explain.tensors import each_or_batch, integrated_gradients, short

METHOD = "integrated_gradients"
TOP = 5


def explain_records(
    forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    raw: list[dict[str, float]],
    features: list[dict[str, Any]],
    targets: list[int],
    names: list[str | None],
    steps: int,
    internal_batch_size: int,
) -> list[Explanation]:
    feature_names = [f["name"] for f in features]

    def explain(idx: list[int]) -> list[Explanation]:
        batch = inputs[idx]
        attr, delta = integrated_gradients(
            forward,
            batch,
            torch.zeros_like(batch),
            [targets[i] for i in idx],
            steps,
            internal_batch_size,
        )
        out = []
        for n, i in enumerate(idx):
            scores = [short(v) for v in attr[n].float().cpu().tolist()]
            order = sorted(range(len(scores)), key=lambda j: -abs(scores[j]))[:TOP]
            top = [
                {
                    "feature": feature_names[j],
                    "attribution": scores[j],
                    "value": raw[i][feature_names[j]],
                    "baseline": short(features[j]["mean"]),
                }
                for j in order
            ]
            out.append(
                Explanation(
                    method=METHOD,
                    target=names[i],
                    tokens=feature_names,
                    attributions=scores,
                    convergence_delta=round(float(delta[n]), 6),
                    detail={"baseline": "training means", "top": top},
                )
            )
        return out

    return each_or_batch(len(targets), METHOD, list(names), explain)
