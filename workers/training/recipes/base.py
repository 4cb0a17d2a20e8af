"""The recipe contract. The Ray Train loop (workers/training/loop.py) is generic; a recipe is
all it knows about a task.

- `prepare` runs once, in the driver (the Celery worker): rows -> numpy arrays, split into
  train and held-out parts (stratified for classifiers), plus `meta` that every rank and
  `save` need (labels, feature schema, target statistics...). Arrays travel to the training
  workers through Ray's object store, so every array's first dimension is the row.
- `build` runs on every rank and must give the same architecture everywhere (DDP broadcasts
  rank 0's initial weights).
- `loss` and `evaluate` see batches of torch tensors on the rank's device, keyed as in
  `prepare`'s arrays.
- `save` writes a model directory the inference handler of the task loads as it is.

Optional: `sized_by_data` (True: batch and learning rate follow the number of rows when the
user gives none), `max_epochs` (the most an automatic run may take), and a `validation` split
and `baseline` figure in what `prepare` returns (workers/training/plan.py).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from schemas.media_refs import MediaLimits
from schemas.training import TrainSpec


@dataclass
class Prepared:
    train: dict[str, np.ndarray]
    heldout: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    # training rows set aside to choose the epoch (early stopping; workers/training/plan.py):
    # never trained on, and never the held-out rows. Empty: every epoch runs.
    validation: dict[str, np.ndarray] = field(default_factory=dict)
    # the classical baseline fitted on the same training rows: {"method", "metric", "value"};
    # None under DP (a figure from a model fitted on the private rows without noise would be
    # published outside ε)
    baseline: dict[str, Any] | None = None

    @property
    def n_train(self) -> int:
        return len(next(iter(self.train.values())))

    @property
    def n_heldout(self) -> int:
        return len(next(iter(self.heldout.values())))


class Recipe(Protocol):
    task: str
    # the held-out metric shown as progress and used to compare versions (higher is better)
    primary_metric: str
    default_learning_rate: float

    def prepare(
        self, spec: TrainSpec, rows: list[dict[str, Any]], limits: MediaLimits
    ) -> Prepared: ...

    def build(self, spec: TrainSpec, meta: dict[str, Any]) -> nn.Module: ...

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def evaluate(
        self, model: nn.Module, heldout: dict[str, torch.Tensor], meta: dict[str, Any]
    ) -> dict[str, float]: ...

    def save(
        self,
        model: nn.Module,
        out: Path,
        spec: TrainSpec,
        meta: dict[str, Any],
        metrics: dict[str, float],
    ) -> None: ...
