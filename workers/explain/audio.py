"""Audio attributions per time segment: Integrated Gradients on the waveform the model reads,
summed over segments whose boundaries are given in seconds."""

from collections.abc import Callable

import torch

from schemas.jobs import Explanation
from workers.explain.tensors import each_or_batch, integrated_gradients, short

METHOD = "integrated_gradients"
MAX_SEGMENTS = 20
MIN_SEGMENT_SECONDS = 0.1


def segments(n_samples: int, rate: int) -> list[tuple[int, int]]:
    """Equal segments of at least MIN_SEGMENT_SECONDS, at most MAX_SEGMENTS of them."""
    length = max(int(rate * MIN_SEGMENT_SECONDS), -(-n_samples // MAX_SEGMENTS), 1)
    return [(s, min(s + length, n_samples)) for s in range(0, n_samples, length)]


def explain_waveforms(forward: Callable[..., torch.Tensor], values: torch.Tensor,
                      mask: torch.Tensor | None, lengths: list[int], rate: int,
                      targets: list[int], names: list[str], steps: int,
                      internal_batch_size: int) -> list[Explanation]:
    def explain(idx: list[int]) -> list[Explanation]:
        inputs = values[idx]
        extra = (mask[idx],) if mask is not None else ()
        attr, delta = integrated_gradients(forward, inputs, torch.zeros_like(inputs),
                                           [targets[i] for i in idx], steps,
                                           internal_batch_size, extra)
        attr = attr.float().cpu()
        out = []
        for n, i in enumerate(idx):
            bounds = segments(lengths[i], rate)
            scores = [short(float(attr[n, s:e].sum())) for s, e in bounds]
            seconds = [[round(s / rate, 3), round(e / rate, 3)] for s, e in bounds]
            out.append(Explanation(
                method=METHOD, target=names[i], attributions=scores,
                tokens=[f"{s:.2f}-{e:.2f}s" for s, e in seconds],
                convergence_delta=round(float(delta[n]), 6),
                detail={"segments": seconds, "sample_rate": rate},
            ))
        return out

    return each_or_batch(len(targets), METHOD, list(names), explain)
