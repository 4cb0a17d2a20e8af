"""Image saliency as a compact grid: attributions summed over colour channels and over square
cells (at most GRID_MAX a side), so a 224x224 map is 256 numbers, not 50,000."""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from schemas.jobs import Explanation
from workers.explain.tensors import each_or_batch, integrated_gradients, occlusion, short

INTEGRATED_GRADIENTS = "integrated_gradients"
OCCLUSION = "occlusion"
GRID_MAX = 16


def cell_size(height: int, width: int) -> int:
    return max(1, math.ceil(max(height, width) / GRID_MAX))


def to_grid(attributions: torch.Tensor, cell: int) -> torch.Tensor:
    """(B, C, H, W) pixel attributions -> (B, rows, cols) cell sums."""
    per_pixel = attributions.sum(dim=1, keepdim=True)
    pooled = F.avg_pool2d(per_pixel, cell, stride=cell, ceil_mode=True) * (cell * cell)
    return pooled[:, 0]


def explain_images(
    forward: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    baseline: torch.Tensor,
    targets: list[int],
    names: list[str],
    method: str,
    steps: int,
    internal_batch_size: int,
) -> list[Explanation]:
    _, channels, height, width = pixels.shape
    cell = cell_size(height, width)

    def explain(idx: list[int]) -> list[Explanation]:
        inputs = pixels[idx]
        base = baseline.expand_as(inputs).contiguous()
        tgt = [targets[i] for i in idx]
        delta: torch.Tensor | None = None
        if method == OCCLUSION:
            attr = occlusion(
                forward, inputs, base, tgt, (channels, cell, cell), per_eval=internal_batch_size
            )
        else:
            attr, delta = integrated_gradients(
                forward, inputs, base, tgt, steps, internal_batch_size
            )
        grids = to_grid(attr.float().cpu(), cell)
        rows, cols = grids.shape[1:]
        return [
            Explanation(
                method=method,
                target=names[i],
                attributions=[short(v) for v in grids[n].flatten().tolist()],
                convergence_delta=None if delta is None else round(float(delta[n]), 6),
                detail={
                    "grid": [int(rows), int(cols)],
                    "cell": cell,
                    "input_size": [int(height), int(width)],
                },
            )
            for n, i in enumerate(idx)
        ]

    return each_or_batch(len(targets), method, list(names), explain)
