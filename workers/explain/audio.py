"""Audio attributions per time segment: each segment is silenced in turn (Captum's
FeatureAblation with one feature per segment) and the change in the predicted label's
probability is its attribution, with the segment boundaries in seconds.

Integrated Gradients from silence was measured and rejected: wav2vec2-style models normalise
their input's scale away, so every path from silence jumps at its start and IG left ~98% of
the output unexplained (convergence delta about -0.98), while ablation answers the question
a listener asks ("what if this part were silent?") in at most 20 forward passes."""

from collections.abc import Callable

import torch
from captum.attr import FeatureAblation

from schemas.jobs import Explanation
from workers.explain.tensors import each_or_batch, short

METHOD = "segment_ablation"
MAX_SEGMENTS = 20
MIN_SEGMENT_SECONDS = 0.1


def segments(n_samples: int, rate: int) -> list[tuple[int, int]]:
    """Equal segments of at least MIN_SEGMENT_SECONDS, at most MAX_SEGMENTS of them."""
    length = max(int(rate * MIN_SEGMENT_SECONDS), -(-n_samples // MAX_SEGMENTS), 1)
    bounds = [(s, min(s + length, n_samples)) for s in range(0, n_samples, length)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < length // 2:
        bounds[-2:] = [(bounds[-2][0], n_samples)]  # no sliver of a segment at the end
    return bounds


def segment_mask(lengths: list[int], width: int, rate: int) -> torch.Tensor:
    """(B, T) feature ids: segment n of each clip is id n; padding is one id of its own."""
    mask = torch.full((len(lengths), width), MAX_SEGMENTS + 1, dtype=torch.long)
    for row, n in enumerate(lengths):
        for sid, (s, e) in enumerate(segments(n, rate)):
            mask[row, s:e] = sid
    return mask


def explain_waveforms(
    forward: Callable[..., torch.Tensor],
    values: torch.Tensor,
    mask: torch.Tensor | None,
    lengths: list[int],
    rate: int,
    targets: list[int],
    names: list[str],
    steps: int,
    internal_batch_size: int,
) -> list[Explanation]:
    def explain(idx: list[int]) -> list[Explanation]:
        inputs = values[idx]
        extra = (mask[idx],) if mask is not None else None
        features = segment_mask([lengths[i] for i in idx], inputs.shape[1], rate)
        attr = (
            FeatureAblation(forward)
            .attribute(
                inputs,
                baselines=0.0,
                target=[targets[i] for i in idx],
                additional_forward_args=extra,
                feature_mask=features.to(inputs.device),
                perturbations_per_eval=max(1, internal_batch_size // len(idx)),
            )
            .detach()
            .float()
            .cpu()
        )
        out = []
        for n, i in enumerate(idx):
            bounds = segments(lengths[i], rate)
            # Every sample of a segment carries the segment's score: read it at its start.
            scores = [short(float(attr[n, s])) for s, _ in bounds]
            seconds = [[round(s / rate, 3), round(e / rate, 3)] for s, e in bounds]
            out.append(
                Explanation(
                    method=METHOD,
                    target=names[i],
                    attributions=scores,
                    tokens=[f"{s:.2f}-{e:.2f}s" for s, e in seconds],
                    detail={"segments": seconds, "sample_rate": rate, "baseline": "silence"},
                )
            )
        return out

    return each_or_batch(len(targets), METHOD, list(names), explain)
