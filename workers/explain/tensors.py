"""Captum on plain input tensors (pixels, waveforms, normalised records), batched, with a
fallback to one item at a time so that one failure stays one item's failure."""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import IntegratedGradients, Occlusion

from schemas.jobs import Explanation
from schemas.states import ExplanationStatus

Attributor = Callable[[list[int]], tuple[torch.Tensor, torch.Tensor | None]]


def integrated_gradients(
    forward: Callable[..., torch.Tensor],
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    targets: Sequence[int] | None,
    steps: int,
    internal_batch_size: int,
    extra: tuple[Any, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    ig = IntegratedGradients(forward)
    attributions, delta = ig.attribute(
        inputs,
        baselines=baselines,
        target=list(targets) if targets is not None else None,
        additional_forward_args=extra or None,
        n_steps=steps,
        internal_batch_size=max(internal_batch_size, inputs.shape[0]),
        return_convergence_delta=True,
    )
    return attributions.detach(), delta.detach()


def occlusion(
    forward: Callable[..., torch.Tensor],
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    targets: Sequence[int],
    window: tuple[int, ...],
    per_eval: int,
) -> torch.Tensor:
    attributions = Occlusion(forward).attribute(
        inputs,
        sliding_window_shapes=window,
        strides=window,
        baselines=baselines,
        target=list(targets),
        perturbations_per_eval=per_eval,
    )
    return attributions.detach()


def each_or_batch(
    count: int,
    method: str,
    names: list[str | None],
    explain: Callable[[list[int]], list[Explanation]],
) -> list[Explanation]:
    """Explain all `count` items at once; if that fails, one by one, recording failures."""
    try:
        return explain(list(range(count)))
    except Exception:
        if count == 1:
            raise
    out = []
    for i in range(count):
        try:
            out += explain([i])
        except Exception as exc:
            out.append(failed_explanation(method, exc, names[i]))
    return out


def failed_explanation(method: str, error: BaseException, target: str | None) -> Explanation:
    """A failed explanation of one item, saying why (the prediction stands)."""
    return Explanation(
        method=method,
        target=target,
        status=ExplanationStatus.FAILED,
        error=f"{type(error).__name__}: {error}"[:500],
    )


def short(value: float) -> float:
    """Four significant digits: attributions are read by people, not re-computed."""
    return float(f"{value:.4g}")
